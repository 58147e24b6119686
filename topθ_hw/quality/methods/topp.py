"""Top-p (Twilight, arXiv 2502.02770), live: the engine's rule (``topθ_hw.engine.methods.topp``).

Rank valid keys by score (ties: most recent first), keep the shortest prefix whose full-row softmax
mass reaches p, renormalise over it; p = 1 is dense. The decision is taken in float64 like the
engine's, so both keep the same keys. Needs the whole row's softmax before dropping anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from topθ_hw.engine.methods.topp import check_p

from .base import Rows, masked_scores


@dataclass(frozen=True)
class TopP:
    p: float
    vmc: bool = False

    def __post_init__(self):
        check_p(self.p)

    def weights(self, scores: torch.Tensor, rows: Rows, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = masked_scores(scores, rows)
        kept = rows.valid.expand_as(s) if self.p >= 1 else top_p_mask(s, self.p) & rows.valid
        return torch.softmax(s.masked_fill(~kept, float("-inf")), dim=-1), kept

    def label(self) -> str:
        return f"topp p={self.p:g}"


def top_p_mask(s: torch.Tensor, p: float) -> torch.Tensor:
    """Keys of the shortest ranked prefix with mass ≥ p (scores -inf where invalid)."""
    recent_first = s.flip(-1).double()
    e = torch.exp(recent_first - recent_first.amax(-1, keepdim=True))
    order = torch.sort(recent_first, dim=-1, descending=True, stable=True).indices
    ranked = e.gather(-1, order)
    before = torch.cat([torch.zeros_like(ranked[..., :1]), ranked.cumsum(-1)[..., :-1]], -1)  # mass ranked above
    chosen = before < p * e.sum(-1, keepdim=True)
    return torch.zeros_like(chosen).scatter_(-1, order, chosen).flip(-1)
