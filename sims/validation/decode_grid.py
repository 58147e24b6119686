"""Time the decode-attention grid of the cross-device validation on one GPU (issue 10).

    python3 sims/validation/decode_grid.py --tag h200 --out DIR          # full grid + microbenchmarks (GPU)
    python3 sims/validation/decode_grid.py --tag h200 --out DIR --quick  # smoke test (GPU)
    TRITON_INTERPRET=1 python3 sims/validation/decode_grid.py --cpu-check # both kernel families on CPU

Two kernel families from sims/validation/kernels.py, each with its own dense kernel:
- threshold (fused Top-θ): θ per (batch row, query head) read once per program, keep = score > θ,
  union over the KV group in-kernel, V loads predicated on it, empty tiles skip V and P·V;
- precomputed: the same split-KV kernel loading a one-byte-per-unit mask before each V copy.
At each (batch, context, kept fraction, fetch unit) both families skip exactly the same V units: θ is
chosen so that the threshold kernel needs the fraction asked (thresholds_for), and that need is
what the precomputed kernel's mask holds. torch SDPA (dense) is timed beside them.

The launch configuration is fixed (not tuned) and written on every row, so that a simulator can
be told the kernel exactly: 64-key tiles, 4 warps, 3 stages, 512-key splits (the defaults of
`toptheta simulate-kernel`), plus at batch 16 a second build (128-key tiles, 8 warps, 2 stages,
1024-key splits). Every kernel is checked against a float64 reference on a two-row batch slice
before it is timed; a failed check raises. Writes DIR/<tag>_decode_grid.csv (+ .provenance.json)
and, unless --skip-micro, DIR/<tag>_microbench.csv (read, copy, gather, launch).
"""
import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernels import (reference_decode, reference_threshold, split_kv_decode, threshold_decode,  # noqa: E402
                     thresholds_for)
from decode_kernels import (check_close, pick_sdpa, provenance, sdpa_call, sweep_inputs,  # noqa: E402
                            write_csv, write_json)

BUILDS = {"b64w4s3": dict(chunk=512, block_n=64, num_warps=4, num_stages=3),
          "b128w8s2": dict(chunk=1024, block_n=128, num_warps=8, num_stages=2)}
COLUMNS = ["device", "date", "family", "kernel", "build", "block_keys", "warps", "stages", "split_tokens", "batch",
           "context", "q_heads", "kv_heads", "head_dim", "dtype", "target_fraction", "kept_v_fraction",
           "page_size", "time_s", "time_s_p10", "time_s_p90", "bytes_k", "bytes_v", "bytes_total", "repeats",
           "rel_l2_error"]
REL_TOL = 2e-2


def needed_units(q, k, theta, page):
    """bool [B, H_kv, N / page]: the V units the threshold kernel reads (float32 scores, as in-kernel)."""
    B, H_q, D = q.shape
    H_kv, N = k.shape[1], k.shape[2]
    out = torch.empty(B, H_kv, N // page, dtype=torch.bool, device=q.device)
    for b in range(B):
        s = torch.einsum("hgd,hnd->hgn", q[b].float().view(H_kv, H_q // H_kv, D), k[b].float()) * D ** -0.5
        need = (s > theta[b].view(H_kv, -1, 1)).any(1)
        out[b] = need.view(H_kv, N // page, page).any(-1)
    return out


def row_of(meta, family, kernel, build, target, kept, page, times, bytes_k, bytes_v, bytes_other, rel):
    from microbench import summary
    cfg = BUILDS[build]
    return {**meta, "family": family, "kernel": kernel, "build": build, "block_keys": cfg["block_n"],
            "warps": cfg["num_warps"], "stages": cfg["num_stages"], "split_tokens": cfg["chunk"],
            "target_fraction": target, "kept_v_fraction": round(float(kept), 6), "page_size": page,
            **summary(times), "bytes_k": int(bytes_k), "bytes_v": int(bytes_v),
            "bytes_total": int(bytes_k + bytes_v + bytes_other), "rel_l2_error": rel}


def grid_point(meta, q, k, v, timer, args, build):
    """All kernels at one (batch, context) for one build."""
    cfg = BUILDS[build]
    D = k.shape[3]
    row_bytes, kv_bytes, q_bytes = D * k.element_size(), k.numel() * k.element_size(), q.numel() * q.element_size()
    qs, ks, vs = q[:2], k[:2], v[:2]  # the float64 checks run on a two-row slice
    ref = reference_decode(qs, ks, vs)
    rows = []
    for family, fn in (("threshold", lambda out=None: threshold_decode(q, k, v, None, out=out, **cfg)),
                       ("precomputed", lambda out=None: split_kv_decode(q, k, v, out=out, **cfg))):
        sl = (lambda out, fam=family: threshold_decode(qs, ks, vs, None, out=out, **cfg) if fam == "threshold"
              else split_kv_decode(qs, ks, vs, out=out, **cfg))
        rel = check_close(f"{family} dense {meta}", sl, ref)
        rows.append(row_of(meta, family, "dense", build, 1.0, 1.0, 0, timer.times(fn, args.repeats),
                           kv_bytes, kv_bytes, q_bytes, rel))
    if build == "b64w4s3":
        name, backend, rel = pick_sdpa(qs, ks, vs, ref)
        rows.append(row_of(meta, "sdpa-" + name, "dense", build, 1.0, 1.0, 0,
                           timer.times(lambda: sdpa_call(q, k, v, backend), args.repeats), kv_bytes, kv_bytes,
                           q_bytes, rel))
    for page in args.pages:
        for f in args.fractions:
            theta = thresholds_for(q, k, f, page)
            units = needed_units(q, k, theta, page)
            kept, n_rows = float(units.float().mean()), int(units.sum()) * page
            ref_t, need = reference_threshold(qs, ks, vs, theta[:2], page)
            rel_t = check_close(f"threshold page{page} f={f}", lambda out: threshold_decode(
                qs, ks, vs, theta[:2], page=page, out=out, **cfg), ref_t)
            rows.append(row_of(meta, "threshold", "row" if page == 1 else f"page{page}", build, f, kept, page,
                               timer.times(lambda: threshold_decode(q, k, v, theta, page=page, **cfg), args.repeats),
                               kv_bytes, n_rows * row_bytes, q_bytes + theta.numel() * 4, rel_t))
            mask = units.to(torch.uint8).contiguous()
            ref_m = reference_decode(qs, ks, vs, units[:2].repeat_interleave(page, -1))
            rel_m = check_close(f"precomputed page{page} f={f}", lambda out: split_kv_decode(
                qs, ks, vs, mask[:2].contiguous(), page, out=out, **cfg), ref_m)
            rows.append(row_of(meta, "precomputed", "row" if page == 1 else f"page{page}", build, f, kept, page,
                               timer.times(lambda: split_kv_decode(q, k, v, mask, page, **cfg), args.repeats),
                               kv_bytes, n_rows * row_bytes, q_bytes + mask.numel(), rel_m))
    return rows


def sweep(args, timer, base, out_path):
    gen = torch.Generator(device="cuda").manual_seed(args.seed)
    rows = []
    for B in args.batches:
        for n_ctx in args.contexts:
            meta, q, k, v = sweep_inputs(base, B, n_ctx, gen)
            for build in ["b64w4s3"] + (["b128w8s2"] if B == 16 and not args.quick else []):
                rows += grid_point(meta, q, k, v, timer, args, build)
                write_csv(out_path, COLUMNS, rows)  # partial results survive a timeout
            dense = next(r for r in rows[::-1] if r["kernel"] == "dense" and r["family"] == "threshold"
                         and r["batch"] == B and r["context"] == n_ctx)
            best = min(r["time_s"] for r in rows if r["batch"] == B and r["context"] == n_ctx)
            print(f"B={B} N={n_ctx} dense {dense['time_s'] * 1e6:.1f} us, fastest {best * 1e6:.1f} us", flush=True)
            del q, k, v
            torch.cuda.empty_cache()
    return rows


def cpu_check():
    """Both families on CPU (TRITON_INTERPRET=1), float16 (the interpreter's bf16 dot is integer)."""
    gen = torch.Generator().manual_seed(0)
    B, H_q, H_kv, n_ctx, D, dt = 2, 8, 2, 512, 64, torch.float16
    q, k, v = (torch.randn(*s, generator=gen).to(dt) for s in ((B, H_q, D), (B, H_kv, n_ctx, D), (B, H_kv, n_ctx, D)))
    for page, f in ((1, 0.1), (16, 0.3), (64, 0.5)):
        theta = thresholds_for(q, k, f, page)
        ref, need = reference_threshold(q, k, v, theta, page)
        units = needed_units(q, k, theta, page)
        assert torch.equal(units.repeat_interleave(page, -1), need), "needed units differ from the reference"
        rel = check_close("threshold", lambda out: threshold_decode(q, k, v, theta, page=page, chunk=256, out=out),
                          ref, dt)
        rel_m = check_close("precomputed", lambda out: split_kv_decode(
            q, k, v, units.to(torch.uint8).contiguous(), page, chunk=256, out=out),
            reference_decode(q, k, v, need), dt)
        print(f"page {page} target {f} kept {float(units.float().mean()):.3f} rel {rel:.1e} / {rel_m:.1e}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path)
    p.add_argument("--tag", default="h200", help="file prefix: the device's short name")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--cpu-check", action="store_true")
    p.add_argument("--skip-micro", action="store_true")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16, 64])
    p.add_argument("--contexts", type=int, nargs="+", default=[4096, 8192, 16384, 32768, 65536, 131072])
    p.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.5, 0.3, 0.1, 0.03])
    p.add_argument("--pages", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--seed", type=int, default=1234)
    args = p.parse_args()
    if args.cpu_check:
        cpu_check()
        return 0
    if args.out is None:
        p.error("--out is required")
    if args.quick:
        args.batches, args.contexts, args.fractions, args.repeats = [1, 16], [4096], [1.0, 0.1], 10
    from microbench import Timer, run_microbench
    args.out.mkdir(parents=True, exist_ok=True)
    prov = {**provenance(args), "launch_policy": f"fixed builds {BUILDS}; b128w8s2 at batch 16 only"}
    base = {"device": prov["torch_device_name"], "date": prov["date_utc"][:10]}
    print(json.dumps(prov, indent=1), flush=True)
    sweep(args, Timer("cuda"), base, args.out / f"{args.tag}_decode_grid.csv")
    write_json(args.out / f"{args.tag}_decode_grid.provenance.json", prov)
    if not args.skip_micro:
        from decode_kernels import MICRO_COLUMNS
        micro = [{**base, **r} for r in run_microbench("cuda", 20, args.seed)]
        write_csv(args.out / f"{args.tag}_microbench.csv", MICRO_COLUMNS, micro)
        write_json(args.out / f"{args.tag}_microbench.provenance.json", prov)
        for r in micro:
            print(f"{r['bench']:34s} {r['time_s'] * 1e6:10.2f} us {r['gb_s']:8.1f} GB/s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
