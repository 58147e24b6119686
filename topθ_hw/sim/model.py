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
        self.in_flight: list = []     # heap of (virtual finish, sequence number, done event)
        self.virtual = 0.0            # bytes served to each transfer in flight since t = 0
        self.updated_ns = 0.0
        self.busy_ns = 0.0            # time with at least one transfer in flight
        self.generation = 0
        self.sequence = 0

    def rate(self) -> float:
        """Bytes per ns each transfer in flight gets now."""
        return min(self.cap, self.bandwidth / len(self.in_flight)) if self.in_flight else 0.0

    def read(self, nbytes: float) -> simpy.Event:
        """Start a transfer of ``nbytes`` (channel-time bytes); the event fires when its data arrived."""
        done = self.env.event()
        if nbytes <= 0:
            return done.succeed()
        self._advance()
        self.sequence += 1
        heapq.heappush(self.in_flight, (self.virtual + nbytes, self.sequence, done))
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
            done = heapq.heappop(self.in_flight)[2]
            self.env.timeout(self.latency).callbacks.append(lambda _ev, d=done: d.succeed())
        if self.in_flight:
            self._schedule_next_finish()


@dataclass(frozen=True)
class Chunk:
    """A slice of one unit's work: channel-time bytes to load first, the dependent V gather
    (0 when V comes with the first load), and compute times before and after the gather."""
    first_bytes: float
    gather_bytes: float
    score_ns: float
    pv_ns: float


def sm_worker(env, unit, hbm, chunks, log):
    """One compute unit streaming its chunks with double buffering."""
    start = env.now
    pending = hbm.read(chunks[0].first_bytes)
    for c, chunk in enumerate(chunks):
        yield pending
        if c + 1 < len(chunks):
            pending = hbm.read(chunks[c + 1].first_bytes)  # the other buffer fills meanwhile
        yield env.timeout(chunk.score_ns)
        if chunk.gather_bytes:
            yield hbm.read(chunk.gather_bytes)
        yield env.timeout(chunk.pv_ns)
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


def unit_chunks(p: Pass, device: Device, max_chunks: int) -> list[list[Chunk]]:
    """Aggregate the pass's work items per unit, then cut each unit's work into chunks."""
    c, m = device.compute, device.memory
    v_bytes = p.bytes["v"].astype(float)
    other = sum(p.bytes[k] for k in BYTE_KINDS if k != "v").astype(float)
    channel_bytes = other + v_bytes + p.runs * device.gather_overhead_bytes
    pad = math.ceil(p.matrix_rows / c.matrix_min_rows) * c.matrix_min_rows / p.matrix_rows
    compute_ns = (p.matrix_flops * pad / (c.matrix_TFLOPS * 1e3 / c.units)
                  + p.vector_flops / (c.vector_TFLOPS * 1e3 / c.units))
    unit_of = assign_to_units(channel_bytes / (m.unit_bandwidth_GBps) + compute_ns, c.units)
    per_unit = [np.bincount(unit_of, weights=w, minlength=c.units)
                for w in (channel_bytes, v_bytes + p.runs * device.gather_overhead_bytes, compute_ns)]
    items = np.bincount(unit_of, minlength=c.units)
    plans = []
    for u in np.flatnonzero(items):
        total, gather, compute = (w[u] for w in per_unit)
        n = int(min(max_chunks, items[u] * 4))
        gather = gather if p.v_dependent else 0.0
        chunk = Chunk(first_bytes=(total - gather) / n, gather_bytes=gather / n,
                      score_ns=compute / n / 2, pv_ns=compute / n / 2)
        plans.append((int(u), [chunk] * n))
    return plans


def simulate_pass(p: Pass, device: Device, max_chunks: int = 4) -> dict:
    """Run one kernel pass; returns its body time (launch excluded), events and per-unit records."""
    env = simpy.Environment()
    m = device.memory
    hbm = HBM(env, bandwidth_B_per_ns=device.stream_bandwidth_Bps * 1e-9,
              unit_cap_B_per_ns=m.unit_bandwidth_GBps,
              latency_ns=m.hbm_latency_ns)
    log: list = []
    for unit, chunks in unit_chunks(p, device, max_chunks):
        env.process(sm_worker(env, unit, hbm, chunks, log))
    events = 0
    while env.peek() != math.inf:
        env.step()
        events += 1
    return {"body_ns": env.now, "events": events, "hbm_busy_ns": hbm.busy_ns,
            "units_used": len(log), "unit_log": log}
