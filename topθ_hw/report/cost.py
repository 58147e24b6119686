"""Report section "cost per token": whole-model study points (a ``model`` axis, topθ_hw/cost).

One stacked bar per (model, device, method) at reference settings: the decode step's time split
into attention and everything else (the Amdahl split that bounds what a faster attention kernel
buys end to end), with tokens/s, J/token, $/million tokens and each method's ratio to dense in
the table beside it.
"""

from __future__ import annotations

import pandas as pd

from topθ_hw.report.figure import Figure, files_named, png_bytes, subplots

# Everything but method that makes a point: a method is compared with dense at the same values.
PAIR = ["model", "device", "phase", "context", "batch", "tp", "graphs", "page_size", "k", "bandwidth_scale",
        "sram_scale", "trace"]
COLUMNS = ["model", "device", "method", "phase", "context", "batch", "tp", "graphs", "kept_v_fraction",
           "kept_source", "step_time_s", "attention_time_s", "attention_share", "tokens_per_s", "joules_per_token",
           "usd_per_million_tokens", "speedup_vs_dense", "attention_speedup_vs_dense", "max_batch"]


def cost_frame(sources) -> pd.DataFrame:
    """The study's whole-model points that fit, with ratios to the dense point of the same settings."""
    df = pd.concat([s.frame for s in sources], ignore_index=True)
    if "fits" not in df:  # no whole-model points
        return df.iloc[0:0]
    df = df[(df["model"] != "") & (df["fits"] == True)].copy()  # noqa: E712 (NaN-safe for object columns)
    dense = df[df["engine_method"] == "dense"].drop_duplicates(PAIR).set_index(PAIR)
    joined = df.join(dense[["step_time_s", "attention_time_s"]].add_prefix("dense_"), on=PAIR)
    joined["speedup_vs_dense"] = joined["dense_step_time_s"] / joined["step_time_s"]
    joined["attention_speedup_vs_dense"] = joined["dense_attention_time_s"] / joined["attention_time_s"]
    return joined


def _reference(df: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Fix batch, tp, graphs, phase, page size, k, scales at one value each (longest context)."""
    fixed = {}
    for axis, pick in (("phase", min), ("context", max), ("batch", max), ("tp", min), ("graphs", max),
                       ("page_size", min), ("k", min), ("bandwidth_scale", lambda v: min(v, key=lambda x: abs(x - 1))),
                       ("sram_scale", lambda v: min(v, key=lambda x: abs(x - 1))), ("trace", min)):
        fixed[axis] = pick(sorted(df[axis].unique()))
        df = df[df[axis] == fixed[axis]]
    return df, ", ".join(f"{k} = {v}" for k, v in fixed.items() if k not in ("trace", "bandwidth_scale", "sram_scale"))


def amdahl_split(sources, df: pd.DataFrame) -> Figure:
    table, fixed = _reference(df)
    models = sorted(table["model"].unique())
    fig, axes = subplots(len(models), width=5.5)
    for ax, model in zip(axes, models):
        t = table[table["model"] == model].sort_values(["device", "method"])
        labels = [f"{d}\n{m}" for d, m in zip(t["device"], t["method"])]
        ax.bar(labels, t["attention_time_s"] * 1e3, label="attention")
        ax.bar(labels, (t["step_time_s"] - t["attention_time_s"]) * 1e3, bottom=t["attention_time_s"] * 1e3,
               label="rest (GEMMs, norms, LM head, launches, all-reduce)")
        for i, (_, r) in enumerate(t.iterrows()):
            ax.text(i, r["step_time_s"] * 1e3, f"{r['speedup_vs_dense']:.2f}×", ha="center", va="bottom", fontsize=7)
        ax.set(title=model, ylabel="step time (ms)", ylim=(0, 1.15 * t["step_time_s"].max() * 1e3))
        ax.tick_params(axis="x", labelsize=7, rotation=30)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.3))
    notes = sorted({n for n in table.get("cost_note", pd.Series(dtype=str)).dropna() if n})
    return Figure("cost_per_token", "Cost per token: the Amdahl split (attention vs the rest)",
                  f"One whole-model step at {fixed}: attention stacked under everything else; the label is "
                  "the end-to-end speedup over dense at the same settings. Top-θ saves attention time only, so "
                  "the end-to-end gain shrinks as the rest grows." + (" Notes: " + " ".join(notes) if notes else ""),
                  "simulated + datasheet",
                  "topθ_hw.cost whole-model step (GEMMs at roofline × the device file's [step] efficiency, "
                  "attention from topθ_hw.sim, launches, all-reduce over [interconnect]); energy = [power] idle "
                  "power × time + [energy] dynamic energy; $ = [cost] list price × time; results "
                  + files_named(sources), png_bytes(fig), table[[c for c in COLUMNS if c in table]])


def cost_figures(sources) -> list[Figure]:
    df = cost_frame(sources)
    return [amdahl_split(sources, df)] if not df.empty else []


def unfit_points(sources) -> pd.DataFrame:
    """Whole-model points whose batch does not fit the device, with the reason."""
    df = pd.concat([s.frame for s in sources], ignore_index=True)
    if "fits" not in df:
        return df.iloc[0:0]
    return df[(df["model"] != "") & (df["fits"] == False)][  # noqa: E712
        ["model", "device", "method", "phase", "context", "batch", "tp", "cost_note"]].reset_index(drop=True)
