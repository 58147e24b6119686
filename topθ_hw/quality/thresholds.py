"""Thresholds as the live path reads them: the engine's artifact, looked up for every causal length n.

The artifact format, the lookup (nearest / interp) and the extrapolation past the longest calibrated
length (hold / logfit) all belong to ``topθ_hw.engine.thresholds``; this module asks it once for
θ (and the offline SDC dropped mass ρ) at n = 1..n_max and keeps them as torch tensors indexed by
``n - 1`` (grown on demand), so the attention function does one gather per call. Rows with
n <= k of their layer are dense: θ = -inf, ρ = 0 (the engine's NaN).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from topθ_hw.errors import UserError


@dataclass
class LiveThresholds:
    table: object                      # topθ_hw.engine.thresholds.ThresholdTable
    lookup: str = "interp"
    extrapolate: str = "hold"
    longest_used_n: int = 0            # the longest row seen, to report extrapolation
    _theta: torch.Tensor | None = field(default=None, repr=False)
    _rho: torch.Tensor | None = field(default=None, repr=False)

    @property
    def placement(self) -> str:
        return self.table.placement

    @property
    def source(self) -> str:
        return self.table.path

    @property
    def k(self) -> tuple[int, ...]:
        return tuple(int(x) for x in self.table.layer_k)

    @property
    def base_k(self) -> int:
        """The k most layers use (layers kept denser, like the paper's 0 and 1, are the exceptions)."""
        values, counts = np.unique(self.table.layer_k, return_counts=True)
        return int(values[np.argmax(counts)])

    @property
    def uncalibrated_layers(self) -> list[int]:
        """Layers the artifact holds no threshold for at all (the calibration trace did not store
        them); the live path runs them dense and says so."""
        return [layer for layer in range(self.table.theta.shape[0])
                if not np.isfinite(self.table.theta[layer]).any()]

    @property
    def max_calibrated_n(self) -> int:
        calibrated = np.isfinite(self.table.theta).any(axis=(0, 1))
        return int(self.table.lengths[calibrated].max()) if calibrated.any() else 0

    @property
    def has_offline_sdc(self) -> bool:
        return bool(np.isfinite(self.table.sdc_dropped_mass).any())

    @property
    def extrapolated(self) -> bool:
        return self.longest_used_n > self.max_calibrated_n

    def _ensure(self, n_max: int) -> None:
        self.longest_used_n = max(self.longest_used_n, n_max)
        if self._theta is not None and self._theta.shape[-1] >= n_max:
            return
        size = max(n_max, 1024, 2 * (0 if self._theta is None else self._theta.shape[-1]))
        n = np.arange(1, size + 1)
        theta, rho = [], []
        uncalibrated = set(self.uncalibrated_layers)
        for layer, k in enumerate(self.k):
            th = self.table.thresholds_for_rows(layer, n, self.lookup, self.extrapolate)
            dense = n <= k if layer not in uncalibrated else np.ones_like(n, dtype=bool)
            if np.isnan(th[:, ~dense]).any():
                raise UserError(f"{self.source}: field 'theta' has no calibrated value for some head of "
                                f"layer {layer}")
            th[:, dense] = -np.inf
            if self.placement == "post":  # probability θ <= 0 keeps every valid key
                th[th <= 0] = -np.inf
            r = np.clip(np.nan_to_num(self.table.dropped_mass_for_rows(layer, n, self.lookup)), 0.0, 0.999)
            r[:, dense] = 0.0
            theta.append(th)
            rho.append(r)
        self._theta = torch.from_numpy(np.stack(theta))   # float64: the engine's post-softmax τ is float64
        self._rho = torch.from_numpy(np.stack(rho))

    def theta_rows(self, layer: int, n: torch.Tensor) -> torch.Tensor:
        """θ for every query head and row: float64 [Hq, T]; -inf = dense row."""
        self._ensure_on(n)
        return self._theta[layer][:, n - 1]

    def rho_rows(self, layer: int, n: torch.Tensor) -> torch.Tensor:
        """Offline SDC: calibrated mean dropped probability mass, float64 [Hq, T]."""
        self._ensure_on(n)
        return self._rho[layer][:, n - 1]

    def _ensure_on(self, n: torch.Tensor) -> None:
        self._ensure(int(n.max()))
        if self._theta.device != n.device:
            self._theta, self._rho = self._theta.to(n.device), self._rho.to(n.device)


def load_live_thresholds(path, lookup: str = "interp", extrapolate: str = "hold") -> LiveThresholds:
    from topθ_hw.engine.thresholds import EXTRAPOLATIONS, LOOKUPS, load_thresholds

    if lookup not in LOOKUPS or extrapolate not in EXTRAPOLATIONS:
        raise UserError(f"--lookup must be one of {LOOKUPS} and --extrapolate one of {EXTRAPOLATIONS}, "
                        f"got {lookup!r}/{extrapolate!r}")
    return LiveThresholds(load_thresholds(path), lookup, extrapolate)


def check_identity(thresholds: LiveThresholds, model_id: str, sha256: str, placement: str | None = None) -> None:
    """Refuse thresholds calibrated on other weights (sha256 of the model file) or for another placement."""
    meta, where = thresholds.table.meta, thresholds.source
    if meta.get("model_file_sha256") != sha256:
        raise UserError(f"{where}: field 'model_file_sha256' is {str(meta.get('model_file_sha256'))[:12]}… "
                        f"(model {meta.get('model_id')!r}), but --model {model_id!r} has weights "
                        f"{sha256[:12]}…; calibrate on traces of this model")
    if placement is not None and placement != thresholds.placement:
        raise UserError(f"{where}: field 'placement' is {thresholds.placement!r}, but {placement!r} was asked "
                        "for; thresholds are in different units per placement")


def check_model(thresholds: LiveThresholds, loaded, placement: str | None = None) -> None:
    """check_identity plus the loaded model's shape: [layers, query heads] of θ."""
    check_identity(thresholds, loaded.model_id, loaded.sha256, placement)
    config = loaded.model.config
    expected = (config.num_hidden_layers, config.num_attention_heads)
    if tuple(thresholds.table.theta.shape[:2]) != expected:
        raise UserError(f"{thresholds.source}: field 'theta' has [layers, heads] "
                        f"{tuple(thresholds.table.theta.shape[:2])}, expected {expected} for {loaded.model_id!r}")
