"""Engine statistics (kind "engine-stats") → attention calls → the "sim-results" table.

The decode workload is built from each step's real ``kept_v_mask`` (the union of the group's
query heads over key positions 0..N-1), not from averages, so the split-by-split V bytes and
the load imbalance across units are the trace's own. Prefill uses the per-tile group rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from topθ_hw.errors import UserError
from topθ_hw.sim.hardware import Device
from topθ_hw.sim.tiles import KernelOptions
from topθ_hw.sim.simulate import simulate_call, utilisation
from topθ_hw.sim.alternatives import ALTERNATIVES, alternative_prefill_call, decode_call as alternative_decode_call
from topθ_hw.sim.workload import (BYTE_KINDS, METHODS, DecodeStream, Shape, decode_call, prefill_call)

METHOD_ALIASES = {"top_theta": "toptheta", "top-theta": "toptheta", "top_k": "topk", "top-k": "topk"}
GROUP_COLUMNS = ["sequence", "layer", "kv_group", "level", "phase", "step", "row_start", "row_end",
                 "context_len", "kept_elements", "kept_v_rows", "kv_tiles_total", "kv_tiles_nonempty",
                 "kept_v_mask"]
SUM_COLUMNS = ["time_s", "roofline_time_s", *(f"bytes_{k}" for k in BYTE_KINDS), "bytes_total", "flops",
               "matrix_flops", "vector_flops", "energy_j", "energy_hbm_j", "energy_sram_j", "energy_compute_j",
               "launches", "events"]


def shape_from_meta(meta: dict) -> Shape:
    missing = [k for k in ("n_q_heads", "n_kv_heads", "head_dim", "dtype") if k not in meta]
    if missing:
        raise UserError(f"statistics metadata lacks field(s) {missing} (expected an 'engine-stats' table)")
    return Shape(int(meta["n_q_heads"]), int(meta["n_kv_heads"]), int(meta["head_dim"]), str(meta["dtype"]))


def method_from_meta(meta: dict) -> str:
    method = METHOD_ALIASES.get(str(meta.get("method")), str(meta.get("method")))
    if method not in METHODS + ALTERNATIVES:
        raise UserError(f"statistics metadata field 'method' is {meta.get('method')!r}; "
                        f"expected one of {METHODS + ALTERNATIVES}")
    return method


def sim_results_meta(device: Device, stats_meta: dict, stats_path, fetch: str = "row", split_tokens: int = 512,
                     batch_sequences: bool = False, kernel: KernelOptions = KernelOptions()) -> dict:
    """Metadata of a 'sim-results' table: which device, statistics and kernel options made it."""
    return {"kind": "sim-results", "device": device.name, "device_file": device.path,
            "method": method_from_meta(stats_meta), "fetch": fetch, "split_tokens": split_tokens,
            "batch_sequences": batch_sequences, "stats": str(stats_path),
            "model_id": stats_meta.get("model_id"), "params": stats_meta.get("params"), "time_unit": "s",
            "kernel": kernel_label(device, kernel, split_tokens)}


def kernel_label(device: Device, kernel: KernelOptions, split_tokens: int) -> str:
    """Which decode kernel the simulated numbers assume, in words."""
    if device.dma is not None:
        from topθ_hw.sim.dma_kernel import DmaKernel, dma_kernel_for
        return (kernel if isinstance(kernel, DmaKernel) else dma_kernel_for(device)).label
    from topθ_hw.sim.simulate import kernel_description
    return kernel_description(kernel, split_tokens, "toptheta")["label"]


def group_rows(df: pd.DataFrame, shape: Shape) -> pd.DataFrame:
    """The KV-group rows, checked against the metadata's shape."""
    missing = [c for c in GROUP_COLUMNS if c not in df.columns]
    if missing:
        raise UserError(f"statistics lack column(s) {missing}; expected the engine-stats columns that `toptheta replay` writes (topθ_hw/engine/stats.py)")
    groups = df[df["level"] == "group"]
    if groups.empty:
        raise UserError("statistics have no level='group' rows")
    bad = groups[(groups["kv_group"] < 0) | (groups["kv_group"] >= shape.kv_heads)]
    if len(bad):
        raise UserError(f"statistics row with kv_group {int(bad['kv_group'].iloc[0])} outside 0..{shape.kv_heads - 1} "
                        f"(metadata n_kv_heads = {shape.kv_heads}): statistics and metadata disagree")
    counts = groups.groupby(["sequence", "layer", "phase", "row_start"]).size()
    wrong = counts[counts != shape.kv_heads]
    if len(wrong):
        (seq, layer, phase, start), n = wrong.index[0], int(wrong.iloc[0])
        raise UserError(f"statistics: sequence {seq} layer {layer} {phase} row {start} has {n} KV-group rows; "
                        f"metadata n_kv_heads = {shape.kv_heads}")
    return groups


def decode_streams(rows: pd.DataFrame, method: str, group: int) -> list[DecodeStream]:
    """One stream per KV-group row of one decode step, with its real kept-V mask."""
    streams = []
    for r in rows.sort_values(["sequence", "kv_group"]).itertuples():
        n = int(r.context_len)
        mask = bytes(r.kept_v_mask) if r.kept_v_mask is not None else b""
        if len(mask) != -(-n // 8):
            raise UserError(f"statistics: sequence {r.sequence} layer {r.layer} step {r.step} kv_group {r.kv_group}: "
                            f"kept_v_mask has {len(mask)} bytes, expected ceil(context_len {n} / 8) = {-(-n // 8)}")
        kept = np.unpackbits(np.frombuffer(mask, dtype=np.uint8), count=n).astype(bool)
        streams.append(DecodeStream(n, kept, kept_per_head=float(r.kept_elements) / group))
    return streams


def workload_from_stats(df: pd.DataFrame, meta: dict, fetch: str = "row", split_tokens: int = 512,
                        granule_bytes: int = 32, l2_bytes: float = 0.0, batch_sequences: bool = False):
    """Yield ``(key, AttentionCall)`` per layer of every decode step and every prefill chunk.

    key: dict of sequence ('+'-joined when batched), phase, step, layer, batch, context_len.
    With ``batch_sequences`` the sequences' same-numbered decode steps form one batch.
    """
    shape, method = shape_from_meta(meta), method_from_meta(meta)
    groups = group_rows(df, shape)
    decode = groups[groups["phase"] == "decode"]
    by = ["step", "layer"] if batch_sequences else ["sequence", "step", "layer"]
    for _, rows in decode.groupby(by, sort=True):
        seqs = sorted(rows["sequence"].unique())
        key = {"sequence": "+".join(seqs), "phase": "decode", "step": int(rows["step"].iloc[0]),
               "layer": int(rows["layer"].iloc[0]), "batch": len(seqs), "context_len": int(rows["context_len"].max())}
        streams = decode_streams(rows, method, shape.group)
        if method in ALTERNATIVES:   # their own access patterns (sim/alternatives.py)
            yield key, alternative_decode_call(shape, streams, method, meta.get("params") or {}, fetch, split_tokens,
                                               granule_bytes)
            continue
        yield key, decode_call(shape, streams, method, fetch, split_tokens, granule_bytes)
    prefill = groups[groups["phase"] == "prefill"]
    for (seq, layer), rows in prefill.groupby(["sequence", "layer"], sort=True):
        tiles = {c: rows[c].to_numpy() for c in rows.columns if c != "kept_v_mask"}
        tiles = {c: (v.astype(np.int64) if v.dtype.kind in "iuO" and c not in ("sequence", "level", "phase") else v)
                 for c, v in tiles.items()}
        key = {"sequence": seq, "phase": "prefill", "step": -1, "layer": int(layer), "batch": 1,
               "context_len": int(rows["row_end"].max())}
        yield key, (alternative_prefill_call(shape, tiles, method, meta.get("params") or {}, fetch, granule_bytes,
                                             l2_bytes) if method in ALTERNATIVES
                    else prefill_call(shape, tiles, method, fetch, granule_bytes, l2_bytes))


def simulate_stats(df: pd.DataFrame, meta: dict, device: Device, fetch: str = "row", split_tokens: int = 512,
                   batch_sequences: bool = False, progress: bool = False,
                   kernel: KernelOptions = KernelOptions()) -> pd.DataFrame:
    """Per-layer rows (scope 'layer') and whole-model step totals (scope 'step', layer -1), with the
    decode kernel ``kernel`` describes (default: the fused threshold kernel, 64-key tiles)."""
    from tqdm import tqdm

    calls = workload_from_stats(df, meta, fetch, split_tokens, device.memory.sector_bytes,
                                device.memory.l2_MiB * 2**20, batch_sequences)
    records = [{**key, **simulate_call(call, device, kernel)}
               for key, call in tqdm(calls, desc="simulate", unit="call", disable=not progress)]
    if not records:
        raise UserError("statistics hold no decode or prefill group rows to simulate")
    layers = pd.DataFrame.from_records(records)
    layers.insert(0, "device", device.name)
    layers["scope"] = "layer"
    steps = step_totals(layers, device)
    return pd.concat([layers, steps], ignore_index=True)


def step_totals(layers: pd.DataFrame, device: Device) -> pd.DataFrame:
    """Sum a step's layers: the whole-model time, bytes, FLOPs and energy of that step."""
    keys = ["device", "sequence", "phase", "step", "method", "fetch"]
    steps = layers.groupby(keys, sort=True).agg(
        {**{c: "sum" for c in SUM_COLUMNS}, "batch": "first", "context_len": "max",
         "kept_v_fraction": "mean"}).reset_index()
    extra = steps.apply(lambda r: utilisation(r, device), axis=1, result_type="expand")
    steps[["utilisation", "compute_utilisation"]] = extra
    steps["layer"] = -1
    steps["scope"] = "step"
    return steps
