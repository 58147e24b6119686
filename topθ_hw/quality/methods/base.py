"""What every live method shares: the row geometry, the GQA view and the empty/capk rules.

Shapes: scores ``[B, Hq, T, Tk]`` (scaled logits, float32) for T query rows whose last row sees
all Tk keys; row ``i`` sits at absolute position ``Tk - T + i``, so its causal length is
``n_i = Tk - T + i + 1`` and its valid keys are ``0 .. n_i - 1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass(frozen=True)
class Rows:
    """Causal geometry of one attention call."""

    n: torch.Tensor       # int64 [T]: causal length of each query row
    valid: torch.Tensor   # bool [T, Tk]: key j exists for row i (j < n_i)

    @staticmethod
    def of(t_query: int, t_key: int, device=None) -> "Rows":
        n = torch.arange(t_key - t_query + 1, t_key + 1, device=device)
        return Rows(n, torch.arange(t_key, device=device)[None, :] < n[:, None])


class LiveMethod(Protocol):
    """One attention sparsification rule, applied to a layer's scores."""

    vmc: bool  # add (1 - kept mass) * mean(V[0:n]) to the output (V-mean compensation)

    def weights(self, scores: torch.Tensor, rows: Rows, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (p̂ float32 [B, Hq, T, Tk], zero where dropped; kept bool of the same shape)."""
        ...

    def label(self) -> str:
        ...


def masked_scores(scores: torch.Tensor, rows: Rows) -> torch.Tensor:
    """Scores with -inf at positions that do not exist for the row (in place)."""
    return scores.masked_fill_(~rows.valid, float("-inf"))


def keep_row_max_if_empty(kept: torch.Tensor, scores: torch.Tensor, row_max: torch.Tensor) -> torch.Tensor:
    """The engine's empty-row rule: a row where nothing passed keeps its maximum score (the most
    recent position among ties). The reference instead turns such rows into uniform attention over
    all positions, future ones included."""
    empty = ~kept.any(-1, keepdim=True)
    if bool(empty.any()):
        kept |= empty & rightmost(scores == row_max)
    return kept


def rightmost(flags: torch.Tensor) -> torch.Tensor:
    """A mask with only the last True of each row (rows without any True get position 0 of nothing)."""
    last = flags.shape[-1] - 1 - flags.flip(-1).to(torch.uint8).argmax(-1, keepdim=True)
    return torch.zeros_like(flags).scatter_(-1, last, True) & flags


def cap_rightmost(kept: torch.Tensor, k_rows: torch.Tensor) -> torch.Tensor:
    """capk: keep at most ``k`` survivors per row, the most recent (rightmost) ones."""
    from_right = kept.flip(-1).cumsum(-1, dtype=torch.int32).flip(-1)
    return kept & (from_right <= k_rows)


def floor_to_float32(x: torch.Tensor) -> torch.Tensor:
    """The largest float32 <= x (float64): for float32 s, ``s > x`` holds exactly when ``s > floor_to_float32(x)``,
    so thresholds compare in float32 with the engine's float64 decisions."""
    t = x.float()
    return torch.where(t.double() > x, torch.nextafter(t, torch.full_like(t, float("-inf"))), t)


def per_layer(value: int | tuple[int, ...], layer: int) -> int:
    return value if isinstance(value, int) else value[layer]
