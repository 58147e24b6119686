"""SimPy model of one attention kernel pass on a device: SMs running CTAs, DRAM shared among them.

Time unit: ``env.now`` is in nanoseconds throughout.

Actors, in SimPy's example style (generator functions named after the actor, ``env`` first):

- ``sm_worker(env, plan, hbm, log)``: one compute unit (SM, CU). The block scheduler gave it
  some CTAs and it holds ``ctas_per_unit`` of them at once. The first wave starts together:
  after its prologue latency the tile loops stream their bytes at the rate the per-tile model
  (tiles.py: dependent round trips, pipelining depth, issue sharing among co-resident CTAs)
  allows, then each CTA pays its fixed per-CTA cost. Later CTAs follow one another staggered,
  so their prologues hide behind other CTAs' loops; they stream the rest of the SM's bytes at
  the staggered rate.
- :class:`HBM`: the DRAM channels. Addresses are interleaved over all channels at a few hundred
  bytes, so the channels act as one pool of bandwidth shared by the transfers in flight
  (processor sharing with per-transfer caps, water-filled): a transfer never goes faster than
  its SM can take bytes, and when the SMs together ask for more than the device streams, each
  gets its fair share. Tails and load imbalance (real masks) come out of this sharing.

Merge / combine passes are short chains of L2 round trips; they are timed in closed form
(tiles.py's constants, or the measured merge bodies) and run as one timeout.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, replace

import numpy as np
import simpy

from topθ_hw.sim.hardware import Device
from topθ_hw.sim.tiles import (KernelOptions, TileWork, UnitParams, ctas_per_unit, life_ns, with_stages,
                               SECTOR_MASK_BYTES, startup_ns)
from topθ_hw.sim.workload import BYTE_KINDS, TILE, Pass

__all__ = ["HBM", "KernelOptions", "assign_to_units", "simulate_pass"]


class HBM:
    """DRAM channels as one processor-sharing pool with per-transfer caps and a latency.

    A transfer may stand for ``count`` identical ones (SMs doing the same thing at the same
    time): it takes ``count`` shares of the pool, which keeps the event count independent of
    the number of SMs for regular workloads."""

    def __init__(self, env: simpy.Environment, bandwidth_B_per_ns: float, unit_cap_B_per_ns: float,
                 latency_ns: float):
        self.env = env
        self.bandwidth = bandwidth_B_per_ns
        self.cap = unit_cap_B_per_ns
        self.latency = latency_ns
        self.active: dict = {}       # id -> [bytes left (each), cap, count, done event, with latency]
        self._rates: dict | None = None
        self.updated_ns = 0.0
        self.busy_ns = 0.0
        self.generation = 0
        self.sequence = 0

    def rates(self) -> dict:
        """Water-filling: each transfer gets min(its cap, level), the level using up the pool."""
        if self._rates is None:
            order = sorted(self.active.items(), key=lambda kv: kv[1][1])
            left, weight, out = self.bandwidth, float(sum(t[2] for _, t in order)), {}
            for k, t in order:
                rate = min(t[1], left / weight)
                out[k] = rate
                left -= rate * t[2]
                weight -= t[2]
            self._rates = out
        return self._rates

    def read(self, nbytes: float, with_latency: bool = True, cap: float | None = None,
             count: int = 1) -> simpy.Event:
        """Start ``count`` transfers of ``nbytes`` channel-time bytes, each at most ``cap`` B/ns;
        the event fires when their last byte left the channels, plus the access latency if
        ``with_latency``."""
        done = self.env.event()
        if nbytes <= 0:
            return done.succeed()
        self._advance()
        self.sequence += 1
        self.active[self.sequence] = [float(nbytes), self.cap if cap is None else cap, count, done, with_latency]
        self._rates = None
        self._schedule_next_finish()
        return done

    def _advance(self) -> None:
        dt = self.env.now - self.updated_ns
        if self.active and dt > 0:
            for k, rate in self.rates().items():
                self.active[k][0] -= rate * dt
            self.busy_ns += dt
        self.updated_ns = self.env.now

    def _schedule_next_finish(self) -> None:
        self.generation += 1
        generation = self.generation
        rates = self.rates()
        dt = min(max(0.0, t[0]) / rates[k] for k, t in self.active.items())
        self.env.timeout(dt).callbacks.append(lambda _ev: self._finish(generation))

    def _finish(self, generation: int) -> None:
        if generation != self.generation:  # the set in flight changed since: a newer timer rules
            return
        self._advance()
        rates = self.rates()
        for k in [k for k, t in self.active.items() if t[0] <= 1e-6 * rates[k] + 1e-9 * t[0]]:
            _, _, _, done, with_latency = self.active.pop(k)
            if with_latency:
                self.env.timeout(self.latency).callbacks.append(lambda _ev, d=done: d.succeed())
            else:
                done.succeed()
        self._rates = None
        if self.active:
            self._schedule_next_finish()


@dataclass(frozen=True)
class UnitPlan:
    """What ``count`` SMs alike do in a pass: the first wave (started together), the staggered rest."""
    count: int
    startup_ns: float
    first_bytes: float
    first_loop_ns: float
    first_tail_ns: float
    rest_bytes: float = 0.0
    rest_ns: float = 0.0


def sm_worker(env, plan: UnitPlan, hbm: HBM, log: list):
    start = env.now
    yield env.timeout(plan.startup_ns)
    yield hbm.read(plan.first_bytes, False, plan.first_bytes / plan.first_loop_ns, plan.count)
    yield env.timeout(plan.first_tail_ns)
    if plan.rest_bytes > 0:
        yield hbm.read(plan.rest_bytes, False, plan.rest_bytes / plan.rest_ns, plan.count)
    log.append((plan.count, start, env.now))


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


def unit_params(device: Device) -> UnitParams:
    m, k = device.memory, device.build
    return UnitParams(dram_ns=m.hbm_latency_ns, l2_ns=m.l2_latency_ns, rate=m.unit_bandwidth_GBps,
                      issue_fraction=k.issue_fraction, issue_contention=k.issue_contention,
                      cta_overhead_ns=k.cta_overhead_ns)


def item_arrays(p: Pass, device: Device, kernel: KernelOptions) -> dict:
    """Per work item, at the kernel's tile length: channel bytes (gather runs included), K and V
    bytes, loop iterations, iterations holding V, compute per tile."""
    block = kernel.block_keys
    tiles64 = (p.tiles if p.tiles is not None else np.ones(p.items)).astype(float)
    per_block = max(1, block // TILE)
    tiles = np.ceil(tiles64 / per_block)
    v64 = (p.v_tiles if p.v_tiles is not None else tiles64).astype(float)
    v_frac64 = np.divide(v64, tiles64, out=np.ones_like(tiles64), where=tiles64 > 0)
    v_tiles = tiles * (1 - (1 - np.clip(v_frac64, 0, 1)) ** per_block)
    other = sum(p.bytes[k] for k in BYTE_KINDS if k not in ("k", "v")).astype(float)
    channel = other + p.bytes["k"] + p.bytes["v"] + p.runs * device.gather_overhead_bytes
    a = {"channel": channel, "k": p.bytes["k"] + other, "v": p.bytes["v"].astype(float), "tiles": tiles,
         "v_tiles": v_tiles, "flops": p.matrix_flops / np.maximum(tiles, 1),
         "vflops": p.vector_flops / np.maximum(tiles, 1)}
    heads = prefill_programs(p)
    if heads > 1:  # one program per query head; the group's K/V reads beyond the first are L2 hits
        a = {k: np.repeat(v if k in ("tiles", "v_tiles") else v / heads, heads) for k, v in a.items()}
    return a


def prefill_programs(p: Pass) -> int:
    """Programs a prefill work item (64 query rows × the KV group's G heads) runs as: one per query
    head (sims/validation/prefill_kernels.py); 1 for every other pass."""
    return max(1, p.matrix_rows // TILE) if p.name == "prefill_tiled" else 1


def tile_compute_ns(device: Device, kernel: KernelOptions, mask: str, matrix_rows: int,
                    flops_per_tile: float, vector_flops_per_tile: float, row_mask: bool,
                    paged: bool = False, matrix_efficiency: float = 1.0) -> tuple[float, float]:
    """(compute per tile alone on an SM, extra latency per tile): the kernel build's per-tile time
    (64-key or 128-key tiles; 256-key tiles as two 128-key ones), plus the matrix work beyond the
    decode reference (16 padded rows) when there is more, at ``matrix_efficiency`` of peak."""
    k, c = device.build, device.compute
    wide = kernel.block_keys > TILE
    base = {"none": (k.tile_compute_ns, k.wide_tile_compute_ns),
            "precomputed": (k.masked_tile_compute_ns, k.wide_masked_tile_compute_ns),
            "threshold": (k.threshold_tile_compute_ns, k.wide_threshold_tile_compute_ns)}[mask][wide]
    base *= max(1, kernel.block_keys // (2 * TILE)) if wide else 1
    if mask == "threshold" and paged:
        base += k.threshold_page_union_ns * kernel.block_keys / TILE
    extra = (k.wide_row_mask_latency_ns if wide else k.row_mask_latency_ns) if row_mask else 0.0
    rows = 64 if kernel.style == "fa2" else max(c.matrix_min_rows, matrix_rows)
    pad = math.ceil(rows / c.matrix_min_rows) * c.matrix_min_rows / max(1, matrix_rows)
    reference = 4.0 * c.matrix_min_rows * kernel.block_keys * 128  # 16 rows, d = 128: what base was measured on
    unit_matrix = c.matrix_TFLOPS * 1e3 / c.units
    beyond = max(0.0, flops_per_tile * pad - reference) / (unit_matrix * matrix_efficiency)
    return base + beyond + vector_flops_per_tile / (c.vector_TFLOPS * 1e3 / c.units), extra


def prefill_tile_compute_ns(device: Device, kernel: KernelOptions, mask: str, matrix_rows: int,
                            qk_flops_per_tile: float, vector_flops_per_tile: float) -> tuple[float, float, float]:
    """(compute of a tile that reads V, of one that skips it, tensor-core part of the first) in a
    causal prefill pass, alone on an SM.

    The matrix work runs at the build's prefill efficiency. A dense tile does QK^T and P·V; the
    threshold kernel's tile that reads V costs that times the build's threshold ratio (compare,
    block reduction, branch, V not prefetched: PREFILL.md); a tile it skips does QK^T only."""
    k = device.build
    def at(flops):
        return tile_compute_ns(device, kernel, "none", matrix_rows, flops, vector_flops_per_tile, False,
                               matrix_efficiency=k.prefill_matrix_efficiency)[0]
    full, matrix = at(2.0 * qk_flops_per_tile), at(2.0 * qk_flops_per_tile) - at(0.0)
    if mask != "threshold":
        return full, full, matrix
    ratio = k.prefill_threshold_tile_ratio
    return full * ratio, at(qk_flops_per_tile), matrix * ratio


def unit_groups(p: Pass, device: Device, kernel: KernelOptions, slots_per_unit: int) -> list:
    """SMs grouped by what the block scheduler gave them: [(count, (ctas, per-SM sums...))].
    Cached on the pass, per kernel and the device numbers the scheduling estimate uses."""
    units = device.compute.units
    key = (kernel, units, slots_per_unit, device.gather_overhead_bytes, device.memory.unit_bandwidth_GBps,
           device.build.tile_compute_ns)
    cache = p.__dict__.setdefault("_unit_groups", {})
    if key not in cache:
        a = item_arrays(p, device, kernel)
        cost = a["channel"] / device.memory.unit_bandwidth_GBps + a["tiles"] * device.build.tile_compute_ns
        unit_of = assign_to_units(cost, units * slots_per_unit) % units
        sums = np.stack([np.bincount(unit_of, weights=v, minlength=units) for v in a.values()], axis=1)
        counts = np.bincount(unit_of, minlength=units)
        used = np.flatnonzero(counts)
        # SMs with as many CTAs and sums within a few per cent (2 significant digits) run alike
        scale = 10.0 ** (np.floor(np.log10(np.maximum(np.abs(sums[used]), 1e-30))) - 1)
        keys = np.column_stack([counts[used], np.round(sums[used] / scale), scale])
        _, group, n = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
        group = group.ravel()
        mean = np.stack([np.bincount(group, weights=sums[used][:, j]) for j in range(sums.shape[1])], axis=1) / n[:, None]
        ctas = np.bincount(group, weights=counts[used]) / n
        cache[key] = [(int(n[g]), (int(round(ctas[g])),) + tuple(mean[g])) for g in range(len(n))]
    return cache[key]


def unit_plans(p: Pass, device: Device, kernel: KernelOptions, row_bytes: int) -> list[UnitPlan]:
    u = unit_params(device)
    mask = kernel.mask if p.v_dependent else "none"
    kernel = with_stages(kernel, row_bytes, device.compute.sram_per_unit_KiB, mask == "threshold")
    slots_per_unit = ctas_per_unit(kernel, row_bytes, device.compute.sram_per_unit_KiB, mask == "threshold")
    keep_bytes = kernel.block_keys / max(1, p.fetch_tokens)
    base = TileWork(tiles=1, k_bytes=0, v_bytes=0, v_fraction=0, mask=mask,
                    mask_miss=min(1.0, keep_bytes / SECTOR_MASK_BYTES), compute_ns=0, extra_latency_ns=0,
                    stages=kernel.stages, fa2=kernel.style == "fa2")
    return [replace(plan_for(key, base, device, kernel, p, slots_per_unit, u), count=count)
            for count, key in unit_groups(p, device, kernel, slots_per_unit)]


def plan_for(key, base: TileWork, device, kernel, p: Pass, slots: int, u: UnitParams) -> UnitPlan:
    n, channel, k, v, tiles, v_tiles, flops, vflops = key
    if p.name == "prefill_tiled":  # QK^T on every tile, P·V on those reading V: per tile (1 + v share) QK^T
        qk = flops / n / (1 + v_tiles / max(tiles, 1))
        heads = prefill_programs(p)  # a program does its head's share of the group tile's work
        times, extra = prefill_tile_compute_ns(device, kernel, base.mask, p.matrix_rows, qk * heads,
                                               vflops / n * heads), 0.0
        compute, skip, matrix = (t / heads for t in times)
    else:
        matrix = 0.0
        compute, extra = tile_compute_ns(device, kernel, base.mask, p.matrix_rows, flops / n, vflops / n,
                                         base.mask == "precomputed" and p.fetch_tokens == 1, p.fetch_tokens > 1)
        skip = compute * device.build.skipped_tile_fraction
    w = replace(base, tiles=tiles / n, k_bytes=k / max(tiles, 1),
                v_bytes=v / v_tiles if v_tiles > 0 else 0.0, v_fraction=v_tiles / max(tiles, 1),
                compute_ns=compute, extra_latency_ns=extra, skip_compute_ns=skip, matrix_ns=matrix)
    if base.mask == "none" and not base.fa2:
        w = replace(w, v_fraction=1.0, v_bytes=v / max(tiles, 1))
    first = min(n, slots)
    life, loop = life_ns(w, u, first, staggered=False)
    start = startup_ns(w, u)
    first_bytes = channel * first / n
    plan = UnitPlan(count=1, startup_ns=start, first_bytes=first_bytes, first_loop_ns=max(loop, 1e-3),
                    first_tail_ns=life - start - loop)
    if n > first:
        stag_life, _ = life_ns(w, u, slots, staggered=True)
        plan = replace(plan, rest_bytes=channel - first_bytes, rest_ns=(n - first) / slots * stag_life)
    return plan


def reduce_ns(p: Pass, device: Device, kernel: KernelOptions) -> float:
    """Merge (Triton) or combine (FA2) of the split partials: chains of L2 round trips."""
    k, m = device.kernel, device.memory
    rows, splits = p.items, int(p.splits)
    if kernel.style == "fa2":  # one CTA per 4 rows gathers the splits' LSE, then walks their partials
        return k.reduce_base_ns + rows / 4 * k.cta_dispatch_ns + (splits + 1) * (m.l2_latency_ns + k.combine_step_ns)
    if kernel.reduce_ns:
        return measured_reduce_ns(kernel.reduce_ns, rows, splits)
    nbytes = float(sum(p.bytes[kind].sum() for kind in BYTE_KINDS))
    return k.reduce_base_ns + rows * k.cta_dispatch_ns + nbytes / m.l2_bandwidth_GBps


def measured_reduce_ns(table: tuple, rows: int, splits: int) -> float:
    """Interpolate measured merge bodies in rows (linear) and log2 of the padded split count."""
    s_pad = max(16, 2 ** math.ceil(math.log2(max(1, splits))))
    by_rows: dict = {}
    for r, s, ns in table:
        by_rows.setdefault(r, []).append((math.log2(s), ns))
    def at(r):
        xs, ys = zip(*sorted(by_rows[r]))
        return float(np.interp(math.log2(s_pad), xs, ys))
    known = sorted(by_rows)
    if rows <= known[0] or len(known) == 1:
        return at(known[0]) * (rows / known[0] if rows < known[0] else 1.0)
    hi = next((r for r in known if r >= rows), known[-1])
    lo = max(r for r in known if r <= min(rows, hi))
    if hi == lo:
        return at(hi) * rows / hi
    return at(lo) + (at(hi) - at(lo)) * (rows - lo) / (hi - lo)


def simulate_pass(p: Pass, device: Device, kernel: KernelOptions = KernelOptions(), row_bytes: int = 256) -> dict:
    """Run one kernel pass; returns its body time (launch excluded), events and per-unit records."""
    env = simpy.Environment()
    log: list = []
    if p.name.endswith("reduce"):
        env.timeout(reduce_ns(p, device, kernel)).callbacks.append(lambda _ev: log.append((0, 0.0, env.now)))
    else:
        hbm = HBM(env, bandwidth_B_per_ns=device.stream_bandwidth_Bps * 1e-9,
                  unit_cap_B_per_ns=device.memory.unit_bandwidth_GBps, latency_ns=device.memory.hbm_latency_ns)
        for plan in unit_plans(p, device, kernel, row_bytes):
            env.process(sm_worker(env, plan, hbm, log))
    events = 0
    while env.peek() != math.inf:
        env.step()
        events += 1
    return {"body_ns": env.now, "events": events, "units_used": len(log), "unit_log": log}
