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
    add_kernel_arguments(p)
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
    k.add_argument("--split-tokens", type=int, default=512,
                   help="keys per split-KV work item, a multiple of --block-keys (default 512)")
    add_kernel_arguments(k)
    k.add_argument("--seed", type=int, default=0, help="seed of the synthetic kept-row pattern")
    k.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    k.set_defaults(func=simulate_kernel_handler)


def add_kernel_arguments(p) -> None:
    """How the simulated kernel is built: the fields of topθ_hw.sim.tiles.KernelOptions."""
    g = p.add_argument_group("kernel build", "the decode kernel the simulator models (sims/kernels/*.toml holds "
                                             "its per-architecture constants)")
    g.add_argument("--mask", choices=["threshold", "precomputed"], default="threshold",
                   help="how V rows are skipped: 'threshold' = the fused Top-θ kernel (score > θ compared "
                        "in-kernel, union over the KV group, predicated V loads, no mask bytes; default); "
                        "'precomputed' = a keep byte per row or page loaded from memory before each V copy")
    g.add_argument("--block-keys", type=int, default=None,
                   help="keys per tile: 64, 128 or 256 on GPUs (default 64); keys per DMA block on "
                        "accelerators (default: their kernel family's, sims/kernels/*.toml)")
    g.add_argument("--buffers", type=int, default=None,
                   help="accelerators only: DMA buffers in flight, ≥ 2 (default: the kernel family's)")
    g.add_argument("--warps", type=int, default=4, help="warps per CTA: a power of two, 1-32 (default 4)")
    g.add_argument("--stages", type=int, default=0,
                   help="software-pipeline depth, 2-8 (default: 3, or 2 where the unit's shared memory "
                        "holds no 3-stage CTA)")


def kernel_options(args: argparse.Namespace, device):
    """The kernel the flags describe: a GPU build, or the accelerator's DMA kernel."""
    from topθ_hw.errors import UserError
    from topθ_hw.sim.tiles import KernelOptions
    if device.dma is not None:
        from topθ_hw.sim.dma_kernel import dma_kernel_for
        return dma_kernel_for(device, block_keys=args.block_keys, buffers=args.buffers)
    if args.buffers is not None:
        raise UserError(f"--buffers is for accelerators (a device with a [dma] section); {device.name} is a GPU: "
                        "use --stages")
    return KernelOptions(block_keys=args.block_keys or 64, warps=args.warps, stages=args.stages, mask=args.mask)


def simulate_handler(args: argparse.Namespace) -> int:
    from topθ_hw.sim.hardware import load_device
    from topθ_hw.sim.stats import sim_results_meta, simulate_stats
    from topθ_hw.tables import read_table, write_table

    from topθ_hw.errors import UserError

    prepare_output(args.out, [args.stats, args.hardware], overwrite=args.overwrite)
    device = load_device(args.hardware)
    kernel = kernel_options(args, device)
    block = getattr(kernel, "block_keys", 64)
    if args.split_tokens < block or args.split_tokens % block:
        raise UserError(f"--split-tokens {args.split_tokens}: must be a positive multiple of --block-keys {block}")
    df, meta = read_table(args.stats, kind="engine-stats")
    frame = simulate_stats(df, meta, device, fetch=args.fetch, split_tokens=args.split_tokens,
                           batch_sequences=args.batch_sequences, progress=True, kernel=kernel)
    out_meta = sim_results_meta(device, meta, args.stats, args.fetch, args.split_tokens, args.batch_sequences,
                                kernel=kernel)
    write_table(frame, args.out, out_meta)
    steps = frame[(frame["scope"] == "step") & (frame["phase"] == "decode")]
    print(f"{args.out}: {int((frame['scope'] == 'layer').sum())} layer rows, {len(steps)} decode steps on "
          f"{device.name}; median decode step {steps['time_s'].median() * 1e6:.2f} us" if len(steps)
          else f"{args.out}: {len(frame)} rows on {device.name}")
    return 0


def simulate_kernel_handler(args: argparse.Namespace) -> int:
    from topθ_hw.sim.simulate import simulate_kernel

    from topθ_hw.errors import UserError

    if not 0 < args.kept_v_fraction <= 1:
        raise UserError(f"--kept-v-fraction {args.kept_v_fraction}: must be in (0, 1]")
    from topθ_hw.sim.hardware import load_device
    device = load_device(args.hardware)
    r = simulate_kernel(device, args.batch, args.context, args.q_heads, args.kv_heads, args.head_dim,
                        args.dtype, args.kept_v_fraction, args.fetch, args.method, args.split_tokens, args.seed,
                        kernel=kernel_options(args, device))
    if args.json:
        print(json.dumps(r, sort_keys=True))
        return 0
    mb = {k: v / 1e6 for k, v in r["bytes"].items()}
    print(f"{r['device']}: {r['method']} decode attention, batch {r['batch']}, context {r['context']}, "
          f"kept V {r['kept_v_fraction']:.3f} ({r['fetch']})")
    print(f"  kernel   {r['kernel']['label']}")
    print(f"  time     {r['time_s'] * 1e6:10.2f} us   (roofline {r['roofline_time_s'] * 1e6:.2f} us, "
          f"{r['launches']} launches)")
    print("  bytes    " + ", ".join(f"{k} {v:.2f} MB" for k, v in mb.items()) + f"; total {r['bytes_total'] / 1e6:.2f} MB")
    print(f"  flops    {r['flops'] / 1e9:.3f} GFLOP   energy {r['energy_j'] * 1e3:.3f} mJ   "
          f"bandwidth utilisation {r['utilisation']:.1%}")
    if "validation" in r:  # accelerators (sim/dma.py): which kernel, why slow, how trustworthy
        print(f"  status   {r['validation']}" + (f"\n  slow     {r['cause']}" if r["cause"] else ""))
    return 0
