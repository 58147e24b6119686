"""DMA-pipelined execution of attention passes on accelerators (TPU, NPU): blocks streamed into a scratchpad.

Time unit: ``env.now`` is in nanoseconds. A TPU or NPU kernel (Pallas BlockSpecs, NKI) does not run
the GPU's per-SM tile loop: each core walks its share of the work as a sequence of large blocks of
``block_keys`` tokens (of every KV head, when the family's blocks span the heads), DMAs them
HBM → scratchpad ahead of use, and computes on one block while the next ones arrive. Actors, in SimPy's example style:

- ``dma_engine(env, unit, resident, queue)``: per block, waits for a free buffer (``resident`` is a
  ``Store`` of the blocks issued but not yet taken by the core, capacity ``buffers - 1``: together
  with the block being computed, at most ``buffers`` blocks occupy the scratchpad), then issues the
  block's descriptors — one per contiguous run: a KV page, a gathered run of kept V rows — at the
  device's per-descriptor issue time, and queues the block for transfer.
- ``dma_channel(env, unit, hbm, queue, cap)``: the unit's transfers in issue order (FIFO), through the
  shared HBM pool of model.py (the device's streaming bandwidth, each unit capped at its own rate);
  a block has landed one access latency after its last byte.
- ``tensor_core(env, unit, resident, log)``: takes the oldest block, waits until it has landed, then
  ``matrix_unit`` (scores Q·Kᵀ, at the matrix unit's minimum tile: decode's G query rows are padded
  to ``matrix_min_rows``), ``vector_unit`` (softmax, θ compare; rows padded to the vector tile),
  ``matrix_unit`` (P·V), and the kernel's fixed grid-step cost.

Work comes from the same passes the GPU path simulates (workload.py): per work item the bytes by
kind, the separate runs and the FLOPs. A core's items are concatenated and cut into blocks of
``DmaKernel.block_rows`` K rows (passes without K: the byte equivalent of a K + V block); item
quantities are spread over the blocks pro rata. Cores whose blocks agree to 3 significant digits
run as one process standing for ``count`` of them. The kernel family (block length, buffer depth, grid-step cost, page size,
scratchpad limit) is read from ``sims/kernels/`` by the device's architecture (dma_kernel.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import simpy

from topθ_hw.errors import UserError
from topθ_hw.sim.dma_kernel import DmaKernel, dma_kernel_for
from topθ_hw.sim.hardware import Device
from topθ_hw.sim.model import HBM, assign_to_units
from topθ_hw.sim.workload import BYTE_KINDS, AttentionCall, Pass

__all__ = ["DmaKernel", "UnitBlocks", "descriptors", "item_work", "simulate_dma_call", "simulate_dma_pass",
           "unit_blocks"]


@dataclass(frozen=True)
class UnitBlocks:
    """The block sequence ``count`` alike cores run in one pass (per block: B and ns)."""
    count: int
    channel_bytes: tuple
    issue_ns: tuple
    qk_ns: tuple
    vector_ns: tuple
    pv_ns: tuple
    step_ns: float


def dma_engine(env, unit: UnitBlocks, resident: simpy.Store, queue: simpy.Store):
    for b, issue in enumerate(unit.issue_ns):
        landed = env.event()
        yield resident.put((b, landed))          # a free buffer
        yield env.timeout(issue)                 # the block's descriptors
        yield queue.put((b, landed))


def dma_channel(env, unit: UnitBlocks, hbm: HBM, queue: simpy.Store, cap: float):
    for _ in unit.channel_bytes:
        b, landed = yield queue.get()
        yield hbm.read(unit.channel_bytes[b], with_latency=False, cap=cap, count=unit.count)
        env.timeout(hbm.latency).callbacks.append(lambda _ev, done=landed: done.succeed())


def matrix_unit(env, ns: float):
    if ns > 0:
        yield env.timeout(ns)


def vector_unit(env, ns: float):
    if ns > 0:
        yield env.timeout(ns)


def tensor_core(env, unit: UnitBlocks, resident: simpy.Store, log: list):
    start = env.now
    for _ in unit.issue_ns:
        b, landed = yield resident.get()
        yield landed
        yield from matrix_unit(env, unit.qk_ns[b])
        yield from vector_unit(env, unit.vector_ns[b])
        yield from matrix_unit(env, unit.pv_ns[b])
        yield env.timeout(unit.step_ns)
    log.append((unit.count, start, env.now))


def descriptors(p: Pass, kernel: DmaKernel, row_bytes: int) -> np.ndarray:
    """DMA descriptors per work item: one per contiguous run. K and dense V come in KV-cache pages
    (the fetch page, else the family's ``page_tokens``); gathered V rows in their kept runs, never
    fewer than the pages they touch; each other operand (query, θ, partial outputs) in one."""
    k, v = p.bytes["k"].astype(float), p.bytes["v"].astype(float)
    page_bytes = (p.fetch_tokens if p.fetch_tokens > 1 else kernel.page_tokens) * row_bytes
    v_desc = np.ceil(v / page_bytes)
    if p.v_dependent and p.fetch_tokens == 1:
        v_desc = np.maximum(v_desc, (p.runs - 1) * (v > 0))
    others = sum((p.bytes[kind] > 0) for kind in BYTE_KINDS if kind not in ("k", "v"))
    return np.ceil(k / page_bytes) + v_desc + others


def item_work(p: Pass, device: Device, kernel: DmaKernel, row_bytes: int) -> dict:
    """Per work item: block-axis rows, channel bytes, descriptor issue and matrix / vector ns on one core."""
    c, dma = device.compute, device.dma
    k, v = p.bytes["k"].astype(float), p.bytes["v"].astype(float)
    total = sum(p.bytes[kind] for kind in BYTE_KINDS).astype(float)
    desc = descriptors(p, kernel, row_bytes)
    rows = k / row_bytes if k.sum() > 0 else total / (2 * row_bytes)   # no K: the bytes of a K + V row pair
    m_rows = max(1, p.matrix_rows)
    m_pad = math.ceil(m_rows / c.matrix_min_rows) * c.matrix_min_rows / m_rows
    v_pad = math.ceil(m_rows / dma.vector_tile_rows) * dma.vector_tile_rows / m_rows if p.matrix_flops.sum() else 1
    matrix = p.matrix_flops * m_pad / (c.matrix_TFLOPS * 1e3 / c.units)
    qk_share = np.divide(k, k + v, out=np.ones_like(k), where=(k + v) > 0)
    return {"rows": np.maximum(rows, 1e-9), "channel": total + desc * device.gather_overhead_bytes,
            "issue": desc * dma.descriptor_issue_ns / dma.queues_per_unit,
            "qk": matrix * qk_share, "pv": matrix * (1 - qk_share),
            "vector": p.vector_flops * v_pad / (c.vector_TFLOPS * 1e3 / c.units)}


def _blocks(work: dict, items: np.ndarray, block_rows: int) -> dict:
    """Cut the items' concatenated rows into blocks of ``block_rows``; spread each quantity pro rata."""
    cum = np.concatenate([[0.0], np.cumsum(work["rows"][items])])
    edges = np.unique(np.append(np.arange(0.0, cum[-1], block_rows), cum[-1]))
    return {name: np.diff(np.interp(edges, cum, np.concatenate([[0.0], np.cumsum(values[items])])))
            for name, values in work.items() if name != "rows"}


def unit_blocks(p: Pass, device: Device, kernel: DmaKernel, row_bytes: int, block_rows: int) -> list[UnitBlocks]:
    """Block sequences per core; cores with as many blocks and per-stage sums within a few per cent
    (3 significant digits) run alike, as one sequence (their mean) standing for ``count`` cores."""
    work = item_work(p, device, kernel, row_bytes)
    units = device.compute.units
    unit_of = assign_to_units(work["channel"], units) if units > 1 else np.zeros(p.items, dtype=np.int64)
    groups: dict = {}
    for u in np.unique(unit_of):
        blocks = _blocks(work, np.flatnonzero(unit_of == u), block_rows)
        key = (len(blocks["channel"]),) + tuple(float(f"{v.sum():.3g}") for v in blocks.values())
        groups.setdefault(key, []).append(blocks)
    return [UnitBlocks(count=len(alike), step_ns=kernel.grid_step_overhead_ns,
                       **{f"{name}_ns" if name != "channel" else "channel_bytes":
                          tuple(np.mean([b[name] for b in alike], axis=0).tolist())
                          for name in ("channel", "issue", "qk", "vector", "pv")})
            for alike in groups.values()]


def simulate_dma_pass(p: Pass, device: Device, kernel: DmaKernel, row_bytes: int, block_rows: int) -> dict:
    """Run one pass; its body time (launch excluded), events and the busiest core's time by stage."""
    env = simpy.Environment()
    hbm = HBM(env, bandwidth_B_per_ns=device.stream_bandwidth_Bps * 1e-9,
              unit_cap_B_per_ns=device.memory.unit_bandwidth_GBps, latency_ns=device.memory.hbm_latency_ns)
    log: list = []
    plans = unit_blocks(p, device, kernel, row_bytes, block_rows)
    for unit in plans:
        resident, queue = simpy.Store(env, capacity=kernel.buffers - 1), simpy.Store(env)
        env.process(dma_engine(env, unit, resident, queue))
        env.process(dma_channel(env, unit, hbm, queue, device.memory.unit_bandwidth_GBps))
        env.process(tensor_core(env, unit, resident, log))
    events = 0
    while env.peek() != math.inf:
        env.step()
        events += 1
    stages = {name: max(sum(getattr(u, name)) for u in plans) for name in ("issue_ns", "qk_ns", "pv_ns", "vector_ns")}
    stages["step_ns"] = max(len(u.issue_ns) for u in plans) * kernel.grid_step_overhead_ns
    return {"body_ns": env.now, "events": events, "blocks": sum(u.count * len(u.issue_ns) for u in plans), **stages}


def check_block_fits(device: Device, kernel: DmaKernel, row_bytes: int, block_rows: int) -> None:
    """buffers × (K block + V block) must fit the scratchpad the kernel may use on one core."""
    need_kib = kernel.buffers * 2 * block_rows * row_bytes / 1024
    limits = [(device.compute.sram_per_unit_KiB, f"{device.path} compute.sram_per_unit_KiB"),
              (kernel.scratchpad_limit_KiB, f"{kernel.path} architectures.{kernel.architecture}.scratchpad_limit_KiB")]
    limit, where = min(limits)
    if need_kib > limit:
        raise UserError(f"kernel {kernel.family}: buffers {kernel.buffers} × (K block + V block) = "
                        f"{kernel.buffers} × 2 × "
                        f"{block_rows} rows × {row_bytes} B = {need_kib:g} KiB exceeds the {limit:g} KiB "
                        f"scratchpad ({where}); lower --block-keys (kernel field 'block_keys') or --buffers")


def simulate_dma_call(call: AttentionCall, device: Device, kernel: DmaKernel | None = None) -> dict:
    """Simulate every pass of ``call`` on a DMA-pipelined device: the same keys as ``simulate_call``,
    plus the kernel, the bandwidth bound, the named cause of any time beyond 2× it, and the
    validation status."""
    from topθ_hw.sim.simulate import call_totals, check_fits, pass_roofline_ns

    if device.dma is None:
        raise UserError(f"{device.path}: no [dma] section: {device.name} runs the GPU tile model, not dma.py")
    kernel = kernel or dma_kernel_for(device)
    row = call.shape.row_bytes
    check_fits(call, device, int(sum(p.bytes["k"].sum() for p in call.passes) // row))
    block_rows = kernel.block_rows(call.shape.kv_heads)
    check_block_fits(device, kernel, row, block_rows)
    k = device.kernel
    launch_ns = (k.launch_overhead_us + (len(call.passes) - 1) * k.launch_gap_us) * 1e3
    time_ns, roofline_ns, events, stages = launch_ns, launch_ns, 0, {}
    for p in call.passes:
        sim = simulate_dma_pass(p, device, kernel, row, block_rows)
        time_ns += sim["body_ns"]
        roofline_ns += pass_roofline_ns(p, device)
        events += sim["events"]
        for name in ("issue_ns", "qk_ns", "pv_ns", "vector_ns", "step_ns", "blocks"):
            stages[name] = stages.get(name, 0) + sim[name]
    out = call_totals(call, device, time_ns, roofline_ns, events)
    out.update(execution="dma-blocks", kernel=kernel.label, blocks=int(stages["blocks"]),
               bandwidth_bound_s=out["bytes_total"] / (device.memory.hbm_bandwidth_GBps * 1e9),
               validation=kernel.validation)
    out["cause"] = slowdown_cause(out, stages, launch_ns, call, device)
    return out


def slowdown_cause(out: dict, stages: dict, launch_ns: float, call: AttentionCall, device: Device) -> str:
    """'' within 2× the bandwidth bound; else the stage that dominates the time, by name."""
    time_ns, bound_ns = out["time_s"] * 1e9, out["bandwidth_bound_s"] * 1e9
    if time_ns <= 2 * bound_ns:
        return ""
    rows = max(p.matrix_rows for p in call.passes)
    padded = math.ceil(rows / device.compute.matrix_min_rows) * device.compute.matrix_min_rows
    transfer_ns = sum(sum(p.bytes[kind].sum() for kind in BYTE_KINDS) + p.runs.sum() * device.gather_overhead_bytes
                      for p in call.passes) / (device.stream_bandwidth_Bps * 1e-9)
    parts = {"descriptor-bound gather": stages["issue_ns"],
             (f"matrix-unit padding ({rows} query rows padded to {padded})" if padded > rows
              else "matrix-unit throughput"): stages["qk_ns"] + stages["pv_ns"],
             "vector unit (softmax)": stages["vector_ns"],
             "grid-step overhead (blocks too small)": stages["step_ns"],
             "small-run DRAM inefficiency": transfer_ns}
    name, ns = max(parts.items(), key=lambda kv: kv[1])
    if launch_ns >= 0.5 * time_ns:
        return f"launch overhead at tiny size ({launch_ns / 1e3:.1f} us of {time_ns / 1e3:.1f} us)"
    if ns >= 0.5 * time_ns:
        return f"{name}: {ns / 1e3:.1f} us of {time_ns / 1e3:.1f} us"
    return f"pipeline latency: {stages['blocks']} blocks cannot hide the DMA round trip ({time_ns / 1e3:.1f} us)"
