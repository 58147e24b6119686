"""Top-p attention (Twilight: Lin et al., "Twilight: Adaptive Attention Sparsity with Hierarchical
Top-p Pruning", arXiv 2502.02770): keep the smallest set of keys whose softmax mass reaches p.

Rule per row (valid keys only, sliding window included): rank the keys by score, highest first
(ties: the most recent first); keep the shortest prefix of that ranking whose probability mass,
under the row's full softmax, is ≥ p. The kept weights are renormalised over the kept keys.
p = 1 keeps every valid key (dense), even keys whose probability underflows to 0.

What it must read to decide: all of K and the row's *full* softmax (the denominator over every
valid key) before any key can be dropped, then a sort or selection pass over the whole score row
(``needs_full_row = True``). It saves V reads and P·V work only, like top-k.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from topθ_hw.engine.methods.base import AttentionMethod, Selection
from topθ_hw.errors import UserError


def check_p(p: float, where: str = "--p") -> None:
    if not (isinstance(p, (int, float)) and 0.0 < p <= 1.0):
        raise UserError(f"{where}: top-p mass p must be in (0, 1], got {p!r}")


@njit(parallel=True, nogil=True, cache=True)
def top_p_rows(scores, row_max, row_lo, row_hi, key_lo, p, keep):
    """keep[r] = the highest-ranked valid keys of row r whose float64 softmax mass first reaches p."""
    rows_per_head = row_lo.shape[0]
    for r in prange(scores.shape[0]):
        i = r % rows_per_head
        lo, hi = row_lo[i] - key_lo, row_hi[i] - key_lo
        keep[r, :] = False
        if p >= 1.0:
            keep[r, lo:hi + 1] = True
            continue
        # reversed (most recent first) so that a stable sort ranks ties towards recent keys
        rev = scores[r, lo:hi + 1][::-1].astype(np.float64)
        order = np.argsort(-rev, kind="mergesort")
        e = np.exp(rev - np.float64(row_max[r]))
        target = p * np.sum(e)
        mass = 0.0
        for o in order:
            if mass >= target:
                break
            keep[r, hi - o] = True
            mass += e[o]


@dataclass
class TopP(AttentionMethod):
    p: float = 0.9

    def __post_init__(self):
        self.name = "topp"
        check_p(self.p)

    def select(self, block, layer_ctx, state) -> Selection:
        keep = np.empty(block.scores.shape, np.bool_)
        top_p_rows(block.scores, block.row_max, block.row_lo, block.row_hi, block.key_lo, float(self.p), keep)
        return Selection(keep=keep)
