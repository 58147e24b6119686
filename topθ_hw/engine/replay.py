"""Replay one method on a trace layer by layer: scores, selection, weights, outputs, unions.

Rows are processed in chunks (see :mod:`topθ_hw.engine.kernels`): prefill in tiles of
``TILE`` = 64 query rows (several tiles per chunk while the score block stays under
``SCORE_BUDGET`` elements), decode rows in groups of up to 64 independent steps (one step per
chunk for stateful methods, in order). QKᵀ and P·V are numpy BLAS products into reused
buffers; selection and normalisation are numba kernels. Working memory per layer is
O(SCORE_BUDGET + T·d), never T×T.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

import numba
import numpy as np

from topθ_hw.engine.kernels import PAGE_SIZES, group_union, mask_and_max, softmax_weights, sparse_pv
from topθ_hw.engine.methods.base import AttentionMethod, ScoreBlock
from topθ_hw.errors import UserError

TILE = 64
SCORE_BUDGET = 1 << 20   # float32 elements per prefill score block (4 MiB, probs twice that: near L2)
DECODE_BUDGET = 1 << 22  # decode blocks may be larger: more steps per block stream K fewer times
MAX_CHUNK_ROWS = 512
EXACT_HEAD_TILES = 4     # row-sampled prefill still replays the first 4 tiles (rows 0..255) in full
SPARSE_GATHER = 0.15     # below this kept fraction the sparse output gathers kept V rows instead of a GEMM
# Numba threads for the kernels. Default 1: on a shared machine (this project's 2 cores run
# several jobs) every parallel region waits for a descheduled worker, which made 2 threads 6×
# slower than 1 in bench_engine.py; pass --threads N (or TOPTHETA_THREADS) on a dedicated machine.
DEFAULT_THREADS_ENV = "TOPTHETA_THREADS"


def env_threads() -> int:
    text = os.environ.get(DEFAULT_THREADS_ENV, "1")
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"environment variable {DEFAULT_THREADS_ENV} is {text!r}, expected a whole number ≥ 1")
    return value


@contextlib.contextmanager
def kernel_threads(threads: int | None = None):
    """Run numba kernels and BLAS with ``threads`` threads (None: $TOPTHETA_THREADS, else 1).

    BLAS is limited through threadpoolctl when it is installed; otherwise it keeps its own setting
    (OPENBLAS_NUM_THREADS).
    """
    wanted = max(1, threads or env_threads())
    before = numba.get_num_threads()
    numba.set_num_threads(min(wanted, numba.config.NUMBA_NUM_THREADS))
    try:
        from threadpoolctl import threadpool_limits
        blas = threadpool_limits(limits=wanted, user_api="blas")
    except ImportError:
        blas = contextlib.nullcontext()
    try:
        with blas:
            yield
    finally:
        numba.set_num_threads(before)


ROW_FIELDS = ("kept", "n_valid", "empty", "dropped_mass", "kept_weight", "err2", "ref2", "dot", "out2")


@dataclass
class Chunk:
    t0: int
    t1: int
    phase: str
    tiles: list[tuple[int, int]]   # absolute row ranges of the statistics tiles inside the chunk


@dataclass
class LayerResult:
    """Per-row arrays [H_q, T] (ROW_FIELDS) and per (group, tile) union counts."""

    layer: int
    prompt_len: int
    rows: dict[str, np.ndarray]
    tiles: list[dict] = field(default_factory=list)   # kv_group, row_start, row_end, phase, counts
    out_sparse: np.ndarray | None = None              # [H_q, T, d] when keep_outputs
    out_dense: np.ndarray | None = None
    decode_only: bool = False                         # prefill rows were skipped
    prefill_stride: int = 1                           # only every Nth prefill tile was replayed


def row_ranges(rows: np.ndarray, window: int | None) -> tuple[np.ndarray, np.ndarray]:
    """First and last valid key of each row (causal, sliding window if any)."""
    lo = np.maximum(rows - window + 1, 0) if window else np.zeros_like(rows)
    return lo.astype(np.int64), rows.astype(np.int64)


def plan_chunks(prompt_len: int, n_rows: int, group: int, window: int | None, stateful: bool,
                prefill_stride: int = 1, decode_every: int = 1) -> list[Chunk]:
    """Split rows into chunks that keep G·R·m ≤ SCORE_BUDGET (at least one tile or step each).

    ``prefill_stride = S`` samples the prefill: the first ``EXACT_HEAD_TILES`` query tiles (where
    rows are short and kept counts change fastest) and then the middle tile of every S consecutive
    tiles, one chunk each (the middle, not the first: kept fractions fall with n). ``decode_every = N``: only decode steps 0, N, 2N, ... (a trace captured with
    ``--decode-every N`` holds no real query for the others), one chunk each.
    """
    chunks = []

    def width(t0, t1):
        return t1 - int(row_ranges(np.array([t0]), window)[0][0])

    t = 0
    if prefill_stride > 1:
        tiles = [i for i in range(-(-prompt_len // TILE))
                 if i < EXACT_HEAD_TILES or (i - EXACT_HEAD_TILES) % prefill_stride == prefill_stride // 2]
        chunks = [Chunk(i * TILE, min((i + 1) * TILE, prompt_len), "prefill",
                        [(i * TILE, min((i + 1) * TILE, prompt_len))]) for i in tiles]
        t = prompt_len
    while t < prompt_len:
        t1 = min(t + TILE, prompt_len)
        while t1 < prompt_len and t1 - t < MAX_CHUNK_ROWS and \
                group * (min(t1 + TILE, prompt_len) - t) * width(t, min(t1 + TILE, prompt_len)) <= SCORE_BUDGET:
            t1 = min(t1 + TILE, prompt_len)
        chunks.append(Chunk(t, t1, "prefill", [(s, min(s + TILE, t1)) for s in range(t, t1, TILE)]))
        t = t1
    if decode_every > 1:
        return chunks + [Chunk(s, s + 1, "decode", [(s, s + 1)]) for s in range(prompt_len, n_rows, decode_every)]
    step = 1 if stateful else TILE
    while t < n_rows:
        t1 = min(t + step, n_rows)
        while t1 - t > 1 and group * (t1 - t) * width(t, t1) > DECODE_BUDGET:
            t1 = t + (t1 - t) // 2
        chunks.append(Chunk(t, t1, "decode", [(s, s + 1) for s in range(t, t1)]))
        t = t1
    return chunks


def v_means(v: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """[H_kv, R, d] mean of V rows lo..hi per row (float64 prefix sums, as a running sum would)."""
    csum = np.zeros((v.shape[0], v.shape[1] + 1, v.shape[2]))
    np.cumsum(v, axis=1, dtype=np.float64, out=csum[:, 1:])
    return (csum[:, hi + 1] - csum[:, lo]) / (hi - lo + 1)[None, :, None]


def replay_layer(qkv, method: AttentionMethod, layer: int, prompt_len: int, state=None,
                 keep_outputs: bool = False, decode_only: bool = False, threads: int | None = None,
                 prefill_stride: int = 1) -> LayerResult:
    with kernel_threads(threads):
        return _replay_layer(qkv, method, layer, prompt_len, state, keep_outputs, decode_only, prefill_stride)


def _replay_layer(qkv, method, layer, prompt_len, state, keep_outputs, decode_only, prefill_stride) -> LayerResult:
    """Run ``method`` on one layer (LayerQKV-like: q [H_q,T,d], k/v [H_kv,T,d], scaling, sliding_window).

    ``decode_only`` skips the prefill rows (their per-row fields stay 0, no prefill tiles);
    ``prefill_stride = S`` replays every S-th prefill tile of ``TILE`` rows only (the row-sampling
    mode: prefill statistics become estimates over those tiles; decode rows stay exact). Rows not
    replayed keep ``n_valid = 0`` and the statistics leave them out.
    """
    decode_every = int(getattr(qkv, "decode_every", 1))
    if decode_every > 1 and method.stateful:
        raise UserError(f"{method.name} carries state across decode steps, but this trace kept only every "
                        f"{decode_every}th decode step's queries; replay it on a trace captured without --decode-every")
    q, k, v = qkv.q, qkv.k, qkv.v
    n_heads, n_rows, d = q.shape
    n_groups = k.shape[0]
    group = n_heads // n_groups
    window = qkv.sliding_window
    ctx = method.prepare_layer(layer, qkv)
    res = LayerResult(layer, prompt_len, {f: np.zeros((n_heads, n_rows)) for f in ROW_FIELDS},
                      decode_only=decode_only, prefill_stride=prefill_stride)
    if keep_outputs:
        res.out_sparse = np.zeros((n_heads, n_rows, d), np.float32)
        res.out_dense = np.zeros((n_heads, n_rows, d), np.float32)
    lo_all, hi_all = row_ranges(np.arange(n_rows), window)
    vbar = {}   # filled on the first block that asks for VMC: per-row means of the valid V rows
    chunks = plan_chunks(prompt_len, n_rows, group, window, method.stateful, prefill_stride, decode_every)
    chunks = [c for c in chunks if c.phase == "decode"] if decode_only else chunks
    if not chunks:
        return res
    biggest = max(group * (c.t1 - c.t0) * (c.t1 - lo_all[c.t0]) for c in chunks)
    score_buf = np.empty(biggest, np.float32)
    prob_buf = np.empty(2 * biggest, np.float32)
    for chunk in chunks:
        for g in range(n_groups):
            run_chunk(qkv, method, layer, g, group, chunk, ctx, state, res, vbar, score_buf, prob_buf)
    return res


def score_block(qkv, layer, g, group, chunk, score_buf) -> ScoreBlock:
    """Scaled, masked logits of the group's G heads × the chunk's rows, and their row maxima."""
    q, k = qkv.q, qkv.k
    rows = np.arange(chunk.t0, chunk.t1)
    row_lo, row_hi = row_ranges(rows, qkv.sliding_window)
    key_lo, n_keys, n_r = int(row_lo[0]), chunk.t1 - int(row_lo[0]), len(rows)
    heads = np.arange(g * group, (g + 1) * group)
    q_block = q[heads, chunk.t0:chunk.t1]                                   # [G, R, d]
    scores = score_buf[:group * n_r * n_keys].reshape(group * n_r, n_keys)
    np.matmul((q_block * np.float32(qkv.scaling)).reshape(group * n_r, -1), k[g, key_lo:chunk.t1].T, out=scores)
    row_max = np.empty(group * n_r, np.float32)
    mask_and_max(scores, key_lo, row_lo, row_hi, n_r, row_max)
    return ScoreBlock(layer, g, heads, rows, row_lo, row_hi, key_lo, scores, row_max, q_block, chunk.phase)


def run_chunk(qkv, method, layer, g, group, chunk, ctx, state, res, vbar, score_buf, prob_buf):
    """One KV group × one chunk of rows: everything from QKᵀ to the union counts."""
    block = score_block(qkv, layer, g, group, chunk, score_buf)
    v, heads, key_lo, n_keys = qkv.v, block.heads, block.key_lo, block.scores.shape[1]
    scores, row_max, row_lo, row_hi, n_r = block.scores, block.row_max, block.row_lo, block.row_hi, len(block.rows)
    sel = method.select(block, ctx, state)
    n = group * n_r
    den_scale = np.ones(n) if sel.den_scale is None else np.asarray(sel.den_scale, np.float64)
    den_add = np.zeros(n) if sel.den_add is None else np.asarray(sel.den_add, np.float64)
    empty = np.zeros(n, np.bool_) if sel.empty is None else sel.empty.copy()
    kept, dropped, kept_weight = np.zeros(n, np.int64), np.zeros(n), np.zeros(n)
    probs = prob_buf[:2 * n * n_keys].reshape(2, n, n_keys)
    softmax_weights(scores, sel.keep, row_max, den_scale, den_add, float(sel.miss_weight), probs,
                    kept, dropped, kept_weight, empty)
    values = v[g, key_lo:chunk.t1]
    dense_out = probs[0] @ values                                           # [G·R, d] BLAS
    if kept.sum() < SPARSE_GATHER * n * n_keys:   # gather the kept V rows only
        sparse_out = np.empty_like(dense_out)
        sparse_pv(probs[1], sel.keep, values, sparse_out)
    else:
        sparse_out = probs[1] @ values
    if sel.vmc:
        if "means" not in vbar:
            vbar["means"] = v_means(v, *row_ranges(np.arange(v.shape[1]), qkv.sliding_window))
        lost = (1.0 - kept_weight).reshape(group, n_r, 1)
        sparse_out += (lost * vbar["means"][g, chunk.t0:chunk.t1][None]).reshape(n, -1).astype(np.float32)
    if method.stateful:
        method.observe(block, probs[1], state)
    record_rows(res, heads, chunk, kept, empty, dropped, kept_weight, dense_out, sparse_out, row_lo, row_hi)
    record_tiles(res, g, group, chunk, sel.keep, key_lo, row_lo, row_hi)


def record_rows(res, heads, chunk, kept, empty, dropped, kept_weight, dense_out, sparse_out, row_lo, row_hi):
    shape = (len(heads), chunk.t1 - chunk.t0)
    dense64, sparse64 = dense_out.astype(np.float64), sparse_out.astype(np.float64)
    values = {"kept": kept, "empty": empty, "dropped_mass": dropped, "kept_weight": kept_weight,
              "n_valid": np.broadcast_to(row_hi - row_lo + 1, shape),
              "err2": ((sparse64 - dense64) ** 2).sum(1), "ref2": (dense64 ** 2).sum(1),
              "dot": (sparse64 * dense64).sum(1), "out2": (sparse64 ** 2).sum(1)}
    for name, x in values.items():
        res.rows[name][heads[0]:heads[-1] + 1, chunk.t0:chunk.t1] = np.reshape(x, shape)
    if res.out_sparse is not None:
        res.out_sparse[heads[0]:heads[-1] + 1, chunk.t0:chunk.t1] = sparse_out.reshape(*shape, -1)
        res.out_dense[heads[0]:heads[-1] + 1, chunk.t0:chunk.t1] = dense_out.reshape(*shape, -1)


def record_tiles(res, g, group, chunk, keep, key_lo, row_lo, row_hi):
    starts = np.array([s for s, _ in chunk.tiles], np.int64) - chunk.t0
    ends = np.array([e for _, e in chunk.tiles], np.int64) - chunk.t0
    decode = chunk.phase == "decode"
    masks = np.zeros((len(starts), keep.shape[1]) if decode else (0, 0), np.bool_)
    counts = group_union(keep, group, starts, ends, key_lo, masks)
    for t, (s, e) in enumerate(chunk.tiles):
        lo, hi = int(row_lo[s - chunk.t0]), int(row_hi[e - 1 - chunk.t0])
        tile = {"kv_group": g, "row_start": s, "row_end": e, "phase": chunk.phase, "v_lo": lo, "v_hi": hi,
                "kept_v_rows": int(counts[t, 0]), "v_row_uses_max": int(counts[t, 1])}
        for p, size in enumerate(PAGE_SIZES):
            tile[f"pages_needed_{size}"] = int(counts[t, 2 + p])
            tile[f"pages_total_{size}"] = hi // size - lo // size + 1
        tile["kept_v_mask"] = np.packbits(masks[t, :hi + 1 - key_lo]).tobytes() if decode else b""
        if decode and key_lo > 0:   # mask covers key positions 0..context_len-1
            full = np.zeros(hi + 1, np.bool_)
            full[key_lo:] = masks[t, :hi + 1 - key_lo]
            tile["kept_v_mask"] = np.packbits(full).tobytes()
        res.tiles.append(tile)
