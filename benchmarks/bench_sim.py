"""Simulator speed: one decode step of a 32-layer, 8-KV-head model at 32k context, on one core.

Goal (issue 4): at most 1 s per such step, workload construction included. Each layer gets its
own kept-V masks (sinks + recent window + scattered rows, 20 % kept), so no layer is a copy of
another. Also prints how the SimPy event count and the wall time grow with context and batch:
SMs that got alike work (as many CTAs, sums within a few per cent) are one SimPy process and one
weighted share of the DRAM pool, so events per layer stay in the low hundreds at any size (up to
about 4 per group of SMs plus the pool's finish events); wall time grows with the number of CTAs
and keys, spent building the per-CTA arrays from the masks.

    .venv/bin/python benchmarks/bench_sim.py
"""

from __future__ import annotations

import time

from topθ_hw.sim import load_device, simulate_call
from topθ_hw.sim.workload import kernel_workload

LAYERS, Q_HEADS, KV_HEADS, HEAD_DIM = 32, 32, 8, 128


def decode_step(device, batch: int, context: int, fraction: float = 0.2) -> tuple[float, int, float]:
    """Wall seconds, SimPy events and simulated seconds of one whole-model decode step."""
    start = time.perf_counter()
    events, simulated = 0, 0.0
    for layer in range(LAYERS):
        call = kernel_workload(batch, context, Q_HEADS, KV_HEADS, HEAD_DIM, "bf16", fraction, "row", "toptheta",
                               granule_bytes=device.memory.sector_bytes, seed=layer)
        result = simulate_call(call, device)
        events += result["events"]
        simulated += result["time_s"]
    return time.perf_counter() - start, events, simulated


def main() -> None:
    device = load_device("h100")
    decode_step(device, 1, 4096)  # warm imports and caches
    wall, events, simulated = decode_step(device, 1, 32768)
    print(f"goal: 32 layers x 8 KV heads, context 32768, batch 1 on {device.name}: "
          f"{wall:.3f} s wall (goal <= 1 s: {'met' if wall <= 1 else 'MISSED'}, ratio {wall:.2f} of budget), "
          f"{events} events, simulated step {simulated * 1e6:.1f} us")
    print(f"{'batch':>5} {'context':>8} {'events':>8} {'events/layer':>12} {'wall_s':>8} {'sim_step_us':>12}")
    for batch in (1, 4, 16):
        for context in (4096, 16384, 32768, 131072):
            wall, events, simulated = decode_step(device, batch, context)
            print(f"{batch:5d} {context:8d} {events:8d} {events // LAYERS:12d} {wall:8.3f} {simulated * 1e6:12.1f}")


if __name__ == "__main__":
    main()
