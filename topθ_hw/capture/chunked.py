"""Long-context capture: the prompt in chunks through the KV cache, a decode stride, a disk check.

A prompt of n tokens is run as ⌈n / chunk⌉ forward passes that each append ``chunk`` tokens to
the cache (``prefill_chunks``), so the largest transient is one chunk's activations and its
``chunk × n`` attention block, never ``n × n``; every pass hands the hook its new Q/K/V rows,
which the store appends as they come. The rows are the same as one-shot prefill up to the
rounding of a different summation order (tests/test_capture_long.py bounds it).

``DecodeStride`` keeps every Nth decode step's queries: K and V of every generated token are
still stored (later steps attend to them), the queries of the other steps are stored as zeros
and the sequence says ``decode_every = N``; replay skips those rows.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from topθ_hw.errors import UserError
from topθ_hw.store.meta import STORAGE_DTYPES

DISK_MARGIN = 1.1  # bytes needed = raw (uncompressed) size × this; compression only ever helps


def prefill_chunks(n_tokens: int, chunk_tokens: int | None) -> list[tuple[int, int]]:
    """[start, stop) token ranges of the prefill passes (one pass when ``chunk_tokens`` is None)."""
    if chunk_tokens is None or chunk_tokens >= n_tokens:
        return [(0, n_tokens)]
    if chunk_tokens < 1:
        raise UserError(f"--chunk-tokens is {chunk_tokens}, expected at least 1")
    return [(s, min(s + chunk_tokens, n_tokens)) for s in range(0, n_tokens, chunk_tokens)]


def raw_bytes(meta, rows: int) -> int:
    """Uncompressed bytes of ``rows`` rows of every captured layer (q, k and v)."""
    per_row = (meta.n_q_heads + 2 * meta.n_kv_heads) * meta.head_dim * STORAGE_DTYPES[meta.dtype].itemsize
    return len(meta.captured_layers) * per_row * rows


def check_disk(out: Path, meta, rows: int) -> int:
    """Refuse, before anything is written, a capture that might not fit on the disk of ``out``."""
    needed = int(raw_bytes(meta, rows) * DISK_MARGIN)
    where = next(p for p in [Path(out).absolute(), *Path(out).absolute().parents] if p.exists())
    free = shutil.disk_usage(where).free
    if needed > free:
        raise UserError(f"{out}: capture of {rows} rows × {len(meta.captured_layers)} layers needs up to "
                        f"{needed / 1e9:.2f} GB (uncompressed bound), but {where} has {free / 1e9:.2f} GB free; "
                        "free space, capture fewer --layers or a shorter prompt")
    return needed


class DecodeStride:
    """A sink wrapper that stores only every ``every``-th decode step's queries (others as zeros)."""

    def __init__(self, sink, prompt_len: int, every: int):
        if every < 1:
            raise UserError(f"--decode-every is {every}, expected at least 1")
        self.sink, self.prompt_len, self.every = sink, prompt_len, every
        self.rows: dict[int, int] = {}

    def append(self, layer, q, k, v) -> None:
        row = self.rows.get(layer, 0)
        t = q.shape[1]
        self.rows[layer] = row + t
        if self.every > 1 and row >= self.prompt_len and (row - self.prompt_len) % self.every:
            q = q.new_zeros(q.shape) if hasattr(q, "new_zeros") else np.zeros_like(q)
        self.sink.append(layer, q, k, v)


def kept_decode_steps(n_decode_steps: int, every: int) -> np.ndarray:
    """Decode steps whose queries a ``decode_every = every`` capture stored."""
    return np.arange(0, n_decode_steps, every)
