"""Per-tile timing of a split-KV attention CTA on one compute unit: the analytic core of the model.

Times in ns, bytes in B, rates in B/ns. What a CTA of the validation kernels does
(sims/validation/kernels.py; the loop as Triton compiles it, sims/validation/h100_microbench_sm_ttgir.txt):

- prologue: load the query (and, for the threshold kernel, its θ: same round trip), issue the K/V
  copies of the first ``stages - 1`` tiles; precomputed-mask kernels load each tile's keep bytes
  with a plain, synchronous load before its V copy can be issued;
- loop, per tile of ``block_keys`` keys: wait for the oldest tile in flight, compute (scores,
  softmax, P·V: ``compute_ns``), issue the K copy of the tile ``stages - 1`` ahead, (masked) load
  its keep bytes and only then issue its V copy. With 2 stages the copies of tile i+1 go out
  after tile i's compute, so the whole round trip is on the critical path; with 3 or more it
  hides behind ``stages - 2`` iterations. The keep load is a DRAM round trip when it opens a new
  32 B sector (every V-row tile: 64 mask bytes; a page tile only every 32/8 tiles), else an L2 hit;
- epilogue: write the partial (one store round trip).

The fused threshold kernel (``mask='threshold'``, what Top-θ runs) has no keep bytes: it compares
each score with θ in registers, takes the union over the group's heads, and loads V predicated on
it. That load depends on this tile's scores, so the software pipeline cannot issue it ahead: a
tile that needs V pays its compute, then one dependent DRAM round trip and the V transfer, while K
still streams ``stages - 1`` tiles ahead. A tile with no needed V row skips the load and the P·V
product (``skip_compute_ns``).

Co-resident CTAs on one SM share its issue slots: a fraction ``issue_fraction`` of the compute is
issue work that stretches by ``issue_contention`` per further CTA in its tile loop; the rest is
latency that other CTAs hide. A prefill tile's tensor-core work (``matrix_ns``) is the SM's one
matrix unit: co-resident CTAs in their loops queue for it, so it adds up over them. Bytes move at most at ``unit_bandwidth`` per CTA; the DRAM pool
(SimPy, model.py) shares the device bandwidth among the SMs.

FlashAttention-2 (torch SDPA's flash backend) prefetches the next K/V tile before computing on the
current one, so its tile takes the longer of compute and one round trip plus the transfer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from topθ_hw.errors import UserError

SECTOR_MASK_BYTES = 32       # keep bytes one DRAM sector holds
SMEM_EXTRA_BYTES = 6 * 1024  # query tile and softmax staging besides the K/V buffers (TTGIR: 38,912 B at 2 stages)
SMEM_RESERVED_BYTES = 1024   # per CTA, reserved by the runtime (CUDA occupancy rules)
MAX_WARPS_PER_UNIT = 64
MAX_CTAS_PER_UNIT = 32


MASKS = ("threshold", "precomputed")
BLOCK_KEYS = (64, 128, 256)


@dataclass(frozen=True)
class KernelOptions:
    """How the simulated decode kernel is built (software, not device).

    style: 'triton' (the validation kernels: split-KV partial + merge) or 'fa2'
    (FlashAttention-2 split-KV + combine, as torch SDPA's flash backend launches it).
    mask: how a sparse kernel decides which V rows to read: 'threshold' (fused Top-θ: score > θ
    in-kernel, union over the group, predicated V loads; no mask bytes) or 'precomputed' (one keep
    byte per row or page in memory, loaded before each V copy). Dense calls ignore it.
    block_keys / warps / stages: the launch configuration (tile length, warps per CTA,
    software-pipeline depth; stages 0 = 3, or fewer where the unit's shared memory holds fewer).
    ctas_per_unit: resident CTAs per SM; 0 derives it from shared
    memory and warps. reduce_ns: measured merge-kernel bodies ((rows, s_pad, ns), ...) to use
    instead of the mechanistic estimate.
    """
    style: str = "triton"
    block_keys: int = 64
    warps: int = 4
    stages: int = 0
    ctas_per_unit: int = 0
    reduce_ns: tuple = ()
    mask: str = "threshold"

    def __post_init__(self):
        checks = [(self.style in ("triton", "fa2"), "style", "'triton' or 'fa2'"),
                  (self.mask in MASKS, "mask", " or ".join(MASKS)),
                  (self.block_keys in BLOCK_KEYS, "block_keys", "64, 128 or 256 (keys per tile)"),
                  (self.warps in (1, 2, 4, 8, 16, 32), "warps", "a power of two from 1 to 32"),
                  (self.stages == 0 or 2 <= self.stages <= 8, "stages", "2 to 8 (software-pipeline depth; 0: auto)"),
                  (0 <= self.ctas_per_unit <= MAX_CTAS_PER_UNIT, "ctas_per_unit", f"0 to {MAX_CTAS_PER_UNIT}")]
        for ok, name, expected in checks:
            if not ok:
                raise UserError(f"--{name.replace('_', '-')} {getattr(self, name)!r}: expected {expected}")


@dataclass(frozen=True)
class TileWork:
    """One CTA's loop, averaged over its tiles (rates in B/ns, times in ns)."""
    tiles: float              # loop iterations
    k_bytes: float            # K bytes per tile
    v_bytes: float            # V bytes per tile that holds V (0 when none does)
    v_fraction: float         # fraction of tiles holding at least one kept V unit
    mask: str                 # 'none' (dense), 'precomputed' (keep bytes before the V copy), 'threshold'
    mask_miss: float          # fraction of keep loads that open a new sector (DRAM)
    compute_ns: float         # compute of one tile, alone on its SM
    extra_latency_ns: float   # further per-tile latency (V-row masks)
    stages: int
    fa2: bool = False
    skip_compute_ns: float = 0.0  # threshold kernel: compute of a tile that needs no V
    matrix_ns: float = 0.0    # part of compute_ns on the SM's tensor cores, which co-resident CTAs queue for (prefill)

    @property
    def bytes_per_tile(self) -> float:
        return self.k_bytes + self.v_fraction * self.v_bytes


@dataclass(frozen=True)
class UnitParams:
    """Device numbers the per-tile model uses (ns, B/ns)."""
    dram_ns: float
    l2_ns: float
    rate: float               # one CTA's transfer rate
    issue_fraction: float
    issue_contention: float
    cta_overhead_ns: float


def tile_ns(w: TileWork, u: UnitParams, issue_ns: float) -> float:
    """One CTA's time per tile when its issue work takes ``issue_ns`` (its own plus waiting)."""
    latency_part = (1 - u.issue_fraction) * (w.compute_ns - w.matrix_ns) + w.extra_latency_ns
    busy = issue_ns + latency_part
    k_in = u.dram_ns + w.k_bytes / u.rate
    if w.fa2:
        return max(busy, k_in + w.v_bytes / u.rate)
    if w.mask == "none":
        return max(busy, (busy + k_in + w.v_bytes / u.rate) / (w.stages - 1))
    if w.mask == "threshold":
        skip_busy = busy * w.skip_compute_ns / w.compute_ns if w.compute_ns > 0 else busy
        with_v = max(busy + u.dram_ns + w.v_bytes / u.rate, (busy + k_in) / (w.stages - 1))
        without_v = max(skip_busy, (skip_busy + k_in) / (w.stages - 1))
        return w.v_fraction * with_v + (1 - w.v_fraction) * without_v
    keep = w.k_bytes / u.rate + w.mask_miss * u.dram_ns + (1 - w.mask_miss) * u.l2_ns
    serial = busy + keep
    with_v = max(k_in, keep + u.dram_ns + w.v_bytes / u.rate)
    without_v = max(k_in, keep)
    t_v = max(serial, (busy + with_v) / (w.stages - 1))
    t_n = max(serial, (busy + without_v) / (w.stages - 1))
    return w.v_fraction * t_v + (1 - w.v_fraction) * t_n


def contended_tile_ns(w: TileWork, u: UnitParams, looping: float) -> float:
    """Per-tile time of one CTA with ``looping`` CTAs (itself included) in their tile loops on its SM."""
    own = u.issue_fraction * (w.compute_ns - w.matrix_ns) * (1 + u.issue_contention * max(0.0, looping - 1))
    issue = own + w.matrix_ns * max(1.0, looping)
    return tile_ns(w, u, issue)


def startup_ns(w: TileWork, u: UnitParams) -> float:
    """Prologue and epilogue latency: query load, the first tiles' keep loads, first arrival, store."""
    keep = (w.k_bytes / u.rate + u.dram_ns) if w.mask == "precomputed" else 0.0
    first = u.dram_ns + (w.k_bytes + w.v_bytes * w.v_fraction) / u.rate
    if w.fa2:  # FlashAttention-2 issues the first V copy only once the first K tile is in
        first += u.dram_ns
    return u.dram_ns + (w.stages - 1) * keep + first + u.dram_ns


def life_ns(w: TileWork, u: UnitParams, resident: float, staggered: bool) -> tuple[float, float]:
    """(residence of one CTA on its SM, of which in its tile loop) with ``resident`` CTAs there.

    Started together (first wave) all of them loop at once and their per-CTA work outside the
    loop queues; staggered (later waves) only the share of their life spent looping competes
    for issue slots, and each pays only its own per-CTA work.
    """
    start = startup_ns(w, u)
    looping = resident
    for _ in range(4 if staggered else 1):
        t = contended_tile_ns(w, u, max(1.0, looping))
        looping = resident * w.tiles * t / (start + w.tiles * t)
    loop = w.tiles * t
    # the per-CTA work outside the loop (prologue issue, epilogue) runs back to back when the
    # CTAs start together; staggered, it overlaps the other CTAs' latency-bound loops
    return start + loop + u.cta_overhead_ns * (1 if staggered else resident), loop


def smem_bytes(kernel: KernelOptions, row_bytes: int, threshold: bool) -> int:
    """Shared memory of one CTA: K/V tile buffers ((stages-1) each; the threshold kernel's
    dependent V load has one buffer) and the query / softmax staging."""
    tile = kernel.block_keys * row_bytes
    v_buffers = 1 if threshold else max(1, kernel.stages - 1)
    return (max(1, kernel.stages - 1) + v_buffers) * tile + SMEM_EXTRA_BYTES


def with_stages(kernel: KernelOptions, row_bytes: int, sram_KiB: float, threshold: bool) -> KernelOptions:
    """The build with its pipeline depth decided: as given, or (0: auto) 3 stages, fewer where one
    CTA would not fit the unit's shared memory (never below 2)."""
    if kernel.stages:
        return kernel
    for stages in (3, 2):
        candidate = replace(kernel, stages=stages)
        if smem_bytes(candidate, row_bytes, threshold) + SMEM_RESERVED_BYTES <= sram_KiB * 1024:
            return candidate
    return candidate


def ctas_per_unit(kernel: KernelOptions, row_bytes: int, sram_KiB: float, threshold: bool = False) -> int:
    """Resident CTAs per SM from shared memory and warps, unless given; a CTA that does not fit
    the SM is a configuration the device cannot run."""
    kernel = with_stages(kernel, row_bytes, sram_KiB, threshold)
    smem = smem_bytes(kernel, row_bytes, threshold)
    if smem + SMEM_RESERVED_BYTES > sram_KiB * 1024:
        raise UserError(f"--block-keys {kernel.block_keys} with --stages {kernel.stages} needs {smem / 1024:.0f} KiB "
                        f"of shared memory per CTA at {row_bytes} B per row; the device has "
                        f"{sram_KiB:g} KiB per unit (fewer stages or a shorter block)")
    if kernel.ctas_per_unit:
        return kernel.ctas_per_unit
    by_smem = int(sram_KiB * 1024 // (smem + SMEM_RESERVED_BYTES))
    return max(1, min(MAX_CTAS_PER_UNIT, MAX_WARPS_PER_UNIT // kernel.warps, by_smem))


def fa2_num_splits(blocks: int, n_key_blocks: int, units: int, max_splits: int = 128) -> int:
    """FlashAttention-2's num_splits_heuristic (flash_api.cpp), called with 2 × SMs as torch does:
    the fewest splits whose wave efficiency is within 85 % of the best."""
    sms = 2 * units
    if blocks >= 0.8 * sms:
        return 1
    max_splits = min(max_splits, sms, n_key_blocks)
    eff = {}
    for s in range(1, max_splits + 1):
        if s == 1 or math.ceil(n_key_blocks / s) != math.ceil(n_key_blocks / (s - 1)):
            waves = blocks * s / sms
            eff[s] = waves / math.ceil(waves)
    best = max(eff.values())
    return next(s for s in sorted(eff) if eff[s] >= 0.85 * best)
