"""Dense causal softmax attention: the reference every other method is measured against."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Rows, masked_scores


@dataclass(frozen=True)
class Dense:
    vmc: bool = False

    def weights(self, scores: torch.Tensor, rows: Rows, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        p = torch.softmax(masked_scores(scores, rows), dim=-1)
        return p, rows.valid.expand_as(p)

    def label(self) -> str:
        return "dense"
