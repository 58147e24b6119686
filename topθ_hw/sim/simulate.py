"""Simulate attention calls on a device: time, bytes by kind, FLOPs, energy, roofline, utilisation.

Times are seconds in every result (the SimPy model itself runs in nanoseconds). Each pass of a
call is one kernel launch: the first costs the device's launch overhead, each further one the
(smaller) gap of a launch queued right behind it, and the passes' simulated bodies add up. The analytic roofline beside it charges the same launches plus, per pass, the larger of
bytes / achievable streaming bandwidth and FLOPs / peak throughput: the time no schedule beats
on this device, so ``time_s / roofline_time_s`` is the model's scheduling and latency overhead.
"""

from __future__ import annotations

import math

from topθ_hw.errors import UserError
from topθ_hw.sim.hardware import Device, load_device
from topθ_hw.sim.kernel_family import GPU_FAMILY
from topθ_hw.sim.model import simulate_pass
from topθ_hw.sim.tiles import KernelOptions, fa2_num_splits, with_stages
from topθ_hw.sim.workload import BYTE_KINDS, ELEMENT_BYTES, TILE, AttentionCall, _round_up, kernel_workload


def check_fits(call: AttentionCall, device: Device, context_rows: int) -> None:
    """Refuse calls whose shape breaks the device's assumptions (SRAM tiles, HBM capacity)."""
    row = call.shape.row_bytes
    tile_kib = 2 * 2 * TILE * row / 1024  # K and V tiles, double-buffered
    if tile_kib > device.compute.sram_per_unit_KiB:
        raise UserError(f"head_dim {call.shape.head_dim} in {call.shape.dtype} needs {tile_kib:.0f} KiB of SRAM "
                        f"per unit for double-buffered {TILE}-row K/V tiles; {device.name} "
                        f"({device.path}) has compute.sram_per_unit_KiB = {device.compute.sram_per_unit_KiB:g}")
    kv_gb = 2 * context_rows * row / 1e9
    if kv_gb > device.memory.hbm_capacity_GB:
        raise UserError(f"this layer's KV cache alone is {kv_gb:.1f} GB; {device.name} ({device.path}) has "
                        f"memory.hbm_capacity_GB = {device.memory.hbm_capacity_GB:g}")


def pass_roofline_ns(p, device: Device) -> float:
    """Bytes at streaming bandwidth (merge passes: at L2 bandwidth, their partials were just
    written), or FLOPs at peak, whichever is longer."""
    c = device.compute
    total = sum(int(p.bytes[k].sum()) for k in BYTE_KINDS)
    bandwidth = device.memory.l2_bandwidth_GBps if p.name.endswith("reduce") else device.stream_bandwidth_Bps * 1e-9
    return max(total / bandwidth,
               float(p.matrix_flops.sum()) / (c.matrix_TFLOPS * 1e3),
               float(p.vector_flops.sum()) / (c.vector_TFLOPS * 1e3))


def energy_j(byte_total: float, matrix_flops: float, vector_flops: float, device: Device) -> dict:
    """Dynamic energy: DRAM reads, SRAM staging (each byte written into and read out of SRAM once),
    matrix and vector arithmetic."""
    e = device.energy
    parts = {"energy_hbm_j": byte_total * e.hbm_pJ_per_byte * 1e-12,
             "energy_sram_j": 2 * byte_total * e.sram_pJ_per_byte * 1e-12,
             "energy_compute_j": (matrix_flops * e.matrix_pJ_per_flop + vector_flops * e.vector_pJ_per_flop) * 1e-12}
    return {"energy_j": sum(parts.values()), **parts}


def simulate_call(call: AttentionCall, device: Device, kernel: KernelOptions = KernelOptions()) -> dict:
    """Simulate every pass of ``call``; one flat dict of totals (seconds, bytes, FLOPs, joules)."""
    if device.dma is not None:  # accelerators stream DMA blocks into a scratchpad: their own model
        from topθ_hw.sim.dma import DmaKernel, simulate_dma_call
        return simulate_dma_call(call, device, kernel if isinstance(kernel, DmaKernel) else None)
    context_rows = int(sum(p.bytes["k"].sum() for p in call.passes) // call.shape.row_bytes)
    check_fits(call, device, context_rows)
    k = device.kernel
    launch_ns = (k.launch_overhead_us + (len(call.passes) - 1) * k.launch_gap_us) * 1e3
    time_ns, roofline_ns, events = launch_ns, launch_ns, 0
    for p in call.passes:
        sim = simulate_pass(p, device, kernel, call.shape.row_bytes)
        time_ns += sim["body_ns"]
        roofline_ns += pass_roofline_ns(p, device)
        events += sim["events"]
    return call_totals(call, device, time_ns, roofline_ns, events)


def call_totals(call: AttentionCall, device: Device, time_ns: float, roofline_ns: float, events: int) -> dict:
    """One flat dict of a simulated call's totals: seconds, bytes by kind, FLOPs, joules, utilisation."""
    out = {"phase": call.phase, "method": call.method, "fetch": call.fetch,
           "kept_v_fraction": call.kept_v_fraction, "launches": len(call.passes),
           "time_s": time_ns * 1e-9, "roofline_time_s": roofline_ns * 1e-9}
    for kind in BYTE_KINDS:
        out[f"bytes_{kind}"] = call.total(kind)
    out["bytes_total"] = sum(out[f"bytes_{k}"] for k in BYTE_KINDS)
    out["matrix_flops"] = float(sum(p.matrix_flops.sum() for p in call.passes))
    out["vector_flops"] = float(sum(p.vector_flops.sum() for p in call.passes))
    out["flops"] = out["matrix_flops"] + out["vector_flops"]
    out.update(energy_j(out["bytes_total"], out["matrix_flops"], out["vector_flops"], device))
    out.update(utilisation(out, device))
    out["events"] = events
    return out


def utilisation(totals: dict, device: Device) -> dict:
    """Fraction of datasheet peak bandwidth and matrix throughput achieved over the whole time."""
    t = totals["time_s"]
    if t <= 0:
        return {"utilisation": 0.0, "compute_utilisation": 0.0}
    return {"utilisation": totals["bytes_total"] / (t * device.memory.hbm_bandwidth_GBps * 1e9),
            "compute_utilisation": totals["matrix_flops"] / (t * device.compute.matrix_TFLOPS * 1e12)}


def simulate_kernel(hardware: str | Device, batch: int, context: int, q_heads: int, kv_heads: int,
                    head_dim: int, dtype: str, kept_v_fraction: float, fetch: str, method: str = "toptheta",
                    split_tokens: int = 512, seed: int = 0, kernel: KernelOptions = KernelOptions()) -> dict:
    """Predicted time, bytes by kind, FLOPs and energy of one decode-attention call.

    The Python twin of ``toptheta simulate-kernel``; ``hardware`` is a shipped device name, a
    TOML path or a loaded :class:`Device`; ``kernel`` says how the kernel is built (mask kind,
    tile length, warps, pipeline stages); ``split_tokens`` (keys per split-KV work item) must be
    a multiple of its tile length. The result's ``kernel`` entry names what was simulated.
    """
    device = hardware if isinstance(hardware, Device) else load_device(hardware)
    if dtype not in ELEMENT_BYTES:
        raise UserError(f"--dtype {dtype!r}: expected one of {', '.join(sorted(ELEMENT_BYTES))}")
    if device.dma is not None:  # accelerators: the DMA kernel family of their architecture (dma.py)
        from topθ_hw.sim.dma_kernel import DmaKernel, dma_kernel_for
        kernel = kernel if isinstance(kernel, DmaKernel) else dma_kernel_for(device)
        split_tokens = _round_up(split_tokens, kernel.block_keys)  # work items are whole blocks
        described = {"family": kernel.family, "mask": "none" if method == "dense" else "threshold",
                     "block_keys": kernel.block_keys, "buffers": kernel.buffers, "split_tokens": split_tokens,
                     "label": kernel.label}
    else:
        described = kernel_description(with_stages(kernel, head_dim * ELEMENT_BYTES[dtype],
                                                   device.compute.sram_per_unit_KiB,
                                                   method != "dense" and kernel.mask == "threshold"),
                                       split_tokens, method)
    check_kernel_shape(device, kernel, batch, context, kv_heads, head_dim, dtype, split_tokens)
    call = kernel_workload(batch, context, q_heads, kv_heads, head_dim, dtype, kept_v_fraction, fetch, method,
                           split_tokens=split_tokens, granule_bytes=device.memory.sector_bytes, seed=seed)
    result = simulate_call(call, device, kernel)
    result.setdefault("validation", validation_status(device))
    return {"device": device.name, "batch": batch, "context": context, "q_heads": q_heads, "kv_heads": kv_heads,
            "head_dim": head_dim, "dtype": dtype, "split_tokens": split_tokens, **result, "kernel": described,
            "bytes": {k: result[f"bytes_{k}"] for k in BYTE_KINDS}}


VALIDATED_ARCHITECTURES = {"hopper": "validated: H100 and H200 decode-attention timings (sims/validation/README.md)"}


def validation_status(device: Device) -> str:
    """How far a GPU's simulated numbers are checked against real timings (accelerators: dma.py)."""
    return VALIDATED_ARCHITECTURES.get(device.architecture,
                                       f"unvalidated: no {device.name} timing; kernel constants of "
                                       f"architecture {device.architecture!r} are assumed (sims/kernels/)")



def kernel_description(kernel: KernelOptions, split_tokens: int, method: str) -> dict:
    """Which kernel a simulated number assumes: family, mask kind and launch configuration."""
    mask = "none" if method == "dense" else kernel.mask
    family = {"fa2": "flashattention2-splitkv"}.get(kernel.style, GPU_FAMILY)
    label = (f"{family} {mask if mask != 'none' else 'dense'}, {kernel.block_keys}-key tiles, {kernel.warps} warps, "
             f"{kernel.stages} stages, {split_tokens}-key splits")
    return {"family": family, "mask": mask, "block_keys": kernel.block_keys, "warps": kernel.warps,
            "stages": kernel.stages, "split_tokens": split_tokens, "label": label}


def check_kernel_shape(device: Device, kernel: KernelOptions, batch: int, context: int, kv_heads: int,
                       head_dim: int, dtype: str, split_tokens: int) -> None:
    """Refuse, from the shape alone and before any allocation, a call the kernel or device cannot run."""
    if split_tokens < kernel.block_keys or split_tokens % kernel.block_keys:
        raise UserError(f"--split-tokens {split_tokens}: must be a positive multiple of --block-keys "
                        f"{kernel.block_keys}")
    if batch < 1 or context < 1 or kv_heads < 1 or head_dim < 1:
        raise UserError(f"--batch, --context, --kv-heads and --head-dim must be ≥ 1, got {batch}, {context}, "
                        f"{kv_heads}, {head_dim}")
    kv_bytes = 2.0 * batch * kv_heads * context * head_dim * ELEMENT_BYTES.get(dtype, 2)
    if kv_bytes > device.memory.hbm_capacity_GB * 1e9:
        raise UserError(f"--batch {batch} x --context {context}: the KV cache of this layer alone is "
                        f"{kv_bytes / 1e9:.1f} GB; {device.name} has memory.hbm_capacity_GB = "
                        f"{device.memory.hbm_capacity_GB:g}")


def fa2_split_tokens(batch: int, kv_heads: int, context: int, units: int, block_keys: int = 128) -> int:
    """Keys per split FlashAttention-2 uses for GQA decode (torch SDPA's flash backend): its
    num_splits heuristic over batch × KV heads blocks (the query's group folded into the rows),
    each split a whole number of ``block_keys`` key blocks."""
    n_blocks = math.ceil(context / block_keys)
    splits = fa2_num_splits(batch * kv_heads, n_blocks, units)
    return math.ceil(n_blocks / splits) * block_keys
