"""A step's time and energy → what a user pays per token: tokens/s, J/token, $/million tokens.

Energy per device and step = power.idle_power_W × step time + the dynamic energy of its bytes and
FLOPs (the device's [energy] figures), at most power.board_power_W × step time; J/token counts
every device of the tensor-parallel group. $/million tokens = cost.price_usd_per_hour (or the
override) × devices × step time / 3600 per token × 1e6. A device file without [power] or [cost]
leaves those outputs out, with a note: never a zero.
"""

from __future__ import annotations

from topθ_hw.cost.step import StepConfig


def tokens_per_step(c: StepConfig) -> int:
    return c.batch if c.phase == "decode" else c.batch * c.context


def cost_outputs(c: StepConfig, step: dict, price_per_hour: float | None = None) -> dict:
    t, tokens, device = step["step_time_s"], tokens_per_step(c), c.device
    out = {"tokens_per_step": tokens, "tokens_per_s": tokens / t, "notes": []}
    if c.phase == "decode":
        out["time_per_output_token_s"] = t
    else:
        out["time_to_first_token_s"] = t
    if device.power is not None:
        p = device.power
        energy = min(p.idle_power_W * t + step["dynamic_energy_j_per_device"], p.board_power_W * t)
        out.update(joules_per_token=c.tp * energy / tokens, power_W_per_device=energy / t)
    else:
        out["notes"].append(f"{device.name}: no [power] section in {device.path}; joules_per_token left out")
    price = price_per_hour if price_per_hour is not None else (device.cost.price_usd_per_hour if device.cost else None)
    if price is not None:
        out["usd_per_million_tokens"] = price * c.tp * t / 3600 / tokens * 1e6
        out["price_usd_per_hour"] = price
        out["price_source"] = ("--price-per-hour" if price_per_hour is not None
                               else device.sources.get("cost.price_usd_per_hour", ""))
    else:
        out["notes"].append(f"{device.name}: no [cost] section in {device.path} and no --price-per-hour; "
                            "usd_per_million_tokens left out")
    return out


RATIO_KEYS = ("step_time_s", "attention_time_s", "tokens_per_s", "joules_per_token", "usd_per_million_tokens")


def ratios_to_dense(result: dict, dense: dict) -> dict:
    """Each output over dense's (speedups are dense time / method time)."""
    out = {f"{k}_ratio": result[k] / dense[k] for k in RATIO_KEYS if k in result and k in dense and dense[k]}
    out["speedup"] = dense["step_time_s"] / result["step_time_s"]
    out["attention_speedup"] = dense["attention_time_s"] / result["attention_time_s"]
    return out
