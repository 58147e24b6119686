"""Attention time of one layer for a whole-model step, from the validated attention model only
through its public API (``topθ_hw.sim``): ``simulate_kernel`` for decode, ``prefill_call`` +
``simulate_call`` for prefill.

The SimPy model takes 0.2–2 s per decode call at large batch × context, and a cost study asks for
hundreds, so results are cached twice: in the process (a dict) and on disk (one small JSON
file per call under ``$TOPTHETA_CACHE_DIR`` or ``~/.cache/toptheta/attention``, keyed by every
input, the device's numbers and a hash of the simulator's source, so a changed simulator never
serves an old result). Above ``EXACT_ITEMS`` work items a decode call is *extrapolated* linearly
in batch from two smaller batches that each fill the device ``WAVES`` times over (the kernel is
throughput-bound there; the benchmark measures the error) and the result says so.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from topθ_hw.sim import Device, prefill_call, simulate_call, simulate_kernel
from topθ_hw.sim.workload import TILE, Shape

SPLIT_TOKENS = 512        # simulate_kernel's default split length
EXACT_ITEMS = 16_384      # split-KV work items simulated exactly (about 0.3 s); above: extrapolated
WAVES = 8                 # the extrapolation's smaller batch fills every unit this many times
CACHE_VERSION = 1


def cache_dir() -> Path:
    env = os.environ.get("TOPTHETA_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "toptheta" / "attention"


@lru_cache(maxsize=1)
def simulator_hash() -> str:
    """Hash of the simulator's source files: a cached result is valid for this simulator only."""
    sim = Path(__file__).resolve().parents[1] / "sim"
    h = hashlib.sha256()
    for path in sorted(sim.glob("*.py")):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _device_key(device: Device) -> str:
    d = dataclasses.asdict(device)
    return json.dumps({k: d[k] for k in ("compute", "memory", "kernel", "energy")}, sort_keys=True)


_MEMORY: dict = {}


def _cached(kind: str, device: Device, args: dict, compute) -> dict:
    """``compute()``'s result, from the process, the disk, or computed and stored (atomically)."""
    key = hashlib.sha256(json.dumps([CACHE_VERSION, simulator_hash(), kind, _device_key(device), args],
                                    sort_keys=True).encode()).hexdigest()[:24]
    if key in _MEMORY:
        return _MEMORY[key]
    path = cache_dir() / f"{key}.json"
    try:
        result = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        result = compute()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(result))
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only cache folder: the in-process cache still holds it
    _MEMORY[key] = result
    return result


KEEP = ("time_s", "bytes_total", "matrix_flops", "vector_flops", "energy_j", "launches")


def decode_attention(device: Device, batch: int, context: int, q_heads: int, kv_heads: int, head_dim: int,
                     kept_v_fraction: float, method: str, exact: bool = False) -> dict:
    """One layer's decode attention for the batch: time, bytes, FLOPs, energy, launches, and
    ``extrapolated`` (True when batch-extrapolated from two smaller simulated batches)."""
    args = {"batch": batch, "context": context, "q": q_heads, "kv": kv_heads, "d": head_dim,
            "f": kept_v_fraction, "method": method, "exact": exact}

    def run(b):
        r = simulate_kernel(device, b, context, q_heads, kv_heads, head_dim, "bf16", kept_v_fraction, "row",
                            method, SPLIT_TOKENS)
        return {k: float(r[k]) for k in KEEP}

    def compute():
        per_sequence = kv_heads * math.ceil(context / SPLIT_TOKENS)
        b1 = max(1, math.ceil(WAVES * device.compute.units / per_sequence))
        if exact or batch * per_sequence <= EXACT_ITEMS or batch <= 2 * b1:
            return {**run(batch), "extrapolated": False}
        r1, r2 = run(b1), run(2 * b1)
        scale = (batch - b1) / b1
        out = {k: r1[k] + (r2[k] - r1[k]) * scale for k in KEEP if k != "launches"}
        return {**out, "launches": r1["launches"], "extrapolated": True}

    return _cached("decode", device, args, compute)


def prefill_tiles(batch: int, prompt_tokens: int, kv_heads: int, kept_v_fraction: float) -> dict:
    """The engine-statistics tile columns ``prefill_call`` reads, for ``batch`` causal prompts: one
    row per (sequence, KV head, 64-row query tile), each (sequence, KV head) its own group; a kept
    fraction spreads its kept rows over every key tile (no tile is skipped: the pessimistic case)."""
    starts = np.arange(0, prompt_tokens, TILE, dtype=np.int64)
    ends = np.minimum(starts + TILE, prompt_tokens)
    kept = np.minimum(np.maximum(1, np.round(kept_v_fraction * ends)).astype(np.int64), ends)
    groups = batch * kv_heads
    tiles = -(-ends // TILE)
    return {"kv_group": np.repeat(np.arange(groups, dtype=np.int64), len(starts)),
            "row_start": np.tile(starts, groups), "row_end": np.tile(ends, groups),
            "kv_tiles_total": np.tile(tiles, groups), "kv_tiles_nonempty": np.tile(tiles, groups),
            "kept_v_rows": np.tile(kept, groups)}


def prefill_attention(device: Device, batch: int, prompt_tokens: int, q_heads: int, kv_heads: int,
                      head_dim: int, kept_v_fraction: float, method: str) -> dict:
    """One layer's causal prefill attention for ``batch`` prompts of ``prompt_tokens``: one launch."""
    args = {"batch": batch, "t": prompt_tokens, "q": q_heads, "kv": kv_heads, "d": head_dim,
            "f": kept_v_fraction, "method": method}

    def compute():
        shape = Shape(q_heads, kv_heads, head_dim, "bf16")
        call = prefill_call(shape, prefill_tiles(batch, prompt_tokens, kv_heads, kept_v_fraction), method, "row",
                            device.memory.sector_bytes, device.memory.l2_MiB * 2**20)
        r = simulate_call(call, device)
        return {**{k: float(r[k]) for k in KEEP}, "extrapolated": False}

    return _cached("prefill", device, args, compute)


def launch_part_s(device: Device, launches: int) -> float:
    """The launch share of a simulated call's time (simulate_call: first launch + queued gaps)."""
    k = device.kernel
    return (k.launch_overhead_us + (launches - 1) * k.launch_gap_us) * 1e-6
