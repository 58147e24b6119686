"""Reports: ``build_report(results_paths, out_dir)`` writes ``index.html`` (self-contained, plots
embedded as base64 PNG), ``report.md``, one PNG and one CSV per figure, and the input tables as CSV.

Every figure states where its numbers come from: measured (replay of a real trace, a calibration
artifact), simulated (``topθ_hw.sim`` on a device file) or datasheet (a device file's figure used
in a formula), naming the files.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from topθ_hw.report.inputs import Inputs, load_inputs
from topθ_hw.report.measured import kept_by_layer, kept_by_length, method_label, occupancy, theta_curves
from topθ_hw.report.render import write_report
from topθ_hw.report.replayed import decode_steps
from topθ_hw.report.simulated import study_figures, study_frame

__all__ = ["build_report"]


def build_report(results_paths, out_dir, title: str = "Top-θ attention: hardware cost report") -> Path:
    """Build the report from any mix of study results, engine statistics, simulation results,
    quality tables and threshold artifacts; returns the path of ``index.html``."""
    inputs = load_inputs(results_paths)
    figures = [theta_curves(src) for src in inputs.of_kind("thresholds")]
    stats = inputs.of_kind("engine-stats")
    if stats:
        figures += [kept_by_layer(stats), kept_by_length(stats), occupancy(stats)]
    simulated = inputs.of_kind("sim-results")
    if simulated and (f := decode_steps(simulated)) is not None:
        figures.append(f)
    studies = inputs.of_kind("study-results")
    if studies:
        figures += study_figures(studies)
    tables = input_tables(inputs)
    return write_report(Path(out_dir), title, summary_lines(inputs), figures, tables,
                        [str(s.path) for s in inputs.sources])


def input_tables(inputs: Inputs) -> dict[str, pd.DataFrame]:
    """Tables shown as they are: quality evaluations and the simulator's whole-model steps."""
    tables = {f"{s.kind}-{s.path.stem}": s.frame
              for s in inputs.of_kind("quality") + inputs.of_kind("quality-layers")}
    for s in inputs.of_kind("sim-results"):
        tables[f"sim-steps-{s.path.stem}"] = s.frame[s.frame["scope"] == "step"]
    return tables


def summary_lines(inputs: Inputs) -> list[str]:
    lines = []
    for s in inputs.of_kind("engine-stats"):
        heads = s.frame[s.frame["level"] == "head"]
        for phase, t in heads.groupby("phase"):
            frac = t["kept_elements"].sum() / t["dense_elements"].sum()
            lines.append(f"measured ({s.path.name}): {method_label(s.meta)} keeps {frac:.1%} of {phase} "
                         f"attention elements ({1 / frac:.1f}× fewer)")
    studies = inputs.of_kind("study-results")
    if studies:
        lines += _study_summary(study_frame(studies))
    return lines or ["no figures: the inputs hold no statistics, thresholds or study results"]


def _study_summary(df: pd.DataFrame) -> list[str]:
    """Best simulated speedup of each sparse method per device, at the longest context studied."""
    sparse = df[(df["engine_method"] != "dense") & (df["context"] == df["context"].max())
                & df["speedup_vs_dense"].notna()]
    lines = []
    for (device, method), t in sparse.groupby(["device", "method"]):
        best = t.loc[t["speedup_vs_dense"].idxmax()]
        vs_topk = "" if pd.isna(best["speedup_vs_topk"]) or best["engine_method"] == "topk" else f", {best['speedup_vs_topk']:.2f}× vs top-k"
        lines.append(f"simulated: {method} on {device} at context {int(best['context'])}: up to "
                     f"{best['speedup_vs_dense']:.2f}× vs dense{vs_topk} (k = {int(best['k'])}, batch "
                     f"{int(best['batch'])}, page {int(best['page_size'])}, bandwidth × "
                     f"{best['bandwidth_scale']:g}; kept fraction {best['kept_v_fraction']:.3f}, "
                     f"{best['kept_source']})")
    return lines
