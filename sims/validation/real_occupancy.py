"""Prefill tile occupancy of real Top-θ masks: the shipped SmolLM2-135M trace replayed on CPU.

    PYTHONPATH=. .venv/bin/python sims/validation/real_occupancy.py --k 64 --layers 2 8 16 24 \
        --out sims/validation/smollm2_prefill_occupancy.npz

Thresholds are calibrated on seq_0000 (pre-softmax, σ_mult 0.1) and replayed on seq_0001 (512-token
prompt: 8 query tiles of 64 rows). Per layer it stores the engine's own group rows: for each (KV
head, query tile) the causal key tiles, those holding a kept element (union over the tile's rows
and the group's 3 query heads) and the kept V rows: what the simulator's prefill model is fed.
"""
import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from topθ_hw.engine.calibrate import calibrate
from topθ_hw.engine.methods import TopTheta
from topθ_hw.engine.run import replay_trace
from topθ_hw.store import open_trace


def layer_occupancy(frame, n_kv):
    """[n_kv, n_q_tiles] arrays from one layer's prefill group rows."""
    rows = frame[(frame.level == "group") & (frame.phase == "prefill")].sort_values(["kv_group", "row_start"])
    shape = (n_kv, len(rows) // n_kv)
    return {c: rows[c].to_numpy(dtype=np.int64).reshape(shape)
            for c in ("kv_tiles_total", "kv_tiles_nonempty", "kept_v_rows", "kept_elements", "row_end")}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trace", default="traces/smollm2-135m.zarr")
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--layers", type=int, nargs="+", default=[2, 8, 16, 24])
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    trace = open_trace(args.trace)
    method = TopTheta(calibrate(trace, ["seq_0000"], args.k))
    frame, meta = replay_trace(trace, method, ["seq_0001"], args.layers)
    arrays = {}
    for layer in args.layers:
        occ = layer_occupancy(frame[frame.layer == layer], trace.meta.n_kv_heads)
        arrays.update({f"layer{layer}/{name}": a for name, a in occ.items()})
    info = {"command": "python " + " ".join(sys.argv), "trace": args.trace, "calibration": ["seq_0000"],
            "replayed": "seq_0001", "k": args.k, "layers": args.layers, "model": trace.meta.model_id,
            "n_q_heads": trace.meta.n_q_heads, "n_kv_heads": trace.meta.n_kv_heads, "head_dim": trace.meta.head_dim}
    tmp = args.out.with_name(args.out.stem + ".tmp.npz")
    np.savez_compressed(tmp, info=np.array(json.dumps(info)), **arrays)
    os.replace(tmp, args.out)
    for layer in args.layers:
        nonempty, total = arrays[f"layer{layer}/kv_tiles_nonempty"].sum(), arrays[f"layer{layer}/kv_tiles_total"].sum()
        print(f"layer {layer}: {nonempty}/{total} causal 64x64 tiles hold a kept element")


if __name__ == "__main__":
    main()
