"""SimPy model of one attention kernel pass on a device: units streaming work through HBM.

Time unit: ``env.now`` is in nanoseconds throughout.

Actors, in SimPy's example style (generator functions named after the actor, ``env`` first):

- ``sm_worker(env, unit, hbm, chunks, log)``: one compute unit (SM, CU, core). It works
  through the work items the block scheduler gave it, aggregated into a few chunks so the
  event count stays small, double-buffered: the load of chunk c+1 is in flight while chunk c
  is scored. When V addresses depend on the chunk's own scores (Top-θ deciding on the fly,
  top-k gathering by index) the V gather is a second, dependent load after the scores.
- :class:`HBM`: the DRAM channels. Addresses are interleaved over all channels at a few
  hundred bytes, so every chunk is spread over every channel and the channels act as one pool
  of bandwidth shared by the transfers in flight (processor sharing, exact for this kind of
  interleaving; a one-chunk-one-channel Resource would invent imbalance no GPU has). Each
  transfer is also capped at what one unit can keep in flight (Little's law), and its data
  arrives one access latency after its last byte left the channels. Queueing on the channels
  shows up as a lower rate per transfer when more transfers are in flight.

Work items are assigned to units the way a GPU's block scheduler does: in launch order, each
to the unit that frees up first (list scheduling on estimated channel time), so the real
per-item bytes from the masks decide the load imbalance.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np
import simpy

from topθ_hw.sim.hardware import Device
from topθ_hw.sim.workload import BYTE_KINDS, Pass


class HBM:
    """DRAM channels as one processor-sharing pool with a per-transfer cap and a latency."""

    def __init__(self, env: simpy.Environment, bandwidth_B_per_ns: float, unit_cap_B_per_ns: float,
                 latency_ns: float):
        self.env = env
        self.bandwidth = bandwidth_B_per_ns
        self.cap = unit_cap_B_per_ns
        self.latency = latency_ns
        self.in_flight: list = []     # heap of (virtual finish, sequence number, done event, latency?)
        self.virtual = 0.0            # bytes served to each transfer in flight since t = 0
        self.updated_ns = 0.0
        self.busy_ns = 0.0            # time with at least one transfer in flight
        self.generation = 0
        self.sequence = 0

    def rate(self) -> float:
        """Bytes per ns each transfer in flight gets now."""
        return min(self.cap, self.bandwidth / len(self.in_flight)) if self.in_flight else 0.0

    def read(self, nbytes: float, with_latency: bool = True) -> simpy.Event:
        """Start a transfer of ``nbytes`` (channel-time bytes); the event fires when its data
        arrived: its last byte left the channels, plus the access latency if ``with_latency``."""
        done = self.env.event()
        if nbytes <= 0:
            return done.succeed()
        self._advance()
        self.sequence += 1
        heapq.heappush(self.in_flight, (self.virtual + nbytes, self.sequence, done, with_latency))
        self._schedule_next_finish()
        return done

    def _advance(self) -> None:
        dt = self.env.now - self.updated_ns
        if self.in_flight:
            self.virtual += dt * self.rate()
            self.busy_ns += dt
        self.updated_ns = self.env.now

    def _schedule_next_finish(self) -> None:
        self.generation += 1
        generation = self.generation
        dt = max(0.0, (self.in_flight[0][0] - self.virtual) / self.rate())
        self.env.timeout(dt).callbacks.append(lambda _ev: self._finish(generation))

    def _finish(self, generation: int) -> None:
        if generation != self.generation:  # the set in flight changed since: a newer timer rules
            return
        self._advance()
        tolerance = 1e-9 * max(1.0, self.virtual)
        while self.in_flight and self.in_flight[0][0] <= self.virtual + tolerance:
            _, _, done, with_latency = heapq.heappop(self.in_flight)
            if with_latency:
                self.env.timeout(self.latency).callbacks.append(lambda _ev, d=done: d.succeed())
            else:
                done.succeed()
        if self.in_flight:
            self._schedule_next_finish()


@dataclass(frozen=True)
class KernelOptions:
    """How the simulated kernel is built (software, not device): see the module docstring.

    dependent_round_trips: DRAM round trips per key tile that wait on each other before the
    tile's V rows are in: 1 when V addresses follow from the tile's scores (Top-θ deciding on
    the fly, K prefetched); 2 when a kept mask must be loaded first (the validation kernels).
    resident_items: work items one unit runs at once (occupancy), overlapping their chains.
    max_chunks: chunks per unit in the event model (more: finer, more events).
    """
    dependent_round_trips: int = 1
    resident_items: int = 1
    max_chunks: int = 2


@dataclass(frozen=True)
class Chunk:
    """A slice of one unit's work: channel-time bytes (K, V and the rest), compute time, and the
    chain of dependent round trips (one per key tile) its V gather cannot finish before."""
    channel_bytes: float
    compute_ns: float
    chain_ns: float = 0.0


def sm_worker(env, unit, hbm, chunks, drain_ns, log):
    """One compute unit working through its chunks.

    Within a chunk the unit computes on tiles as they stream in (the kernel's multi-stage
    buffers), so a chunk takes the longest of its transfer, its compute and its chain of
    dependent round trips. Only the first transfer waits a full access latency; later ones
    were requested while the previous chunk streamed. The last tile's compute drains at the end.
    """
    start = env.now
    for c, chunk in enumerate(chunks):
        began = env.now
        yield hbm.read(chunk.channel_bytes, with_latency=(c == 0))
        # compute and the dependent chain started with the chunk: wait only for what is left
        left = max(chunk.compute_ns, chunk.chain_ns) - (env.now - began)
        if left > 0:
            yield env.timeout(left)
    yield env.timeout(drain_ns)
    log.append((unit, start, env.now))


def assign_to_units(cost: np.ndarray, n_units: int) -> np.ndarray:
    """Unit index of each work item: in launch order, each to the unit that frees up first."""
    if len(cost) <= n_units or np.all(cost == cost[0]):
        return np.arange(len(cost)) % n_units
    free = [(0.0, u) for u in range(n_units)]
    unit_of = np.empty(len(cost), dtype=np.int64)
    for i, c in enumerate(cost.tolist()):
        t, u = free[0]
        unit_of[i] = u
        heapq.heapreplace(free, (t + c, u))
    return unit_of


def pass_costs(p: Pass, device: Device) -> dict:
    """Per work item: channel-time bytes (all, and the V gather's share) and compute time in ns."""
    c = device.compute
    overhead = p.runs * device.gather_overhead_bytes
    other = sum(p.bytes[k] for k in BYTE_KINDS if k != "v").astype(float)
    pad = math.ceil(p.matrix_rows / c.matrix_min_rows) * c.matrix_min_rows / p.matrix_rows
    compute = (p.matrix_flops * pad / (c.matrix_TFLOPS * 1e3 / c.units)
               + p.vector_flops / (c.vector_TFLOPS * 1e3 / c.units))
    tiles = p.tiles if p.tiles is not None else np.ones(p.items)
    return {"channel": other + p.bytes["v"] + overhead, "gather": p.bytes["v"] + overhead,
            "compute": compute, "tiles": tiles.astype(float)}


def unit_chunks(p: Pass, device: Device, max_chunks: int, kernel: KernelOptions) -> list:
    """Aggregate the pass's work items per unit, then cut each unit's work into equal chunks."""
    c, m = device.compute, device.memory
    cost = pass_costs(p, device)
    unit_of = assign_to_units(cost["channel"] / m.unit_bandwidth_GBps + cost["compute"], c.units)
    per_unit = {k: np.bincount(unit_of, weights=v, minlength=c.units) for k, v in cost.items()}
    items = np.bincount(unit_of, minlength=c.units)
    active = np.flatnonzero(items)
    plans = []
    for u in active:
        total, gather, compute, tiles = (per_unit[k][u] for k in ("channel", "gather", "compute", "tiles"))
        chain = 0.0
        if p.v_dependent:
            # per tile one round trip at the loaded latency (the channels are busy streaming
            # every other unit's K), its own V bytes at one unit's rate, then its compute
            round_trip = m.hbm_latency_ns + gather / tiles / m.unit_bandwidth_GBps
            in_flight = min(kernel.resident_items, items[u])  # items resident on the unit at once
            chain = (kernel.dependent_round_trips * round_trip + compute / tiles) * tiles / in_flight
        n = int(min(max_chunks, items[u] * 4, max(1, tiles)))
        chunk = Chunk(channel_bytes=total / n, compute_ns=compute / n, chain_ns=chain / n)
        plans.append((int(u), [chunk] * n, compute / max(tiles, 1)))
    return plans


def simulate_pass(p: Pass, device: Device, kernel: KernelOptions = KernelOptions()) -> dict:
    """Run one kernel pass; returns its body time (launch excluded), events and per-unit records."""
    env = simpy.Environment()
    m = device.memory
    hbm = HBM(env, bandwidth_B_per_ns=device.stream_bandwidth_Bps * 1e-9,
              unit_cap_B_per_ns=m.unit_bandwidth_GBps,
              latency_ns=m.hbm_latency_ns)
    log: list = []
    for unit, chunks, drain_ns in unit_chunks(p, device, kernel.max_chunks, kernel):
        env.process(sm_worker(env, unit, hbm, chunks, drain_ns, log))
    events = 0
    while env.peek() != math.inf:
        env.step()
        events += 1
    return {"body_ns": env.now, "events": events, "hbm_busy_ns": hbm.busy_ns,
            "units_used": len(log), "unit_log": log}
