"""Join quality and hardware into the comparison table; write CSV, Parquet, Markdown and a plot."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

KIND = "alternatives-comparison"
QUALITY_COLUMNS = ["setting", "ppl", "ppl_dense", "ppl_increase", "agreement", "disagreement", "kl_mean",
                   "kept_element_fraction", "kept_v_row_fraction", "tokens"]
FAMILY_STYLE = {"dense": ("black", "*"), "topk": ("tab:gray", "v"), "toptheta": ("tab:red", "o"),
                "toptheta+comp": ("tab:purple", "D"), "topp": ("tab:orange", "^"), "quest": ("tab:blue", "s"),
                "streaming": ("tab:green", "P"), "h2o": ("tab:brown", "X")}


def comparison(costs: pd.DataFrame, quality: pd.DataFrame | None) -> pd.DataFrame:
    """One row per (setting, trace, device): quality (live) beside bytes and time (replay + simulator)."""
    df = costs.copy()
    dense = df[df["family"] == "dense"].set_index(["trace", "device"])
    for c in ("time_s", "bytes_total"):
        ref = dense[c].reindex(pd.MultiIndex.from_frame(df[["trace", "device"]])).to_numpy()
        df[f"{c.split('_')[0]}_reduction_vs_dense"] = ref / df[c].to_numpy()
    if quality is not None:
        q = quality[QUALITY_COLUMNS].rename(columns={"kept_v_row_fraction": "live_kept_v_fraction",
                                                     "kept_element_fraction": "live_kept_element_fraction"})
        df = df.merge(q, on="setting", how="left")
    return df


def markdown(df: pd.DataFrame) -> str:
    """Per trace and device: the settings in family order, quality and cost side by side."""
    order = {f: i for i, f in enumerate(FAMILY_STYLE)}
    lines = []
    for (trace, device), t in df.groupby(["trace", "device"], sort=False):
        t = t.assign(_o=t["family"].map(order)).sort_values(["_o", "k", "p"])
        lines += [f"### {Path(trace).name} on {device} (mean decode step, {int(t['layers'].iloc[0])} layers, "
                  f"context ≈ {t['context_mean'].iloc[0]:.0f})", "",
                  "| setting | KL(dense‖·) | ppl + | disagree | kept V (trace) | K MB | V MB | total MB | time µs | × vs dense |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in t.itertuples():
            kl = f"{r.kl_mean:.4f} | {r.ppl_increase:+.2%} | {r.disagreement:.1%}" if "kl_mean" in t else "– | – | –"
            lines.append(f"| {r.setting} | {kl} | {r.trace_kept_v_fraction:.3f} | {r.bytes_k / 1e6:.3f} | "
                         f"{r.bytes_v / 1e6:.3f} | {r.bytes_total / 1e6:.3f} | {r.time_s * 1e6:.1f} | "
                         f"{r.time_reduction_vs_dense:.2f} |")
        lines.append("")
    return "\n".join(lines)


def plot(df: pd.DataFrame, title: str):
    """Quality (KL, or the replay's output error without a quality run) against K, V, total bytes and
    time on each device; one line per family through its budgets."""
    from matplotlib.figure import Figure

    y = "kl_mean" if "kl_mean" in df and df["kl_mean"].notna().any() else "trace_rel_l2_error"
    devices = list(dict.fromkeys(df["device"]))
    first = df[df["device"] == devices[0]]
    panels = [("bytes_v", first, "V bytes / step (MB)"), ("bytes_k", first, "K bytes / step (MB)"),
              ("bytes_total", first, "total bytes / step (MB)")]
    panels += [("time_s", df[df["device"] == d], f"decode step on {d} (µs)") for d in devices]
    fig = Figure(figsize=(4.0 * len(panels), 3.6))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (x, t, label) in zip(axes, panels):
        scale = 1e6 if x == "time_s" else 1e-6
        for family, f in t.groupby("family", sort=False):
            if family == "dense":   # lossless: a vertical line where its cost lies
                ax.axvline(float(f[x].iloc[0]) * scale, color="black", ls="--", lw=1, label="dense")
                continue
            color, marker = FAMILY_STYLE.get(family, ("tab:cyan", "."))
            f = f.sort_values(x)
            ax.plot(f[x] * scale, f[y], marker=marker, color=color, label=family, lw=1)
        ax.set(xlabel=label, ylabel="KL(dense ‖ method) per token" if y == "kl_mean" else "mean rel. L2 error",
               yscale="log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    return fig
