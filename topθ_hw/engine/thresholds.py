"""The Top-θ threshold artifact: θ[l, h, n] and the offline SDC table, with lookup and checks.

Stored as safetensors (no pickle): tensors ``lengths`` [N] (calibrated causal lengths n),
``theta``/``theta_std``/``sdc_dropped_mass`` [L, H, N] float64 (NaN where a length was not
calibrated for that layer and head: dense rows, n ≤ k), ``count`` [L, H, N] int64 (calibration
rows aggregated), ``layer_k`` [L]; JSON metadata under the header key ``toptheta``.

Lookup of a length n not calibrated (selectable, its effect measurable):
- ``nearest``: the nearest calibrated n (ties to the shorter), as the reference code does;
- ``interp``: linear interpolation between the calibrated lengths around n.
Past the longest calibrated n (``extrapolate``): ``hold`` keeps its value; ``logfit`` fits
θ = a + b·ln n (pre-softmax, logit units) or ln θ = a + b·ln n (post-softmax, probabilities)
by least squares over the calibrated lengths in the upper half [n_max/2, n_max].
Below the shortest calibrated n both hold its value.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from topθ_hw.errors import UserError
from topθ_hw.outputs import write_bytes_atomic

FORMAT = "toptheta-thresholds"
FORMAT_VERSION = 1
LOOKUPS = ("nearest", "interp")
EXTRAPOLATIONS = ("hold", "logfit")


@dataclass
class ThresholdTable:
    lengths: np.ndarray            # [N] int64, increasing
    theta: np.ndarray              # [L, H, N] float64
    theta_std: np.ndarray          # [L, H, N]
    count: np.ndarray              # [L, H, N] int64
    sdc_dropped_mass: np.ndarray   # [L, H, N] mean dropped probability mass under θ
    layer_k: np.ndarray            # [L] int64
    meta: dict                     # model_id, model_file_sha256, placement, sigma, trace, sequences, ...
    path: str = "<memory>"

    @property
    def placement(self) -> str:
        return self.meta["placement"]

    def check_against(self, trace_meta, placement: str | None = None, trace_path: str = "") -> None:
        """Refuse thresholds calibrated for another model, shape or placement."""
        where = f"{self.path}"
        if self.meta["model_id"] != trace_meta.model_id or \
                self.meta["model_file_sha256"] != trace_meta.model_file_sha256:
            raise UserError(
                f"{where}: field 'model_id'/'model_file_sha256' is {self.meta['model_id']!r} "
                f"({self.meta['model_file_sha256'][:12]}…), but trace {trace_path} holds "
                f"{trace_meta.model_id!r} ({trace_meta.model_file_sha256[:12]}…); calibrate on that model")
        expected = (trace_meta.n_layers, trace_meta.n_q_heads)
        if self.theta.shape[:2] != expected:
            raise UserError(f"{where}: field 'theta' has [layers, heads] {self.theta.shape[:2]}, "
                            f"expected {expected}")
        if placement is not None and placement != self.placement:
            raise UserError(f"{where}: field 'placement' is {self.placement!r}, but {placement!r} "
                            "was asked for; thresholds are in different units per placement")

    def lookup(self, table: np.ndarray, layer: int, n: np.ndarray, method: str = "interp",
               extrapolate: str = "hold", log_values: bool = False) -> np.ndarray:
        """Values of ``table[layer]`` at lengths n → [H, len(n)] (NaN for a head with no data)."""
        if method not in LOOKUPS or extrapolate not in EXTRAPOLATIONS:
            raise UserError(f"lookup must be one of {LOOKUPS} and extrapolate one of {EXTRAPOLATIONS}, "
                            f"got {method!r}/{extrapolate!r}")
        n = np.asarray(n, np.float64)
        out = np.full((table.shape[1], n.size), np.nan)
        for h in range(table.shape[1]):
            ok = ~np.isnan(table[layer, h])
            if ok.any():
                out[h] = lookup_1d(self.lengths[ok].astype(np.float64), table[layer, h, ok], n,
                                   method, extrapolate, log_values)
        return out

    def thresholds_for_rows(self, layer, n, method="interp", extrapolate="hold"):
        return self.lookup(self.theta, layer, n, method, extrapolate, self.placement == "post")

    def dropped_mass_for_rows(self, layer, n, method="interp"):
        return self.lookup(self.sdc_dropped_mass, layer, n, method, "hold")

    def save(self, path) -> Path:
        from safetensors.numpy import save
        path = Path(path)
        tensors = {"lengths": self.lengths, "theta": self.theta, "theta_std": self.theta_std,
                   "count": self.count, "sdc_dropped_mass": self.sdc_dropped_mass, "layer_k": self.layer_k}
        meta = {k: v for k, v in self.meta.items() if k != "crc32"}
        meta = {**meta, "format": FORMAT, "format_version": FORMAT_VERSION}
        meta["crc32"] = checksums(meta, tensors)
        blob = save({k: np.ascontiguousarray(v) for k, v in tensors.items()},
                    metadata={"toptheta": json.dumps(meta, sort_keys=True, default=str)})
        return write_bytes_atomic(path, blob)


def lookup_1d(xs, ys, n, method, extrapolate, log_values):
    """One head's lookup; see the module docstring."""
    if method == "nearest":
        idx = np.clip(np.searchsorted(xs, n), 1, max(len(xs) - 1, 1))
        left = np.maximum(idx - 1, 0)
        closer_left = (n - xs[left]) <= (xs[idx] - n)
        out = np.where(closer_left, ys[left], ys[idx])
    else:
        out = np.interp(n, xs, ys)
    beyond = n > xs[-1]
    if extrapolate == "logfit" and beyond.any() and len(xs) >= 2:
        top = xs >= xs[-1] / 2
        fit_y = np.log(np.maximum(ys[top], 1e-30)) if log_values else ys[top]
        b, a = np.polyfit(np.log(xs[top]), fit_y, 1) if top.sum() >= 2 else (0.0, fit_y[-1])
        pred = a + b * np.log(n[beyond])
        out[beyond] = np.exp(pred) if log_values else pred
    return out


def load_thresholds(path) -> ThresholdTable:
    """Read an artifact written by :meth:`ThresholdTable.save`; errors name the file and field."""
    from safetensors import safe_open
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such threshold file (make one with `toptheta calibrate`)")
    try:
        with safe_open(str(path), framework="numpy") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise UserError(f"{path}: not a readable safetensors threshold file ({exc})") from exc
    try:
        meta = json.loads(header["toptheta"])
    except (KeyError, ValueError):
        raise UserError(f"{path}: header field 'toptheta' missing or not JSON; not a toptheta threshold file") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path}: header field 'toptheta' is not a JSON object")
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path}: field 'format'/'format_version' is {meta.get('format')!r}/"
                        f"{meta.get('format_version')!r}, expected {FORMAT!r}/{FORMAT_VERSION}")
    for key in ("model_id", "model_file_sha256", "placement", "sigma", "sequences"):
        if key not in meta:
            raise UserError(f"{path}: metadata lacks field {key!r}")
    needed = ("lengths", "theta", "theta_std", "count", "sdc_dropped_mass", "layer_k")
    missing = [k for k in needed if k not in tensors]
    if missing:
        raise UserError(f"{path}: tensor(s) {missing} missing")
    if "crc32" in meta and meta["crc32"] != checksums(meta, tensors):  # artifacts before checksums lack it
        raise UserError(f"{path}: checksum mismatch (field 'crc32'); the file is damaged")
    check_artifact(path, meta, tensors)
    return ThresholdTable(meta=meta, path=str(path), **{k: tensors[k] for k in needed})


def checksums(meta: dict, tensors: dict) -> dict:
    """CRC32 of every tensor's bytes and of the metadata (without this field), as the trace store keeps."""
    body = json.dumps({k: v for k, v in meta.items() if k != "crc32"}, sort_keys=True, default=str)
    out = {name: zlib.crc32(np.ascontiguousarray(t).tobytes()) for name, t in sorted(tensors.items())}
    return {**out, "meta": zlib.crc32(body.encode())}


def check_artifact(path, meta: dict, t: dict) -> None:
    """Fields and tensors a lookup relies on: placement, shapes, finite θ, k ≥ 1 (NaN marks a length
    that was not calibrated for a head; ±inf is never a threshold)."""
    if meta["placement"] not in ("pre", "post"):
        raise UserError(f"{path}: field 'placement' is {meta['placement']!r}, expected 'pre' or 'post'")
    theta, lengths = t["theta"], t["lengths"]
    if theta.ndim != 3 or lengths.ndim != 1 or theta.shape[2] != lengths.size or not lengths.size:
        raise UserError(f"{path}: tensor 'theta' has shape {theta.shape} and 'lengths' {lengths.shape}, "
                        "expected [layers, heads, N] and [N] with N ≥ 1")
    for name in ("theta_std", "count", "sdc_dropped_mass"):
        if t[name].shape != theta.shape:
            raise UserError(f"{path}: tensor {name!r} has shape {t[name].shape}, expected {theta.shape}")
    if t["layer_k"].shape != (theta.shape[0],):
        raise UserError(f"{path}: tensor 'layer_k' has shape {t['layer_k'].shape}, expected ({theta.shape[0]},)")
    for name in ("theta", "theta_std", "sdc_dropped_mass"):
        if t[name].dtype.kind != "f" or np.isinf(t[name]).any():
            raise UserError(f"{path}: tensor {name!r} holds ±inf or is not floating point; expected finite "
                            "values (NaN only where a length was not calibrated)")
    if lengths.dtype.kind not in "iu" or (np.diff(lengths) <= 0).any() or lengths[0] < 1:
        raise UserError(f"{path}: tensor 'lengths' must be increasing integers ≥ 1")
    if t["layer_k"].dtype.kind not in "iu" or (t["layer_k"] < 1).any():
        raise UserError(f"{path}: tensor 'layer_k' must hold integers ≥ 1")
