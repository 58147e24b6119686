"""One attention call under a live method: scores, selection, P·V, V-mean compensation, counting.

Materialises the scores of a block of query rows ``[B, Hq, rows, keys]`` in float32: the live path
favours one readable definition over the engine's streaming kernels, and the tests check that both
agree on the same Q/K/V.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .methods.base import LiveMethod, Rows

ROW_BLOCK = 256


@dataclass
class KeptCounter:
    """Kept elements (rows of prefill calls) and kept V rows (rows counted as decode steps) per layer.

    A query row whose causal length is at least ``decode_from`` is counted as a decode step: under
    teacher forcing, prefill row i sees exactly what decoding token i with an n-entry KV cache
    sees, so its per-KV-group union over the G query heads is the V rows that step reads."""

    n_layers: int
    decode_from: int = 1
    kept_elements: np.ndarray = field(init=False)
    dense_elements: np.ndarray = field(init=False)
    kept_v_rows: np.ndarray = field(init=False)
    v_rows_total: np.ndarray = field(init=False)
    decode_steps: int = 0

    def __post_init__(self):
        for name in ("kept_elements", "dense_elements", "kept_v_rows", "v_rows_total"):
            setattr(self, name, np.zeros(self.n_layers, dtype=np.float64))

    def record(self, layer: int, kept: torch.Tensor, rows: Rows, n_kv_heads: int, prefill: bool) -> None:
        B, Hq, T, Tk = kept.shape
        if prefill:  # elements of prefill calls (decode calls have one query row)
            self.kept_elements[layer] += float(kept.sum())
            self.dense_elements[layer] += float(rows.n.sum()) * B * Hq
        steps = rows.n >= self.decode_from
        if not bool(steps.any()):
            return
        union = kept[:, :, steps].view(B, n_kv_heads, Hq // n_kv_heads, -1, Tk).any(2)
        self.kept_v_rows[layer] += float(union.sum())
        self.v_rows_total[layer] += float(rows.n[steps].sum()) * B * n_kv_heads
        if layer == 0:
            self.decode_steps += int(steps.sum()) * B

    def element_fraction(self) -> float:
        return float(self.kept_elements.sum() / max(self.dense_elements.sum(), 1.0))

    def v_row_fraction(self) -> float:
        return float(self.kept_v_rows.sum() / max(self.v_rows_total.sum(), 1.0))


def attend(method: LiveMethod, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float,
           layer: int, counter: KeptCounter | None = None) -> torch.Tensor:
    """query [B, Hq, T, d], key/value [B, Hkv, Tk, d] (post-RoPE, GQA not repeated) -> [B, T, Hq, d].

    Query rows go in blocks of ``ROW_BLOCK``, each scored only against the keys its last row can
    see, which skips most of the causal upper triangle (and bounds the score block's memory)."""
    B, Hq, T, d = query.shape
    Hkv, Tk = key.shape[1], key.shape[2]
    G = Hq // Hkv
    q = query.float().view(B, Hkv, G, T, d)              # head h = g*G + j uses KV head g
    k, v = key.float(), value.float()
    v_mean = v.cumsum(2) / torch.arange(1, Tk + 1, dtype=v.dtype, device=v.device)[:, None] if method.vmc else None
    out = torch.empty(B, Hkv, G, T, d, device=q.device)
    first = Tk - T                                       # absolute position of query row 0
    for r0 in range(0, T, ROW_BLOCK):
        r1 = min(T, r0 + ROW_BLOCK)
        rows = Rows.of(r1 - r0, first + r1, q.device)
        q_block = q[:, :, :, r0:r1].reshape(B, Hkv, G * (r1 - r0), d)
        scores = (q_block @ k[:, :, :first + r1].transpose(-1, -2)).mul_(scaling).view(B, Hq, r1 - r0, -1)
        # methods that decide from Q and K themselves (Quest's page bounds, H2O's per-KV-head cache)
        seen = ({"query": q_block.view(B, Hq, r1 - r0, d), "key": k[:, :, :first + r1]}
                if getattr(method, "needs_qk", False) else {})
        p, kept = method.weights(scores, rows, layer, **seen)
        block = (p.view(B, Hkv, G * (r1 - r0), -1) @ v[:, :, :first + r1]).view(B, Hkv, G, r1 - r0, d)
        if method.vmc:
            lost = (1.0 - p.sum(-1)).view(B, Hkv, G, r1 - r0, 1)   # float32: the lost mass is small
            block += lost * v_mean[:, :, rows.n - 1].unsqueeze(2)
        out[:, :, :, r0:r1] = block
        if counter is not None:
            counter.record(layer, kept, rows, Hkv, prefill=T > 1)
    return out.view(B, Hq, T, d).transpose(1, 2).to(query.dtype)
