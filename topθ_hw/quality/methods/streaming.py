"""StreamingLLM (arXiv 2309.17453), live: attention sinks plus a recent window
(the engine's rule, ``topθ_hw.engine.methods.streaming``), decided from positions alone."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from topθ_hw.engine.methods.streaming import check_window

from .base import Rows, masked_scores


@dataclass(frozen=True)
class StreamingLLM:
    window: int
    sinks: int = 4
    vmc: bool = False

    def __post_init__(self):
        check_window(self.window, self.sinks)

    def weights(self, scores: torch.Tensor, rows: Rows, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        keys = torch.arange(scores.shape[-1], device=scores.device)[None, :]
        kept = ((keys < self.sinks) | (keys > (rows.n - 1)[:, None] - self.window)) & rows.valid
        s = masked_scores(scores, rows).masked_fill(~kept, float("-inf"))
        return torch.softmax(s, dim=-1), kept.expand_as(s)

    def label(self) -> str:
        return f"streaming sinks={self.sinks} window={self.window}"
