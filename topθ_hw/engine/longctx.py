"""Long-context tables: what Top-θ keeps at context 1k … 32k, cut from one long trace.

A causal model computes prefill row t exactly as it would compute the decode step that feeds
token t (teacher forcing), so one long trace gives every shorter context as a prefix:

- *prefill at context n*: the prompt's rows 0 … n−1 (one prefill replay of the whole prompt,
  optionally row-sampled, summed over the tiles that end by n);
- *decode at context n*: rows n … n+P−1 replayed as decode steps (``PROBE_STEPS`` = P) of a
  prompt cut at n (``cut``); at the trace's own prompt length its real greedy decode steps.

Thresholds may come from a different (calibration) trace of the same model, optionally cut to
its first ``n_cal`` rows (:class:`PrefixTrace`), and are looked up past their longest calibrated
length with ``hold`` or ``logfit`` (:mod:`topθ_hw.engine.thresholds`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from topθ_hw.engine.replay import replay_layer
from topθ_hw.engine.stats import layer_frame

CONTEXTS = (1024, 2048, 4096, 8192, 16384, 32768)
KS = (16, 32, 64, 128, 256, 512)
PROBE_STEPS = 16
TABLE_PAGES = (16, 64, 128)


def cut(qkv, n_rows: int):
    """The first ``n_rows`` rows of a layer (LayerQKV)."""
    return dataclasses.replace(qkv, q=qkv.q[:, :n_rows], k=qkv.k[:, :n_rows], v=qkv.v[:, :n_rows],
                               positions=qkv.positions[:n_rows])


class PrefixSequence:
    """A trace sequence seen as its first ``n_rows`` rows, all prompt (for calibrating at short n)."""

    def __init__(self, seq, n_rows: int):
        self.seq, self.n_tokens = seq, min(n_rows, seq.n_tokens)
        self.prompt_len, self.source, self.name = min(n_rows, seq.prompt_len), seq.source, seq.name

    def layer(self, layer: int):
        return cut(self.seq.layer(layer), self.n_tokens)


class PrefixTrace:
    """An open trace whose sequences are cut to their first ``n_rows`` rows."""

    def __init__(self, trace, n_rows: int):
        self.trace, self.n_rows, self.meta, self.path = trace, n_rows, trace.meta, f"{trace.path}[:{n_rows}]"
        self.sequences = trace.sequences

    def sequence(self, name: str) -> PrefixSequence:
        return PrefixSequence(self.trace.sequence(name), self.n_rows)


def decode_contexts(prompt_len: int, n_rows: int, contexts=CONTEXTS) -> list[tuple[int, int]]:
    """(prompt cut, rows) per context: probes after each cut that fits, and the trace's own decode."""
    cuts = [(n, n + PROBE_STEPS) for n in contexts if n + PROBE_STEPS <= prompt_len]
    return cuts + ([(prompt_len, n_rows)] if n_rows > prompt_len else [])


def layer_tables(qkv, layer: int, method, prompt_len: int, group: int, prefill_stride: int,
                 contexts=CONTEXTS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One layer: (prefill frame of the whole prompt, decode frames at every context cut)."""
    state = method.begin_sequence(None)
    pre = replay_layer(cut(qkv, prompt_len), method, layer, prompt_len, state, prefill_stride=prefill_stride)
    decode = []
    for n, rows in decode_contexts(prompt_len, qkv.q.shape[1], contexts):
        res = replay_layer(cut(qkv, rows), method, layer, n, state, decode_only=True)
        decode.append(layer_frame(res, group, f"ctx{n}").assign(context=n))
    return layer_frame(pre, group, "prefill"), pd.concat(decode, ignore_index=True)


def prefill_fraction(heads: pd.DataFrame, n: int, stride: int) -> float:
    """Kept fraction of an n-token causal prefill from per-(layer, head, tile) rows.

    Full replay (``stride`` 1): the ratio of sums. Row-sampled (every ``stride``-th tile): the
    kept count per row, summed over layers and heads, is interpolated linearly in the row index
    between the sampled tiles' centres (and from 0 kept before row 0, flat past the last
    centre) and summed over rows 0 … n−1; the dense count n(n+1)/2 per head is exact. Kept
    counts grow like n while rows are dense (n ≤ k) and level off near k after, which a
    piecewise-linear curve follows; scaling sampled sums or taking the ratio over the sampled
    rows only is biased at short n (tests/test_longctx.py states the error).
    """
    p = heads[heads.row_end <= n]
    if stride == 1:
        return p.kept_elements.sum() / p.dense_elements.sum()
    tiles = p.groupby(["row_start", "row_end"]).kept_elements.sum().reset_index()
    centres = (tiles.row_start + tiles.row_end - 1).to_numpy() / 2
    per_row = tiles.kept_elements.to_numpy() / (tiles.row_end - tiles.row_start).to_numpy()
    kept = np.interp(np.arange(n), np.r_[-1.0, centres], np.r_[0.0, per_row]).sum()
    pairs = len(p.groupby(["layer", "head"]))
    return kept / (pairs * n * (n + 1) / 2)


def summarise(prefill: pd.DataFrame, decode: pd.DataFrame, contexts=CONTEXTS, stride: int = 1) -> pd.DataFrame:
    """One row per context: kept fractions, V-row union, page occupancy and kept-count tails."""
    rows = []
    pre = prefill[prefill.level == "head"]
    for n, dec in decode.groupby("context"):
        label = next((c for c in contexts if abs(n - c) <= 0.01 * c), n)  # 32704 + decode: "32768"
        heads, groups = dec[dec.level == "head"], dec[dec.level == "group"]
        p = pre[pre.row_end <= n]
        kept = heads.kept_elements.to_numpy(float)   # one decode row per head and step
        row = {"context": int(label), "cut": int(n), "decode_steps": int(heads.step.nunique()),
               "prefill_elements_kept": prefill_fraction(pre, n, stride) if len(p) else np.nan,
               "prefill_rows_sampled": int((p.row_end - p.row_start).sum() // max(len(p.groupby(["layer", "head"])), 1)),
               "decode_elements_kept": kept.sum() / heads.dense_elements.sum(),
               "decode_v_rows_kept": groups.kept_v_rows.sum() / groups.v_rows_total.sum()}
        for size in TABLE_PAGES:
            row[f"pages{size}_kept"] = groups[f"pages_needed_{size}"].sum() / groups[f"pages_total_{size}"].sum()
        row.update(kept_per_row_mean=kept.mean(), kept_per_row_p50=np.percentile(kept, 50),
                   kept_per_row_p99=np.percentile(kept, 99), kept_per_row_max=kept.max(),
                   prefill_kept_per_row_p99_max=p.kept_per_row_p99.max() if len(p) else np.nan,
                   empty_rows=int(heads.empty_rows.sum()))
        rows.append(row)
    return pd.DataFrame(rows)
