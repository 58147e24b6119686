"""Numba kernels shared by every method: masking, softmax weights with compensation, group unions.

The replay works on one *chunk* at a time: the G query heads of one KV group and R consecutive
query rows, scored against the chunk's key range ``[key_lo, key_lo + m)``. Scores are a
``[G*R, m]`` float32 block (row ``r = g*R + i`` is head g of the group, row i of the chunk), so
the working set is O(R·m) per chunk and never n×n. The QKᵀ and P·V products are numpy BLAS
calls by the driver; these kernels do everything element-wise in one or two passes, in
parallel over the chunk's rows (``prange``), with the GIL released.

Empty-row rule (one definition for every method): a row whose selection keeps nothing keeps
its row maximum (the most recent position among ties) and is counted in ``empty_rows``.
Nothing outside a row's causal/sliding-window range is ever kept.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# fastmath without 'nnan'/'ninf': masked scores are -inf and must compare correctly.
FAST = {"nsz", "arcp", "contract", "afn", "reassoc"}
PAGE_SIZES = (1, 8, 16, 32, 64, 128)
EXP_FLOOR = np.float32(-87.3)  # below this exp underflows float32; such entries weigh 0


@njit(fastmath=FAST, nogil=True, cache=True)
def exp_shifted(row, shift, out, bits):
    """out[j] = exp(row[j] - shift) in float32, 0 where the result underflows or row[j] is -inf.

    A Cephes-style polynomial that LLVM vectorises (numba has no vector exp without SVML);
    relative error ≈ 1.2e-7. ``bits`` is int32 scratch of the same length.
    """
    n = row.shape[0]
    for j in range(n):
        x = row[j] - shift
        v = min(max(x, EXP_FLOOR), np.float32(88.0))
        e = np.floor(v * np.float32(1.4426950408889634) + np.float32(0.5))
        r = v - e * np.float32(0.693359375) + e * np.float32(2.12194440e-4)
        p = np.float32(1.9875691500e-4)
        p = p * r + np.float32(1.3981999507e-3)
        p = p * r + np.float32(8.3334519073e-3)
        p = p * r + np.float32(4.1665795894e-2)
        p = p * r + np.float32(1.6666665459e-1)
        p = p * r + np.float32(5.0000001201e-1)
        p = p * r * r + r + np.float32(1.0)
        out[j] = p if x > EXP_FLOOR else np.float32(0.0)
        bits[j] = (np.int32(e) + np.int32(127)) << np.int32(23)
    scale = bits.view(np.float32)
    for j in range(n):
        out[j] *= scale[j]


# Valid scores are finite (traces are checked for NaN on load), so the max reduction may assume no NaN.
@njit(parallel=True, fastmath=FAST | {"nnan"}, nogil=True, cache=True)
def mask_and_max(scores, key_lo, row_lo, row_hi, rows_per_head, row_max):
    """Set scores outside each row's valid keys [row_lo, row_hi] to -inf; row_max[r] = max valid."""
    for r in prange(scores.shape[0]):
        i = r % rows_per_head
        lo, hi = row_lo[i] - key_lo, row_hi[i] - key_lo
        row = scores[r]
        row[:lo] = -np.inf
        row[hi + 1:] = -np.inf
        row_max[r] = lane_max(row[lo:hi + 1])


@njit(fastmath=FAST | {"nnan"}, nogil=True, cache=True)
def lane_max(row):
    """max(row) with 16 independent lanes: LLVM will not vectorise a plain max reduction."""
    lanes = np.full(16, np.float32(-np.inf))
    n16 = row.shape[0] // 16 * 16
    for j0 in range(0, n16, 16):
        for lane in range(16):
            lanes[lane] = max(lanes[lane], row[j0 + lane])
    best = lanes.max()
    for j in range(n16, row.shape[0]):
        best = max(best, row[j])
    return best


@njit(nogil=True, cache=True)
def keep_row_maximum(scores_row, keep_row, row_max):
    """The empty-row rule: keep the most recent position holding the row maximum."""
    for j in range(scores_row.shape[0] - 1, -1, -1):
        if scores_row[j] == row_max:
            keep_row[j] = True
            return


@njit(parallel=True, fastmath=FAST, nogil=True, cache=True)
def softmax_weights(scores, keep, row_max, den_scale, den_add, miss_weight, probs,
                    kept, dropped_mass, kept_weight, empty):
    """Dense probabilities and sparse weights of every row, in one exp pass.

    probs[0, r] = softmax over the valid keys (dense reference);
    probs[1, r, j] = exp(a_j - m) / den for kept j, else 0, with
    den = den_scale[r]·D_kept + miss_weight·D_missed + den_add[r]
    (renormalised: scale 1, miss 0, add 0; post-softmax: miss 1; SDC exact: miss λ;
    SDC exp-threshold: add λ·count·exp(θ-m); SDC offline: scale 1 + λρ/(1-ρ)).
    kept_weight[r] = Σ_j probs[1, r, j] (what VMC tops up to 1). Sums are float32 partial sums
    combined in float64; the dropped part is summed directly, never as a difference.
    """
    n = scores.shape[1]
    for r in prange(scores.shape[0]):
        e_row = probs[0, r]
        exp_shifted(scores[r], row_max[r], e_row, probs[1, r].view(np.int32))
        d_kept, d_miss = row_sums(e_row, keep[r])
        n_kept = np.sum(keep[r])
        if n_kept == 0:
            keep_row_maximum(scores[r], keep[r], row_max[r])
            empty[r] = True
            d_kept, d_miss = row_sums(e_row, keep[r])
            n_kept = 1
        d_total = d_kept + d_miss
        den = den_scale[r] * d_kept + miss_weight * d_miss + den_add[r]
        inv_total = np.float32(1.0 / d_total)
        inv_den = np.float32(1.0 / den)
        w_row = probs[1, r]
        flags = keep[r].view(np.uint8)
        for j in range(n):
            x = e_row[j]
            w_row[j] = x * inv_den * np.float32(flags[j])
            e_row[j] = x * inv_total
        kept[r] = n_kept
        dropped_mass[r] = d_miss / d_total
        kept_weight[r] = d_kept / den


@njit(fastmath=FAST, nogil=True, cache=True)
def row_sums(e_row, keep_row):
    """(Σ kept, Σ dropped) of e_row: float32 (vectorised) over blocks of 1024, blocks added in float64.

    The mask is read as uint8 and multiplied in, which LLVM vectorises (a branch does not).
    """
    flags = keep_row.view(np.uint8)
    kept_sum, miss_sum = 0.0, 0.0
    for b in range(0, e_row.shape[0], 1024):
        k32, m32 = block_sums(e_row[b:b + 1024], flags[b:b + 1024])
        kept_sum += k32
        miss_sum += m32
    return kept_sum, miss_sum


@njit(fastmath=FAST, nogil=True, cache=True, inline="always")
def block_sums(e, flags):
    k32, m32 = np.float32(0.0), np.float32(0.0)
    for j in range(e.shape[0]):
        x = e[j]
        f = np.float32(flags[j])
        k32 += x * f
        m32 += x - x * f
    return k32, m32


@njit(parallel=True, nogil=True, cache=True)
def group_union(keep, n_heads, tile_start, tile_end, key_lo, union_out):
    """Per tile of rows: the union over the group's heads and the tile's rows of kept keys.

    keep is [G*R, m]; tile t covers chunk rows [tile_start[t], tile_end[t]).
    Returns int64 [n_tiles, 2 + len(PAGE_SIZES)]: kept V rows, max uses of one V row,
    then pages holding ≥1 kept row per page size. ``union_out`` ([n_tiles, m] bool, or
    shape (0, 0) to skip) receives the union masks (decode rows).
    """
    rows_per_head = keep.shape[0] // n_heads
    m = keep.shape[1]
    out = np.zeros((tile_start.shape[0], 2 + len(PAGE_SIZES)), np.int64)
    for t in prange(tile_start.shape[0]):
        uses = np.zeros(m, np.int32)
        for g in range(n_heads):
            for i in range(tile_start[t], tile_end[t]):
                flags = keep[g * rows_per_head + i].view(np.uint8)
                for j in range(m):
                    uses[j] += flags[j]
        n_rows = 0
        most = 0
        last_page = np.full(len(PAGE_SIZES), -1, np.int64)
        for j in range(m):
            if uses[j] > 0:
                n_rows += 1
                most = max(most, uses[j])
                for p in range(len(PAGE_SIZES)):
                    page = (key_lo + j) // PAGE_SIZES[p]
                    if page != last_page[p]:
                        out[t, 2 + p] += 1
                        last_page[p] = page
        out[t, 0], out[t, 1] = n_rows, most
        if union_out.shape[0] > 0:
            for j in range(m):
                union_out[t, j] = uses[j] > 0
    return out


@njit(parallel=True, fastmath=FAST, nogil=True, cache=True)
def sparse_pv(weights, keep, values, out):
    """out[r] = Σ_{kept j} weights[r, j]·values[j]: only kept V rows are read (the Top-θ saving).

    The keep mask is scanned 8 entries per 64-bit word, so mostly-dropped rows cost little.
    """
    m = weights.shape[1]
    words = m // 8
    for r in prange(weights.shape[0]):
        acc = np.zeros(values.shape[1], np.float32)
        packed = keep[r, :words * 8].view(np.uint64)
        for wd in range(words):
            if packed[wd] != 0:
                for j in range(wd * 8, wd * 8 + 8):
                    if keep[r, j]:
                        axpy(weights[r, j], values[j], acc)
        for j in range(words * 8, m):
            if keep[r, j]:
                axpy(weights[r, j], values[j], acc)
        out[r, :] = acc


@njit(fastmath=FAST, nogil=True, cache=True, inline="always")
def axpy(a, x, y):
    for c in range(x.shape[0]):
        y[c] += a * x[c]
