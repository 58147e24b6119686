"""A study point with a ``model`` axis → the whole-model cost of that point (``study/evaluate.py``).

The point's own axes (device, method, batch, context, tp, graphs, phase) and its kept V fraction,
measured on the study's trace (``study/kept.py``), go to ``cost_of`` without the dense twin (dense
is a point of its own; the report pairs them). The attention-call columns of an attention-only
point are filled from the model's full-context layer call. A batch that does not fit gets
``fits = False`` and no cost columns (the report lists it), never a made-up number.
"""

from __future__ import annotations

import math

from topθ_hw.cost.capacity import max_batch
from topθ_hw.cost.models import load_model
from topθ_hw.cost.run import cost_of
from topθ_hw.errors import UserError
from topθ_hw.sim import Device

COST_OUTPUTS = ("step_time_s", "attention_time_s", "rest_time_s", "attention_share", "tokens_per_s",
                "joules_per_token", "usd_per_million_tokens", "time_to_first_token_s", "time_per_output_token_s",
                "kernels")
CALL_OUTPUTS = {"time_s": "time_s", "bytes_total": "bytes_total", "energy_j": "energy_j", "launches": "launches"}


def cost_point(task: dict, device: Device) -> dict:
    """Cost columns (NaN where the device file lacks the figure), the largest batch that fits at the
    point's context for its method, and ``fits``."""
    method = task["sim_method"]
    row = {k: math.nan for k in COST_OUTPUTS}
    row["max_batch"] = max_batch(load_model(task["model"]), device, task["context"], task["tp"], method,
                                 task["kept_v_fraction"])
    try:
        r = cost_of(task["model"], device, task["batch"], task["context"], tp=task["tp"],
                    method=task["sim_method"], kept_v_fraction=None if task["sim_method"] == "dense"
                    else task["kept_v_fraction"], graphs=task["graphs"], phase=task["phase"], compare=False)
    except UserError as exc:
        if "does not fit" not in str(exc):
            raise
        return {**row, "fits": False, "cost_note": str(exc)}
    row.update({k: r[k] for k in COST_OUTPUTS if k in r})
    call = r["attention_layer"]
    row.update({k: call[v] for k, v in CALL_OUTPUTS.items()})
    row["flops"] = call["matrix_flops"] + call["vector_flops"]
    return {**row, "fits": True, "cost_note": "; ".join(r["notes"])}
