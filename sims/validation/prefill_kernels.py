"""Causal prefill attention in Triton: FlashAttention-2 dense, and the same source with Top-θ's
in-kernel pre-softmax threshold that skips V loads and P·V for key tiles holding no kept score.

One program per (query tile of BLOCK_M rows, batch item × query head); it streams the causal key
tiles of its KV head (GQA: head h reads KV head h // G) in BLOCK_N = 64-key tiles with an online
softmax. Off-diagonal tiles run unmasked; the tiles crossing the diagonal apply the causal mask.

Threshold (THRESHOLD=True): θ is per (batch item, query head, row) in logit units (score =
q·k / sqrt(d)), read once per program; keep = score > θ over causal keys (θ = -inf keeps the
whole row, as for calibrated-dense rows). Every key tile is scored (K read in full). If no
element of the (query tile × key tile) block is kept, a scalar branch skips the V load, the
exponentials and the P·V product; only the running row maximum is updated. The running maximum is over all causal
scores: when a row keeps anything its maximum is kept (kept scores exceed θ, dropped ones do not),
so it is also the kept maximum, and a row whose maximum moved in a skipped tile had kept nothing.

Empty rows (nothing above θ): the row keeps its maximum (ties: every element equal to it), so its
output is the V row of its best-scoring key, never uniform attention (SPEC.md). The kernel knows a
row is empty only after its last tile; a program holding one walks its key tiles again for those
rows, averaging V over the keys whose score equals the row maximum (behind a scalar branch:
programs without empty rows pay nothing). Registers and shared memory of every variant:
`prefill_bench.py --ptxas` (no variant spills).

COUNT=True also writes, per program, [kept elements (score > θ), non-empty key tiles, key tiles
scored, key columns kept by at least one row summed over tiles, empty rows] and a byte per
(program, key tile) saying whether the tile held a kept element: the recount the tests compare
with NumPy and the tile occupancy the simulator is fed. Timed runs use COUNT=False.

The Triton 3.6 interpreter multiplies bf16 tl.dot operands as raw integers: CPU checks use float16.
"""
import math

import torch
import triton
import triton.language as tl

BLOCK_N = 64
N_COUNTS = 5  # kept elements, non-empty tiles, tiles scored, kept key columns, empty rows


@triton.jit
def _key_tiles(acc, l_i, m_i, counts, q, theta, k_base, v_base, occ_base, offs_m, HEAD_DIM: tl.constexpr, stride_kt,
               n_ctx, qk_scale, lo, hi,
               DIAG: tl.constexpr, THRESHOLD: tl.constexpr, COUNT: tl.constexpr,
               BLOCK_N: tl.constexpr):
    """Key tiles [lo, hi) of one program; raw scores qk = q·k (θ and the maxima are in qk units)."""
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    for start_n in range(lo, hi, BLOCK_N):
        keys = start_n + offs_n
        k = tl.load(k_base + keys[None, :] * stride_kt + offs_d[:, None])   # [d, BLOCK_N]
        qk = tl.dot(q, k)                                               # [BLOCK_M, BLOCK_N] fp32
        if DIAG:
            qk = tl.where(offs_m[:, None] >= keys[None, :], qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        if THRESHOLD:
            keep = qk > theta[:, None]
            any_kept = tl.max(tl.max(keep.to(tl.int32), 1), 0)         # scalar: does the block hold a kept score?
            if COUNT:
                kept_cols = tl.max(keep.to(tl.int32), 0)
                counts = (counts[0] + tl.sum(tl.sum(keep.to(tl.int32), 1), 0), counts[1] + any_kept,
                          counts[2] + 1, counts[3] + tl.sum(kept_cols, 0), counts[4])
                tl.store(occ_base + start_n // BLOCK_N, any_kept.to(tl.int8))
            if any_kept > 0:
                p = tl.where(keep, tl.math.exp2((qk - m_new[:, None]) * qk_scale), 0.0)
                alpha = tl.math.exp2((m_i - m_new) * qk_scale)
                l_i = l_i * alpha + tl.sum(p, 1)
                v = tl.load(v_base + keys[:, None] * stride_kt + offs_d[None, :])
                acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
        else:
            p = tl.math.exp2((qk - m_new[:, None]) * qk_scale)
            alpha = tl.math.exp2((m_i - m_new) * qk_scale)
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.load(v_base + keys[:, None] * stride_kt + offs_d[None, :])
            acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
        m_i = m_new
    return acc, l_i, m_i, counts


@triton.jit
def _causal_tiles(acc, l_i, m_i, counts, q, theta, k_base, v_base, occ_base, offs_m, HEAD_DIM: tl.constexpr, stride_kt,
                  n_ctx, qk_scale, start_m,
                  THRESHOLD: tl.constexpr, COUNT: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Every causal key tile of query tile start_m: unmasked below the diagonal, masked across it."""
    diag_lo = start_m * BLOCK_M
    diag_hi = diag_lo + BLOCK_M
    acc, l_i, m_i, counts = _key_tiles(acc, l_i, m_i, counts, q, theta, k_base, v_base, occ_base, offs_m, HEAD_DIM,
                                       stride_kt, n_ctx, qk_scale, 0, diag_lo,
                                       False, THRESHOLD, COUNT, BLOCK_N)
    return _key_tiles(acc, l_i, m_i, counts, q, theta, k_base, v_base, occ_base, offs_m, HEAD_DIM,
                      stride_kt, n_ctx, qk_scale, diag_lo, diag_hi,
                      True, THRESHOLD, COUNT, BLOCK_N)


@triton.jit
def _prefill_fwd(Q, K, V, Theta, Out, Counts, Occ, qk_scale, n_ctx, H_q, n_m_tiles, n_n_tiles,
                 stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
                 G: tl.constexpr, D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                 THRESHOLD: tl.constexpr, COUNT: tl.constexpr):
    start_m = tl.program_id(0)
    bh = tl.program_id(1)
    b, h = bh // H_q, bh % H_q
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    q_base = b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    q = tl.load(Q + q_base + offs_m[:, None] * stride_qt + offs_d[None, :])
    kv_off = b.to(tl.int64) * stride_kb + (h // G).to(tl.int64) * stride_kh
    k_base, v_base = K + kv_off, V + kv_off
    occ_base = Occ + (bh.to(tl.int64) * n_m_tiles + start_m) * n_n_tiles
    theta = tl.load(Theta + bh.to(tl.int64) * n_ctx + offs_m)
    acc = tl.zeros([BLOCK_M, D], dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    zero = tl.zeros([1], dtype=tl.int32).sum(0)
    counts = (zero, zero, zero, zero, zero)
    acc, l_i, m_i, counts = _causal_tiles(acc, l_i, m_i, counts, q, theta, k_base, v_base, occ_base, offs_m, D,
                                          stride_kt, n_ctx, qk_scale, start_m,
                                          THRESHOLD, COUNT, BLOCK_M, BLOCK_N)
    out_rows = Out + q_base + offs_m[:, None] * stride_qt + offs_d[None, :]
    if THRESHOLD:
        empty = l_i == 0.0  # nothing above θ: rewritten below
        l_i = tl.where(empty, 1.0, l_i)
    tl.store(out_rows, (acc / l_i[:, None]).to(Out.dtype.element_ty))
    if THRESHOLD:
        n_empty = tl.sum(empty.to(tl.int32), 0)
        if COUNT:
            c_base = Counts + (bh.to(tl.int64) * n_m_tiles + start_m) * 5
            tl.store(c_base + 0, counts[0])
            tl.store(c_base + 1, counts[1])
            tl.store(c_base + 2, counts[2])
            tl.store(c_base + 3, counts[3])
            tl.store(c_base + 4, n_empty)
        if n_empty > 0:  # empty rows keep their maximum: average V over the keys scoring exactly m_i
            acc = tl.zeros([BLOCK_M, D], dtype=tl.float32)
            ties = tl.zeros([BLOCK_M], dtype=tl.float32)
            for start_n in range(0, (start_m + 1) * BLOCK_M, BLOCK_N):
                keys = start_n + tl.arange(0, BLOCK_N)
                k = tl.load(k_base + keys[None, :] * stride_kt + offs_d[:, None])
                qk = tl.dot(q, k)
                top = (qk >= m_i[:, None]) & empty[:, None] & (offs_m[:, None] >= keys[None, :])
                if tl.max(tl.max(top.to(tl.int32), 1), 0) > 0:
                    ties += tl.sum(top.to(tl.float32), 1)
                    v = tl.load(v_base + keys[:, None] * stride_kt + offs_d[None, :])
                    acc = tl.dot(top.to(v.dtype), v, acc)
            tl.store(out_rows, (acc / tl.where(empty, ties, 1.0)[:, None]).to(Out.dtype.element_ty), mask=empty[:, None])


def interpreter_scalar_loops():
    """Let TRITON_INTERPRET=1 run loops whose bounds come from program_id: Triton 3.6's interpreter
    holds scalars as 1-element arrays and turns loop bounds into ints with int(array), which
    NumPy 2.4 refuses. Call it before launching on CPU; the GPU path never uses it."""
    from triton.runtime import interpreter
    original = interpreter._patch_lang_tensor
    if getattr(original, "scalar_loops", False):
        return

    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    patched.scalar_loops = True
    interpreter._patch_lang_tensor = patched


def theta_in_qk_units(theta, head_dim):
    """θ in logit units → float32 in raw q·k units (score = q·k / sqrt(d)), as the kernel compares."""
    return (theta.float() * math.sqrt(head_dim)).contiguous()


def prefill_launcher(q, k, v, theta=None, *, block_m=128, num_warps=None, num_stages=3, count=False):
    """Causal attention, q [B, H_q, T, d], k/v [B, H_kv, T, d] (contiguous), T a multiple of block_m.
    ``theta`` [B, H_q, T] in logit units (None: the dense kernel). Returns (run, results): ``run()``
    launches the kernel into preallocated buffers (what a timer should call); results = [out] or,
    with ``count``, [out, counts [B, H_q, T/block_m, 5] int32, occupancy [B, H_q, T/block_m, T/64] int8]."""
    B, H_q, T, D = q.shape
    H_kv = k.shape[1]
    if k.shape != (B, H_kv, T, D) or v.shape != k.shape or H_q % H_kv:
        raise ValueError(f"shapes q {tuple(q.shape)} k {tuple(k.shape)} v {tuple(v.shape)}: need k = v = [B, H_kv, T, d]")
    if T % block_m:
        raise ValueError(f"context {T} is not a multiple of block_m {block_m}")
    if count and theta is None:
        raise ValueError("count=True needs theta (the dense kernel keeps every element)")
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    n_m, n_n = T // block_m, triton.cdiv(T, BLOCK_N)
    out = torch.empty_like(q)
    theta_qk = theta_in_qk_units(theta, D) if theta is not None else q.new_empty(1, dtype=torch.float32)
    counts = torch.zeros((B, H_q, n_m, N_COUNTS) if count else (1,), device=q.device, dtype=torch.int32)
    occ = torch.zeros((B, H_q, n_m, n_n) if count else (1,), device=q.device, dtype=torch.int8)
    kernel = _prefill_fwd[(n_m, B * H_q)]

    def run():
        kernel(q, k, v, theta_qk, out, counts, occ, 1.4426950408889634 / math.sqrt(D), T, H_q, n_m, n_n,
               q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
               G=H_q // H_kv, D=D, BLOCK_M=block_m, BLOCK_N=BLOCK_N, THRESHOLD=theta is not None, COUNT=count,
               num_warps=num_warps or (8 if block_m == 128 else 4), num_stages=num_stages)

    return run, ([out, counts, occ] if count else [out])


def prefill_attention(q, k, v, theta=None, *, block_m=128, count=False):
    """Run the kernel once: out, or (out, counts, occupancy) with ``count`` (see prefill_launcher)."""
    run, results = prefill_launcher(q, k, v, theta, block_m=block_m, count=count)
    run()
    return tuple(results) if count else results[0]


def reference_prefill(q, k, v, theta=None):
    """Float64 causal attention with the kernel's rule: keep = q·k > θ·sqrt(d) (θ converted to float32
    in q·k units as the kernel receives it), an empty row keeps its maximum. Returns (out, keep)."""
    B, H_q, T, D = q.shape
    G = H_q // k.shape[1]
    q64, k64, v64 = q.double(), k.double().repeat_interleave(G, 1), v.double().repeat_interleave(G, 1)
    qk = q64 @ k64.transpose(-1, -2)
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    qk = qk.masked_fill(~causal, float("-inf"))
    if theta is None:
        keep = causal.expand(B, H_q, T, T)
    else:
        theta_qk = theta_in_qk_units(theta, D).double()
        keep = (qk > theta_qk[..., None]) & causal
        empty = ~keep.any(-1, keepdim=True)
        keep = keep | (empty & (qk == qk.amax(-1, keepdim=True)))
    p = torch.softmax(qk.masked_fill(~keep, float("-inf")) / math.sqrt(D), dim=-1)
    return p @ v64, keep


def near_threshold(q, k, theta, rel=2e-5):
    """Causal scores within float32 accumulation error of θ (|q·k - θ·sqrt(d)| <= rel · |q| |k|): the
    elements a float32 kernel and a float64 reference may legitimately decide differently."""
    D, G = q.shape[-1], q.shape[1] // k.shape[1]
    q64, k64 = q.double(), k.double().repeat_interleave(G, 1)
    gap = (q64 @ k64.transpose(-1, -2) - theta_in_qk_units(theta, D).double()[..., None]).abs()
    scale = q64.norm(dim=-1)[..., None] * k64.norm(dim=-1)[..., None, :]
    causal = torch.ones(gap.shape[-1], gap.shape[-1], dtype=torch.bool, device=q.device).tril()
    return int(((gap <= rel * scale) & causal).sum())


def check_prefill(name, got, ref, tol=2e-2):
    """Relative L2 error of a kernel output against the float64 reference; raises above ``tol``."""
    got = got.double()
    if not torch.isfinite(got).all():
        raise AssertionError(f"{name}: output has NaN/inf")
    rel = float((got - ref).norm() / ref.norm())
    if not rel < tol:
        raise AssertionError(f"{name}: relative L2 error {rel:.3e} >= {tol}")
    return rel
