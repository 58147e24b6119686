"""Per-layer replay results → the tidy "engine-stats" frame (columns fixed in COMMON.md).

One row per (layer, query head, tile) with ``level="head"`` and per (layer, KV group, tile) with
``level="group"``; a tile is 64 prefill query rows or one decode step. Tile-level error is
computed over the tile's rows together: rel_l2 = sqrt(Σ‖o−o_dense‖² / Σ‖o_dense‖²),
cosine = Σ⟨o, o_dense⟩ / sqrt(Σ‖o‖²·Σ‖o_dense‖²); dropped_mass is the mean over the rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from topθ_hw.engine.kernels import PAGE_SIZES
from topθ_hw.engine.replay import TILE, LayerResult

INT_COLUMNS = ["layer", "kv_group", "head", "step", "row_start", "row_end", "context_len", "kept_elements",
               "dense_elements", "empty_rows", "kept_per_row_max", "kept_v_rows", "v_rows_total",
               "kv_tiles_total", "kv_tiles_nonempty", "v_row_uses_max"] + \
              [f"pages_{w}_{p}" for p in PAGE_SIZES for w in ("needed", "total")]


def segment_starts(prompt_len: int, n_rows: int) -> np.ndarray:
    return np.concatenate([np.arange(0, prompt_len, TILE), np.arange(prompt_len, n_rows)]).astype(np.int64)


def drop_skipped(frame: pd.DataFrame, res: LayerResult) -> pd.DataFrame:
    """Leave out the tiles and steps the replay skipped (decode-only, sampled prefill, decode stride):
    every replayed row has at least one valid key."""
    return frame[frame["dense_elements"] > 0].reset_index(drop=True)


def head_frame(res: LayerResult, group: int) -> pd.DataFrame:
    r = res.rows
    n_heads, n_rows = r["kept"].shape
    starts = segment_starts(res.prompt_len, n_rows)
    ends = np.append(starts[1:], n_rows)
    add = lambda name: np.add.reduceat(r[name], starts, axis=1)  # noqa: E731  [H, S]
    kept, err2, ref2 = add("kept"), add("err2"), add("ref2")
    p99 = np.stack([np.percentile(r["kept"][:, s:e], 99, axis=1) for s, e in zip(starts, ends)], axis=1)
    heads = np.repeat(np.arange(n_heads), len(starts))
    tiled = lambda x: np.tile(x, n_heads)  # noqa: E731
    decode = tiled(starts >= res.prompt_len)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.sqrt(err2 / ref2)
        cos = add("dot") / np.sqrt(add("out2") * ref2)
    return pd.DataFrame({
        "layer": res.layer, "kv_group": heads // group, "head": heads, "level": "head",
        "phase": np.where(decode, "decode", "prefill"),
        "step": np.where(decode, tiled(starts) - res.prompt_len, -1),
        "row_start": tiled(starts), "row_end": tiled(ends), "context_len": tiled(ends),
        "kept_elements": kept.ravel().astype(np.int64), "dense_elements": add("n_valid").ravel().astype(np.int64),
        "empty_rows": add("empty").ravel().astype(np.int64),
        "kept_per_row_mean": (kept / (ends - starts)).ravel(), "kept_per_row_p99": p99.ravel(),
        "kept_per_row_max": np.maximum.reduceat(r["kept"], starts, axis=1).ravel().astype(np.int64),
        "rel_l2_error": rel.ravel(), "cosine": cos.ravel(),
        "dropped_mass": (add("dropped_mass") / (ends - starts)).ravel(),
    })


def group_frame(res: LayerResult, group: int) -> pd.DataFrame:
    tiles = pd.DataFrame(res.tiles)
    kept, n_valid = res.rows["kept"], res.rows["n_valid"]
    sums = np.array([[kept[t.kv_group * group:(t.kv_group + 1) * group, t.row_start:t.row_end].sum(),
                      n_valid[t.kv_group * group:(t.kv_group + 1) * group, t.row_start:t.row_end].sum()]
                     for t in tiles.itertuples()], np.int64).reshape(-1, 2)
    decode = tiles["phase"].to_numpy() == "decode"
    tiles = tiles.assign(
        layer=res.layer, head=-1, level="group",
        step=np.where(decode, tiles["row_start"] - res.prompt_len, -1), context_len=tiles["row_end"],
        kept_elements=sums[:, 0], dense_elements=sums[:, 1],
        v_rows_total=tiles["v_hi"] - tiles["v_lo"] + 1,
        kv_tiles_total=tiles["pages_total_64"], kv_tiles_nonempty=tiles["pages_needed_64"],
        v_row_uses_mean=sums[:, 0] / np.maximum(tiles["kept_v_rows"], 1))
    return tiles.drop(columns=["v_lo", "v_hi"])


def layer_frame(res: LayerResult, group: int, sequence: str) -> pd.DataFrame:
    heads = drop_skipped(head_frame(res, group), res)
    frame = pd.concat([heads, group_frame(res, group)], ignore_index=True) if res.tiles else heads.assign(
        kept_v_mask=b"")
    frame.insert(0, "sequence", sequence)
    frame["kept_v_mask"] = frame["kept_v_mask"].where(frame["kept_v_mask"].notna(), b"")
    for col in INT_COLUMNS:
        if col in frame:
            frame[col] = frame[col].astype("Int64")
    return frame
