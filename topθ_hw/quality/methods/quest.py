"""Quest (arXiv 2406.10774), live: page min/max key bounds pick each query's pages
(the engine's rule, ``topθ_hw.engine.methods.quest``).

Decides from the query and the page summaries of K (``needs_qk``: the attention seam hands over the
row block's queries and the keys), never from the scores; the full cache stays. Bounds are float64,
like the engine's, so both pick the same pages.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from topθ_hw.engine.methods.quest import check_page_size

from .base import Rows, masked_scores, per_layer


@dataclass(frozen=True)
class Quest:
    budget: int | tuple[int, ...]   # tokens per row (per layer when a tuple)
    page_size: int = 16
    vmc: bool = False
    needs_qk: bool = True

    def __post_init__(self):
        check_page_size(self.page_size)

    def weights(self, scores: torch.Tensor, rows: Rows, layer: int, query: torch.Tensor, key: torch.Tensor):
        size = self.page_size
        n_select = max(1, per_layer(self.budget, layer) // size)
        centre, half = summaries(key, size)                                   # [B, Hkv, pages, d]
        B, Hq, R, d = query.shape
        q = query.double().reshape(B, key.shape[1], -1, d)
        bounds = (q @ centre.transpose(-1, -2) + q.abs() @ half.transpose(-1, -2)).view(B, Hq, R, -1)
        pages = torch.arange(bounds.shape[-1], device=scores.device)
        current = (rows.n - 1) // size
        ranked = bounds.masked_fill(pages[None, :] >= current[:, None], float("-inf")).flip(-1)
        values, order = torch.sort(ranked, dim=-1, descending=True, stable=True)  # recent page first among ties
        values, order = values[..., :n_select - 1], order[..., :n_select - 1]
        chosen = torch.zeros_like(ranked, dtype=torch.bool).scatter_(-1, order, values > float("-inf")).flip(-1)
        chosen |= pages[None, :] == current[:, None]
        key_page = torch.arange(scores.shape[-1], device=scores.device) // size
        kept = chosen[..., key_page] & rows.valid
        s = masked_scores(scores, rows).masked_fill(~kept, float("-inf"))
        return torch.softmax(s, dim=-1), kept

    def label(self) -> str:
        return f"quest k={self.budget if isinstance(self.budget, int) else max(self.budget)} page={self.page_size}"


def summaries(key: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(M+m)/2 and (M−m)/2 per page of ``size`` keys, float64; the last page padded with its own rows."""
    B, H, T, d = key.shape
    n_pages = -(-T // size)
    pad = n_pages * size - T
    k = torch.cat([key, key[:, :, -1:].expand(B, H, pad, d)], 2) if pad else key
    pages = k.double().view(B, H, n_pages, size, d)
    lo, hi = pages.amin(3), pages.amax(3)
    return (hi + lo) / 2, (hi - lo) / 2
