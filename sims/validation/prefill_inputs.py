"""Prefill inputs whose Top-θ masks come out of the kernel's own test ``score > θ``, and the
recounts of what the kernel kept.

- ``clustered``: a planted block pattern. Q and K carry small integer features (exact in bf16,
  exact sums in float32), so every score is an integer plus bounded noise and one θ per row
  selects exactly the intended key tiles: the sink tile 0, the diagonal tile and the one before it
  (local window), and random "code" tiles per query tile (each key tile gets one of ``n_codes``
  one-hot codes; a query tile switches codes on until it holds round(f · causal tiles) tiles).
  Scores: (kt - qt) + 256 · [sink or code match] + noise, |noise| < 0.3; θ = -1.5 / sqrt(d).
- ``scattered``: Q, K standard normal; θ_i = Φ⁻¹(1 - f) · |q_i| / sqrt(d), so each causal score of
  row i is kept with probability f, spread uniformly: nearly every 64 × 64 block holds a kept score.
- ``dense``: Q, K standard normal, θ = -inf (the threshold kernel keeps everything).

In every pattern the G query heads of a KV group share one mask (Q differs only in noise dims
for ``clustered``, not at all for ``scattered``), so the per-head kept set equals the group's
union, which is what the simulator's prefill model takes per (query tile, KV head).
"""
import numpy as np
import torch

TILE = 64
SINK_SCORE = 256.0   # planted bonus of a sink/code key; > any (qt - kt) ≤ 255, exact in bf16
WINDOW_TILES = 2     # diagonal tile and the one before it
NOISE_BOUND = 0.1    # per-dimension noise amplitude in the clustered features


def clustered_codes(head_dim):
    """One-hot code dimensions: what is left of d after 3 feature dims and 29 noise dims."""
    return head_dim - 3 - 29


def _noise(shape, gen, device):
    return (torch.rand(shape, generator=gen, device=device) * 2 - 1) * NOISE_BOUND


def clustered_tiles(n_tiles, fraction, n_codes, rng):
    """Intended kept (query tile, key tile) pattern for one (batch item, KV head): bool
    [n_tiles, n_tiles] lower-triangular, and the per-tile codes and per-query-tile code sets."""
    code_of = rng.permutation(n_tiles) % n_codes
    pattern = np.zeros((n_tiles, n_tiles), dtype=bool)
    chosen = np.zeros((n_tiles, n_codes), dtype=bool)
    for qt in range(n_tiles):
        row = pattern[qt]
        row[0] = True
        row[max(0, qt - WINDOW_TILES + 1): qt + 1] = True
        target = round(fraction * (qt + 1))
        for code in rng.permutation(n_codes):
            if row.sum() >= target:
                break
            chosen[qt, code] = True
            row[: qt + 1] |= code_of[: qt + 1] == code
    return pattern, code_of, chosen


def clustered_patterns(batch, kv_heads, n_tiles, fraction, n_codes, seed):
    """clustered_tiles for every (batch item, KV head), seeded: patterns [B, H_kv, n, n], codes [B, H_kv, n],
    chosen codes [B, H_kv, n, n_codes]. NumPy only, so the occupancy is known before any GPU run."""
    rng = np.random.default_rng(seed)
    made = [clustered_tiles(n_tiles, fraction, n_codes, rng) for _ in range(batch * kv_heads)]
    return tuple(np.stack([m[i] for m in made]).reshape(batch, kv_heads, *made[0][i].shape) for i in range(3))


def clustered_inputs(batch, q_heads, kv_heads, context, head_dim, fraction, seed, device, dtype=torch.bfloat16):
    """q [B, H_q, T, d], k [B, H_kv, T, d], theta [B, H_q, T] and the intended tile pattern
    [B, H_kv, T/64, T/64] (bool, numpy)."""
    n_tiles, n_codes = context // TILE, clustered_codes(head_dim)
    if context % TILE or n_tiles > 256 or n_codes < 1:
        raise ValueError(f"clustered inputs need context a multiple of 64 up to 16384 and head_dim >= 33, "
                         f"got context {context}, head_dim {head_dim}")
    gen = torch.Generator(device=device).manual_seed(seed)
    G = q_heads // kv_heads
    tile_of = torch.arange(context, device=device) // TILE
    q = _noise((batch, q_heads, context, head_dim), gen, device)
    k = _noise((batch, kv_heads, context, head_dim), gen, device)
    patterns, code_of, chosen = clustered_patterns(batch, kv_heads, n_tiles, fraction, n_codes, seed)
    for b in range(batch):
        for g in range(kv_heads):
            heads = slice(g * G, (g + 1) * G)
            k[b, g, :, 0] = tile_of.float()
            k[b, g, :, 1] = 1.0
            k[b, g, :, 2] = (tile_of == 0).float()
            k[b, g, :, 3:3 + n_codes] = 0.0
            codes = torch.as_tensor(code_of[b, g], device=device)[tile_of]
            k[b, g, torch.arange(context, device=device), 3 + codes] = 1.0
            q[b, heads, :, 0] = 1.0
            q[b, heads, :, 1] = -tile_of.float()
            q[b, heads, :, 2] = SINK_SCORE
            q[b, heads, :, 3:3 + n_codes] = torch.as_tensor(chosen[b, g], device=device, dtype=torch.float32)[tile_of] * SINK_SCORE
    theta = torch.full((batch, q_heads, context), (0.5 - WINDOW_TILES) / head_dim ** 0.5, device=device)
    return q.to(dtype), k.to(dtype), theta, patterns


def scattered_inputs(batch, q_heads, kv_heads, context, head_dim, fraction, seed, device, dtype=torch.bfloat16):
    """q, k standard normal (q shared by a group's heads) and θ keeping each score with probability f."""
    gen = torch.Generator(device=device).manual_seed(seed)
    G = q_heads // kv_heads
    q = torch.randn(batch, kv_heads, context, head_dim, generator=gen, device=device).to(dtype)
    q = q.repeat_interleave(G, dim=1)
    k = torch.randn(batch, kv_heads, context, head_dim, generator=gen, device=device).to(dtype)
    if fraction >= 1.0:
        theta = torch.full((batch, q_heads, context), float("-inf"), device=device)
    else:
        z = float(torch.special.ndtri(torch.tensor(1.0 - fraction, dtype=torch.float64)))
        theta = z * q.float().norm(dim=-1) / head_dim ** 0.5
    return q, k, theta, None


def make_inputs(pattern, batch, q_heads, kv_heads, context, head_dim, fraction, seed, device, dtype=torch.bfloat16):
    """(q, k, v, theta, intended tile pattern or None) for pattern 'clustered', 'scattered' or 'dense'."""
    if pattern == "clustered":
        q, k, theta, tiles = clustered_inputs(batch, q_heads, kv_heads, context, head_dim, fraction, seed, device, dtype)
    elif pattern in ("scattered", "dense"):
        q, k, theta, tiles = scattered_inputs(batch, q_heads, kv_heads, context, head_dim,
                                              1.0 if pattern == "dense" else fraction, seed, device, dtype)
    else:
        raise ValueError(f"pattern {pattern!r}: expected clustered, scattered or dense")
    gen = torch.Generator(device=device).manual_seed(seed + 1)
    v = torch.randn(k.shape, generator=gen, device=device).to(dtype)
    return q, k, v, theta, tiles


def occupancy_summary(counts, occ, kv_heads, block_m):
    """Kernel counters at ``block_m`` = 64 → per (batch item, KV head, 64-row query tile) arrays for the
    simulator (non-empty tiles: union over the group's heads) and the headline fractions.

    counts [B, H_q, n_m, 5] and occ [B, H_q, n_m, n_n] as ``prefill_attention(count=True)`` returns."""
    if block_m != TILE:
        raise ValueError(f"occupancy is recorded with block_m {TILE}, got {block_m}")
    counts, occ = counts.cpu().numpy().astype(np.int64), occ.cpu().numpy().astype(bool)
    B, H_q, n_m, n_n = occ.shape
    G = H_q // kv_heads
    union = occ.reshape(B, kv_heads, G, n_m, n_n).any(axis=2)
    per_group = counts.reshape(B, kv_heads, G, n_m, 5)
    rows_causal = B * H_q * TILE * n_m * (TILE * n_m + 1) // 2   # T(T+1)/2 per head
    return {
        "kv_tiles_total": np.broadcast_to(np.arange(1, n_m + 1), (B, kv_heads, n_m)).astype(np.int32),
        "kv_tiles_nonempty": union.sum(axis=-1).astype(np.int32),
        "kept_v_rows": per_group[..., 3].max(axis=2).astype(np.int32),  # = the union when the heads share a mask
        "kept_fraction": float(counts[..., 0].sum() + counts[..., 4].sum()) / rows_causal,
        "nonempty_tile_fraction": float(union.sum()) / (B * kv_heads * n_m * (n_m + 1) // 2),
        "block64_fraction": block_fraction(occ, 1),     # per head, what a BLOCK_M = 64 kernel skips
        "block128_fraction": block_fraction(occ, 2),    # per head, what a BLOCK_M = 128 kernel skips
        "empty_rows": int(counts[..., 4].sum()),
        "heads_agree": bool((per_group[..., :4] == per_group[:, :, :1, :, :4]).all()),
    }


def block_fraction(occ, rows_tiles):
    """Fraction of a kernel's (rows_tiles · 64 query rows × 64 keys) causal blocks holding a kept score,
    from the 64-row occupancy occ [B, H_q, n_m, n_n] (per head)."""
    B, H, n_m, n_n = occ.shape
    n_big = n_m // rows_tiles
    big = occ[:, :, : n_big * rows_tiles].reshape(B, H, n_big, rows_tiles, n_n).any(axis=3)
    scored = sum(rows_tiles * (m + 1) for m in range(n_big)) * B * H
    return float(big.sum()) / scored
