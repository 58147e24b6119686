"""``cost_of``: one configuration → the JSON-able answer of ``toptheta cost`` (method and dense)."""

from __future__ import annotations

from functools import lru_cache

from topθ_hw.cost.capacity import capacity_table, check_fits
from topθ_hw.cost.models import ModelShape, check_context, load_model
from topθ_hw.cost.outputs import cost_outputs, ratios_to_dense
from topθ_hw.cost.step import StepConfig, check_config, simulate_step
from topθ_hw.errors import UserError
from topθ_hw.sim import Device, load_device


def kept_from_stats(path, context: int) -> tuple[float, str, str]:
    """(kept V-row fraction at ``context``, 'measured' | 'extrapolated', method) from engine
    statistics: the real decode union masks, stretched to ``context`` as a study does."""
    from topθ_hw.sim.stats import method_from_meta
    from topθ_hw.study.kept import kept_fractions, kept_masks
    from topθ_hw.tables import read_table

    df, meta = read_table(path, kind="engine-stats")
    masks = kept_masks(df, source=str(path))
    lo, hi = masks.measured_range
    fraction = min(1.0, max(kept_fractions(masks, context)[1], 1.0 / context))
    return fraction, "measured" if lo <= context <= hi else "extrapolated", method_from_meta(meta)


@lru_cache(maxsize=32)
def _named(loader, name: str):
    """A shipped model or device loaded once per process (a study asks for the same few, often)."""
    return loader(name)


def one_step(config: StepConfig, price_per_hour: float | None) -> dict:
    step = simulate_step(config)
    return {**step, **cost_outputs(config, step, price_per_hour)}


def cost_of(model: str | ModelShape, hardware: str | Device, batch: int, context: int, *, tp: int = 1,
            method: str = "dense", kept_v_fraction: float | None = None, stats=None, graphs: bool = False,
            phase: str = "decode", price_per_hour: float | None = None, exact_attention: bool = False,
            compare: bool = True) -> dict:
    """Whole-model cost of one configuration, with dense's at the same batch and context and each
    output's ratio to it (``compare``), and the KV-cache capacity per method. ``context``: keys in
    the cache (decode) or prompt tokens (prefill)."""
    model = model if isinstance(model, ModelShape) else _named(load_model, str(model))
    device = hardware if isinstance(hardware, Device) else _named(load_device, str(hardware))
    check_context(model, context, "--context" if phase == "decode" else "--prompt-tokens")
    source = "given"
    if stats is not None:
        if kept_v_fraction is not None:
            raise UserError("give --stats or --kept-v-fraction, not both")
        kept_v_fraction, source, stats_method = kept_from_stats(stats, context)
        method = stats_method if method == "dense" else method
    if kept_v_fraction is None:
        if method != "dense":
            raise UserError(f"--method {method} needs --kept-v-fraction F or --stats FILE")
        kept_v_fraction, source = 1.0, "dense"
    config = StepConfig(model, device, batch, context, phase, tp, method, kept_v_fraction, graphs, exact_attention)
    check_config(config)
    check_fits(model, device, batch, context, tp, method, kept_v_fraction)
    result = one_step(config, price_per_hour)
    head = {"model": model.name, "device": device.name, "phase": phase, "batch": batch, "context": context,
            "tp": tp, "method": method, "kept_v_fraction": kept_v_fraction, "kept_source": source,
            "graphs": graphs, **result}
    if not compare:
        return head
    dense = result if method == "dense" else one_step(
        StepConfig(model, device, batch, context, phase, tp, "dense", 1.0, graphs, exact_attention), price_per_hour)
    return {**head, "dense": {k: dense[k] for k in ("step_time_s", "attention_time_s", "tokens_per_s",
                                            "joules_per_token", "usd_per_million_tokens") if k in dense},
            "vs_dense": ratios_to_dense(result, dense),
            "max_batch": capacity_table(model, device, context, tp, kept_v_fraction)}
