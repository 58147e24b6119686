"""build_report: the report from results files. ``build_report(results_paths, out_dir)`` writes ``index.html`` (self-contained, plots
embedded as base64 PNG), ``report.md``, one PNG and one CSV per figure, and the input tables as CSV.

Every figure states where its numbers come from: measured (replay of a real trace, a calibration
artifact), simulated (``topθ_hw.sim`` on a device file) or datasheet (a device file's figure used
in a formula), naming the files.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from topθ_hw.report.alternatives import alternatives_figures
from topθ_hw.report.cost import cost_figures, cost_frame, unfit_points
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
        figures += study_figures(studies) + cost_figures(studies)
    figures += alternatives_figures(inputs.of_kind("alternatives-comparison"))
    tables = input_tables(inputs)
    return write_report(Path(out_dir), title, summary_lines(inputs), figures, tables,
                        [str(s.path) for s in inputs.sources])


def input_tables(inputs: Inputs) -> dict[str, pd.DataFrame]:
    """Where the sparse methods pay (from studies), then tables shown as they are: quality
    evaluations and the simulator's whole-model steps."""
    tables = {}
    studies = inputs.of_kind("study-results")
    if studies:
        attention_only = study_frame(studies)
        pays = where_it_pays(attention_only) if not attention_only.empty else attention_only
        if not pays.empty:
            tables["where_it_pays"] = pays
        unfit = unfit_points(studies)
        if not unfit.empty:
            tables["cost_points_that_do_not_fit"] = unfit
    tables.update({f"{s.kind}-{s.path.stem}": s.frame
                   for s in inputs.of_kind("quality") + inputs.of_kind("quality-layers")})
    for s in inputs.of_kind("sim-results"):
        tables[f"sim-steps-{s.path.stem}"] = s.frame[s.frame["scope"] == "step"]
    return tables


def at_datasheet(df: pd.DataFrame) -> pd.DataFrame:
    """Sparse points with a dense partner at the bandwidth and SRAM scales closest to the datasheet's."""
    for axis in ("bandwidth_scale", "sram_scale"):
        nearest = min(df[axis].unique(), key=lambda v: abs(v - 1.0))
        df = df[df[axis] == nearest]
    return df[(df["engine_method"] != "dense") & df["speedup_vs_dense"].notna()]


def where_it_pays(df: pd.DataFrame) -> pd.DataFrame:
    """Per device, method and context: the best simulated speedup over k, batch and fetch granularity,
    with the setting that reaches it (datasheet bandwidth and SRAM)."""
    sparse = at_datasheet(df)
    if sparse.empty:
        return sparse
    best = sparse.loc[sparse.groupby(["device", "method", "context"])["speedup_vs_dense"].idxmax()]
    extra = [c for c in ("kernel_label", "validation") if c in best.columns]  # studies made before they existed
    return best[["device", "method", "context", "k", "batch", "page_size", "kept_v_fraction", "kept_source",
                 "time_s", "speedup_vs_dense", "speedup_vs_topk", *extra]].reset_index(drop=True)


def summary_lines(inputs: Inputs) -> list[str]:
    lines = []
    for s in inputs.of_kind("engine-stats"):
        if s.meta.get("method") == "dense":
            continue
        heads = s.frame[s.frame["level"] == "head"]
        for phase, t in heads.groupby("phase"):
            frac = t["kept_elements"].sum() / t["dense_elements"].sum()
            lines.append(f"measured ({s.path.name}): {method_label(s.meta)} keeps {frac:.1%} of {phase} "
                         f"attention elements ({1 / frac:.1f}× fewer)")
    studies = inputs.of_kind("study-results")
    if studies:
        attention_only = study_frame(studies)
        lines += _study_summary(attention_only) if not attention_only.empty else []
        lines += _cost_summary(cost_frame(studies))
    return lines or ["no figures: the inputs hold no statistics, thresholds or study results"]


def _study_summary(df: pd.DataFrame) -> list[str]:
    """Best simulated speedup of each sparse method per device at the longest context studied and
    the datasheet bandwidth (the full list: table where_it_pays)."""
    pays = where_it_pays(df)
    pays = pays[pays["context"] == pays["context"].max()] if not pays.empty else pays
    lines = []
    for _, best in pays.iterrows():
        vs_topk = "" if pd.isna(best["speedup_vs_topk"]) or best["method"] == "topk" \
            else f", {best['speedup_vs_topk']:.2f}× vs top-k"
        lines.append(f"simulated: {best['method']} on {best['device']} at context {int(best['context'])}: "
                     f"{best['speedup_vs_dense']:.2f}× vs dense{vs_topk} at best (k = {int(best['k'])}, batch "
                     f"{int(best['batch'])}, page {int(best['page_size'])}, datasheet bandwidth; kept fraction "
                     f"{best['kept_v_fraction']:.3f}, {best['kept_source']}"
                     + (f"; kernel: {best['kernel_label']}" if "kernel_label" in best else "")
                     + (f"; {best['validation']}" if "validation" in best else "") + ")")
    return lines


def _cost_summary(df: pd.DataFrame) -> list[str]:
    """Per model and device: the best end-to-end speedup of each sparse method over dense, beside its
    attention-only speedup at the same point (whole-model study points)."""
    sparse = df[(df["engine_method"] != "dense") & df["speedup_vs_dense"].notna()] if not df.empty else df
    lines = []
    for (model, device, method), t in sparse.groupby(["model", "device", "method"]):
        best = t.loc[t["speedup_vs_dense"].idxmax()]
        lines.append(f"simulated: {method} on {model} / {device}: {best['speedup_vs_dense']:.2f}× end to end at best "
                     f"(attention alone {best['attention_speedup_vs_dense']:.2f}×; {best['phase']}, context "
                     f"{int(best['context'])}, batch {int(best['batch'])}, tp {int(best['tp'])}; attention "
                     f"{best['attention_share']:.0%} of the step)")
    return lines
