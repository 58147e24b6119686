"""Read the files a report is built from, sorted by what they are.

Parquet tables are recognised by their ``kind`` metadata (``engine-stats``, ``sim-results``,
``study-results``, ``quality``); a ``.safetensors`` file is a threshold artifact from
``toptheta calibrate``. Anything else is an error naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from topθ_hw.errors import UserError
from topθ_hw.tables import read_table

TABLE_KINDS = ("engine-stats", "sim-results", "study-results", "quality", "quality-layers",
               "alternatives-comparison")


@dataclass
class Source:
    """One input file: its path, its table (or threshold arrays) and its metadata."""

    path: Path
    kind: str
    meta: dict
    frame: pd.DataFrame | None = None
    arrays: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.path.name


@dataclass
class Inputs:
    sources: list[Source]

    def of_kind(self, kind: str) -> list[Source]:
        return [s for s in self.sources if s.kind == kind]


def load_inputs(paths) -> Inputs:
    if not paths:
        raise UserError("no results files given; pass study results, engine statistics, "
                        "simulation results, quality tables or threshold artifacts")
    return Inputs([_load_one(Path(p)) for p in paths])


def _load_one(path: Path) -> Source:
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        return _load_thresholds(path)
    if path.suffix != ".parquet":
        raise UserError(f"{path}: expected a .parquet table or a .safetensors threshold artifact")
    frame, meta = read_table(path)  # checks the file, its metadata and the columns its kind needs
    kind = meta.get("kind")
    if kind not in TABLE_KINDS:
        raise UserError(f"{path}: field 'kind' is {kind!r}, expected one of {list(TABLE_KINDS)}")
    return Source(path=path, kind=kind, meta=meta, frame=frame)


def _load_thresholds(path: Path) -> Source:
    """θ[layer, head, n] and metadata of a calibration artifact (the engine's loader; no pickle)."""
    from topθ_hw.engine.thresholds import load_thresholds

    table = load_thresholds(path)
    return Source(path=path, kind="thresholds", meta=table.meta,
                  arrays={"theta": table.theta, "lengths": table.lengths, "layer_k": table.layer_k})
