"""Time causal prefill attention on a real GPU: torch SDPA (flash), the Triton FlashAttention-2
kernel dense, and the same kernel with Top-θ's in-kernel threshold skipping empty key tiles.

    python3 sims/validation/prefill_bench.py --out DIR            # full sweep (one H200, ~3 min)
    python3 sims/validation/prefill_bench.py --out DIR --quick    # smoke test on a GPU
    TRITON_INTERPRET=1 python3 sims/validation/prefill_bench.py --cpu-check   # kernels on CPU
    python3 sims/validation/prefill_bench.py --ptxas     # registers / spills for sm_90a, no GPU needed

Writes DIR/prefill_attention.csv (one row per kernel and configuration), DIR/prefill_occupancy.npz
(per configuration: 64 × 64 tile occupancy per (batch item, KV head, query tile), what the
simulator is fed) and DIR/prefill_attention.provenance.json. Masks come out of the kernel's own
``score > θ`` (prefill_inputs.py); the kept fractions and non-empty tile fractions in the CSV are
the kernel's own counters. Every kernel is checked against a float64 reference on small shapes,
and against the dense Triton kernel at every timed shape, before anything is timed; a failed
check raises and the script exits non-zero.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prefill_inputs import make_inputs, occupancy_summary  # noqa: E402
from prefill_kernels import (check_prefill, interpreter_scalar_loops, near_threshold,  # noqa: E402
                             prefill_attention, prefill_launcher, reference_prefill)

Q_HEADS, KV_HEADS, HEAD_DIM = 32, 8, 128
COLUMNS = ["device", "date", "kernel", "block_m", "batch", "context", "q_heads", "kv_heads", "head_dim", "dtype",
           "pattern", "target_fraction", "kept_fraction", "nonempty_tile_fraction", "kernel_block_fraction",
           "empty_rows", "time_s", "time_s_p10", "time_s_p90", "repeats", "dense_tflops", "check_rel_err"]
BLOCKS = (64, 128)


SDPA_BACKEND = ["FLASH_ATTENTION"]  # the first of FLASH, CUDNN, EFFICIENT that passes small_checks


def sdpa(q, k, v):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    with sdpa_kernel(getattr(SDPBackend, SDPA_BACKEND[0])):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)


def pick_sdpa(q, k, v, ref):
    """Flash if it runs causal GQA here and passes the check, else the next backend; recorded."""
    errors = {}
    for name in ("FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION"):
        SDPA_BACKEND[0] = name
        try:
            return name, check_prefill(f"sdpa {name}", sdpa(q, k, v), ref)
        except (RuntimeError, AssertionError) as exc:
            errors[name] = str(exc).splitlines()[0][:200]
    raise AssertionError(f"no SDPA backend ran causal GQA prefill: {errors}")


def small_checks(device, dtype, context, log, q_heads=Q_HEADS, kv_heads=KV_HEADS, head_dim=HEAD_DIM):
    """Every kernel against the float64 reference, and the kernel's counters against the reference's
    kept mask, for each pattern (one with many empty rows) at a small shape; raises on mismatch."""
    cases = [("dense", 1.0), ("clustered", 0.2), ("scattered", 0.1), ("scattered", 0.002)]
    for pattern, fraction in cases:
        q, k, v, theta, tiles = make_inputs(pattern, 1, q_heads, kv_heads, context, head_dim, fraction, 11, device, dtype)
        ref_dense, _ = reference_prefill(q, k, v)
        ref, keep = reference_prefill(q, k, v, theta)
        for block_m in BLOCKS:
            if context % block_m:
                continue
            rel = check_prefill(f"dense bm{block_m}", prefill_attention(q, k, v, block_m=block_m), ref_dense)
            log[f"check_dense_bm{block_m}"] = rel
            got, counts, occ = prefill_attention(q, k, v, theta, block_m=block_m, count=True)
            rel = check_prefill(f"threshold {pattern} {fraction} bm{block_m}", got, ref)
            log[f"check_threshold_{pattern}_{fraction}_bm{block_m}"] = rel
            recount = int(keep.sum()) - int(counts[..., 4].sum())   # the empty rows' maxima are added by the rule
            band = near_threshold(q, k, theta) if theta is not None and pattern != "dense" else 0
            if abs(int(counts[..., 0].sum()) - recount) > band:
                raise AssertionError(f"{pattern} {fraction} bm{block_m}: kernel kept {int(counts[..., 0].sum())} "
                                     f"scores above θ, float64 reference {recount} ({band} within rounding of θ)")
            log[f"kept_{pattern}_{fraction}_bm{block_m}"] = {"kernel": int(counts[..., 0].sum()), "reference": recount,
                                                              "within_rounding": band}
        if tiles is not None:
            _, counts, occ = prefill_attention(q, k, v, theta, block_m=64, count=True)
            union = occ.cpu().numpy().astype(bool).reshape(tiles.shape[0], kv_heads, -1, *occ.shape[2:]).any(axis=2)
            if not np.array_equal(union, tiles):
                raise AssertionError(f"clustered {fraction}: kernel's non-empty tiles differ from the planted pattern")
        if device != "cpu" and pattern == "dense":
            log["sdpa_backend"], log["check_sdpa"] = pick_sdpa(q, k, v, ref_dense)
        print(f"check {pattern} f={fraction}: ok", flush=True)


def occupancy(q, k, v, theta, tiles):
    """The kernel's counters at 64-row tiles for one configuration (asserts the planted pattern)."""
    _, counts, occ = prefill_attention(q, k, v, theta, block_m=64, count=True)
    summary = occupancy_summary(counts, occ, k.shape[1], 64)
    if tiles is not None and not np.array_equal(summary["kv_tiles_nonempty"], tiles.sum(axis=-1)):
        raise AssertionError("kernel's non-empty tiles differ from the planted pattern")
    if not summary["heads_agree"]:
        raise AssertionError("a KV group's query heads kept different tiles (inputs should share one mask)")
    return summary


def timed(timer, fn, repeats):
    from microbench import summary
    return summary(timer.times(fn, repeats, warmup=3))


def shape_rows(meta, args, timer, occ_store, log, device="cuda", dtype=torch.bfloat16):
    """All kernels and patterns at one (batch, context): SDPA and dense Triton, then the threshold kernel
    on each mask pattern and kept fraction."""
    dense_flops = 4.0 * meta["batch"] * meta["q_heads"] * meta["head_dim"] * meta["context"] * (meta["context"] + 1) / 2

    def row(kernel, block_m, pattern, fraction, stats, counters):
        return {**meta, "kernel": kernel, "block_m": block_m, "pattern": pattern, "target_fraction": fraction,
                **counters, **stats, "dense_tflops": dense_flops / stats["time_s"] / 1e12}

    rows = dense_rows(meta, args, timer, row, device, dtype)
    for pattern, fraction in [("dense", 1.0)] + [(p, f) for p in ("clustered", "scattered") for f in args.fractions]:
        rows += threshold_rows(meta, args, timer, row, pattern, fraction, occ_store, log, device, dtype)
    if device == "cuda":
        torch.cuda.empty_cache()
    return rows


def input_shape(meta):
    return meta["batch"], meta["q_heads"], meta["kv_heads"], meta["context"], meta["head_dim"]


def dense_rows(meta, args, timer, row, device, dtype):
    """SDPA (checked against the dense Triton kernel) and the dense Triton kernel at both block sizes."""
    q, k, v, _, _ = make_inputs("dense", *input_shape(meta), 1.0, args.seed, device, dtype)
    every = {"kept_fraction": 1.0, "nonempty_tile_fraction": 1.0, "kernel_block_fraction": 1.0, "empty_rows": 0}
    rel = check_prefill("sdpa vs triton", sdpa(q, k, v), prefill_attention(q, k, v).double())
    backend = SDPA_BACKEND[0].split("_")[0].lower()
    rows = [row(f"sdpa_{backend}", 0, "dense", 1.0, timed(timer, lambda: sdpa(q, k, v), args.repeats),
                {**every, "check_rel_err": rel})]
    for bm in BLOCKS:
        stats = timed(timer, prefill_launcher(q, k, v, block_m=bm)[0], args.repeats)
        rows.append(row("dense", bm, "dense", 1.0, stats, {**every, "check_rel_err": 0.0}))
    return rows


def threshold_rows(meta, args, timer, row, pattern, fraction, occ_store, log, device, dtype):
    """The threshold kernel on one mask: its counters (recorded), a consistency check, the timings."""
    q, k, v, theta, tiles = make_inputs(pattern, *input_shape(meta), fraction, args.seed, device, dtype)
    occ = occupancy(q, k, v, theta, tiles)
    key = f"B{meta['batch']}_T{meta['context']}_{pattern}_f{fraction}"
    occ_store.update({f"{key}/{name}": occ[name] for name in ("kv_tiles_total", "kv_tiles_nonempty", "kept_v_rows")})
    log[key] = {name: value for name, value in occ.items() if not isinstance(value, np.ndarray)}
    if pattern == "dense":
        rel = check_prefill(f"{key}: threshold kernel with θ = -inf vs dense", prefill_attention(q, k, v, theta),
                            prefill_attention(q, k, v).double(), tol=1e-2)
    else:  # the two tilings must agree (and be finite) where no float64 reference fits in memory
        rel = check_prefill(f"{key}: threshold kernel BLOCK_M 64 vs 128", prefill_attention(q, k, v, theta, block_m=64),
                            prefill_attention(q, k, v, theta, block_m=128).double())
    counters = {"kept_fraction": occ["kept_fraction"], "nonempty_tile_fraction": occ["nonempty_tile_fraction"],
                "empty_rows": occ["empty_rows"], "check_rel_err": rel}
    return [row("threshold", bm, pattern, fraction, timed(timer, prefill_launcher(q, k, v, theta, block_m=bm)[0],
                                                         args.repeats),
                {**counters, "kernel_block_fraction": occ[f"block{bm}_fraction"]}) for bm in BLOCKS]


def provenance(args):
    from decode_kernels import provenance as gpu_provenance
    prov = gpu_provenance(args)
    prov.update({
        "host_policy": "repetitions queued in groups of 10 behind a GPU spin (microbench.Timer); prefill calls "
                       "last 0.3-30 ms, far above the host's launch cost",
        "launch_policy": "Triton kernels at BLOCK_M 64 (4 warps) and 128 (8 warps), 3 stages, BLOCK_N 64; "
                         "SDPA pinned to one backend (sdpa_kernel): flash unless it failed the check, see checks_and_occupancy.sdpa_backend; is_causal, enable_gqa",
        "inputs": "prefill_inputs.py: clustered = planted integer features (sink + 2-tile window + random code "
                  "tiles), scattered = normal Q/K with theta_i = ndtri(1-f)|q_i|/sqrt(d), dense = theta -inf; "
                  "a KV group's query heads share one mask",
        "fractions": args.fractions, "batches": args.batches, "contexts": args.contexts, "repeats": args.repeats,
    })
    return prov


def cpu_check():
    """The checks of small_checks under TRITON_INTERPRET=1 (float16: the interpreter multiplies bf16
    tl.dot operands as raw integers), tiny heads."""
    interpreter_scalar_loops()
    log = {}
    small_checks("cpu", torch.float16, 256, log, q_heads=4, kv_heads=2)
    print(json.dumps(log, indent=1))


def ptxas_report():
    """Compile every timed variant for sm_90a without a GPU and print ptxas's registers and spills."""
    import re
    import subprocess
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from prefill_kernels import _prefill_fwd
    ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    pointers = {"Q": "*bf16", "K": "*bf16", "V": "*bf16", "Theta": "*fp32", "Out": "*bf16", "Counts": "*i32", "Occ": "*i8"}
    ints = ["n_ctx", "H_q", "n_m_tiles", "n_n_tiles"] + [f"stride_{a}{b}" for a in "qk" for b in ("b", "h", "t")]
    signature = {**pointers, "qk_scale": "fp32", **{n: "i32" for n in ints}}
    for block_m, threshold, count in ((64, False, False), (128, False, False), (64, True, False), (128, True, False),
                                      (64, True, True)):
        consts = {"G": 4, "D": HEAD_DIM, "BLOCK_M": block_m, "BLOCK_N": 64, "THRESHOLD": threshold, "COUNT": count}
        # as the JIT specializes the benchmark's launches: 16-byte aligned pointers, every int a multiple of 16
        aligned = {(i,): [["tt.divisibility", 16]] for i, name in enumerate(signature) if name != "qk_scale"}
        src = ASTSource(fn=_prefill_fwd, signature={**signature, **{k: "constexpr" for k in consts}}, constexprs=consts,
                        attrs=aligned)
        compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                                  options={"num_warps": 8 if block_m == 128 else 4, "num_stages": 3})
        ptx = Path(os.environ.get("TMPDIR", "/tmp")) / f"prefill_{block_m}_{threshold}_{count}.ptx"
        ptx.write_text(compiled.asm["ptx"])
        log = subprocess.run([str(ptxas), "-arch=sm_90a", "-v", str(ptx), "-o", os.devnull], capture_output=True,
                             text=True).stderr
        regs, spill = re.search(r"Used (\d+) registers", log).group(1), re.search(r"(\d+) bytes spill stores", log).group(1)
        asyncs = compiled.asm["ptx"].count("cp.async.cg")
        print(f"BLOCK_M {block_m:3d} threshold {threshold!s:5} count {count!s:5}: {regs} registers, {spill} B spill "
              f"stores, {compiled.metadata.shared} B shared, {asyncs} cp.async copies", flush=True)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="folder for the CSV, occupancy and provenance files")
    p.add_argument("--quick", action="store_true", help="smoke test: batch 1, context 4096, two fractions")
    p.add_argument("--cpu-check", action="store_true", help="check the kernels on CPU (TRITON_INTERPRET=1)")
    p.add_argument("--ptxas", action="store_true", help="compile for sm_90a (no GPU needed), print registers/spills")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--contexts", type=int, nargs="+", default=[4096, 8192, 16384])
    p.add_argument("--fractions", type=float, nargs="+", default=[0.5, 0.2, 0.1, 0.05])
    p.add_argument("--repeats", type=int, default=20, help="timed repetitions per point (median, p10, p90)")
    p.add_argument("--seed", type=int, default=2026)
    args = p.parse_args()
    if args.quick:
        args.batches, args.contexts, args.fractions, args.repeats = [1], [4096], [0.2, 0.05], 5
    if not (args.cpu_check or args.ptxas) and args.out is None:
        p.error("--out is required")
    bad = [f for f in args.fractions if not 0 < f < 1]
    if bad:
        p.error(f"--fractions must lie in (0, 1), got {bad}")
    bad = [t for t in args.contexts if t % 128 or t > 16384]
    if bad:
        p.error(f"--contexts must be multiples of 128 up to 16384 (planted tile codes), got {bad}")
    return args


def main():
    args = parse_args()
    if args.cpu_check:
        cpu_check()
        return 0
    if args.ptxas:
        ptxas_report()
        return 0
    from decode_kernels import write_csv, write_json
    from microbench import Timer
    t_start = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    prov = provenance(args)
    print(json.dumps(prov, indent=1), flush=True)
    log = {}
    small_checks("cuda", torch.bfloat16, 2048, log)  # T/128 = 16: the same specializations as the timed launches
    timer, rows, occ_store = Timer("cuda"), [], {}
    base = {"device": prov["torch_device_name"], "date": prov["date_utc"][:10], "q_heads": Q_HEADS,
            "kv_heads": KV_HEADS, "head_dim": HEAD_DIM, "dtype": "bf16"}
    for T in args.contexts:
        for B in args.batches:
            rows += shape_rows({**base, "batch": B, "context": T}, args, timer, occ_store, log)
            write_csv(args.out / "prefill_attention.csv", COLUMNS, rows)
            print_rows(rows[-(3 + 2 * (1 + 2 * len(args.fractions))):], time.time() - t_start)
    tmp = args.out / "prefill_occupancy.tmp.npz"
    np.savez_compressed(tmp, **occ_store)
    os.replace(tmp, args.out / "prefill_occupancy.npz")
    write_json(args.out / "prefill_attention.provenance.json",
               {**prov, "wall_s": round(time.time() - t_start, 1), "checks_and_occupancy": log})
    return 0


def print_rows(rows, elapsed):
    for r in rows:
        print(f"B={r['batch']} T={r['context']:5d} {r['kernel']:9s} bm={r['block_m']:3d} {r['pattern']:9s} "
              f"f={r['target_fraction']:.2f} kept={r['kept_fraction']:.3f} tiles={r['nonempty_tile_fraction']:.3f} "
              f"{r['time_s'] * 1e3:8.3f} ms ({r['dense_tflops']:5.0f} TF/s dense-equiv)  [{elapsed:.0f}s]", flush=True)


if __name__ == "__main__":
    sys.exit(main())
