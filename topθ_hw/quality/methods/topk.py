"""Exact top-k per row: keep the k largest valid scores (rows with n <= k stay dense), softmax over them.

Ties at the k-th value are broken towards the most recent positions, so exactly min(k, n) entries
are kept (as in the engine). Needs the whole row before selecting.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Rows, masked_scores, per_layer


@dataclass(frozen=True)
class TopK:
    k: int | tuple[int, ...]
    vmc: bool = False  # renormalised over the kept set, so VMC adds nothing; kept for symmetry

    def weights(self, scores: torch.Tensor, rows: Rows, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        k = per_layer(self.k, layer)
        s = masked_scores(scores, rows)
        if k >= s.shape[-1]:  # every row has n <= k: dense
            kept = rows.valid.expand_as(s)
        else:
            kept = top_k_mask(s, k, rows.valid)  # rows with n <= k: k-th is -inf, every valid key kept
        p = torch.softmax(s.masked_fill(~kept, float("-inf")), dim=-1)
        return p, kept

    def label(self) -> str:
        return f"topk k={self.k if isinstance(self.k, int) else max(self.k)}"


def top_k_mask(s: torch.Tensor, k: int, valid: torch.Tensor) -> torch.Tensor:
    """The k largest valid scores of each row; among entries tied with the k-th, the rightmost ones."""
    kth = torch.topk(s, k, dim=-1, sorted=False).values.amin(-1, keepdim=True)
    kept = (s >= kth) & valid
    excess = kept.sum(-1, keepdim=True) - k      # > 0 only where the k-th value is tied
    if bool((excess > 0).any()):
        ties = (s == kth) & valid
        kept &= ~(ties & (ties.cumsum(-1) <= excess))  # drop the leftmost surplus ties
    return kept
