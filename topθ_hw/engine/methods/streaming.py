"""StreamingLLM (Xiao et al., "Efficient Streaming Language Models with Attention Sinks",
arXiv 2309.17453, ICLR 2024): attention sinks plus a recent window.

Rule per row t: keep keys j < ``sinks`` (the first tokens, which soak up attention mass) and the
``window`` most recent keys t − window < j ≤ t, intersected with the row's valid keys; the kept
weights are renormalised. Everything else is evicted from the cache for good, so the cache holds
at most sinks + window rows. A window as long as the context keeps every key (dense).

What it must read to decide: nothing — positions alone. It reads only the sinks' and the
window's K and V rows (a fixed, contiguous ring buffer), never the rest of K.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from topθ_hw.engine.methods.base import AttentionMethod, Selection
from topθ_hw.errors import UserError


def check_window(window: int, sinks: int, where: str = "") -> None:
    if not isinstance(window, (int, np.integer)) or window < 1:
        raise UserError(f"{where}--window: the recent window must be an integer ≥ 1, got {window!r}")
    if not isinstance(sinks, (int, np.integer)) or sinks < 0:
        raise UserError(f"{where}--sinks: the number of sink tokens must be an integer ≥ 0, got {sinks!r}")


def streaming_keep(rows: np.ndarray, key_lo: int, n_keys: int, sinks: int, window: int) -> np.ndarray:
    """bool [R, n_keys]: key key_lo + j is a sink or inside row t's recent window (validity not applied)."""
    keys = key_lo + np.arange(n_keys)[None, :]
    return (keys < sinks) | (keys > rows[:, None] - window)


@dataclass
class StreamingLLM(AttentionMethod):
    window: int = 60
    sinks: int = 4

    def __post_init__(self):
        self.name, self.needs_full_row, self.reads_keys = "streaming", False, "window"
        check_window(self.window, self.sinks)

    def select(self, block, layer_ctx, state) -> Selection:
        n_heads = len(block.heads)
        keep = np.tile(streaming_keep(block.rows, block.key_lo, block.scores.shape[1], self.sinks, self.window),
                       (n_heads, 1))
        keep &= block.scores > -np.inf
        return Selection(keep=keep)
