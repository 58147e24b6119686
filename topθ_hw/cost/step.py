"""One whole-model step (a decode step of a batch, or the prefill of a batch of prompts) on one
device of a tensor-parallel group: time by operator, the Amdahl split, bytes, FLOPs and energy.

Times per operator (named formulas; every figure from the device file):
- GEMM: max(bytes / (HBM peak × step.gemv_bandwidth_fraction),
            FLOPs / (matrix peak × step.matrix_efficiency_fraction)) + memory.hbm_latency_ns
  (weight-streaming GEMMs reach less than a plain read: the H200 measures 0.62 of peak, not 0.95);
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
    bandwidth = device.memory.hbm_bandwidth_GBps * 1e9 * device.step.gemv_bandwidth_fraction if op.kind == "gemm" \
        else device.stream_bandwidth_Bps
    memory = op.bytes / bandwidth
    matrix = op.matrix_flops / (device.compute.matrix_TFLOPS * 1e12 * device.step.matrix_efficiency_fraction)
    vector = op.vector_flops / (device.compute.vector_TFLOPS * 1e12)
    return max(memory, matrix, vector) + device.memory.hbm_latency_ns * 1e-9


def attention_keys(c: StepConfig, layer: int) -> int:
    """Keys layer ``layer`` attends to (sliding layers: their window; evicting methods: the retained rows)."""
    n = cached_tokens(c.model, layer, c.context)
    if c.method in EVICTING and c.phase == "decode":
        n = max(1, round(c.kept_v_fraction * n))
    return n


def attention_layers(c: StepConfig) -> dict[int, int]:
    """Keys attended → number of layers attending to that many."""
    counts: dict[int, int] = {}
    for layer in range(c.model.layers):
        n = attention_keys(c, layer)
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
    """One row of the step's breakdown: an operator summed over the ``count`` layers that run it."""
    name: str
    kind: str
    time_s: float
    kernels: int
    bytes: float
    energy_j: float
    count: int
    keys: int = 0              # attention: keys each of its layers attends to
    call: dict | None = None   # attention: the simulated call of one layer

    def per_layer(self) -> tuple[int, float]:
        """(kernels, seconds of each kernel) of one layer's share."""
        kernels = max(self.kernels // self.count, 1)
        return kernels, self.time_s / self.count / kernels


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
                          r["bytes_total"] * layers, r["energy_j"] * layers, layers, keys, r))
    return parts


def step_parts(c: StepConfig) -> tuple[list[Part], list[Part], list[Part], list[Part], list[Part]]:
    """(model head, per-layer before attention, attention by keys, per-layer after, model tail)."""
    check_config(c)
    tokens = c.batch if c.phase == "decode" else c.batch * c.context
    before, after = layer_ops(c.model, tokens, c.tp)
    first, last = model_head_ops(c.model, tokens, c.batch, c.tp)
    L, d = c.model.layers, c.device
    return ([_op_part(op, 1, d) for op in first], [_op_part(op, L, d) for op in before], _attention_parts(c),
            [_op_part(op, L, d) for op in after], [_op_part(op, 1, d) for op in last])


def kernel_sequence(c: StepConfig, parts) -> list[float]:
    """Every kernel's device time in launch order: layer by layer, attention between its halves."""
    first, before, attention, after, last = parts
    by_keys = {p.keys: p for p in attention}
    out = []
    def add(p):  # noqa: E306
        n, each = p.per_layer()
        out.extend([each] * n)
    for p in first:
        add(p)
    for layer in range(c.model.layers):
        for p in (*before, by_keys[attention_keys(c, layer)], *after):
            add(p)
    for p in last:
        add(p)
    return out


def launched_time_s(kernels: list[float], device: Device, graphs: bool) -> float:
    """Step time with launches: one graph launch and graph gaps, or the eager host/GPU race (a
    kernel starts once the host has dispatched it and the previous kernel has finished)."""
    k, s = device.kernel, device.step
    if graphs:
        return k.launch_overhead_us * 1e-6 + sum(kernels) + (len(kernels) - 1) * s.graph_launch_gap_us * 1e-6
    host = free = 0.0
    dispatch, gap = s.eager_dispatch_us * 1e-6, k.launch_gap_us * 1e-6
    for duration in kernels:
        host += dispatch
        free = max(host, free + gap) + duration
    return free + (k.launch_overhead_us - k.launch_gap_us) * 1e-6


def simulate_step(c: StepConfig) -> dict:
    """The step's time (with launches), the Amdahl split, bytes, dynamic energy and its breakdown."""
    parts = step_parts(c)
    kernels = kernel_sequence(c, parts)
    step = launched_time_s(kernels, c.device, c.graphs)
    flat = [p for group in parts for p in group]
    attention = sum(p.time_s for p in parts[2])
    breakdown = {}
    for p in flat:
        key = "attention" if p.kind == "attention" else p.name
        breakdown[key] = breakdown.get(key, 0.0) + p.time_s
    return {"step_time_s": step, "attention_time_s": attention, "rest_time_s": step - attention,
            "attention_share": attention / step, "kernels": len(kernels), "gpu_busy_s": sum(kernels),
            "bytes_per_device": sum(p.bytes for p in flat),
            "dynamic_energy_j_per_device": sum(p.energy_j for p in flat),
            "attention_extrapolated": any(p.call["extrapolated"] for p in parts[2]),
            "attention_layer": max(parts[2], key=lambda p: p.keys).call, "breakdown_s": breakdown}
