"""Calibrate Top-θ thresholds (and the offline SDC table) from trace sequences.

Pass 1, per (layer, head, row) with n_valid > k: θ_row = the (k+1)-th largest valid score
(pre-softmax: logit; post-softmax: its full-row probability), so ``score > θ_row`` keeps exactly
k. Rows with the same (layer, head, n) aggregate to mean + σ·std (population std).
Pass 2 replays the calibration rows under the aggregated θ and records the mean dropped
probability mass per (layer, head, n): the offline SDC table.
"""

from __future__ import annotations

import datetime as _dt

import numpy as np
from numba import njit, prange

from topθ_hw import __version__
from topθ_hw.engine.kernels import FAST, exp_shifted
from topθ_hw.engine.methods.base import parse_layer_k
from topθ_hw.engine.replay import kernel_threads, plan_chunks, score_block
from topθ_hw.engine.thresholds import ThresholdTable
from topθ_hw.errors import UserError


@njit(nogil=True, cache=True)
def row_denominator(row, m):
    e = np.empty(row.shape[0], np.float32)
    exp_shifted(row, m, e, np.empty(row.shape[0], np.int32))
    return np.sum(e.astype(np.float64))


@njit(nogil=True, cache=True)
def kth_largest(row, rank):
    """The rank-th largest value of row (exact), without a full selection over the row.

    A pivot from a 1-in-8 sample (conservatively low) filters the row; if at least ``rank``
    values survive, the answer is the rank-th largest survivor, else fall back to the full row.
    """
    n = row.shape[0]
    if n < 1024 or n < 16 * rank:
        return np.partition(row.copy(), n - rank)[n - rank]
    sample = row[::8].copy()
    above = min(sample.shape[0] - 1, 2 * (rank // 8) + 8)       # sample values kept above the pivot
    pivot = np.partition(sample, sample.shape[0] - 1 - above)[sample.shape[0] - 1 - above]
    count = 0
    for j in range(n):
        count += np.int64(row[j] >= pivot)
    if count < rank:
        return np.partition(row.copy(), n - rank)[n - rank]
    survivors = np.empty(count, row.dtype)
    i = 0
    for j in range(n):             # few survivors: the branch is well predicted
        if row[j] >= pivot:
            survivors[i] = row[j]
            i += 1
    return np.partition(survivors, count - rank)[count - rank]


@njit(parallel=True, fastmath=FAST, nogil=True, cache=True)
def kth_largest_rows(scores, row_max, row_lo, row_hi, key_lo, k, post, out):
    """out[r] = (k+1)-th largest valid score of row r (as a probability if post); NaN if n_valid ≤ k."""
    rows_per_head = row_lo.shape[0]
    for r in prange(scores.shape[0]):
        i = r % rows_per_head
        lo, hi = row_lo[i] - key_lo, row_hi[i] - key_lo
        n = hi - lo + 1
        if n <= k:
            out[r] = np.nan
            continue
        value = kth_largest(scores[r, lo:hi + 1], k + 1)
        if post:
            out[r] = np.exp(np.float64(value) - row_max[r]) / row_denominator(scores[r], row_max[r])
        else:
            out[r] = value


@njit(parallel=True, fastmath=FAST, nogil=True, cache=True)
def dropped_mass_rows(scores, row_max, theta, post, out):
    """out[r] = probability mass of the valid scores not above theta[r] (NaN theta: NaN)."""
    for r in prange(scores.shape[0]):
        if np.isnan(theta[r]):
            out[r] = np.nan
            continue
        row, m = scores[r], row_max[r]
        e = np.empty(row.shape[0], np.float32)
        exp_shifted(row, m, e, np.empty(row.shape[0], np.int32))
        total = np.sum(e.astype(np.float64))
        tau = m + np.log(theta[r] * total) if post else theta[r]
        dropped = 0.0
        for j in range(row.shape[0]):
            if row[j] <= tau:
                dropped += e[j]
        out[r] = dropped / total


def layer_rows(qkv, layer, prompt_len, kernel):
    """Run ``kernel(block) -> [G*R] values`` over all chunks of a layer → [H_q, T]."""
    n_heads, n_rows, _ = qkv.q.shape
    group = n_heads // qkv.k.shape[0]
    out = np.full((n_heads, n_rows), np.nan)
    chunks = plan_chunks(prompt_len, n_rows, group, qkv.sliding_window, stateful=False)
    buf = np.empty(max(group * (c.t1 - c.t0) * c.t1 for c in chunks), np.float32)
    for chunk in chunks:
        for g in range(qkv.k.shape[0]):
            block = score_block(qkv, layer, g, group, chunk, buf)
            out[block.heads[0]:block.heads[-1] + 1, chunk.t0:chunk.t1] = kernel(block).reshape(group, -1)
    return out


def row_thresholds(qkv, layer, prompt_len, k, post):
    def kernel(b):
        out = np.empty(b.scores.shape[0])
        kth_largest_rows(b.scores, b.row_max, b.row_lo, b.row_hi, b.key_lo, k, post, out)
        return out
    return layer_rows(qkv, layer, prompt_len, kernel)


def row_dropped_mass(qkv, layer, prompt_len, theta_rows, post):
    def kernel(b):
        out = np.empty(b.scores.shape[0])
        dropped_mass_rows(b.scores, b.row_max, theta_rows[b.heads][:, b.rows].ravel(), post, out)
        return out
    return layer_rows(qkv, layer, prompt_len, kernel)


def calibrate(trace, sequences, k: int, layer_k: str | None = None, placement: str = "pre",
              sigma: float = 0.1, progress=None, threads: int | None = None, layers=None) -> ThresholdTable:
    """Thresholds from ``sequences`` of an open trace; ``progress`` is a tqdm-like callable or None.
    ``layers``: calibrate only these captured layers (default all; the others stay uncalibrated)."""
    with kernel_threads(threads):
        return _calibrate(trace, sequences, k, layer_k, placement, sigma, progress, layers)


def _calibrate(trace, sequences, k, layer_k, placement, sigma, progress, layers=None) -> ThresholdTable:
    meta = trace.meta
    if placement not in ("pre", "post"):
        raise UserError(f"--placement: {placement!r} is not 'pre' or 'post'")
    if not sequences:
        raise UserError(f"{trace.path}: no calibration sequences (complete: {trace.sequences}, "
                        f"incomplete: {trace.partial_sequences})")
    if len(set(sequences)) != len(sequences):
        raise UserError(f"--sequences {list(sequences)} repeats a sequence; expected each once")
    if not np.isfinite(sigma):
        raise UserError(f"--sigma must be finite, got {sigma}")
    ks = parse_layer_k(layer_k, k, meta.n_layers)
    readers = [trace.sequence(name) for name in sequences]
    n_max = max(s.n_tokens for s in readers)
    shape = (meta.n_layers, meta.n_q_heads, n_max)
    total, total_sq, count = np.zeros(shape), np.zeros(shape), np.zeros(shape, np.int64)
    bad = sorted(set(layers or []) - set(meta.captured_layers))
    if bad:
        raise UserError(f"--layers: {bad} not captured in {trace.path} (it holds {meta.captured_layers})")
    work = [(s, layer) for s in readers for layer in (layers or meta.captured_layers)]
    bar = progress(total=2 * len(work), desc="calibrate", unit="layer") if progress else None
    for seq, layer in work:
        th = row_thresholds(seq.layer(layer), layer, seq.prompt_len, int(ks[layer]), placement == "post")
        ok = np.isfinite(th)
        total[layer, :, :th.shape[1]] += np.where(ok, th, 0.0)
        total_sq[layer, :, :th.shape[1]] += np.where(ok, th * th, 0.0)
        count[layer, :, :th.shape[1]] += ok
        bar and bar.update()
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
        std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0))
    theta = mean + sigma * std
    dropped, n_dropped = np.zeros(shape), np.zeros(shape, np.int64)
    for seq, layer in work:
        rows = seq.n_tokens
        dm = row_dropped_mass(seq.layer(layer), layer, seq.prompt_len, theta[layer, :, :rows], placement == "post")
        ok = np.isfinite(dm)
        dropped[layer, :, :rows] += np.where(ok, dm, 0.0)
        n_dropped[layer, :, :rows] += ok
        bar and bar.update()
    bar and bar.close()
    with np.errstate(invalid="ignore", divide="ignore"):
        dropped_mean = dropped / n_dropped
    keep = count.any(axis=(0, 1))
    lengths = np.arange(1, n_max + 1)[keep]
    if not len(lengths):
        raise UserError(f"{trace.path}: no row of {sequences} is longer than k (k per layer {ks.tolist()}); "
                        "nothing to calibrate")
    info = {"model_id": meta.model_id, "model_file_sha256": meta.model_file_sha256, "placement": placement,
            "sigma": float(sigma), "k": int(k), "layer_k": ks.tolist(), "layer_k_spec": layer_k or "", "trace": str(trace.path),
            "sequences": list(sequences), "sources": [s.source for s in readers],
            "rows_calibrated": int(count.sum()), "rows_per_layer": count.sum(axis=(1, 2)).tolist(), "n_layers": meta.n_layers, "n_q_heads": meta.n_q_heads,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "package_version": __version__}
    return ThresholdTable(lengths=lengths.astype(np.int64), theta=theta[..., keep], theta_std=std[..., keep],
                          count=count[..., keep], sdc_dropped_mass=dropped_mean[..., keep],
                          layer_k=ks, meta=info)
