"""H2O (Zhang et al., "H2O: Heavy-Hitter Oracle for Efficient Generative Inference of Large Language
Models", arXiv 2306.14048, NeurIPS 2023): heavy hitters by accumulated attention plus recent tokens,
with eviction.

Rule, applied to every row in order (each row is a decode step that appends its key to the cache),
per KV head (under GQA the cache is shared by the group, so the group's query heads share it):
1. key t enters the cache;
2. while the cache holds more than ``budget`` keys, evict the key with the smallest accumulated
   attention (ties: the oldest) among those older than the ``recent`` most recent keys;
   an evicted key is never attended again;
3. every query head of the group attends over the cache (renormalised softmax);
4. each cached key's accumulated attention grows by the weights the group's heads gave it
   (summed over heads, float64).
Evicting before attending keeps at most ``budget`` keys per row (the reference evicts after, so
briefly holds budget + 1). With budget ≥ context nothing is evicted (dense).

What it must read to decide: no K beyond the retained cache; it keeps and updates one accumulated
score per cached key, which needs the step's final attention weights (written out by the attention
kernel, read back by the update) and a min-selection over the cache for the eviction.

The state evolves from row 0, so a replay must include the prefill rows (no ``--decode-only``).
The accumulation happens inside ``select`` because within a prefill block row i+1's cache depends
on row i's weights; ``stateful`` makes the engine feed decode rows one at a time, in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numba import njit

from topθ_hw.engine.methods.base import AttentionMethod, Selection, parse_layer_k
from topθ_hw.errors import UserError


def check_h2o(budget: int, recent: int) -> None:
    if not isinstance(budget, (int, np.integer)) or budget < 1:
        raise UserError(f"--k: H2O's cache budget must be an integer ≥ 1, got {budget!r}")
    if not isinstance(recent, (int, np.integer)) or not 1 <= recent <= budget:
        raise UserError(f"--recent: H2O's recent window must be an integer in 1..budget ({budget}), got {recent!r}")


@njit(nogil=True, cache=True)
def h2o_rows(scores, row_lo, row_hi, key_lo, budget, recent, acc, alive, keep):
    """Rows of one KV group in order: admit, evict, attend over the cache, accumulate (see module rule).

    scores [G*R, m] (row g*R + i is head g, row i); acc float64 / alive bool indexed by absolute key.
    """
    n_rows = row_lo.shape[0]
    n_heads = scores.shape[0] // n_rows
    keep[:, :] = False
    for i in range(n_rows):
        lo, t = row_lo[i], row_hi[i]
        alive[t] = True
        cached = 0
        for j in range(lo, t + 1):
            cached += alive[j]
        while cached > budget:
            victim = -1
            for j in range(lo, t - recent + 1):
                if alive[j] and (victim < 0 or acc[j] < acc[victim]):
                    victim = j
            alive[victim] = False
            cached -= 1
        for g in range(n_heads):
            r = g * n_rows + i
            m = -np.inf
            for j in range(lo, t + 1):
                if alive[j]:
                    m = max(m, np.float64(scores[r, j - key_lo]))
            total = 0.0
            for j in range(lo, t + 1):
                if alive[j]:
                    total += np.exp(np.float64(scores[r, j - key_lo]) - m)
            for j in range(lo, t + 1):
                if alive[j]:
                    keep[r, j - key_lo] = True
                    acc[j] += np.exp(np.float64(scores[r, j - key_lo]) - m) / total


class H2OCache:
    """Accumulated attention and the alive set of one KV head's cache, grown as rows arrive."""

    def __init__(self):
        self.acc = np.zeros(0)
        self.alive = np.zeros(0, np.bool_)
        self.next_row = 0

    def run(self, scores, row_lo, row_hi, key_lo, budget, recent, keep, where: str) -> None:
        if int(row_hi[0]) != self.next_row:
            raise UserError(f"{where}: H2O's cache evolves from row 0 and needs every row in order; got row "
                            f"{int(row_hi[0])} after {self.next_row} rows (replay without --decode-only)")
        need = int(row_hi[-1]) + 1
        if need > len(self.acc):
            grow = max(need, 2 * len(self.acc))
            self.acc = np.concatenate([self.acc, np.zeros(grow - len(self.acc))])
            self.alive = np.concatenate([self.alive, np.zeros(grow - len(self.alive), np.bool_)])
        h2o_rows(scores, row_lo, row_hi, key_lo, budget, recent, self.acc, self.alive, keep)
        self.next_row = need


@dataclass
class H2O(AttentionMethod):
    budget: int = 64             # cached keys per KV head (heavy hitters + recent)
    recent: int | None = None    # most recent keys never evicted (default budget // 2, the paper's even split)
    layer_budget: str | None = None
    _budget_per_layer: np.ndarray | None = field(default=None, repr=False)
    _state: dict = field(default_factory=dict, repr=False)   # used when the caller passes no state

    def __post_init__(self):
        self.name, self.needs_full_row, self.reads_keys, self.stateful = "h2o", False, "retained", True
        self.recent = max(1, self.budget // 2) if self.recent is None else self.recent
        check_h2o(self.budget, self.recent)

    def check(self, meta, where: str = "") -> None:
        self._budget_per_layer = parse_layer_k(self.layer_budget, self.budget, meta.n_layers, "--layer-k")

    def begin_sequence(self, seq) -> dict:
        return {}

    def prepare_layer(self, layer, qkv):
        budget = int(self._budget_per_layer[layer]) if self._budget_per_layer is not None else self.budget
        return layer, budget, min(self.recent, budget)

    def select(self, block, layer_ctx, state) -> Selection:
        layer, budget, recent = layer_ctx
        state = self._state if state is None else state
        if block.rows[0] == 0:   # a sequence starts: an empty cache
            state[(layer, block.kv_group)] = H2OCache()
        cache = state.setdefault((layer, block.kv_group), H2OCache())
        keep = np.empty(block.scores.shape, np.bool_)
        cache.run(block.scores, block.row_lo, block.row_hi, block.key_lo, budget, recent, keep,
                  f"layer {layer} KV head {block.kv_group}")
        return Selection(keep=keep)
