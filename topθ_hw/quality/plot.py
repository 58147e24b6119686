"""The trade-off figure: quality loss against the kept fraction, one line per variant across k."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

PANELS = (("ppl_increase", "perplexity increase (%)"), ("disagreement", "next-token disagreement (%)"))
FRACTIONS = (("kept_element_fraction", "kept attention elements, prefill"),
             ("kept_v_row_fraction", "kept V rows per KV group, decode"))


def plot_tradeoff(summary: pd.DataFrame, path: Path, title: str) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharex="col", sharey="row")
    sparse = summary[summary["family"] != "dense"]
    for row, (metric, ylabel) in enumerate(PANELS):
        for col, (fraction, xlabel) in enumerate(FRACTIONS):
            ax = axes[row, col]
            for variant, group in sparse.groupby("variant", sort=False):
                group = group.sort_values("k")
                style = "--" if variant == "topk" else "-"
                ax.plot(group[fraction], 100 * group[metric], style, marker="o", ms=4, label=variant)
                for _, r in group.iterrows():
                    ax.annotate(str(r["k"]), (r[fraction], 100 * r[metric]), fontsize=6,
                                xytext=(2, 2), textcoords="offset points")
            ax.axhline(1.0, color="grey", lw=0.8, ls=":")
            ax.set_xscale("log")
            ax.set_yscale("symlog", linthresh=1.0)
            ax.grid(alpha=0.3, which="both")
            if row == 1:
                ax.set_xlabel(xlabel)
            if col == 0:
                ax.set_ylabel(ylabel)
    axes[0, 0].legend(fontsize=7, title="variant (labels: k)", title_fontsize=7)
    return save_figure(fig, path, title)


def save_figure(fig, path: Path, title: str) -> Path:
    """Title, tight layout and an atomic PNG write; the figure is closed."""
    import matplotlib.pyplot as plt

    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path
