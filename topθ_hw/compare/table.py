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
                  "| setting | KL(dense‖·) | ppl + | disagree | kept V (trace) | K MB | V MB | total MB | time µs "
                  "| × vs dense |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in t.itertuples():
            kl = (f"{r.kl_mean:.4f} | {r.ppl_increase:+.2%} | {r.disagreement:.1%}" if "kl_mean" in t
                  else "– | – | –")
            lines.append(f"| {r.setting} | {kl} | {r.trace_kept_v_fraction:.3f} | {r.bytes_k / 1e6:.3f} | "
                         f"{r.bytes_v / 1e6:.3f} | {r.bytes_total / 1e6:.3f} | {r.time_s * 1e6:.1f} | "
                         f"{r.time_reduction_vs_dense:.2f} |")
        lines.append("")
    return "\n".join(lines)


def plot(df: pd.DataFrame, title: str):
    """Quality (KL, or the replay's output error without a quality run) against V, K, total bytes and
    decode time on each device: one row of panels per trace, one line per family through its budgets."""
    from matplotlib.figure import Figure

    y = "kl_mean" if "kl_mean" in df and df["kl_mean"].notna().any() else "trace_rel_l2_error"
    devices, traces = list(dict.fromkeys(df["device"])), list(dict.fromkeys(df["trace"]))
    panels = [("bytes_v", devices[0], "V bytes / step (MB)"), ("bytes_k", devices[0], "K bytes / step (MB)"),
              ("bytes_total", devices[0], "total bytes / step (MB)")]
    panels += [("time_s", d, f"decode step on {d} (µs)") for d in devices]
    fig = Figure(figsize=(3.6 * len(panels), 3.4 * len(traces)), layout="constrained")
    grid = fig.subplots(len(traces), len(panels), squeeze=False)
    for axes, trace in zip(grid, traces):
        for ax, (x, device, label) in zip(axes, panels):
            t = df[(df["trace"] == trace) & (df["device"] == device)]
            scale = 1e6 if x == "time_s" else 1e-6
            for family, f in t.groupby("family", sort=False):
                if family == "dense":   # lossless: a vertical line where its cost lies
                    ax.axvline(float(f[x].iloc[0]) * scale, color="black", ls="--", lw=1, label="dense")
                    continue
                color, marker = FAMILY_STYLE.get(family, ("tab:cyan", "."))
                f = f.sort_values(x)
                ax.plot(f[x] * scale, f[y], marker=marker, color=color, label=family, lw=1)
            ax.set(xlabel=label, yscale="log", title=f"{Path(trace).name}, context ≈ {t['context_mean'].iloc[0]:.0f}")
            ax.title.set_fontsize(8)
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("KL(dense ‖ method) per token" if y == "kl_mean" else "mean rel. L2 error")
    grid[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    return fig
