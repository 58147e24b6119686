"""Top-θ: keep the scores above a calibrated per-(layer, head, n) threshold (arXiv 2502.08363).

- pre-softmax: keep ``a > θ(n)`` (logit units), softmax over the kept entries, optionally with
  softmax-denominator compensation (SDC): p̂ = exp(a - m) / (D_kept + λ·D_miss) where
  ``exact`` sums the dropped exponentials, ``expthr`` bounds them by (dropped causal count)·exp(θ - m)
  and ``offline`` scales D_kept by 1/(1-ρ), ρ the calibrated mean dropped mass at (l, h, n).
- post-softmax: p = softmax over the full row, keep ``p > θ(n)`` (probability units), no
  renormalisation (the row sums to < 1).
- capk keeps at most k survivors per row, the rightmost; rows with n <= k are dense (θ = -inf);
  an empty row keeps its maximum. VMC is applied by the caller from Σ p̂.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from topθ_hw.errors import UserError

from ..thresholds import LiveThresholds
from .base import Rows, cap_rightmost, floor_to_float32, keep_row_max_if_empty, masked_scores

SDC_KINDS = (None, "exact", "expthr", "offline")  # the engine's names


@dataclass(frozen=True)
class TopTheta:
    table: LiveThresholds
    sdc: str | None = None
    vmc: bool = False
    capk: bool = False
    sdc_lambda: float = 1.0

    def __post_init__(self):
        if self.sdc not in SDC_KINDS:
            raise UserError(f"SDC variant {self.sdc!r}: expected one of exact, expthr, offline")
        if self.sdc and self.table.placement != "pre":
            raise UserError(f"{self.table.source}: SDC needs pre-softmax thresholds; this table's placement is "
                            f"{self.table.placement!r}")
        if self.sdc == "offline" and not self.table.has_offline_sdc:
            raise UserError(f"{self.table.source}: field 'sdc_dropped_mass' holds no calibrated value "
                            "(live calibration leaves it out); use sdc=exact or sdc=expthr, or thresholds "
                            "from `toptheta calibrate`")

    @property
    def placement(self) -> str:
        return self.table.placement

    def weights(self, scores: torch.Tensor, rows: Rows, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        theta = self.table.theta_rows(layer, rows.n)[None, :, :, None]   # float64 [1, Hq, T, 1]; -inf: dense
        s = masked_scores(scores, rows)
        row_max = s.amax(-1, keepdim=True)
        e = torch.exp(s - row_max)                                        # 0 at invalid keys
        if self.placement == "post":
            total = e.sum(-1, keepdim=True, dtype=torch.float64)
            # p > θ  <=>  a > m + ln(θ·D): decided on logits in float64, as the engine does
            tau = torch.where(theta > float("-inf"), row_max + torch.log(theta * total), theta)
            kept = self._select(s > floor_to_float32(tau), s, row_max, rows, layer)
            return (e / total.float()) * kept, kept
        kept = self._select(s > floor_to_float32(theta), s, row_max, rows, layer)
        kept_e = e * kept
        denom = kept_e.sum(-1, keepdim=True)
        if self.sdc == "offline":  # ρ = calibrated dropped mass: D_miss = D_kept·ρ/(1-ρ)
            rho = self.table.rho_rows(layer, rows.n)[None, :, :, None]
            denom = denom * (1.0 + self.sdc_lambda * rho / (1.0 - rho)).float()
        elif self.sdc:
            denom = denom + self.sdc_lambda * self._missing(e, kept, theta, row_max, rows)
        return kept_e / denom, kept

    def _select(self, above, s, row_max, rows: Rows, layer: int) -> torch.Tensor:
        kept = above & rows.valid
        if self.capk:
            kept = cap_rightmost(kept, self.table.k[layer])
        return keep_row_max_if_empty(kept, s, row_max)

    def _missing(self, e, kept, theta, row_max, rows: Rows) -> torch.Tensor:
        """D_miss, the dropped part of the softmax denominator (relative to exp(row max))."""
        dropped = rows.valid & ~kept
        if self.sdc == "exact":
            return (e * dropped).sum(-1, keepdim=True)
        # exp-threshold: an upper bound; causal positions only, unlike the reference
        count = dropped.sum(-1, keepdim=True, dtype=torch.float32)
        return count * torch.exp(torch.clamp(theta - row_max, max=80.0)).float()  # θ = -inf (dense): 0

    def label(self) -> str:
        parts = [f"toptheta-{self.placement}", f"k={self.table.base_k}"]
        parts += [f"sdc={self.sdc}"] if self.sdc else []
        parts += ["vmc"] if self.vmc else []
        parts += ["capk"] if self.capk else []
        return " ".join(parts)
