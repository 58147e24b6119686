"""Write a trace store: one zarr v3 group per sequence, finalised atomically.

A sequence is written under ``_partial_<name>/`` and renamed to ``<name>/`` only when
capture finished, after every array's CRC32 was recorded; so a crash leaves earlier
sequences intact and the partial one visible (and refused) on read.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import zlib
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from topθ_hw import __version__
from topθ_hw.errors import TraceError
from topθ_hw.store.meta import FORMAT_NAME, FORMAT_VERSION, STORAGE_DTYPES, TraceMeta

CHUNK_ROWS = 1024  # rows per chunk; one chunk holds one head of one layer (fewer, larger files)
PARTIAL_PREFIX = "_partial_"


def to_storage(x, dtype: str) -> np.ndarray:
    """torch or numpy array in compute dtype -> numpy array in storage dtype, bit-exact."""
    if hasattr(x, "detach"):  # torch tensor; imported lazily so replay needs no torch
        x = x.detach().cpu().contiguous()
        torch_dtype = str(x.dtype).removeprefix("torch.")
        if torch_dtype != dtype:
            raise TraceError(f"captured tensor has dtype {torch_dtype}, store expects {dtype}")
        if dtype == "bfloat16":
            import torch
            return x.view(torch.int16).numpy().view(np.uint16)
        return x.numpy()
    x = np.asarray(x)
    if x.dtype != STORAGE_DTYPES[dtype]:
        raise TraceError(f"array has dtype {x.dtype}, store of {dtype} expects {STORAGE_DTYPES[dtype]}")
    return x


def array_crc32(a: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(a).tobytes())


class SequenceWriter:
    """Appends rows per layer; buffers until a chunk is full so appends stay cheap."""

    def __init__(self, root: Path, name: str, meta: TraceMeta, source: str,
                 prompt_token_ids: list[int], max_rows: int, decode_every: int = 1):
        self.meta, self.name, self.source, self.decode_every = meta, name, source, int(decode_every)
        self.prompt_len = len(prompt_token_ids)
        self.token_ids = [int(t) for t in prompt_token_ids]
        self.partial_path = root / f"{PARTIAL_PREFIX}{name}"
        self.final_path = root / name
        if self.final_path.exists():
            raise TraceError(f"{self.final_path}: sequence already exists")
        if self.partial_path.exists():
            shutil.rmtree(self.partial_path)  # left by an earlier crash; never readable
        self.group = zarr.open_group(self.partial_path, mode="w")
        self.group.attrs.update({"complete": False, "source": source})
        self.layers = meta.captured_layers
        self.rows_written = {l: 0 for l in self.layers}
        self.buffers = {l: {"q": [], "k": [], "v": []} for l in self.layers}
        self.arrays = {l: self._create_layer(l, max_rows) for l in self.layers}

    def _create_layer(self, layer: int, max_rows: int) -> dict:
        m = self.meta
        storage = STORAGE_DTYPES[m.dtype]
        compressor = BloscCodec(cname="zstd", clevel=5, shuffle="shuffle", typesize=storage.itemsize)
        heads = {"q": m.n_q_heads, "k": m.n_kv_heads, "v": m.n_kv_heads}
        return {
            kind: self.group.create_array(
                f"layer_{layer:02d}/{kind}", shape=(h, max_rows, m.head_dim),
                chunks=(1, CHUNK_ROWS, m.head_dim), dtype=storage, compressors=compressor,
                fill_value=0, dimension_names=("head", "row", "dim"))
            for kind, h in heads.items()
        }

    def append(self, layer: int, q, k, v) -> None:
        """Append t rows to ``layer``: q [H_q, t, d], k and v [H_kv, t, d]. Layers outside the
        store's captured subset are ignored, so a hook can call this for every layer."""
        if layer not in self.buffers:
            return
        m = self.meta
        arrays = {"q": to_storage(q, m.dtype), "k": to_storage(k, m.dtype), "v": to_storage(v, m.dtype)}
        heads = {"q": m.n_q_heads, "k": m.n_kv_heads, "v": m.n_kv_heads}
        t = arrays["q"].shape[1] if arrays["q"].ndim == 3 else -1
        for kind, a in arrays.items():
            if a.shape != (heads[kind], t, m.head_dim):
                raise TraceError(f"{self.name} layer {layer} {kind}: shape {a.shape}, "
                                 f"expected ({heads[kind]}, {t}, {m.head_dim})")
            self.buffers[layer][kind].append(a)
        if sum(a.shape[1] for a in self.buffers[layer]["q"]) >= CHUNK_ROWS:
            self._flush(layer)

    def _flush(self, layer: int) -> None:
        buf = self.buffers[layer]
        if not buf["q"]:
            return
        start = self.rows_written[layer]
        for kind in ("q", "k", "v"):
            block = np.concatenate(buf[kind], axis=1)
            stop = start + block.shape[1]
            arr = self.arrays[layer][kind]
            if stop > arr.shape[1]:
                arr.resize((arr.shape[0], max(stop, 2 * arr.shape[1]), arr.shape[2]))
            arr[:, start:stop, :] = block
            buf[kind].clear()
        self.rows_written[layer] = stop

    def set_token_ids(self, token_ids) -> None:
        self.token_ids = [int(t) for t in token_ids]

    def finalise(self) -> None:
        for layer in self.layers:
            self._flush(layer)
        n_rows = self.rows_written[self.layers[0]]
        if n_rows == 0 or any(r != n_rows for r in self.rows_written.values()):
            raise TraceError(f"{self.name}: layers hold different row counts {self.rows_written}")
        if n_rows < self.prompt_len:
            raise TraceError(f"{self.name}: {n_rows} rows written, fewer than prompt_len={self.prompt_len}")
        checksums = {}
        for layer, arrays in self.arrays.items():
            for kind, arr in arrays.items():
                arr.resize((arr.shape[0], n_rows, arr.shape[2]))
                checksums[f"layer_{layer:02d}/{kind}"] = array_crc32(arr[...])
        self.group.create_array("positions", data=np.arange(n_rows, dtype=np.int64))
        self.group.attrs.update({
            "complete": True, "source": self.source, "prompt_len": self.prompt_len,
            "n_rows": n_rows, "token_ids": self.token_ids, "dtype": self.meta.dtype,
            "capture_time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "package_version": __version__, "crc32": checksums, "decode_every": self.decode_every,
        })
        os.replace(self.partial_path, self.final_path)  # the atomic step

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.finalise()
        return False  # on error the partial group stays, refused on read


class TraceWriter:
    """Create (or extend, with ``append=True``) a trace store for one model."""

    def __init__(self, path, meta: TraceMeta, overwrite: bool = False, append: bool = False):
        self.path, self.meta = Path(path), meta
        if self.path.exists():
            if overwrite:
                shutil.rmtree(self.path)
            elif not append:
                raise TraceError(f"{self.path}: output exists; pass --overwrite to replace it")
        if self.path.exists():  # append: the store must hold the same model
            from topθ_hw.store.reader import open_trace
            existing = open_trace(self.path).meta
            if existing.model_file_sha256 != meta.model_file_sha256 or existing.dtype != meta.dtype:
                raise TraceError(f"{self.path}: holds {existing.model_id} ({existing.dtype}); cannot append "
                                 f"{meta.model_id} ({meta.dtype})")
        else:
            root = zarr.open_group(self.path, mode="w")
            root.attrs.update({"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                               "model": meta.to_json()})

    def next_name(self) -> str:
        taken = {p.name.removeprefix(PARTIAL_PREFIX) for p in self.path.iterdir() if p.is_dir()}
        i = 0
        while f"seq_{i:04d}" in taken:
            i += 1
        return f"seq_{i:04d}"

    def sequence(self, source: str, prompt_token_ids, max_rows: int, name: str | None = None,
                 decode_every: int = 1) -> SequenceWriter:
        """A new sequence; ``decode_every = N`` records that only every Nth decode step's queries are real."""
        return SequenceWriter(self.path, name or self.next_name(), self.meta, source,
                              list(prompt_token_ids), max_rows, decode_every)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
