"""What one attention kernel call asks of the memory system and the arithmetic units.

A call (one layer, one phase, the whole batch) becomes a list of :class:`Pass` es, one per kernel
launch, each a structure of arrays with one entry per work item (CTA / thread block): bytes by
kind, separate contiguous runs (gathers cost more channel time per byte than streams), FLOPs.
Nothing here knows a device: the simulator turns passes into time on one.

Decode (split-KV / flash-decoding): stream (batch item, KV head) is cut into splits of
``split_tokens`` keys; split j is one work item. K is read in full (every key is scored);
V is read only where the kept mask says so, at the fetch granularity ('row': sector-rounded
rows; 'pageP': whole P-token pages holding a kept row). A second pass merges the splits.
Top-k adds a score-writing pass and a selection pass before the gather (SPEC.md: top-k needs
the whole score row). Prefill is one tiled pass per (64-row query tile, KV head) that scores
every causal key tile and skips V loads and P·V for tiles with no kept element.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from topθ_hw.errors import UserError

ELEMENT_BYTES = {"bf16": 2, "bfloat16": 2, "fp16": 2, "float16": 2, "fp32": 4, "float32": 4, "fp8": 1}
FETCH_TOKENS = {"row": 1, "page8": 8, "page16": 16, "page32": 32, "page64": 64, "page128": 128}
METHODS = ("dense", "toptheta", "topk")
BYTE_KINDS = ("k", "v", "scores", "thresholds", "other")
TILE = 64             # key / query rows per tile, as in FlashAttention-style kernels
FP32 = 4
VECTOR_OPS_PER_SCORE = 6   # scale, running max, subtract, exp, sum, threshold compare
RADIX_SELECT_PASSES = 4    # 32-bit keys, 8 bits per pass (torch.topk's radix select)
SYNTHETIC_PATTERNS = 32    # distinct kept-row draws in a synthetic call (enough spread for load imbalance)


@dataclass(frozen=True)
class Shape:
    """Model-side shape of one attention call."""
    q_heads: int
    kv_heads: int
    head_dim: int
    dtype: str

    def __post_init__(self):
        if self.dtype not in ELEMENT_BYTES:
            raise UserError(f"dtype {self.dtype!r} unknown; expected one of {sorted(ELEMENT_BYTES)}")
        for name in ("q_heads", "kv_heads", "head_dim"):
            if getattr(self, name) < 1:
                raise UserError(f"field '{name}' must be ≥ 1, got {getattr(self, name)}")
        if self.q_heads % self.kv_heads:
            raise UserError(f"q_heads {self.q_heads} is not a multiple of kv_heads {self.kv_heads} (GQA)")

    @property
    def group(self) -> int:
        return self.q_heads // self.kv_heads

    @property
    def row_bytes(self) -> int:
        return self.head_dim * ELEMENT_BYTES[self.dtype]


@dataclass
class Pass:
    """One kernel launch: per-work-item arrays (all the same length)."""
    name: str
    bytes: dict                      # kind -> int64 array of HBM bytes read or written
    runs: np.ndarray                 # separate contiguous runs the bytes come in
    matrix_flops: np.ndarray         # useful matrix FLOPs (unpadded)
    vector_flops: np.ndarray
    matrix_rows: int                 # query rows a matrix instruction works on (padding)
    v_dependent: bool = False        # V addresses known only after this item's scores
    tiles: np.ndarray | None = None  # 64-key tiles per item: dependent round trips when v_dependent
    v_tiles: np.ndarray | None = None  # of those, tiles holding at least one kept V unit (None: all)
    fetch_tokens: int = 1            # keys per fetch unit (1: rows; P: pages), one keep byte each
    splits: int = 1                  # reduce passes: partials merged per row

    @property
    def items(self) -> int:
        return len(self.runs)


@dataclass
class AttentionCall:
    """One layer's attention for the whole batch in one phase."""
    phase: str
    method: str
    fetch: str
    shape: Shape
    passes: list = field(default_factory=list)
    kept_v_fraction: float = 1.0

    def total(self, kind: str) -> int:
        return int(sum(p.bytes[kind].sum() for p in self.passes))


def check_fetch_method(fetch: str, method: str) -> int:
    if fetch not in FETCH_TOKENS:
        raise UserError(f"fetch {fetch!r} unknown; expected one of {', '.join(FETCH_TOKENS)}")
    if method not in METHODS:
        raise UserError(f"method {method!r} unknown; expected one of {', '.join(METHODS)}")
    return FETCH_TOKENS[fetch]


def fetched_units(kept_rows: np.ndarray, page: int) -> np.ndarray:
    """bool per fetch unit (row or page): does it hold at least one kept row?"""
    if page == 1:
        return kept_rows
    pad = (-len(kept_rows)) % page
    return np.pad(kept_rows, (0, pad)).reshape(-1, page).any(axis=1)


def split_sums(units: np.ndarray, per_split: int, n_splits: int) -> tuple[np.ndarray, np.ndarray]:
    """Kept units and separate runs of kept units in each split of ``per_split`` units."""
    padded = np.zeros(n_splits * per_split, dtype=bool)
    padded[: len(units)] = units
    grid = padded.reshape(n_splits, per_split)
    starts = grid.copy()
    starts[:, 1:] &= ~grid[:, :-1]
    return grid.sum(axis=1), starts.sum(axis=1)


@dataclass(frozen=True)
class DecodeStream:
    """One (batch item, KV head) of a decode step: its context and its kept V rows."""
    context: int
    kept_rows: np.ndarray | None = None   # bool [context], union over the group's query heads; None: all
    kept_per_head: float | None = None    # top-k only: k selected per query head


def _round_up(x: int, to: int) -> int:
    return -(-x // to) * to


def _split_tokens(context: int, split_tokens: int) -> np.ndarray:
    n_splits = -(-context // split_tokens)
    tokens = np.full(n_splits, split_tokens, dtype=np.int64)
    tokens[-1] = context - (n_splits - 1) * split_tokens
    return tokens


def _v_per_split(stream, tokens, page, shape, granule, split_tokens):
    """V bytes, separate runs, V rows multiplied and 64-key tiles holding V, per split, at the
    fetch granularity."""
    tiles = -(-tokens // TILE)
    if stream.kept_rows is None:
        return tokens * shape.row_bytes, np.ones_like(tokens), tokens, tiles
    if len(stream.kept_rows) != stream.context:
        raise UserError(f"kept V mask has {len(stream.kept_rows)} rows for context {stream.context}")
    units = fetched_units(np.asarray(stream.kept_rows, dtype=bool), page)
    kept, runs = split_sums(units, split_tokens // page, len(tokens))
    unit_bytes = page * shape.row_bytes if page > 1 else _round_up(shape.row_bytes, granule)
    rows = np.zeros(len(tokens) * split_tokens, dtype=bool)
    fetched = np.repeat(units, page)[: stream.context]
    rows[: len(fetched)] = fetched
    v_tiles = rows.reshape(len(tokens), split_tokens // TILE, TILE).any(axis=2).sum(axis=1)
    return kept * unit_bytes, runs, np.minimum(kept * page, tokens), v_tiles


def _empty_bytes(n: int) -> dict:
    return {kind: np.zeros(n, dtype=np.int64) for kind in BYTE_KINDS}


def _concat(parts: list[dict]) -> dict:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _split_pass(streams, shape, page, granule, split_tokens, method, role):
    """The split-KV partial kernel. role: 'fused' (dense/Top-θ), 'scores' or 'gather' (top-k)."""
    G, d, row = shape.group, shape.head_dim, shape.row_bytes
    parts, done = [], {}
    for s in streams:
        if id(s) in done:  # the same stream object again (synthetic calls repeat a few draws)
            parts.append(done[id(s)])
            continue
        tokens = _split_tokens(s.context, split_tokens)
        n = len(tokens)
        b = _empty_bytes(n)
        cols = {"runs": np.ones(n, dtype=np.int64), "matrix": np.zeros(n), "vector": np.zeros(n),
                "tiles": -(-tokens // TILE), "v_tiles": -(-tokens // TILE)}
        partial_out = G * (d + 2) * FP32 if n > 1 else G * row  # split partials, or the output itself
        b["other"] += partial_out
        b["other"][0] += G * row  # the query, once per stream (later splits hit L2)
        if role in ("fused", "scores"):
            b["k"] += tokens * row
            cols["matrix"] += 2.0 * G * d * tokens
            cols["vector"] += VECTOR_OPS_PER_SCORE * G * tokens
        if role == "scores":
            b["scores"] += G * tokens * FP32
        if role in ("fused", "gather"):
            v_bytes, v_runs, v_rows, cols["v_tiles"] = _v_per_split(s, tokens, page, shape, granule, split_tokens)
            b["v"] += v_bytes
            cols["runs"] += v_runs
            cols["matrix"] += 2.0 * G * d * v_rows
        if role == "fused" and method == "toptheta":
            b["thresholds"][0] += G * FP32  # θ(l, h, n) for the group's heads: one float each
        if role == "gather":
            selected = (s.kept_per_head if s.kept_per_head is not None else s.context) * tokens / s.context
            b["scores"] += np.ceil(G * selected * 2 * FP32).astype(np.int64)  # indices + their scores
            cols["vector"] += 4.0 * G * selected
        parts.append({**b, **cols})
        done[id(s)] = parts[-1]
    merged = _concat(parts)
    return Pass(name=f"split_kv_{role}", bytes={k: merged[k] for k in BYTE_KINDS}, runs=merged["runs"],
                matrix_flops=merged["matrix"], vector_flops=merged["vector"], matrix_rows=G,
                v_dependent=(method != "dense" and role != "scores"), tiles=merged["tiles"],
                v_tiles=merged["v_tiles"], fetch_tokens=page)


def _select_pass(streams, shape):
    """Top-k selection: one item per (stream, query head) reads its score row, writes k indices."""
    G = shape.group
    n = np.repeat([s.context for s in streams], G).astype(np.int64)
    k = np.repeat([s.kept_per_head if s.kept_per_head is not None else s.context for s in streams], G)
    row_bytes = n * FP32
    staged = row_bytes <= 128 * 1024  # a row that fits one unit's SRAM is read once, else once per pass
    b = _empty_bytes(len(n))
    b["scores"] = row_bytes * np.where(staged, 1, RADIX_SELECT_PASSES) + np.ceil(k).astype(np.int64) * FP32
    return Pass(name="topk_select", bytes=b, runs=np.ones(len(n), dtype=np.int64),
                matrix_flops=np.zeros(len(n)), vector_flops=3.0 * RADIX_SELECT_PASSES * n, matrix_rows=1)


def _reduce_pass(streams, shape, split_tokens):
    """Merge the splits: one item per (batch item, query head)."""
    G, d = shape.group, shape.head_dim
    splits = np.repeat([-(-s.context // split_tokens) for s in streams], G).astype(np.int64)
    b = _empty_bytes(len(splits))
    b["other"] = splits * (d + 2) * FP32 + shape.row_bytes
    return Pass(name="split_kv_reduce", bytes=b, runs=np.ones(len(splits), dtype=np.int64),
                matrix_flops=np.zeros(len(splits)), vector_flops=3.0 * d * splits, matrix_rows=1,
                splits=int(splits.max()))


def decode_call(shape: Shape, streams: list[DecodeStream], method: str, fetch: str,
                split_tokens: int = 512, granule_bytes: int = 32) -> AttentionCall:
    """One decode step of one layer for a batch: streams ordered (batch item, KV head)."""
    page = check_fetch_method(fetch, method)
    if split_tokens % max(page, TILE):
        raise UserError(f"split_tokens {split_tokens} must be a multiple of {max(page, TILE)} (tile / page)")
    if method == "dense":
        streams = [DecodeStream(s.context) for s in streams]
    if method == "topk":
        passes = [_split_pass(streams, shape, page, granule_bytes, split_tokens, method, "scores"),
                  _select_pass(streams, shape),
                  _split_pass(streams, shape, page, granule_bytes, split_tokens, method, "gather")]
    else:
        passes = [_split_pass(streams, shape, page, granule_bytes, split_tokens, method, "fused")]
    if any(s.context > split_tokens for s in streams):
        passes.append(_reduce_pass(streams, shape, split_tokens))
    rows_total = sum(s.context for s in streams)
    rows_kept = sum(s.context if s.kept_rows is None else int(np.sum(s.kept_rows)) for s in streams)
    return AttentionCall(phase="decode", method=method, fetch=fetch, shape=shape, passes=passes,
                         kept_v_fraction=rows_kept / rows_total)


def synthetic_kept_units(n_units: int, fraction: float, rng: np.random.Generator,
                         n_sink: int, n_recent: int) -> np.ndarray:
    """bool [n_units]: the first n_sink (attention sinks), a recent window and uniformly scattered
    units, round(fraction · n_units) in all: the pattern the GPU validation kernels were timed on."""
    n_keep = max(1, min(n_units, round(fraction * n_units)))
    sink = min(n_sink, n_keep)
    recent = min(n_recent, (n_keep - sink) // 2)
    scattered = n_keep - sink - recent
    kept = np.zeros(n_units, dtype=bool)
    kept[:sink] = True
    kept[n_units - recent:] = recent > 0
    if scattered:
        # the same draw as choosing from arange(sink, n_units - recent), without building it
        kept[sink + rng.choice(n_units - sink - recent, size=scattered, replace=False)] = True
    return kept


def kernel_workload(batch: int, context: int, q_heads: int, kv_heads: int, head_dim: int, dtype: str,
                    kept_v_fraction: float, fetch: str, method: str = "toptheta", *,
                    split_tokens: int = 512, granule_bytes: int = 32, seed: int = 0) -> AttentionCall:
    """A synthetic decode-attention call: ``kept_v_fraction`` of the fetch units (rows or pages)
    kept per (batch item, KV head), sinks + recent window + random scatter, seeded."""
    shape = Shape(q_heads, kv_heads, head_dim, dtype)
    page = check_fetch_method(fetch, method)
    if batch < 1 or context < 1:
        raise UserError(f"batch and context must be ≥ 1, got batch={batch}, context={context}")
    if not 0 < kept_v_fraction <= 1:
        raise UserError(f"kept_v_fraction must be in (0, 1], got {kept_v_fraction}")
    if method == "dense" and kept_v_fraction != 1:
        raise UserError("method 'dense' reads every V row: kept_v_fraction must be 1")
    rng = np.random.default_rng(seed)
    n_units = -(-context // page)
    sink, recent = (4, 64) if page == 1 else (1, 1)
    patterns = []  # streams are statistically alike: a few distinct draws, repeated, keep big calls cheap
    for _ in range(min(batch * kv_heads, SYNTHETIC_PATTERNS)):
        units = synthetic_kept_units(n_units, kept_v_fraction, rng, sink, recent)
        rows = units if page == 1 else np.repeat(units, page)[:context]
        patterns.append(DecodeStream(context, rows, kept_per_head=float(rows.sum())))
    streams = [patterns[i % len(patterns)] for i in range(batch * kv_heads)]
    return decode_call(shape, streams, method, fetch, split_tokens, granule_bytes)


def prefill_call(shape: Shape, tiles: dict, method: str, fetch: str, granule_bytes: int = 32,
                 l2_bytes: float = 0.0) -> AttentionCall:
    """Tiled prefill of one layer: one work item per (64-row query tile, KV head).

    ``tiles`` holds equal-length arrays from the engine's group rows: ``kv_group``, ``row_start``,
    ``row_end``, ``kv_tiles_total``, ``kv_tiles_nonempty``, ``kept_v_rows`` and, for page fetch,
    ``pages_needed_<P>``. Every causal key tile is scored (K read in full); V loads and P·V run
    only for tiles holding a kept element. K/V tiles requested by many query tiles come from L2
    when the layer's whole K and V fit in it (``l2_bytes``), so HBM sees them once.
    """
    page = check_fetch_method(fetch, method)
    G, d, row = shape.group, shape.head_dim, shape.row_bytes
    rows = (tiles["row_end"] - tiles["row_start"]).astype(np.int64)
    ctx = tiles["row_end"].astype(np.int64)
    n = len(rows)
    b = _empty_bytes(n)
    b["k"] = ctx * row
    if method == "dense":
        b["v"], v_rows, runs = ctx * row, ctx, np.ones(n, dtype=np.int64)
    else:
        nonempty = tiles["kv_tiles_nonempty"].astype(np.int64)
        v_rows, runs = np.minimum(nonempty * TILE, ctx), np.maximum(nonempty, 1)
        if page == 1:
            b["v"] = tiles["kept_v_rows"].astype(np.int64) * _round_up(row, granule_bytes)
        else:
            column = f"pages_needed_{page}"
            if column not in tiles:
                raise UserError(f"statistics have no column '{column}' for fetch {fetch!r}")
            b["v"] = tiles[column].astype(np.int64) * page * row
    unique = sum(int(ctx[tiles["kv_group"] == g].max()) for g in np.unique(tiles["kv_group"])) * row * 2
    requested = int(b["k"].sum() + b["v"].sum())
    if requested and unique <= l2_bytes:
        for kind in ("k", "v"):  # HBM sees each K/V row once; the repeats are L2 hits
            b[kind] = np.ceil(b[kind] * unique / requested).astype(np.int64)
    b["other"] = 2 * G * rows * row  # query tile in, output tile out
    matrix = 2.0 * G * rows * d * (ctx + v_rows)
    vector = VECTOR_OPS_PER_SCORE * G * rows * ctx.astype(float)
    if method == "toptheta":
        b["thresholds"] = G * rows * FP32  # θ(l, h, n) differs per row length n
    if method == "topk":
        b["scores"] = 2 * G * rows * ctx * FP32  # the score tile written, then read for selection
        vector = vector + 3.0 * RADIX_SELECT_PASSES * G * rows * ctx
    p = Pass(name="prefill_tiled", bytes=b, runs=runs, matrix_flops=matrix, vector_flops=vector,
             matrix_rows=TILE * G, v_dependent=(method != "dense"), tiles=tiles["kv_tiles_total"].astype(np.int64),
             v_tiles=(tiles["kv_tiles_total"] if method == "dense" else tiles["kv_tiles_nonempty"]).astype(np.int64),
             fetch_tokens=page)
    kept = float(np.sum(tiles["kept_v_rows"])) / max(1, int(np.sum(ctx))) if method != "dense" else 1.0
    return AttentionCall(phase="prefill", method=method, fetch=fetch, shape=shape, passes=[p],
                         kept_v_fraction=kept)
