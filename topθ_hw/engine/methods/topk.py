"""Top-k attention: each row keeps its k largest valid scores (rows with n ≤ k stay dense).

Ties at the k-th value are broken towards the most recent positions, so exactly min(k, n)
entries are kept. Needs the whole score row before it can select (a sort/selection pass).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numba import njit, prange

from topθ_hw.engine.methods.base import AttentionMethod, Selection, parse_layer_k


@njit(parallel=True, nogil=True, cache=True)
def top_k_rows(scores, row_lo, row_hi, key_lo, k, keep):
    """keep[r] = the k largest valid scores of row r (most recent among ties)."""
    rows_per_head = row_lo.shape[0]
    for r in prange(scores.shape[0]):
        i = r % rows_per_head
        lo, hi = row_lo[i] - key_lo, row_hi[i] - key_lo
        row = scores[r, lo:hi + 1]
        keep[r, :] = False
        if row.shape[0] <= k:
            keep[r, lo:hi + 1] = True
            continue
        kth = np.partition(row.copy(), row.shape[0] - k)[row.shape[0] - k]
        ties = k
        for j in range(row.shape[0]):
            if row[j] > kth:
                ties -= 1
        for j in range(row.shape[0] - 1, -1, -1):
            if row[j] > kth:
                keep[r, lo + j] = True
            elif row[j] == kth and ties > 0:
                keep[r, lo + j] = True
                ties -= 1


@dataclass
class TopK(AttentionMethod):
    k: int = 64
    layer_k: str | None = None   # e.g. "0:512,1:512"
    _k_per_layer: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self):
        self.name = "topk"
        parse_layer_k(None, self.k, 1, "--k")

    def check(self, meta, where: str = "") -> None:
        self._k_per_layer = parse_layer_k(self.layer_k, self.k, meta.n_layers)

    def prepare_layer(self, layer, qkv):
        return int(self._k_per_layer[layer])

    def select(self, block, layer_k, state) -> Selection:
        keep = np.empty(block.scores.shape, np.bool_)
        top_k_rows(block.scores, block.row_lo, block.row_hi, block.key_lo, layer_k, keep)
        return Selection(keep=keep)
