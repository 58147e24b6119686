"""Figures from study results: simulated bytes, latency and energy; speedups; bandwidth what-ifs."""

from __future__ import annotations

import pandas as pd

from topθ_hw.report.figure import (Figure, files_named, legend_below, plain, png_bytes, readable_log, subplots,
                                   ticks_at)

# Axes a study sweeps besides device and method; a figure fixes the ones it does not plot.
OTHER_AXES = ("k", "context", "batch", "page_size", "bandwidth_scale", "sram_scale", "trace")
MATCH = ["device", "context", "batch", "page_size", "bandwidth_scale", "sram_scale", "trace"]


def study_frame(sources) -> pd.DataFrame:
    """Attention-only points (whole-model points, with a ``model``, go to report/cost.py)."""
    df = pd.concat([s.frame for s in sources], ignore_index=True)
    return add_speedups(df[df["model"] == ""] if "model" in df else df)


def add_speedups(df: pd.DataFrame) -> pd.DataFrame:
    """speedup_vs_dense / speedup_vs_topk: the matching point's time over this point's time."""
    dense = df[df["engine_method"] == "dense"].groupby(MATCH)["time_s"].first().rename("dense_time_s")
    topk = df[df["engine_method"] == "topk"].groupby(MATCH + ["method", "k"])["time_s"].first()
    topk = topk.reset_index().rename(columns={"time_s": "topk_time_s", "method": "topk_method"})
    out = df.join(dense, on=MATCH)
    out = out.merge(topk.drop_duplicates(MATCH + ["k"]).drop(columns="topk_method"), on=MATCH + ["k"],
                    how="left")
    out["speedup_vs_dense"] = out["dense_time_s"] / out["time_s"]
    out["speedup_vs_topk"] = out["topk_time_s"] / out["time_s"]
    return out


def reference_slice(df: pd.DataFrame, free: tuple[str, ...]) -> tuple[pd.DataFrame, dict]:
    """Fix every axis not in ``free`` at a reference value; returns the rows and the values."""
    prefer = {"batch": min, "page_size": min, "context": max, "trace": min,
              "k": lambda v: min(v, key=lambda x: abs(x - 64)),
              "bandwidth_scale": lambda v: min(v, key=lambda x: abs(x - 1.0)),
              "sram_scale": lambda v: min(v, key=lambda x: abs(x - 1.0))}
    fixed = {}
    for axis in OTHER_AXES:
        if axis in free or axis not in df:
            continue
        values = sorted(df[axis].unique())
        fixed[axis] = prefer[axis](values)
        if axis == "k":  # dense rows are the same for every k
            df = df[(df[axis] == fixed[axis]) | (df["engine_method"] == "dense")]
            df = df.drop_duplicates([c for c in MATCH + ["method"] if c in df])
        else:
            df = df[df[axis] == fixed[axis]]
    return df, fixed


def _fixed_text(fixed: dict) -> str:
    return ", ".join(f"{k} = {v}" for k, v in fixed.items() if k != "trace")


def provenance(sources, df: pd.DataFrame) -> str:
    devices = sorted(df["device"].unique())
    traces = sorted(df["trace"].unique())
    counts = df["kept_source"].value_counts()
    labels = ", ".join(f"{counts.get(s, 0)} {s}" for s in ("measured", "extrapolated", "dense"))
    return (f"topθ_hw.sim decode-attention model on device files for {', '.join(devices)} "
            f"(sims/hardware/*.toml); kept V-row/page fractions from real masks of {', '.join(traces)} "
            f"(a trace store is replayed; a *.safetensors file holds masks measured at long context). Of "
            f"{len(df)} points: {labels} (measured: masks at that context; extrapolated: measured masks "
            f"stretched to another context, kept count held, see topθ_hw/study/kept.py; dense: nothing "
            f"dropped); results {files_named(sources)}")


def cost_by_device(sources, df: pd.DataFrame) -> Figure:
    table, fixed = reference_slice(df, ())
    metrics = [("time_s", 1e6, "latency (µs)"), ("bytes_total", 1e-6, "bytes read (MB)")]
    if "energy_j" in table:
        metrics.append(("energy_j", 1e6, "energy (µJ)"))
    fig, axes = subplots(len(metrics), width=5.0)
    for ax, (column, scale, label) in zip(axes, metrics):
        pivot = table.pivot_table(index="device", columns="method", values=column) * scale
        log = _spans_decades(pivot)
        pivot.plot.bar(ax=ax, rot=30, log=log)
        for bars in ax.containers:  # the value on each bar: µs GPU bars beside ms accelerator bars stay readable
            ax.bar_label(bars, fmt=plain, fontsize=6, rotation=90, padding=2)
        ax.set(ylabel=label, xlabel="", title=label + (" (log axis)" if log else ""))
        if log:
            ax.set_ylim(pivot.min().min() / 3, pivot.max().max() * 6)
            readable_log(ax)
        else:
            ax.margins(y=0.2)
    legend_below(fig, axes)
    cols = ["device", "method", "k", "context", "batch", "page_size", "kept_v_fraction", "time_s",
            "bytes_total", "speedup_vs_dense", "speedup_vs_topk"] + (["energy_j"] if "energy_j" in table else [])
    return Figure("cost_by_device", "Bytes, latency and energy of one decode-attention call",
                  f"One decode-attention call of the study's kernel shape at {_fixed_text(fixed)}.",
                  "simulated", provenance(sources, df), png_bytes(fig), table[cols])


def _spans_decades(pivot: pd.DataFrame) -> bool:
    """Bars more than 20× apart: on a linear axis the small ones vanish."""
    values = pivot.to_numpy().ravel()
    values = values[values > 0]
    return len(values) > 0 and values.max() / values.min() > 20


def _device_panels(table: pd.DataFrame, x: str, y: str, xlabel: str, ylabel: str, scale: float = 1.0,
                   extra=None, yscale: str = "linear"):
    """One panel per device, one line per method; ``extra(ax, rows_of_device)`` adds to a panel."""
    devices = sorted(table["device"].unique())
    fig, axes = subplots(len(devices))
    for ax, device in zip(axes, devices):
        t_dev = table[table["device"] == device]
        for method, t in t_dev.groupby("method"):
            line, = ax.plot(t[x], t[y] * scale, marker="o", label=f"{method}")
            if extra:
                extra(ax, t, line)
        if y.startswith("speedup"):
            ax.axhline(1.0, color="grey", lw=0.6)
        ax.set(title=device, xlabel=xlabel, ylabel=ylabel, xscale="log", yscale=yscale)
        ticks_at(ax, t_dev[x].unique())
        if yscale == "log":
            readable_log(ax)
    legend_below(fig, axes)
    return fig


def _vs_topk(ax, t, line) -> None:
    if t["speedup_vs_topk"].notna().any() and (t["engine_method"] != "topk").all():
        ax.plot(t["context"], t["speedup_vs_topk"], ls="--", color=line.get_color(),
                label=f"{t['method'].iloc[0]} vs top-k")


def speedup_vs_context(sources, df: pd.DataFrame) -> Figure:
    table, fixed = reference_slice(df, ("context",))
    table = table[table["engine_method"] != "dense"]
    fig = _device_panels(table, "context", "speedup_vs_dense", "context length N", "speedup", extra=_vs_topk)
    return Figure("speedup_vs_context", "Speedup against dense and against top-k",
                  f"Dense time over method time (solid) and top-k time over method time (dashed, same k), "
                  f"at {_fixed_text(fixed)}. Above 1: the method is faster.",
                  "simulated", provenance(sources, df), png_bytes(fig),
                  table[["device", "method", "k", "context", "kept_v_fraction", "kept_source", "time_s",
                         "speedup_vs_dense", "speedup_vs_topk"]])


def _dense_roofline(ax, t, line) -> None:
    """The dense call's bandwidth roofline beside its simulated line."""
    if (t["engine_method"] == "dense").all():
        roofline = t["bytes_total"] / (t["hbm_bandwidth_GBps"] * 1e9) * 1e6
        ax.plot(t["bandwidth_scale"], roofline, ls=":", color="black", label="dense roofline (datasheet)")


def bandwidth_whatif(sources, df: pd.DataFrame) -> Figure:
    """Latency against HBM bandwidth scale, with the datasheet roofline of the dense call beside it."""
    table, fixed = reference_slice(df, ("bandwidth_scale",))
    fig = _device_panels(table, "bandwidth_scale", "time_s", "HBM bandwidth × datasheet", "latency (µs)",
                         scale=1e6, extra=_dense_roofline, yscale="log")
    table = table.assign(roofline_time_s=table["bytes_total"] / (table["hbm_bandwidth_GBps"] * 1e9))
    return Figure("bandwidth_whatif", "What if HBM bandwidth changed?",
                  f"Simulated latency as HBM bandwidth is scaled, at {_fixed_text(fixed)}; dotted: the "
                  "bandwidth roofline of the dense call.", "simulated + datasheet",
                  provenance(sources, df) + "; roofline = bytes_total / (hbm_bandwidth_GBps × scale), "
                  "hbm_bandwidth_GBps from the device file's datasheet figure", png_bytes(fig),
                  table[["device", "method", "bandwidth_scale", "hbm_bandwidth_GBps", "time_s",
                         "roofline_time_s", "speedup_vs_dense"]])


def page_size_effect(sources, df: pd.DataFrame) -> Figure:
    table, fixed = reference_slice(df, ("page_size",))
    table = table[table["engine_method"] != "dense"]
    fig = _device_panels(table, "page_size", "speedup_vs_dense",
                         "tokens per KV page (1 = row)", "speedup vs dense")
    return Figure("page_size_effect", "What fetch granularity costs the sparse methods",
                  f"Speedup against dense as the KV page grows, at {_fixed_text(fixed)}: a page is read if "
                  "it holds one needed row.", "simulated", provenance(sources, df), png_bytes(fig),
                  table[["device", "method", "page_size", "kept_v_fraction", "time_s", "speedup_vs_dense"]])


def study_figures(sources) -> list[Figure]:
    """The figures the study's axes support: speedups need dense and a sparse method beside it."""
    df = study_frame(sources)
    if df.empty:
        return []
    figures = [cost_by_device(sources, df)]
    compared = df["speedup_vs_dense"].notna() & (df["engine_method"] != "dense")
    if df["context"].nunique() > 1 and compared.any():
        figures.append(speedup_vs_context(sources, df))
    if df["bandwidth_scale"].nunique() > 1:
        figures.append(bandwidth_whatif(sources, df))
    if df["page_size"].nunique() > 1 and compared.any():
        figures.append(page_size_effect(sources, df))
    return figures
