"""Top-θ (Berestizshevsky et al., arXiv 2502.08363): keep the scores above a calibrated threshold.

Rule per row of causal length n (valid keys n_valid, sliding window included):
- n_valid ≤ k (k of the layer, from the threshold artifact): dense;
- pre-softmax: keep a_j > θ[l, h, n] (logits); softmax over the kept entries only;
- post-softmax: keep p_j > θ[l, h, n] with p the full-row softmax; not renormalised;
- capk: of the survivors keep at most k, the most recent ones;
- empty row: keep the row maximum (most recent among ties);
- SDC (pre-softmax only), denominator D_kept + λ·D_miss with D_miss
  exact (Σ dropped exp(a-m)), ``expthr`` (valid dropped count · exp(θ-m), causal positions
  only), or ``offline`` (calibrated mean dropped probability mass ρ: D_miss = D_kept·ρ/(1-ρ));
- VMC: o += (1 - Σ weights)·mean of the row's valid V rows (lost mass in float64).
Pre-softmax decides tile by tile; post-softmax needs the row's full denominator first.
Reads all of K.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numba import njit, prange

from topθ_hw.engine.kernels import FAST, exp_shifted, keep_row_maximum
from topθ_hw.engine.methods.base import AttentionMethod, Selection
from topθ_hw.engine.thresholds import EXTRAPOLATIONS, LOOKUPS, ThresholdTable, load_thresholds
from topθ_hw.errors import UserError

SDC_MODES = ("none", "exact", "expthr", "offline")


@njit(parallel=True, fastmath=FAST, nogil=True, cache=True)
def threshold_rows(scores, row_max, theta, post, capk, sdc_expthr, lam, keep, den_add, empty):
    """keep[r] = scores above theta[r] (NaN theta: all valid); see the module rule list."""
    for r in prange(scores.shape[0]):
        row = scores[r]
        m = row_max[r]
        th = theta[r]
        if np.isnan(th):
            tau = -np.inf
        elif post:
            if th <= 0.0:
                tau = -np.inf
            else:
                e = np.empty(row.shape[0], np.float32)
                exp_shifted(row, m, e, np.empty(row.shape[0], np.int32))
                # rounded to float32 like the scores, so a calibration row replays exactly
                tau = np.float32(m + np.log(th * np.sum(e.astype(np.float64))))
        else:
            tau = th
        n_kept = 0
        n_valid = 0
        for j in range(row.shape[0]):
            keep[r, j] = row[j] > tau
            n_kept += keep[r, j]
            n_valid += row[j] > -np.inf
        if capk > 0 and n_kept > capk:
            left = capk
            for j in range(row.shape[0] - 1, -1, -1):
                if keep[r, j]:
                    if left > 0:
                        left -= 1
                    else:
                        keep[r, j] = False
            n_kept = capk
        if n_kept == 0:
            keep_row_maximum(row, keep[r], m)
            empty[r] = True
            n_kept = 1
        if sdc_expthr and not np.isnan(th):
            den_add[r] = lam * (n_valid - n_kept) * np.exp(min(th - m, 80.0))


@dataclass
class TopTheta(AttentionMethod):
    thresholds: str | ThresholdTable = ""
    placement: str | None = None      # None: the artifact's placement
    capk: bool = False
    sdc: str = "none"
    lam: float = 1.0
    vmc: bool = False
    lookup: str = "interp"
    extrapolate: str = "hold"
    _table: ThresholdTable | None = field(default=None, repr=False)
    _extrapolated_rows: int = field(default=0, repr=False)

    def __post_init__(self):
        self.name = "toptheta"
        self._table = self.thresholds if isinstance(self.thresholds, ThresholdTable) \
            else load_thresholds(self.thresholds)
        self.thresholds = self._table.path
        self.placement = self.placement or self._table.placement
        self.needs_full_row = self.placement == "post"
        if self.sdc not in SDC_MODES:
            raise UserError(f"--sdc: {self.sdc!r} is not one of {SDC_MODES}")
        if self.sdc != "none" and self.placement != "pre":
            raise UserError(f"--sdc {self.sdc}: softmax-denominator compensation is defined for "
                            "pre-softmax thresholds only")
        if self.lookup not in LOOKUPS or self.extrapolate not in EXTRAPOLATIONS:
            raise UserError(f"--lookup must be one of {LOOKUPS}, --extrapolate one of {EXTRAPOLATIONS}")
        if not np.isfinite(self.lam) or self.lam < 0:
            raise UserError(f"--lam must be a finite number ≥ 0, got {self.lam}")

    @property
    def calibration_sequences(self) -> list[str]:
        """The trace sequences the thresholds were calibrated on (replay avoids them by default)."""
        return list(self._table.meta.get("sequences", []))

    def params(self) -> dict:
        return {**super().params(), "layer_k": self._table.layer_k.tolist(),
                "calibration": {k: self._table.meta.get(k) for k in ("trace", "sequences", "sigma")}}

    def check(self, meta, where: str = "") -> None:
        self._table.check_against(meta, self.placement, where)

    def prepare_layer(self, layer, qkv):
        """θ (and ρ for offline SDC) for every (head, row) of this layer; NaN = dense row."""
        t = np.arange(qkv.q.shape[1])
        n = t + 1
        n_valid = np.minimum(n, qkv.sliding_window) if qkv.sliding_window else n
        dense = n_valid <= self._table.layer_k[layer]
        theta = self._table.thresholds_for_rows(layer, n, self.lookup, self.extrapolate)
        theta[:, dense] = np.nan
        calibrated = self._table.lengths[(~np.isnan(self._table.theta[layer])).any(axis=0)]
        if len(calibrated):
            self._extrapolated_rows += int(((n > calibrated.max()) & ~dense).sum()) * theta.shape[0]
        rho = None
        if self.sdc == "offline":
            rho = np.clip(self._table.dropped_mass_for_rows(layer, n, self.lookup), 0.0, 0.999)
            rho[:, dense] = 0.0
        if np.isnan(theta[:, ~dense]).any():
            raise UserError(f"{self._table.path}: layer {layer} has heads without any calibrated threshold")
        return int(self._table.layer_k[layer]), theta, rho

    def select(self, block, layer_ctx, state) -> Selection:
        k, theta, rho = layer_ctx
        rows_theta = theta[block.heads][:, block.rows].reshape(-1)
        keep = np.empty(block.scores.shape, np.bool_)
        den_add = np.zeros(len(rows_theta))
        empty = np.zeros(len(rows_theta), np.bool_)
        threshold_rows(block.scores, block.row_max, rows_theta, self.placement == "post",
                       k if self.capk else 0, self.sdc == "expthr", self.lam, keep, den_add, empty)
        sel = Selection(keep=keep, den_add=den_add, empty=empty, vmc=self.vmc,
                        miss_weight={"post": 1.0}.get(self.placement, self.lam if self.sdc == "exact" else 0.0))
        if self.sdc == "offline":
            r = rho[block.heads][:, block.rows].reshape(-1)
            sel.den_scale = 1.0 + self.lam * r / (1.0 - r)
        return sel

    def report(self) -> dict:
        return {"extrapolated_rows": self._extrapolated_rows}
