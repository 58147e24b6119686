"""Live calibration: Top-θ thresholds for many k and both placements from one dense pass of the model.

Same definition as ``topθ_hw.engine.calibrate`` (the tests check both give the same θ on the same
Q/K/V): for a row of causal length n > k_layer, θ_row is its (k+1)-th largest valid score
(pre-softmax: the logit; post-softmax: its full-row probability); rows with the same
(layer, head, n) aggregate to mean + σ·std (population std). The engine scores one k per
replay of a trace; here one sorted ``topk`` of width max(k)+1 per row serves every k at once,
inside the model's own forward pass, so no trace has to be written. The artifact is the engine's
(``ThresholdTable.save``). The offline-SDC table (dropped mass under the aggregated θ) needs a
second pass per k; it is left NaN here and marked so in the metadata (offline SDC refuses it).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field

import numpy as np
import torch

from .methods.base import Rows, masked_scores


@dataclass
class ThresholdSums:
    """Per (k, placement): Σθ, Σθ², count over calibration rows, by [layer, head, n - 1]."""

    layer_ks: np.ndarray            # [n_k, L] k per layer, one row per requested base k
    placements: tuple[str, ...]
    n_heads: int
    n_max: int
    total: dict = field(default_factory=dict)
    total_sq: dict = field(default_factory=dict)
    count: dict = field(default_factory=dict)

    def __post_init__(self):
        shape = (self.layer_ks.shape[1], self.n_heads, self.n_max)
        for key in self.keys():
            self.total[key], self.total_sq[key] = np.zeros(shape), np.zeros(shape)
            self.count[key] = np.zeros(shape, np.int64)

    def keys(self):
        return [(i, p) for i in range(len(self.layer_ks)) for p in self.placements]


@dataclass(frozen=True)
class Calibrator:
    """A LiveMethod that attends densely and records every row's (k+1)-th largest score."""

    sums: ThresholdSums
    vmc: bool = False

    def weights(self, scores: torch.Tensor, rows: Rows, layer: int):
        s = masked_scores(scores, rows)
        width = min(int(self.sums.layer_ks[:, layer].max()) + 1, s.shape[-1])
        top = torch.topk(s, width, dim=-1, sorted=True).values.double()   # [B, H, T, width], descending
        row_max = top[..., :1]
        e = torch.exp(s - row_max.float())
        denominator = e.sum(-1, keepdim=True, dtype=torch.float64)
        for i, p in self.sums.keys():
            k = int(self.sums.layer_ks[i, layer])
            if k >= width:   # every row of this block has n <= k: dense, no threshold
                continue
            theta = top[..., k]
            if p == "post":
                theta = torch.exp(theta - row_max[..., 0]) / denominator[..., 0]
            self._add(i, p, layer, theta, rows.n > k, rows.n)
        return e / denominator.float(), rows.valid.expand_as(s)

    def _add(self, i, placement, layer, theta, counted, n):
        """Add rows with n > k (``counted`` [T]) of ``theta`` [B, H, T] at their lengths n."""
        theta = torch.where(counted, theta, 0.0)
        key, idx = (i, placement), n.cpu().numpy() - 1
        self.sums.total[key][layer][:, idx] += theta.sum(0).cpu().numpy()
        self.sums.total_sq[key][layer][:, idx] += (theta * theta).sum(0).cpu().numpy()
        self.sums.count[key][layer][:, idx] += counted.cpu().numpy().astype(np.int64) * theta.shape[0]

    def label(self) -> str:
        return "calibrate"


def threshold_table(sums: ThresholdSums, i: int, placement: str, sigma: float, meta: dict):
    """The engine's artifact for one (k, placement): θ = mean + σ·std at every calibrated length."""
    from topθ_hw.engine.thresholds import ThresholdTable

    key = (i, placement)
    count = sums.count[key]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums.total[key] / count
        std = np.sqrt(np.maximum(sums.total_sq[key] / count - mean * mean, 0.0))
    keep = count.any(axis=(0, 1))
    lengths = np.arange(1, sums.n_max + 1)[keep]
    return ThresholdTable(lengths=lengths.astype(np.int64), theta=(mean + sigma * std)[..., keep],
                          theta_std=std[..., keep], count=count[..., keep],
                          sdc_dropped_mass=np.full(count[..., keep].shape, np.nan),
                          layer_k=sums.layer_ks[i].astype(np.int64),
                          meta={**meta, "placement": placement, "sigma": float(sigma),
                                "k": int(np.bincount(sums.layer_ks[i]).argmax()),
                                "rows_calibrated": int(count.sum()),
                                "sdc_dropped_mass": "not calibrated (live calibration)",
                                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})


def calibrate_live(loaded, texts: dict[str, str], ks: list[int], layer_k: str | None, placements: tuple[str, ...],
                   sigma: float, window: int, progress: bool = True) -> dict[tuple[int, str], object]:
    """Thresholds for every (k, placement) from windows of ``texts`` ({name: text}) in one dense pass."""
    from tqdm.auto import tqdm

    from topθ_hw import __version__
    from topθ_hw.engine.methods.base import parse_layer_k

    from .evaluate import text_windows
    from .live import sparsified

    model, config = loaded.model, loaded.model.config
    layer_ks = np.stack([parse_layer_k(layer_k, k, config.num_hidden_layers) for k in ks])
    sums = ThresholdSums(layer_ks, placements, config.num_attention_heads, window)
    windows = [(f"{name}:{w * window}", x) for name, text in texts.items()
               for w, x in enumerate(text_windows(loaded.tokenizer(text, return_tensors="pt").input_ids[0], window))]
    with torch.no_grad(), sparsified(model, Calibrator(sums)):
        for _, x in tqdm(windows, desc="calibrate (live)", unit="window", disable=not progress):
            model(x.to(model.device), use_cache=False)
    meta = {"model_id": loaded.model_id, "model_file_sha256": loaded.sha256, "trace": "live",
            "sequences": [name for name, _ in windows], "sources": list(texts), "layer_k_spec": layer_k or "",
            "window": window, "n_layers": config.num_hidden_layers, "n_q_heads": config.num_attention_heads,
            "package_version": __version__}
    return {(k, p): threshold_table(sums, i, p, sigma, meta) for i, k in enumerate(ks) for p in placements}
