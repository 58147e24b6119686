"""Measured long-context V-row masks: a compact file the studies and the demo read instead of stretching.

A mask-statistics file (safetensors, no pickle) holds decode union masks measured on a long
real trace: for each (method, k, context, layer, KV group, step) the set of V rows the group's
query heads kept, as a packed bitset over the step's context (``np.packbits``). Tensors:
``bits`` [B] uint8 (all masks, concatenated), ``offsets`` [M+1] int64 (mask m is
``bits[offsets[m]:offsets[m+1]]``), and per mask ``context_len``, ``cut``, ``k``, ``layer``,
``kv_group``, ``step``, ``method`` (0 = Top-θ, 1 = top-k) [M] int64. JSON metadata under
``toptheta``: model, trace, source text, calibration and the command.

A study point at context N takes the masks measured at the cut nearest N: within ±1 % of N it
is ``measured``; otherwise those masks are stretched to N (:func:`topθ_hw.study.kept.stretch`)
and the point is ``extrapolated``.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from topθ_hw.errors import UserError
from topθ_hw.study.kept import KeptMasks, kept_fractions

FORMAT = "toptheta-mask-stats"
METHOD_CODES = {"toptheta": 0, "topk": 1}
COLUMNS = ("context_len", "cut", "k", "layer", "kv_group", "step", "method")


@dataclass(frozen=True)
class MaskStats:
    bits: np.ndarray
    offsets: np.ndarray
    columns: dict[str, np.ndarray]
    meta: dict
    path: str

    def masks(self, method: str, k: int, cut: int) -> KeptMasks:
        c = self.columns
        pick = np.flatnonzero((c["method"] == METHOD_CODES[method]) & (c["k"] == k) & (c["cut"] == cut))
        positions = [np.flatnonzero(np.unpackbits(self.bits[self.offsets[m]:self.offsets[m + 1]],
                                                  count=int(c["context_len"][m]))) for m in pick]
        return KeptMasks(positions, c["context_len"][pick])

    def cuts(self, method: str, k: int) -> np.ndarray:
        c = self.columns
        return np.unique(c["cut"][(c["method"] == METHOD_CODES[method]) & (c["k"] == k)])


def write_mask_stats(frame: pd.DataFrame, out, meta: dict) -> Path:
    """Decode KV-group rows (with ``kept_v_mask``, ``context``, ``k``, ``method``) → the file, atomically."""
    from safetensors.numpy import save

    packed = [np.frombuffer(m, np.uint8) for m in frame["kept_v_mask"]]
    tensors = {"bits": np.concatenate(packed), "offsets": np.cumsum([0] + [len(p) for p in packed]).astype(np.int64)}
    renamed = frame.assign(cut=frame["context"], method=frame["method"].map(METHOD_CODES))
    tensors.update({c: renamed[c].to_numpy(np.int64) for c in COLUMNS})
    blob = save(tensors, metadata={"toptheta": json.dumps({"format": FORMAT, **meta}, default=str)})
    out = Path(out)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(blob)
    os.chmod(tmp, 0o644)
    os.replace(tmp, out)
    return out


def load_mask_stats(path) -> MaskStats:
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = json.loads((f.metadata() or {}).get("toptheta", "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own types for a bad header
        raise UserError(f"{path}: not a readable mask-statistics file ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise UserError(f"{path}: field 'format' is {meta.get('format')!r}, expected {FORMAT!r}")
    missing = [k for k in ("bits", "offsets", *COLUMNS) if k not in tensors]
    if missing:
        raise UserError(f"{path}: tensor(s) {missing} missing")
    return MaskStats(tensors["bits"], tensors["offsets"], {c: tensors[c] for c in COLUMNS}, meta, str(path))


def measured_fractions(stats: MaskStats, method: str, k: int, contexts) -> dict:
    """The same result shape as a replay's (``measure_job``), plus a source label per context."""
    if method not in METHOD_CODES or not len(stats.cuts(method, k)):
        have = sorted({(m, int(kk)) for m, code in METHOD_CODES.items()
                       for kk in stats.columns["k"][stats.columns["method"] == code]})
        raise UserError(f"{stats.path}: holds no masks for {method} at k = {k}; it has (method, k) {have}")
    cuts = stats.cuts(method, k)
    fractions, sources = {}, {}
    for n in contexts:
        nearest = int(cuts[np.argmin(np.abs(np.log(cuts / n)))])
        fractions[str(n)] = kept_fractions(stats.masks(method, k, nearest), n)
        sources[str(n)] = "measured" if abs(nearest - n) <= 0.01 * n else "extrapolated"
    return {"measured_range": [int(cuts.min()), int(cuts.max())], "fractions": fractions, "sources": sources}
