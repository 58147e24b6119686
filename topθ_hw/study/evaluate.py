"""One study point → one simulated decode-attention call. A pure function of its task dict.

Bandwidth and SRAM what-ifs derive a modified device from the loaded one
(``dataclasses.replace``); the simulator never learns that the device was scaled, and no
device is named in code.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache

from topθ_hw.sim.hardware import Device, load_device


@lru_cache(maxsize=64)
def _device(name_or_path: str) -> Device:
    return load_device(name_or_path)


def scaled_device(device: Device, bandwidth_scale: float, sram_scale: float) -> Device:
    """``device`` with HBM bandwidth × ``bandwidth_scale`` and SRAM per unit × ``sram_scale``."""
    hbm = device.memory.hbm_bandwidth_GBps * bandwidth_scale
    # One unit's pull is limited by its own memory-level parallelism, not by the HBM peak,
    # but it can never exceed the whole device's bandwidth.
    memory = dataclasses.replace(device.memory, hbm_bandwidth_GBps=hbm,
                                 unit_bandwidth_GBps=min(device.memory.unit_bandwidth_GBps, hbm))
    compute = dataclasses.replace(device.compute,
                                  sram_per_unit_KiB=device.compute.sram_per_unit_KiB * sram_scale)
    return dataclasses.replace(device, memory=memory, compute=compute)


def device_for(task: dict) -> Device:
    return scaled_device(_device(task["device"]), task["bandwidth_scale"], task["sram_scale"])


def device_fingerprint(device: Device) -> dict:
    """The numbers a simulation depends on (sources and paths excluded)."""
    d = dataclasses.asdict(device)
    dma = {"dma": d["dma"]} if d["dma"] else {}  # accelerators only
    return {k: d[k] for k in ("architecture", "compute", "memory", "kernel", "build", "energy")} | dma


def fetch_mode(page_size: int) -> str:
    return "row" if page_size == 1 else f"page{page_size}"


OUTPUTS = ("time_s", "roofline_time_s", "bytes_k", "bytes_v", "bytes_scores", "bytes_thresholds",
           "bytes_other", "bytes_total", "flops", "energy_j", "energy_hbm_j", "energy_sram_j",
           "energy_compute_j", "utilisation", "launches", "events", "kernel_label", "validation")


def evaluate_point(task: dict) -> dict:
    """Simulate the task's decode-attention call; returns the task's keys plus the outputs."""
    from topθ_hw.sim import simulate_kernel
    from topθ_hw.sim.tiles import KernelOptions

    device = device_for(task)
    row = {k: v for k, v in task.items() if k not in ("kernel", "method_spec", "device_numbers")}
    row.update(hbm_bandwidth_GBps=device.memory.hbm_bandwidth_GBps,
               sram_per_unit_KiB=device.compute.sram_per_unit_KiB)
    if task.get("model"):  # a whole-model point (topθ_hw/cost)
        from topθ_hw.cost.study import cost_point
        return {**row, **{k: float("nan") for k in OUTPUTS}, **cost_point(task, device)}
    kernel = task["kernel"]
    build = KernelOptions(mask=task["mask"], block_keys=task["block_keys"], warps=task["warps"],
                          stages=task["stages"])
    out = simulate_kernel(device, batch=task["batch"], context=task["context"],
                          q_heads=kernel["q_heads"], kv_heads=kernel["kv_heads"],
                          head_dim=kernel["head_dim"], dtype=kernel["dtype"],
                          kept_v_fraction=task["kept_v_fraction"], fetch=fetch_mode(task["page_size"]),
                          method=task["sim_method"], split_tokens=task["split_tokens"], kernel=build)
    out["kernel_label"] = out["kernel"]["label"]
    row.update({k: out[k] for k in OUTPUTS})
    return row
