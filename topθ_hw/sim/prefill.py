"""Simulate a causal prefill call from a tile-occupancy pattern (no engine statistics needed).

The occupancy is what a tiled kernel sees: per (batch item, KV head, 64-row query tile) how many
64-key tiles it scores (every causal one) and how many hold at least one kept element (union over
the rows and the group's query heads). The tile-skipping kernel loads those tiles' V whole, so
they are charged as 64-token pages (fetch 'page64'); the dense kernel loads every causal tile.
The call is :func:`topθ_hw.sim.workload.prefill_call`'s, with the batch's streams side by side.
"""

from __future__ import annotations

import numpy as np

from topθ_hw.errors import UserError
from topθ_hw.sim.hardware import Device
from topθ_hw.sim.simulate import simulate_call
from topθ_hw.sim.workload import TILE, Shape, prefill_call


def prefill_tiles(context: int, kv_tiles_nonempty: np.ndarray, kept_v_rows: np.ndarray | None = None) -> dict:
    """The ``tiles`` dict of :func:`prefill_call` for a batch: one row per (batch item, KV head, query tile).

    kv_tiles_nonempty [B, H_kv, n_q_tiles] int: key tiles holding a kept element; kept_v_rows (same
    shape): key rows kept by some row of the tile (defaults to 64 per non-empty tile)."""
    occ = np.asarray(kv_tiles_nonempty, dtype=np.int64)
    if occ.ndim != 3:
        raise UserError(f"kv_tiles_nonempty must be [batch, kv_heads, query tiles], got shape {occ.shape}")
    B, H_kv, n_q = occ.shape
    if n_q != -(-context // TILE):
        raise UserError(f"kv_tiles_nonempty has {n_q} query tiles; context {context} has {-(-context // TILE)}")
    starts = np.arange(n_q, dtype=np.int64) * TILE
    ends = np.minimum(starts + TILE, context)
    total = -(-ends // TILE)
    if (occ < 0).any() or (occ > total).any():
        raise UserError("kv_tiles_nonempty must lie in 0..(causal key tiles of its query tile)")
    kept = occ * TILE if kept_v_rows is None else np.asarray(kept_v_rows, dtype=np.int64)
    grid = lambda a: np.broadcast_to(a, (B, H_kv, n_q)).reshape(-1)
    return {"kv_group": np.repeat(np.arange(B * H_kv, dtype=np.int64), n_q),
            "row_start": grid(starts), "row_end": grid(ends), "kv_tiles_total": grid(total),
            "kv_tiles_nonempty": occ.reshape(-1), "kept_v_rows": kept.reshape(-1),
            f"pages_needed_{TILE}": occ.reshape(-1)}


def simulate_prefill(device: Device, shape: Shape, context: int, kv_tiles_nonempty: np.ndarray | None,
                     kept_v_rows: np.ndarray | None = None, batch: int = 1) -> dict:
    """Predicted totals (seconds, bytes, FLOPs) of one layer's causal prefill for the batch.

    ``kv_tiles_nonempty`` None: the dense kernel (every causal tile; ``batch`` gives the batch size);
    otherwise the tile-skipping Top-θ kernel on that occupancy."""
    if kv_tiles_nonempty is None:
        n_q = -(-context // TILE)
        full = np.broadcast_to(np.arange(1, n_q + 1), (batch, shape.kv_heads, n_q))
        tiles, method = prefill_tiles(context, full), "dense"
    else:
        tiles, method = prefill_tiles(context, kv_tiles_nonempty, kept_v_rows), "toptheta"
    call = prefill_call(shape, tiles, method, f"page{TILE}", device.memory.sector_bytes,
                        device.memory.l2_MiB * 2**20)
    return simulate_call(call, device)
