"""The alternatives comparison (``toptheta compare``) in a report: quality against bytes and time."""

from __future__ import annotations

import pandas as pd

from topθ_hw.report.figure import Figure, files_named, png_bytes

KIND = "alternatives-comparison"   # topθ_hw.compare.table.KIND


def alternatives_figures(sources) -> list[Figure]:
    """One figure per comparison file: KL against K, V, total bytes and decode time per device."""
    from topθ_hw.compare.table import plot

    figures = []
    for s in sources:
        meta, df = s.meta, s.frame
        measured = "measured (live quality on " + ", ".join(meta.get("texts") or ["no text"]) + ")"
        figures.append(Figure(
            f"alternatives_{s.path.stem}", "Sparse-attention alternatives: quality against bytes and time",
            "Each method at matched budgets k (top-p: swept p): KL(dense ‖ method) per token from the model run "
            "live on held-out text, against the mean decode step's K, V and total bytes and simulated time, from "
            "replaying the same settings on the trace and simulating its real per-step masks. Lower left is "
            "better.", f"{measured} + simulated",
            f"traces {', '.join(meta.get('traces', []))}; devices {', '.join(meta.get('device_files', []))}; "
            f"command `{meta.get('command', '?')}`; table {files_named([s])}",
            png_bytes(plot(df, s.path.name)), summary_table(df)))
    return figures


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    keep = ["trace", "device", "setting", "family", "k", "p", "kl_mean", "ppl_increase", "disagreement",
            "trace_kept_v_fraction", "bytes_k", "bytes_v", "bytes_total", "time_s", "time_reduction_vs_dense"]
    return df[[c for c in keep if c in df.columns]]
