"""A report figure: the picture, the table behind it, and where its numbers come from."""

from __future__ import annotations

import io
from dataclasses import dataclass

import pandas as pd
# The object-oriented Figure, not pyplot: no global figure state and no backend switch, so building
# a report inside a notebook leaves the notebook's own plotting alone.
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter, NullLocator

PROVENANCE = ("measured", "simulated", "datasheet")


@dataclass
class Figure:
    name: str             # file stem for the PNG and CSV: "kept_fraction_by_layer"
    title: str
    caption: str          # what is plotted and how to read it
    provenance: str       # "measured", "simulated", "datasheet" or a combination ("simulated + datasheet")
    source: str           # the files and formulas the numbers come from
    png: bytes
    table: pd.DataFrame


def png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return buf.getvalue()


def subplots(n_panels: int, width: float = 4.2, height: float = 3.2, cols: int = 3):
    cols = min(cols, n_panels)
    rows = -(-n_panels // cols)
    # Constrained layout keeps titles, tick labels and the figure legend from running into each other.
    fig = MplFigure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[n_panels:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n_panels])


def plain(value, _pos=None) -> str:
    """A label a reader reads at a glance: 4096, 0.5, 5,910 (never 4×10³ or 5.91e+03)."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def ticks_at(ax, values, axis: str = "x") -> None:
    """Label a swept axis at exactly the values swept (log or linear), in plain numbers."""
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_locator(FixedLocator(sorted(set(float(v) for v in values))))
    target.set_major_formatter(FuncFormatter(plain))
    target.set_minor_locator(NullLocator())


def readable_log(ax, axis: str = "y") -> None:
    """A log axis with 1-2-3-5, 1-2-5 or decade ticks (as its span allows) in plain numbers and
    unlabelled minor ticks."""
    target = ax.xaxis if axis == "x" else ax.yaxis
    low, high = ax.get_xlim() if axis == "x" else ax.get_ylim()
    span = high / low if low > 0 else float("inf")
    subs = (1.0, 2.0, 3.0, 5.0) if span <= 10 else (1.0, 2.0, 5.0) if span <= 1000 else (1.0,)
    target.set_major_locator(LogLocator(base=10, subs=subs))
    target.set_major_formatter(FuncFormatter(plain))
    target.set_minor_formatter(NullFormatter())


def legend_below(fig, axes) -> None:
    """One legend for all panels, below them, never on the data."""
    seen = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
        if ax.get_legend():
            ax.get_legend().remove()
    if seen:
        fig.legend(list(seen.values()), list(seen), loc="outside lower center", ncol=min(4, len(seen)),
                   fontsize=8, frameon=False)


def files_named(sources) -> str:
    return ", ".join(str(s.path) for s in sources)
