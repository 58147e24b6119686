"""A report figure: the picture, the table behind it, and where its numbers come from."""

from __future__ import annotations

import io
from dataclasses import dataclass

import pandas as pd
# The object-oriented Figure, not pyplot: no global figure state and no backend switch, so building
# a report inside a notebook leaves the notebook's own plotting alone.
from matplotlib.figure import Figure as MplFigure

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
    fig = MplFigure(figsize=(width * cols, height * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[n_panels:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n_panels])


def files_named(sources) -> str:
    return ", ".join(str(s.path) for s in sources)
