"""H2O (arXiv 2306.14048), live: heavy hitters plus recent tokens, with eviction.

Runs the engine's own row kernel (``topθ_hw.engine.methods.h2o``) on the call's scores, one KV
head's cache per (batch item, KV head) and per layer, carried across calls: a prefill call walks
its rows in order, each later decode call continues the cache (a call starting at position 0
starts a new one). Evicted keys stay in the model's KV cache but are never attended again, which
is the same computation. Needs the number of KV heads (``needs_qk``: the seam hands over the keys).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from topθ_hw.engine.methods.h2o import H2OCache, check_h2o

from .base import Rows, masked_scores, per_layer


@dataclass
class H2O:
    budget: int | tuple[int, ...]
    recent: int | None = None
    vmc: bool = False
    needs_qk: bool = True
    caches: dict = field(default_factory=dict, repr=False)   # layer -> [(batch, KV head) H2OCache]

    def __post_init__(self):
        low = min(self.budget) if isinstance(self.budget, tuple) else self.budget
        self.recent = max(1, low // 2) if self.recent is None else self.recent
        check_h2o(low, self.recent)

    def weights(self, scores: torch.Tensor, rows: Rows, layer: int, query: torch.Tensor, key: torch.Tensor):
        B, Hq, T, Tk = scores.shape
        Hkv = key.shape[1]
        s = masked_scores(scores, rows)
        if Tk == T or layer not in self.caches:   # a sequence starts
            self.caches[layer] = [H2OCache() for _ in range(B * Hkv)]
        budget = per_layer(self.budget, layer)
        host = s.detach().float().cpu().numpy().reshape(B, Hkv, Hq // Hkv * T, Tk)
        kept = np.empty(host.shape, np.bool_)
        row_hi = np.arange(Tk - T, Tk, dtype=np.int64)
        for i, cache in enumerate(self.caches[layer]):
            b, g = divmod(i, Hkv)
            cache.run(np.ascontiguousarray(host[b, g]), np.zeros(T, np.int64), row_hi, 0, budget,
                      min(self.recent, budget), kept[b, g], f"live H2O layer {layer}")
        kept_t = torch.from_numpy(kept).view(B, Hq, T, Tk).to(scores.device)
        return torch.softmax(s.masked_fill(~kept_t, float("-inf")), dim=-1), kept_t

    def label(self) -> str:
        return f"h2o k={self.budget if isinstance(self.budget, int) else max(self.budget)} recent={self.recent}"
