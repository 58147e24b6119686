"""Dense attention: every valid key kept. The reference every other method is measured against."""

from __future__ import annotations

from dataclasses import dataclass

from topθ_hw.engine.methods.base import AttentionMethod, Selection, valid_keep


@dataclass
class Dense(AttentionMethod):
    def __post_init__(self):
        self.name, self.needs_full_row = "dense", False

    def select(self, block, layer_ctx, state) -> Selection:
        return Selection(keep=valid_keep(block))
