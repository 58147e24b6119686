"""Read a trace store lazily, validating everything a replay relies on."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import zarr

from topθ_hw.errors import TraceError
from topθ_hw.store.meta import FORMAT_NAME, FORMAT_VERSION, STORAGE_DTYPES, SequenceInfo, TraceMeta
from topθ_hw.store.writer import PARTIAL_PREFIX, array_crc32


@dataclass(frozen=True)
class LayerQKV:
    """One layer of one sequence. Row t attends to keys 0..t (or its sliding window)."""

    q: np.ndarray          # [H_q, T, d] float32 (or storage dtype when raw)
    k: np.ndarray          # [H_kv, T, d]
    v: np.ndarray          # [H_kv, T, d]
    positions: np.ndarray  # [T] int64
    scaling: float
    sliding_window: int | None
    decode_every: int = 1  # decode rows whose step is not a multiple of this hold no real query


def widen(a: np.ndarray, dtype: str) -> np.ndarray:
    """Storage array -> float32, exactly (bf16 bits shifted into the high half of a float32)."""
    if dtype == "bfloat16":
        return (a.astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float32)


class SequenceReader:
    def __init__(self, trace: "Trace", name: str):
        self.trace, self.name = trace, name
        self.where = f"{trace.path}/{name}"
        try:
            self.group = zarr.open_group(trace.path / name, mode="r")
        except Exception as exc:  # zarr raises several types for a broken group
            raise TraceError(f"{self.where}: cannot open sequence group ({exc})") from exc
        attrs = dict(self.group.attrs)
        if not attrs.get("complete"):
            raise TraceError(f"{self.where}: sequence is not marked complete; the capture was interrupted")
        try:
            self.info = SequenceInfo(name=name, source=attrs["source"], prompt_len=int(attrs["prompt_len"]),
                                     n_rows=int(attrs["n_rows"]), token_ids=list(attrs["token_ids"]),
                                     capture_time=attrs["capture_time"], dtype=attrs["dtype"],
                                     decode_every=int(attrs.get("decode_every", 1)))
            self.crc32 = dict(attrs["crc32"])
        except (KeyError, TypeError, ValueError) as exc:
            raise TraceError(f"{self.where}: sequence attributes lack or mistype field {exc}") from exc
        if not 1 <= self.info.prompt_len <= self.info.n_rows:
            raise TraceError(f"{self.where}: field 'prompt_len' is {self.info.prompt_len}, expected 1..n_rows "
                             f"({self.info.n_rows})")

    @property
    def source(self) -> str:
        return self.info.source

    @property
    def prompt_len(self) -> int:
        return self.info.prompt_len

    @property
    def n_tokens(self) -> int:
        """Rows stored per layer: prompt tokens plus decode steps."""
        return self.info.n_rows

    @property
    def n_decode_steps(self) -> int:
        return self.info.n_decode_steps

    @property
    def token_ids(self) -> list[int]:
        return self.info.token_ids

    def _array(self, layer: int, kind: str, expected_heads: int) -> np.ndarray:
        meta, key = self.trace.meta, f"layer_{layer:02d}/{kind}"
        where = f"{self.where} layer {layer} {kind}"
        try:
            data = self.group[key][...]
        except KeyError as exc:
            if not (self.trace.path / self.name / key / "zarr.json").exists():
                raise TraceError(f"{where}: array missing") from exc
            raise TraceError(f"{where}: array metadata {key}/zarr.json is invalid (lacks {exc})") from exc
        except Exception as exc:
            raise TraceError(f"{where}: unreadable, store corrupt or truncated ({exc})") from exc
        expected_shape = (expected_heads, self.info.n_rows, meta.head_dim)
        if data.shape != expected_shape:
            raise TraceError(f"{where}: shape {data.shape}, expected {expected_shape}")
        if data.dtype != STORAGE_DTYPES[meta.dtype]:
            raise TraceError(f"{where}: dtype {data.dtype}, expected {STORAGE_DTYPES[meta.dtype]} ({meta.dtype})")
        if array_crc32(data) != self.crc32.get(key):
            raise TraceError(f"{where}: checksum mismatch; the store is corrupt or truncated "
                             "(missing chunks read back as zeros)")
        return data

    def layer(self, layer: int, raw: bool = False) -> LayerQKV:
        """Q, K, V of one layer as float32 (``raw=True``: storage dtype, bf16 as uint16 bits)."""
        meta = self.trace.meta
        if layer not in meta.captured_layers:
            raise TraceError(f"{self.where}: layer {layer} was not captured; the store holds layers "
                             f"{meta.captured_layers}")
        arrays = {kind: self._array(layer, kind, h) for kind, h in
                  (("q", meta.n_q_heads), ("k", meta.n_kv_heads), ("v", meta.n_kv_heads))}
        if not raw:
            arrays = {kind: widen(a, meta.dtype) for kind, a in arrays.items()}
            for kind, a in arrays.items():
                if not np.isfinite(a).all():
                    bad = int((~np.isfinite(a)).sum())
                    raise TraceError(f"{self.where} layer {layer} {kind}: {bad} NaN/Inf values")
        positions = self._positions()
        return LayerQKV(positions=positions, scaling=float(meta.scalings[layer]),
                        sliding_window=meta.sliding_windows[layer], decode_every=self.info.decode_every, **arrays)

    def _positions(self) -> np.ndarray:
        try:
            positions = np.asarray(self.group["positions"][...], dtype=np.int64)
        except Exception as exc:  # zarr raises several types for a missing or broken chunk
            raise TraceError(f"{self.where} positions: missing or unreadable ({exc})") from exc
        if positions.shape != (self.info.n_rows,) or (positions < 0).any():
            raise TraceError(f"{self.where} positions: shape {positions.shape}, expected ({self.info.n_rows},) "
                             "non-negative positions")
        return positions

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in (self.trace.path / self.name).rglob("*") if p.is_file())


class Trace:
    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise TraceError(f"{self.path}: no trace store here (expected a directory written by toptheta capture)")
        try:
            attrs = json.loads((self.path / "zarr.json").read_text())["attributes"]
        except (OSError, ValueError, KeyError) as exc:
            raise TraceError(f"{self.path}/zarr.json: missing or unreadable root metadata ({exc})") from exc
        if attrs.get("format") != FORMAT_NAME:
            raise TraceError(f"{self.path}: field 'format' is {attrs.get('format')!r}, expected {FORMAT_NAME!r}")
        if attrs.get("format_version") != FORMAT_VERSION:
            raise TraceError(f"{self.path}: field 'format_version' is {attrs.get('format_version')!r}, "
                             f"expected {FORMAT_VERSION}")
        try:
            self.meta = TraceMeta.from_json(attrs["model"], str(self.path))
        except (KeyError, ValueError, TypeError) as exc:
            raise TraceError(f"{self.path}: field 'model' is invalid ({exc})") from exc

    @cached_property
    def sequences(self) -> list[str]:
        """Names of complete sequences (partial ones are listed by :attr:`partial_sequences`)."""
        return sorted(p.name for p in self.path.iterdir()
                      if p.is_dir() and p.name.startswith("seq_"))

    @property
    def partial_sequences(self) -> list[str]:
        return sorted(p.name.removeprefix(PARTIAL_PREFIX) for p in self.path.iterdir()
                      if p.is_dir() and p.name.startswith(PARTIAL_PREFIX))

    def sequence(self, name: str) -> SequenceReader:
        if name in self.partial_sequences and name not in self.sequences:
            raise TraceError(f"{self.path}/{name}: sequence is incomplete (capture was interrupted); "
                             "it is refused. Re-run the capture for it.")
        if name not in self.sequences:
            raise TraceError(f"{self.path}: no sequence {name!r}; it holds {self.sequences}")
        return SequenceReader(self, name)

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())

    def content_id(self) -> str:
        """Changes whenever the data does: a hash of the root metadata and, per complete sequence,
        its name and attributes (which hold the CRC32 of every Q/K/V array, its tokens and
        capture time) and its positions. Cheap: no Q/K/V chunk is read."""
        h = hashlib.sha256((self.path / "zarr.json").read_bytes())
        for name in self.sequences:
            h.update(name.encode())
            for file in [self.path / name / "zarr.json", *sorted((self.path / name / "positions").rglob("*"))]:
                if file.is_file():
                    h.update(file.relative_to(self.path).as_posix().encode() + file.read_bytes())
        return h.hexdigest()[:16]


def open_trace(path) -> Trace:
    """Open a trace store; raises :class:`TraceError` naming what is wrong."""
    return Trace(path)
