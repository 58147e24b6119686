"""The paper's headline on real traces: Top-θ against top-k for k ∈ {16, 32, 64, 128, 256}.

Top-θ is calibrated on one sequence (one text) and evaluated on the others (other texts);
top-k runs on the same evaluation sequences. Fractions are ratios of sums (kept / dense) over
all evaluation rows, dense rows (n ≤ k) included as the paper counts them; the per-layer and
per-length tables show where the savings come from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from topθ_hw.engine.calibrate import calibrate
from topθ_hw.engine.methods import TopK, TopTheta
from topθ_hw.engine.run import replay_trace
from topθ_hw.outputs import write_text_atomic


FRACTIONS = ["prefill_elements_kept", "decode_elements_kept", "decode_v_rows_kept"]


def fractions(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Prefill elements kept, decode elements kept (per head) and decode V rows kept (per KV group)."""
    heads = frame[frame.level == "head"]
    pre, dec = heads[heads.phase == "prefill"], heads[heads.phase == "decode"]
    groups = frame[(frame.level == "group") & (frame.phase == "decode")]

    def ratio(df, num, den, name):
        g = df.groupby(by, observed=True)[[num, den]].sum() if by else df[[num, den]].sum().to_frame().T
        return (g[num].astype(float) / g[den].astype(float)).rename(name)

    def mean(df, col, name):
        return (df.groupby(by, observed=True)[col].mean() if by else pd.Series([df[col].mean()])).rename(name)

    parts = [ratio(pre, "kept_elements", "dense_elements", "prefill_elements_kept"),
             ratio(dec, "kept_elements", "dense_elements", "decode_elements_kept"),
             ratio(groups, "kept_v_rows", "v_rows_total", "decode_v_rows_kept"),
             mean(pre, "rel_l2_error", "prefill_rel_l2"), mean(dec, "rel_l2_error", "decode_rel_l2")]
    return pd.concat(parts, axis=1).reset_index(drop=not by)


def length_bins(frame: pd.DataFrame) -> pd.Series:
    """Context length → power-of-two bin label '(lo, hi]', ordered by length."""
    edges = 2 ** np.arange(4, 24)
    idx = np.searchsorted(edges, frame["context_len"].to_numpy(np.int64), side="left")
    lo = np.where(idx > 0, edges[np.maximum(idx - 1, 0)], 0)
    labels = [f"{a + 1}-{b}" for a, b in zip(lo, edges[idx])]
    order = sorted(set(labels), key=lambda s: int(s.split("-")[0]))
    return pd.Series(pd.Categorical(labels, categories=order, ordered=True), index=frame.index)


def to_markdown(df: pd.DataFrame) -> str:
    def cell(v):
        if isinstance(v, float):
            return "–" if np.isnan(v) else f"{v:.4f}"
        return str(v)
    cells = [[cell(v) for v in row] for row in df.itertuples(index=False)]
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells]) + "\n"


def headline(trace, ks, out_dir, calibrate_on=None, evaluate_on=None, layer_k=None, placement="pre",
             sigma=0.1, progress=None, threads=None) -> list[Path]:
    calibrate_on = calibrate_on or trace.sequences[:1]
    evaluate_on = evaluate_on or [s for s in trace.sequences if s not in calibrate_on]
    overall, per_layer, per_length = [], [], []
    for k in ks:
        table = calibrate(trace, calibrate_on, k, layer_k, placement, sigma, progress, threads)
        for method in (TopTheta(table), TopK(k=k, layer_k=layer_k)):
            frame, _ = replay_trace(trace, method, evaluate_on, progress=progress, threads=threads)
            frame["length_bin"] = length_bins(frame)
            tag = {"k": k, "method": method.name}
            summary = fractions(frame, [])
            summary["prefill_reduction_x"] = 1 / summary["prefill_elements_kept"]
            summary["decode_v_rows_reduction_x"] = 1 / summary["decode_v_rows_kept"]
            overall.append(summary.assign(**tag))
            per_layer.append(fractions(frame, ["layer"]).assign(**tag))
            per_length.append(fractions(frame, ["length_bin"]).dropna(how="all", subset=FRACTIONS).assign(**tag))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    about = (f"Top-θ ({placement}-softmax, sigma {sigma}) calibrated on {calibrate_on} "
             f"({[trace.sequence(s).source for s in calibrate_on]}), evaluated with top-k on {evaluate_on} "
             f"({[trace.sequence(s).source for s in evaluate_on]}); model {trace.meta.model_id}; "
             f"layer-k overrides: {layer_k or 'none'}.\n\n")
    for name, parts in (("headline", overall), ("headline_per_layer", per_layer),
                        ("headline_per_length", per_length)):
        df = pd.concat(parts, ignore_index=True)
        df = df[["k", "method"] + [c for c in df.columns if c not in ("k", "method")]]
        write_text_atomic(out / f"{name}.csv", df.to_csv(index=False))
        write_text_atomic(out / f"{name}.md", f"# {name}\n\n" + about + to_markdown(df))
        written += [out / f"{name}.csv", out / f"{name}.md"]
    return written
