"""Triton split-KV (flash-decoding) decode-attention kernels for the GPU validation runs.

One partial kernel serves dense, V-row skipping and page skipping: every program streams all K
rows of its key range (scores are needed for every key, as a fused top-theta kernel computes
them before comparing with the threshold), and loads a V row only where the kept mask is set.
Masked-off V rows are predicated-off loads, so they issue no memory request: V bytes read are
exactly (kept rows) x d x 2. The mask has one byte per `mask_gran` keys: 1 for V rows, 16 or 64
for pages, so page skipping fetches V in whole pages. A second small kernel merges the splits.
"""
import torch
import triton
import triton.language as tl


@triton.jit
def _split_kv_partial(Q, K, V, Mask, Acc, Mx, Den,
                      n_ctx, mask_gran, sm_scale,
                      s_qb, s_qh, s_kb, s_kh, s_kn, s_vb, s_vh, s_vn, s_mb, s_mh,
                      H_KV: tl.constexpr, G: tl.constexpr, G_PAD: tl.constexpr,
                      D: tl.constexpr, BLOCK_N: tl.constexpr, MASKED: tl.constexpr,
                      CHUNK: tl.constexpr):
    pid_bh = tl.program_id(0)
    split = tl.program_id(1)
    b = (pid_bh // H_KV).to(tl.int64)
    h = pid_bh % H_KV
    offs_g = tl.arange(0, G_PAD)
    offs_d = tl.arange(0, D)
    offs_n = tl.arange(0, BLOCK_N)
    g_ok = offs_g < G
    # the G query heads of this KV head, padded to 16 rows for tl.dot
    q = tl.load(Q + b * s_qb + (h * G + offs_g)[:, None] * s_qh + offs_d[None, :],
                mask=g_ok[:, None], other=0.0)
    k_base = K + b * s_kb + h * s_kh
    v_base = V + b * s_vb + h * s_vh
    m_base = Mask + b * s_mb + h * s_mh
    start = split * CHUNK
    m_i = tl.full([G_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([G_PAD], tl.float32)
    acc = tl.zeros([G_PAD, D], tl.float32)
    for i in range(0, CHUNK, BLOCK_N):  # the last split may run past n_ctx: masked below
        n = start + i + offs_n
        ok = n < n_ctx
        k = tl.load(k_base + n[:, None] * s_kn + offs_d[None, :], mask=ok[:, None], other=0.0)
        s = tl.dot(q, tl.trans(k)) * sm_scale
        if MASKED:
            keep = tl.load(m_base + n // mask_gran, mask=ok, other=0)
            ok = ok & (keep != 0)
        s = tl.where(ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # no kept key yet: avoid inf - inf
        alpha = tl.exp(m_i - m_safe)
        p = tl.exp(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_base + n[:, None] * s_vn + offs_d[None, :], mask=ok[:, None], other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    row = (pid_bh * G + offs_g) * tl.num_programs(1) + split
    tl.store(Acc + row[:, None] * D + offs_d[None, :], acc, mask=g_ok[:, None])
    tl.store(Mx + row, m_i, mask=g_ok)
    tl.store(Den + row, l_i, mask=g_ok)


@triton.jit
def _split_kv_reduce(Acc, Mx, Den, Out, n_splits, D: tl.constexpr, S_PAD: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)  # b * H_q + query head
    offs_s = tl.arange(0, S_PAD)
    offs_d = tl.arange(0, D)
    s_ok = offs_s < n_splits
    m = tl.load(Mx + row * n_splits + offs_s, mask=s_ok, other=float("-inf"))
    den = tl.load(Den + row * n_splits + offs_s, mask=s_ok, other=0.0)
    w = tl.exp(m - tl.max(m, 0))  # splits with no kept key have m = -inf, weight 0
    acc = tl.load(Acc + (row * n_splits + offs_s)[:, None] * D + offs_d[None, :],
                  mask=s_ok[:, None], other=0.0)
    o = tl.sum(acc * w[:, None], 0) / tl.sum(den * w, 0)
    tl.store(Out + row * D + offs_d, o.to(Out.dtype.element_ty))


def n_splits_for(n_ctx, chunk):
    return -(-n_ctx // chunk)


def split_kv_decode(q, k, v, mask=None, mask_gran=1, chunk=512, block_n=64,
                    num_warps=4, num_stages=3, out=None):
    """q [B, H_q, d]; k, v [B, H_kv, N, d]; mask uint8 [B, H_kv, ceil(N / mask_gran)] or None."""
    B, H_q, D = q.shape
    H_kv, N = k.shape[1], k.shape[2]
    G = H_q // H_kv
    S = n_splits_for(N, chunk)
    acc = torch.empty(B * H_q * S, D, device=q.device, dtype=torch.float32)
    mx = torch.empty(B * H_q * S, device=q.device, dtype=torch.float32)
    den = torch.empty_like(mx)
    if out is None:
        out = torch.empty_like(q)
    masked = mask is not None
    m = mask if masked else q  # any pointer; never read when MASKED is False
    s_mb, s_mh = (mask.stride(0), mask.stride(1)) if masked else (0, 0)
    _split_kv_partial[(B * H_kv, S)](
        q, k, v, m, acc, mx, den, N, mask_gran, D ** -0.5,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), s_mb, s_mh,
        H_KV=H_kv, G=G, G_PAD=max(16, triton.next_power_of_2(G)), D=D, BLOCK_N=block_n,
        MASKED=masked, CHUNK=chunk, num_warps=num_warps, num_stages=num_stages)
    _split_kv_reduce[(B * H_q,)](acc, mx, den, out, S, D=D,
                                 S_PAD=max(16, triton.next_power_of_2(S)), num_warps=4)
    return out


def reference_decode(q, k, v, kept_rows=None):
    """float32 attention of one decode query per head over kept keys (union mask per KV head)."""
    B, H_q, D = q.shape
    H_kv = k.shape[1]
    G = H_q // H_kv
    outs = []
    for b in range(B):  # one batch row at a time keeps the float32 copies small
        qf = q[b].float().view(H_kv, G, D)
        s = torch.einsum("hgd,hnd->hgn", qf, k[b].float()) * D ** -0.5
        if kept_rows is not None:
            s = s.masked_fill(~kept_rows[b][:, None, :], float("-inf"))
        outs.append(torch.einsum("hgn,hnd->hgd", torch.softmax(s, -1), v[b].float()).reshape(H_q, D))
    return torch.stack(outs)


def kept_mask(n_batch, n_kv, n_units, fraction, gen, device, n_sink, n_recent):
    """bool [B, H_kv, n_units]: n_sink first units (attention sinks), n_recent last units (recent
    window) and uniformly scattered units, round(fraction * n_units) in all, drawn afresh for
    every (batch, KV head). A unit is a V row, or a page for page skipping."""
    n_keep = max(1, min(n_units, round(fraction * n_units)))
    sink = min(n_sink, n_keep)
    recent = min(n_recent, (n_keep - sink) // 2)
    scattered = n_keep - sink - recent
    middle = n_units - sink - recent
    mask = torch.zeros(n_batch * n_kv, n_units, dtype=torch.bool, device=device)
    mask[:, :sink] = True
    if recent:
        mask[:, n_units - recent:] = True
    if scattered:
        draw = torch.rand(n_batch * n_kv, middle, generator=gen, device=device)
        mask.scatter_(1, draw.topk(scattered, dim=1).indices + sink, True)
    return mask.view(n_batch, n_kv, n_units)



# ------------------------------------------------------------------ the fused Top-θ decode family
# Top-θ needs no mask in memory: each program reads θ for its G query heads once, compares every
# score with it, takes the union over the G heads (one V row serves the whole KV group) and
# predicates the V load on that union. A key tile in which no head keeps anything skips the V load
# and the P·V product altogether (a scalar branch). The V load depends on this tile's scores, so
# it cannot be prefetched by the software pipeline: it is a dependent round trip per kept tile.

@triton.jit
def _split_kv_threshold(Q, K, V, Theta, Acc, Mx, Den, n_ctx, sm_scale,
                        s_qb, s_qh, s_kb, s_kh, s_kn, s_vb, s_vh, s_vn, s_tb,
                        H_KV: tl.constexpr, G: tl.constexpr, G_PAD: tl.constexpr,
                        D: tl.constexpr, BLOCK_N: tl.constexpr, THRESHOLD: tl.constexpr,
                        PAGE: tl.constexpr, CHUNK: tl.constexpr):
    pid_bh = tl.program_id(0)
    split = tl.program_id(1)
    b = (pid_bh // H_KV).to(tl.int64)
    h = pid_bh % H_KV
    offs_g = tl.arange(0, G_PAD)
    offs_d = tl.arange(0, D)
    offs_n = tl.arange(0, BLOCK_N)
    g_ok = offs_g < G
    q = tl.load(Q + b * s_qb + (h * G + offs_g)[:, None] * s_qh + offs_d[None, :],
                mask=g_ok[:, None], other=0.0)
    if THRESHOLD:  # θ of this row (decode step) for each query head of the group: read once
        theta = tl.load(Theta + b * s_tb + h * G + offs_g, mask=g_ok, other=float("inf"))
    k_base = K + b * s_kb + h * s_kh
    v_base = V + b * s_vb + h * s_vh
    start = split * CHUNK
    m_i = tl.full([G_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([G_PAD], tl.float32)
    acc = tl.zeros([G_PAD, D], tl.float32)
    for i in range(0, CHUNK, BLOCK_N):  # the last split may run past n_ctx: masked below
        n = start + i + offs_n
        ok = n < n_ctx
        k = tl.load(k_base + n[:, None] * s_kn + offs_d[None, :], mask=ok[:, None], other=0.0)
        s = tl.dot(q, tl.trans(k)) * sm_scale
        if THRESHOLD:
            hit = (s > theta[:, None]) & ok[None, :]          # pre-softmax keep, per head
            need = tl.max(hit.to(tl.int32), 0)                # union over the group's heads
            if PAGE > 1:                                      # whole pages of PAGE keys
                page_any = tl.max(tl.reshape(need, [BLOCK_N // PAGE, PAGE]), 1)
                need = tl.reshape(tl.broadcast_to(page_any[:, None], [BLOCK_N // PAGE, PAGE]), [BLOCK_N])
            s = tl.where(hit, s, float("-inf"))
        else:
            s = tl.where(ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # no kept key yet: avoid inf - inf
        alpha = tl.exp(m_i - m_safe)
        p = tl.exp(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        if THRESHOLD:
            if tl.max(need, 0) > 0:  # some V row of this tile is needed: predicated load
                v = tl.load(v_base + n[:, None] * s_vn + offs_d[None, :], mask=(need > 0)[:, None], other=0.0)
                acc += tl.dot(p.to(v.dtype), v)
        else:
            v = tl.load(v_base + n[:, None] * s_vn + offs_d[None, :], mask=ok[:, None], other=0.0)
            acc += tl.dot(p.to(v.dtype), v)
        m_i = m_new
    row = (pid_bh * G + offs_g) * tl.num_programs(1) + split
    tl.store(Acc + row[:, None] * D + offs_d[None, :], acc, mask=g_ok[:, None])
    tl.store(Mx + row, m_i, mask=g_ok)
    tl.store(Den + row, l_i, mask=g_ok)


def threshold_decode(q, k, v, theta=None, page=1, chunk=512, block_n=64, num_warps=4, num_stages=3, out=None):
    """Fused Top-θ split-KV decode. q [B, H_q, d]; k, v [B, H_kv, N, d]; theta fp32 [B, H_q]
    (pre-softmax, logit units) or None for the dense kernel of the same source. page: V fetched
    in whole pages of `page` keys (1 = single rows); it must divide block_n."""
    B, H_q, D = q.shape
    H_kv, N = k.shape[1], k.shape[2]
    if chunk % block_n or block_n % page:
        raise ValueError(f"chunk {chunk} must be a multiple of block_n {block_n}, and block_n of page {page}")
    S = n_splits_for(N, chunk)
    acc = torch.empty(B * H_q * S, D, device=q.device, dtype=torch.float32)
    mx = torch.empty(B * H_q * S, device=q.device, dtype=torch.float32)
    den = torch.empty_like(mx)
    if out is None:
        out = torch.empty_like(q)
    thr = theta is not None
    t = theta if thr else mx  # any pointer; never read when THRESHOLD is False
    _split_kv_threshold[(B * H_kv, S)](
        q, k, v, t, acc, mx, den, N, D ** -0.5,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), theta.stride(0) if thr else 0,
        H_KV=H_kv, G=H_q // H_kv, G_PAD=max(16, triton.next_power_of_2(H_q // H_kv)), D=D, BLOCK_N=block_n,
        THRESHOLD=thr, PAGE=page, CHUNK=chunk, num_warps=num_warps, num_stages=num_stages)
    _split_kv_reduce[(B * H_q,)](acc, mx, den, out, S, D=D,
                                 S_PAD=max(16, triton.next_power_of_2(S)), num_warps=4)
    return out


def reference_threshold(q, k, v, theta, page=1):
    """float64 Top-θ decode: per head, softmax over its scores > θ; returns (output, the V rows
    the kernel must read: bool [B, H_kv, N], the union over each group's heads, page-rounded)."""
    B, H_q, D = q.shape
    H_kv, N = k.shape[1], k.shape[2]
    G = H_q // H_kv
    outs, needs = [], []
    for b in range(B):
        s = torch.einsum("hgd,hnd->hgn", q[b].double().view(H_kv, G, D), k[b].double()) * D ** -0.5
        hit = s > theta[b].double().view(H_kv, G, 1)
        need = hit.any(1)
        if page > 1:
            need = need.view(H_kv, -1, page).any(-1).repeat_interleave(page, -1)
        p = torch.softmax(s.masked_fill(~hit, float("-inf")), -1)
        outs.append(torch.einsum("hgn,hnd->hgd", p, v[b].double()).reshape(H_q, D))
        needs.append(need)
    return torch.stack(outs), torch.stack(needs)


def thresholds_for(q, k, fraction, page=1):
    """θ [B, H_q] (fp32) that makes a fraction `fraction` of the V units (rows, or pages of `page`
    keys) of each (batch, KV head) needed. A key is needed when any head of its group scores it
    above that head's θ; each head's θ sits at the same rank t of its own scores, so needed =
    max over heads of a key's rank > t, and t is the (1 - fraction) quantile of that max (of its
    page maximum for pages). θ lies halfway between two adjacent scores, never at a tie, and
    below each head's maximum, so no head's row is empty (the empty-row rule is never exercised)."""
    B, H_q, D = q.shape
    H_kv, N = k.shape[1], k.shape[2]
    G = H_q // H_kv
    theta = torch.empty(B, H_q, dtype=torch.float32, device=q.device)
    for b in range(B):
        s = torch.einsum("hgd,hnd->hgn", q[b].float().view(H_kv, G, D), k[b].float()) * D ** -0.5
        rank = s.argsort(-1).argsort(-1).float() / N          # [H_kv, G, N], 0 .. (N-1)/N
        unit = rank.max(1).values.view(H_kv, N // page, page).max(-1).values  # [H_kv, units]
        n_units = unit.shape[-1]
        n_keep = max(1, min(n_units, round(fraction * n_units)))
        t = unit.sort(-1).values[:, n_units - n_keep - 1] if n_keep < n_units else torch.full((H_kv,), -1.0, device=q.device)
        idx = (t * N).round().long().clamp(-1, N - 2)         # rank index of the last dropped score
        srt = s.sort(-1).values                               # [H_kv, G, N]
        lo = srt.gather(-1, idx.clamp(min=0).view(H_kv, 1, 1).expand(H_kv, G, 1))
        hi = srt.gather(-1, (idx + 1).view(H_kv, 1, 1).expand(H_kv, G, 1))
        th = torch.where(idx.view(H_kv, 1, 1) < 0, srt[..., :1] - 1.0, (lo + hi) / 2)
        theta[b] = th.view(H_q)
    return theta
