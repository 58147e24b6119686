"""KV-cache capacity: the largest batch whose weights and KV cache fit one device, per method.

Bytes per sequence = Σ over layers of the keys the layer keeps × 2 (K and V) × KV heads on the
device × head_dim × 2 bytes (bf16). A sliding-window layer keeps its window. Top-θ, top-k and
dense keep every K and V row (Top-θ only skips V *reads*); StreamingLLM and H2O evict, so the
cache holds only the retained rows (``kept_v_fraction`` × context) and more sequences fit.
Usable memory is ``MEMORY_UTILISATION`` of the device's capacity: the rest holds activations,
the CUDA context and the allocator's slack (vLLM's default ``--gpu-memory-utilization``).
"""

from __future__ import annotations

from topθ_hw.cost.models import ModelShape, cached_tokens
from topθ_hw.cost.ops import BF16, heads_per_device, weight_bytes_per_device
from topθ_hw.cost.step import EVICTING
from topθ_hw.errors import UserError
from topθ_hw.sim import Device

MEMORY_UTILISATION = 0.9   # vLLM's default --gpu-memory-utilization


def kv_bytes_per_sequence(model: ModelShape, context: int, tp: int, method: str = "dense",
                          kept_v_fraction: float = 1.0) -> int:
    _, kvh = heads_per_device(model, tp)
    rows = 0
    for layer in range(model.layers):
        n = cached_tokens(model, layer, context)
        rows += max(1, round(kept_v_fraction * n)) if method in EVICTING else n
    return rows * 2 * kvh * model.head_dim * BF16


def usable_bytes(device: Device) -> float:
    return device.memory.hbm_capacity_GB * 1e9 * MEMORY_UTILISATION


def max_batch(model: ModelShape, device: Device, context: int, tp: int, method: str = "dense",
              kept_v_fraction: float = 1.0) -> int:
    """Largest batch that fits (0: the weights alone do not)."""
    free = usable_bytes(device) - weight_bytes_per_device(model, tp)
    return max(0, int(free // kv_bytes_per_sequence(model, context, tp, method, kept_v_fraction)))


def check_fits(model: ModelShape, device: Device, batch: int, context: int, tp: int, method: str,
               kept_v_fraction: float) -> None:
    """Refuse a batch that does not fit, with the bytes needed and available."""
    weights = weight_bytes_per_device(model, tp)
    kv = batch * kv_bytes_per_sequence(model, context, tp, method, kept_v_fraction)
    available = usable_bytes(device)
    if weights + kv > available:
        fits = max_batch(model, device, context, tp, method, kept_v_fraction)
        raise UserError(f"--batch {batch} at --context {context} does not fit: {model.name} needs "
                        f"{(weights + kv) / 1e9:.1f} GB per device (weights {weights / 1e9:.1f} GB + KV cache "
                        f"{kv / 1e9:.1f} GB, tp {tp}), {device.name} has {available / 1e9:.1f} GB usable "
                        f"({MEMORY_UTILISATION:.0%} of memory.hbm_capacity_GB {device.memory.hbm_capacity_GB:g}); "
                        f"largest batch that fits: {fits}")


def capacity_table(model: ModelShape, device: Device, context: int, tp: int, kept_v_fraction: float) -> dict:
    """Method → largest batch at ``context`` (evicting methods retain ``kept_v_fraction``)."""
    out = {m: max_batch(model, device, context, tp) for m in ("dense", "toptheta", "topk")}
    out.update({m: max_batch(model, device, context, tp, m, kept_v_fraction) for m in EVICTING})
    return out
