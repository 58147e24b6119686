"""Engine statistics → per-step workloads from the real masks, and the shape checks on them.

The frames here follow the engine-stats contract of COMMON.md column for column (group and head
rows, prefill tiles of 64 rows, packbits kept_v_mask on decode rows); their masks are drawn
from a seeded generator so that each step's kept set differs.
"""

import numpy as np
import pandas as pd
import pytest

from topθ_hw.errors import UserError
from topθ_hw.sim import load_device
from topθ_hw.sim.stats import simulate_stats, workload_from_stats

PAGES = (1, 8, 16, 32, 64, 128)


def _pages(kept: np.ndarray, p: int) -> tuple[int, int]:
    pad = (-len(kept)) % p
    pages = np.pad(kept, (0, pad)).reshape(-1, p)
    return int(pages.any(axis=1).sum()), len(pages)


def group_row(seq, layer, g, phase, step, start, end, kept_rows, kept_elements, tiles_nonempty):
    n = int(end) if phase == "decode" else int(end)
    row = {"sequence": seq, "layer": layer, "kv_group": g, "head": -1, "level": "group", "phase": phase,
           "step": step, "row_start": start, "row_end": end, "context_len": n, "kept_elements": kept_elements,
           "dense_elements": n, "kept_v_rows": int(kept_rows.sum()), "v_rows_total": n,
           "kv_tiles_total": -(-n // 64), "kv_tiles_nonempty": tiles_nonempty,
           "kept_v_mask": np.packbits(kept_rows).tobytes() if phase == "decode" else b"",
           "v_row_uses_mean": 1.0, "v_row_uses_max": 1}
    for p in PAGES:
        row[f"pages_needed_{p}"], row[f"pages_total_{p}"] = _pages(kept_rows, p)
    return row


def make_stats(seed=0, sequences=("seq_0000", "seq_0001"), layers=2, q_heads=4, kv_heads=2, head_dim=64,
               prompt=192, steps=3, keep=0.25, method="toptheta"):
    """(frame, meta) following the engine-stats contract."""
    rng = np.random.default_rng(seed)
    G = q_heads // kv_heads
    rows = []
    for seq in sequences:
        for layer in range(layers):
            for g in range(kv_heads):
                for start in range(0, prompt, 64):
                    end = min(start + 64, prompt)
                    kept = rng.random(end) < keep
                    kept[:4] = True
                    tiles = int(kept.reshape(-1, 64).any(axis=1).sum())
                    rows.append(group_row(seq, layer, g, "prefill", -1, start, end, kept,
                                          int(kept.sum()) * G * (end - start) // 2, tiles))
                for s in range(steps):
                    n = prompt + s + 1
                    kept = rng.random(n) < keep * (1 + layer)   # layers differ, steps differ
                    kept[:4] = kept[-8:] = True
                    tiles = int(np.pad(kept, (0, (-n) % 64)).reshape(-1, 64).any(axis=1).sum())
                    rows.append(group_row(seq, layer, g, "decode", s, n - 1, n, kept, int(kept.sum()) * G, tiles))
                    for h in range(g * G, (g + 1) * G):
                        rows.append({"sequence": seq, "layer": layer, "kv_group": g, "head": h, "level": "head",
                                     "phase": "decode", "step": s, "row_start": n - 1, "row_end": n,
                                     "context_len": n, "kept_elements": int(kept.sum()), "dense_elements": n,
                                     "kept_v_mask": b""})
    frame = pd.DataFrame(rows)
    meta = {"kind": "engine-stats", "model_id": "test", "n_layers": layers, "n_q_heads": q_heads,
            "n_kv_heads": kv_heads, "head_dim": head_dim, "dtype": "bfloat16", "method": method,
            "params": {}, "trace": "none", "sequences": list(sequences)}
    return frame, meta


def test_decode_v_bytes_are_each_steps_own_mask():
    df, meta = make_stats()
    calls = {(k["sequence"], k["phase"], k["step"], k["layer"]): c for k, c in workload_from_stats(df, meta)}
    groups = df[(df["level"] == "group") & (df["phase"] == "decode")]
    for (seq, step, layer), rows in groups.groupby(["sequence", "step", "layer"]):
        call = calls[(seq, "decode", step, layer)]
        assert call.total("v") == rows["kept_v_rows"].sum() * 64 * 2   # d 64, bf16: 128 B rows
        assert call.total("k") == rows["context_len"].sum() * 128
        assert call.total("thresholds") == 2 * 2 * 4                    # 2 groups x G 2 heads x fp32
    v = [calls[("seq_0000", "decode", s, 0)].total("v") for s in range(3)]
    assert len(set(v)) > 1  # real per-step sets, not an average


def test_page_fetch_counts_pages_with_a_kept_row():
    df, meta = make_stats()
    for key, call in workload_from_stats(df, meta, fetch="page16"):
        if key["phase"] == "decode":
            rows = df[(df["level"] == "group") & (df["phase"] == "decode") & (df["sequence"] == key["sequence"])
                      & (df["step"] == key["step"]) & (df["layer"] == key["layer"])]
            assert call.total("v") == rows["pages_needed_16"].sum() * 16 * 128


def test_prefill_skips_empty_tiles_and_batching_joins_sequences():
    df, meta = make_stats(keep=0.004)
    out = simulate_stats(df, meta, load_device("h100"))
    dense = simulate_stats(df, {**meta, "method": "dense"}, load_device("h100"))
    pick = lambda f: f[(f["scope"] == "layer") & (f["phase"] == "prefill")]  # noqa: E731
    assert (pick(out)["matrix_flops"].to_numpy() < pick(dense)["matrix_flops"].to_numpy()).all()
    batched = list(workload_from_stats(df, meta, batch_sequences=True))
    assert {k["batch"] for k, _ in batched if k["phase"] == "decode"} == {2}


@pytest.mark.parametrize("breakage, message", [
    (lambda df, m: (df.drop(columns=["kept_v_mask"]), m), r"lack column\(s\) \['kept_v_mask'\]"),
    (lambda df, m: (df, {**m, "n_kv_heads": 4, "n_q_heads": 8}), r"has 2 KV-group rows; metadata n_kv_heads = 4"),
    (lambda df, m: (df, {**m, "n_kv_heads": 1, "n_q_heads": 4}), r"kv_group 1 outside 0..0"),
    (lambda df, m: (df, {**m, "method": "magic"}), r"field 'method' is 'magic'"),
    (lambda df, m: (df, {k: v for k, v in m.items() if k != "head_dim"}), r"lacks field\(s\) \['head_dim'\]"),
    (lambda df, m: (df.assign(kept_v_mask=df["kept_v_mask"].map(lambda b: b[:-1] if len(b) else b)), m),
     r"kept_v_mask has \d+ bytes, expected ceil\(context_len"),
])
def test_stats_that_do_not_match_fail_clearly(breakage, message):
    df, meta = breakage(*make_stats())
    with pytest.raises(UserError, match=message):
        list(workload_from_stats(df, meta))
