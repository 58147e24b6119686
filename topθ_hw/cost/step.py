"""One whole-model step (a decode step of a batch, or the prefill of a batch of prompts) on one
device of a tensor-parallel group: time by operator, the Amdahl split, bytes, FLOPs and energy.

Times per operator (named formulas; every figure from the device file):
- GEMM: max(bytes / (HBM peak × memory.stream_efficiency_fraction),
            FLOPs / (matrix peak × step.matrix_efficiency_fraction)) + memory.hbm_latency_ns;
- elementwise: max(bytes / streaming bandwidth, FLOPs / vector peak) + memory.hbm_latency_ns;
- all-reduce: interconnect.allreduce_latency_us + payload × 2(n − 1)/n / interconnect.allreduce_bus_GBps;
- attention: the attention model (``cost.attention``), less its own launch share.
Launches: with ``graphs`` the step is one graph launch (kernel.launch_overhead_us) and
step.graph_launch_gap_us between kernels; eager, the host dispatches each kernel in
step.eager_dispatch_us and a kernel starts when both the host has issued it and the previous one
has finished (plus kernel.launch_gap_us): the GPU idles when the host falls behind.
"""

from __future__ import annotations

from dataclasses import dataclass

from topθ_hw.cost import attention as attn
from topθ_hw.cost.models import ModelShape, cached_tokens
from topθ_hw.cost.ops import Op, heads_per_device, layer_ops, model_head_ops
from topθ_hw.errors import UserError
from topθ_hw.sim import Device
from topθ_hw.sim.simulate import energy_j

EVICTING = ("streaming", "h2o")            # the cache holds only the retained rows
SIM_METHODS = ("dense", "toptheta", "topk")
METHODS = SIM_METHODS + EVICTING


@dataclass(frozen=True)
class StepConfig:
    model: ModelShape
    device: Device
    batch: int
    context: int                      # decode: keys in the cache; prefill: prompt tokens
    phase: str = "decode"
    tp: int = 1
    method: str = "dense"
    kept_v_fraction: float = 1.0      # Top-θ / top-k: V rows read; evicting methods: rows retained
    graphs: bool = False
    exact_attention: bool = False


def check_config(c: StepConfig) -> None:
    if c.phase not in ("decode", "prefill"):
        raise UserError(f"--phase {c.phase!r}: expected decode or prefill")
    if c.method not in METHODS:
        raise UserError(f"--method {c.method!r}: expected one of {', '.join(METHODS)}")
    if c.batch < 1 or c.context < 1:
        raise UserError(f"--batch and --context must be ≥ 1, got {c.batch} and {c.context}")
    if not 0 < c.kept_v_fraction <= 1:
        raise UserError(f"--kept-v-fraction {c.kept_v_fraction} outside (0, 1]")
    if c.method == "dense" and c.kept_v_fraction != 1:
        raise UserError("--method dense reads every V row: --kept-v-fraction must be 1")
    if c.device.step is None:
        raise UserError(f"{c.device.path}: device has no [step] section (GEMM efficiency, launch figures); "
                        "whole-model steps need it")
    if c.tp > 1 and (c.device.interconnect is None or c.tp > c.device.interconnect.devices_per_node):
        limit = c.device.interconnect.devices_per_node if c.device.interconnect else 1
        raise UserError(f"--tp {c.tp}: {c.device.name} ({c.device.path}) links at most {limit} devices per node "
                        "([interconnect] devices_per_node)")
    heads_per_device(c.model, c.tp)


def op_time_s(op: Op, device: Device) -> float:
    """An operator's device time (module doc: the formulas)."""
    if op.kind == "allreduce":
        link = device.interconnect
        return link.allreduce_latency_us * 1e-6 + op.comm_bytes * 2 * (1 - 1 / op.devices) / (link.allreduce_bus_GBps * 1e9)
    memory = op.bytes / device.stream_bandwidth_Bps
    matrix = op.matrix_flops / (device.compute.matrix_TFLOPS * 1e12 * device.step.matrix_efficiency_fraction)
    vector = op.vector_flops / (device.compute.vector_TFLOPS * 1e12)
    return max(memory, matrix, vector) + device.memory.hbm_latency_ns * 1e-9


def attention_layers(c: StepConfig) -> dict[int, int]:
    """Keys attended → number of layers attending to that many (sliding layers: their window)."""
    counts: dict[int, int] = {}
    for layer in range(c.model.layers):
        n = cached_tokens(c.model, layer, c.context)
        if c.method in EVICTING and c.phase == "decode":
            n = max(1, round(c.kept_v_fraction * n))
        counts[n] = counts.get(n, 0) + 1
    return counts


def attention_call(c: StepConfig, keys: int) -> dict:
    qh, kvh = heads_per_device(c.model, c.tp)
    method = "dense" if c.method in EVICTING else c.method
    fraction = 1.0 if method == "dense" else c.kept_v_fraction
    d = c.model.head_dim
    if c.phase == "prefill":
        return attn.prefill_attention(c.device, c.batch, keys, qh, kvh, d, fraction, method)
    return attn.decode_attention(c.device, c.batch, keys, qh, kvh, d, fraction, method, c.exact_attention)


@dataclass
class Part:
    """One row of the step's breakdown: an operator summed over the layers that run it."""
    name: str
    kind: str
    time_s: float
    kernels: int
    bytes: float
    energy_j: float
    count: int
    call: dict | None = None   # attention: the simulated call of one layer




def _op_part(op: Op, count: int, device: Device) -> Part:
    energy = energy_j(op.bytes, op.matrix_flops, op.vector_flops, device)["energy_j"]
    return Part(op.name, op.kind, op_time_s(op, device) * count, op.kernels * count, op.bytes * count,
                energy * count, count)


def _attention_parts(c: StepConfig) -> list[Part]:
    parts = []
    for keys, layers in sorted(attention_layers(c).items()):
        r = attention_call(c, keys)
        body = r["time_s"] - attn.launch_part_s(c.device, int(r["launches"]))
        parts.append(Part(f"attention[{keys}]", "attention", body * layers, int(r["launches"]) * layers,
                          r["bytes_total"] * layers, r["energy_j"] * layers, layers, r))
    return parts


def step_parts(c: StepConfig) -> list[Part]:
    """The step's operators in execution order per layer (attention between before and after)."""
    check_config(c)
    tokens = c.batch if c.phase == "decode" else c.batch * c.context
    before, after = layer_ops(c.model, tokens, c.tp)
    first, last = model_head_ops(c.model, tokens, c.batch, c.tp)
    L = c.model.layers
    return ([_op_part(op, 1, c.device) for op in first] + [_op_part(op, L, c.device) for op in before]
            + _attention_parts(c) + [_op_part(op, L, c.device) for op in after]
            + [_op_part(op, 1, c.device) for op in last])


def launched_time_s(parts: list[Part], device: Device, graphs: bool) -> float:
    """Step time with launches: one graph launch and graph gaps, or the eager host/GPU race."""
    kernels = sum(p.kernels for p in parts)
    body = sum(p.time_s for p in parts)
    k, s = device.kernel, device.step
    if graphs:
        return k.launch_overhead_us * 1e-6 + body + (kernels - 1) * s.graph_launch_gap_us * 1e-6
    host = free = 0.0
    dispatch, gap = s.eager_dispatch_us * 1e-6, k.launch_gap_us * 1e-6
    for p in parts:                               # each kernel of p takes p.time_s / p.kernels
        per_kernel = p.time_s / max(p.kernels, 1)
        for _ in range(p.kernels):
            host += dispatch
            free = max(host, free + gap) + per_kernel
    return free + (k.launch_overhead_us - k.launch_gap_us) * 1e-6


def simulate_step(c: StepConfig) -> dict:
    """The step's time (with launches), the Amdahl split, bytes, dynamic energy and its breakdown."""
    parts = step_parts(c)
    step = launched_time_s(parts, c.device, c.graphs)
    attention = sum(p.time_s for p in parts if p.kind == "attention")
    breakdown = {}
    for p in parts:
        key = p.name if p.kind != "attention" else "attention"
        breakdown[key] = breakdown.get(key, 0.0) + p.time_s
    return {"step_time_s": step, "attention_time_s": attention, "rest_time_s": step - attention,
            "attention_share": attention / step, "kernels": sum(p.kernels for p in parts),
            "gpu_busy_s": sum(p.time_s for p in parts), "bytes_per_device": sum(p.bytes for p in parts),
            "dynamic_energy_j_per_device": sum(p.energy_j for p in parts),
            "attention_extrapolated": any(p.call["extrapolated"] for p in parts if p.call),
            "attention_layer": max((p for p in parts if p.call), key=lambda p: p.name).call,
            "breakdown_s": breakdown}
