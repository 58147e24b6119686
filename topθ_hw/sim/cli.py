"""``toptheta simulate`` and ``toptheta simulate-kernel``: cost attention on a named device.

Only the standard library is imported here; the simulator loads inside the handlers.
"""

from __future__ import annotations

import argparse
import json

from topθ_hw.outputs import add_overwrite, prepare_output

FETCHES = ["row", "page8", "page16", "page32", "page64", "page128"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "simulate", help="simulate a replayed trace's attention (engine statistics) on a device",
        description="Turn engine statistics (toptheta replay --out stats.parquet) into per-layer and "
                    "per-step time, bytes by kind (K, V, scores, thresholds), FLOPs, energy, utilisation "
                    "and the analytic roofline on one device; writes a 'sim-results' Parquet table.")
    p.add_argument("--hardware", required=True, help="shipped device name (h100, h200, a100, b200, mi300x, "
                                                     "tpu-v5e, npu) or a path to a device .toml")
    p.add_argument("--stats", required=True, help="engine-stats Parquet file from `toptheta replay`")
    p.add_argument("--out", required=True, help="output Parquet (sim-results)")
    add_overwrite(p)
    p.add_argument("--fetch", choices=FETCHES, default="row",
                   help="V fetch granularity: single rows (sector-rounded) or whole KV pages (default row)")
    p.add_argument("--split-tokens", type=int, default=512, help="keys per split-KV work item (default 512)")
    p.add_argument("--batch-sequences", action="store_true",
                   help="decode the trace's sequences as one batch (same-numbered steps together)")
    p.set_defaults(func=simulate_handler)

    k = subparsers.add_parser(
        "simulate-kernel", help="predict one decode-attention call (synthetic kept-V fraction) on a device",
        description="Predicted time and bytes of one decode-attention kernel call for a batch: split-KV "
                    "(flash-decoding) for dense and Top-θ, score + select + gather passes for top-k.")
    k.add_argument("--hardware", required=True, help="shipped device name or a path to a device .toml")
    k.add_argument("--batch", type=int, required=True)
    k.add_argument("--context", type=int, required=True, help="keys in the KV cache (N)")
    k.add_argument("--q-heads", type=int, default=32)
    k.add_argument("--kv-heads", type=int, default=8)
    k.add_argument("--head-dim", type=int, default=128)
    k.add_argument("--dtype", default="bf16", help="KV element type: bf16, fp16, fp32, fp8 (default bf16)")
    k.add_argument("--kept-v-fraction", type=float, default=1.0,
                   help="fraction of fetch units (rows, or pages for pageP) kept per KV head (default 1)")
    k.add_argument("--fetch", choices=FETCHES, default="row", help="V fetch granularity (default row)")
    k.add_argument("--method", choices=["dense", "toptheta", "topk"], default="toptheta")
    k.add_argument("--split-tokens", type=int, default=512, help="keys per split-KV work item (default 512)")
    k.add_argument("--seed", type=int, default=0, help="seed of the synthetic kept-row pattern")
    k.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    k.set_defaults(func=simulate_kernel_handler)


def simulate_handler(args: argparse.Namespace) -> int:
    from topθ_hw.sim.hardware import load_device
    from topθ_hw.sim.stats import sim_results_meta, simulate_stats
    from topθ_hw.tables import read_table, write_table

    prepare_output(args.out, [args.stats, args.hardware], overwrite=args.overwrite)
    if args.split_tokens < 1:
        from topθ_hw.errors import UserError
        raise UserError(f"--split-tokens must be ≥ 1, got {args.split_tokens}")
    device = load_device(args.hardware)
    df, meta = read_table(args.stats, kind="engine-stats")
    frame = simulate_stats(df, meta, device, fetch=args.fetch, split_tokens=args.split_tokens,
                           batch_sequences=args.batch_sequences, progress=True)
    out_meta = sim_results_meta(device, meta, args.stats, args.fetch, args.split_tokens, args.batch_sequences)
    write_table(frame, args.out, out_meta)
    steps = frame[(frame["scope"] == "step") & (frame["phase"] == "decode")]
    print(f"{args.out}: {int((frame['scope'] == 'layer').sum())} layer rows, {len(steps)} decode steps on "
          f"{device.name}; median decode step {steps['time_s'].median() * 1e6:.2f} us" if len(steps)
          else f"{args.out}: {len(frame)} rows on {device.name}")
    return 0


def simulate_kernel_handler(args: argparse.Namespace) -> int:
    from topθ_hw.sim.simulate import simulate_kernel

    r = simulate_kernel(args.hardware, args.batch, args.context, args.q_heads, args.kv_heads, args.head_dim,
                        args.dtype, args.kept_v_fraction, args.fetch, args.method, args.split_tokens, args.seed)
    if args.json:
        print(json.dumps(r, sort_keys=True))
        return 0
    mb = {k: v / 1e6 for k, v in r["bytes"].items()}
    print(f"{r['device']}: {r['method']} decode attention, batch {r['batch']}, context {r['context']}, "
          f"kept V {r['kept_v_fraction']:.3f} ({r['fetch']})")
    print(f"  time     {r['time_s'] * 1e6:10.2f} us   (roofline {r['roofline_time_s'] * 1e6:.2f} us, "
          f"{r['launches']} launches)")
    print("  bytes    " + ", ".join(f"{k} {v:.2f} MB" for k, v in mb.items()) + f"; total {r['bytes_total'] / 1e6:.2f} MB")
    print(f"  flops    {r['flops'] / 1e9:.3f} GFLOP   energy {r['energy_j'] * 1e3:.3f} mJ   "
          f"bandwidth utilisation {r['utilisation']:.1%}")
    return 0
