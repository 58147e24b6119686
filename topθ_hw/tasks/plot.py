"""Task accuracy against the decode V-row fraction kept, one marker per setting (per length)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from topθ_hw.quality.plot import save_figure


def plot_accuracy(summary: pd.DataFrame, path: Path, ylabel: str, title: str, by: str | None = None) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(summary.groupby(by, sort=True)) if by else [(None, summary)]
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 4), sharey=True, squeeze=False)
    for ax, (value, group) in zip(axes[0], groups):
        for _, r in group.iterrows():
            ax.scatter(r["kept_v_row_fraction"], 100 * r["accuracy"], s=30, label=r["setting"],
                       marker="s" if r["family"] == "dense" else "o")
        ax.axvline(1 / 3, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("kept V rows per KV group, decode (dotted: 3x fewer)")
        ax.set_xlim(0, 1.05)
        ax.set_ylim(-5, 105)
        ax.legend(fontsize=6, loc="lower right")
        ax.set_title(f"{by} {value}" if by else "", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel(f"{ylabel} (%)")
    return save_figure(fig, path, title)
