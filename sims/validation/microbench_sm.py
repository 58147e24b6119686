"""Per-SM microbenchmarks for the simulator (H100), one run:

    python3 sims/validation/microbench_sm.py --out DIR

Measures what the decode-attention timings alone cannot separate:
- structure: registers, shared memory and resident CTAs per SM of every launch shape of the
  split-KV partial kernel (kernels.py) and the merge kernel, and which loads Triton pipelines
  (async copies in the TTGIR); the kernels torch SDPA launches (names, grids, blocks, registers,
  shared memory) from the torch profiler;
- latency: a pointer chase (one thread, cold lines) alone, then while G other CTAs stream
  reads (loaded latency and the bandwidth that load reached), and from L2;
- the partial kernel on H_kv = 1 streams at grid sizes 1..528 CTAs (one split of 2048 keys
  each; 512 keys for the lone CTA too): per-CTA tile chain alone, per-SM rate as CTAs fill
  the SMs, for dense, V-row and page masks;
- the merge kernel alone (partials in L2) and an empty launch, same session.

Writes DIR/<tag>_microbench_sm.csv (--tag, default h100) (one row per measurement; `params` is `key=value;...`) and
DIR/<tag>_microbench_sm.provenance.json (GPU, versions, command, kernel structure, SDPA kernels).
"""
import argparse
import json
import math
import os
import sys
import tempfile
import traceback
from pathlib import Path

import numpy as np
import torch
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernels import _split_kv_partial, _split_kv_reduce, kept_mask  # noqa: E402
from microbench import Timer, summary  # noqa: E402

COLUMNS = ["device", "date", "bench", "params", "time_s", "time_s_p10", "time_s_p90", "bytes", "gb_s",
           "value", "unit", "repeats", "notes"]
SHAPES = [(64, 4, 2), (64, 4, 3), (64, 4, 4), (64, 4, 5), (128, 8, 2), (128, 8, 3)]
SCAN_SHAPES = [(64, 4, 2), (64, 4, 3), (128, 8, 2)]
VARIANTS = [("dense", 1, 1.0), ("vrow", 1, 1.0), ("vrow", 1, 0.5), ("vrow", 1, 0.2), ("vrow", 1, 0.05),
            ("page", 16, 0.05), ("page", 64, 0.5), ("page", 64, 0.05)]
GRIDS = [1, 8, 33, 66, 132, 264, 396, 528]
D, G = 128, 4
TAG = "h100"  # file prefix, set by --tag


class HotTimer(Timer):
    """Same timer without the L2 flush: for data that is meant to sit in L2."""

    def flush(self):
        pass


def params_text(**kw):
    return ";".join(f"{k}={v}" for k, v in kw.items())


def result(bench, times, nbytes=0, value=None, unit="", notes="", **params):
    s = summary(times)
    return {"bench": bench, "params": params_text(**params), **s, "bytes": int(nbytes),
            "gb_s": nbytes / s["time_s"] / 1e9 if nbytes else 0.0,
            "value": s["time_s"] if value is None else value, "unit": unit or "s", "notes": notes}


# ---------------------------------------------------------------- split-KV partial, launched directly

def make_stream(n_ctx, kernel, page, fraction, gen):
    q = torch.randn(1, G, D, device="cuda", generator=gen).to(torch.bfloat16)
    k = torch.randn(1, 1, n_ctx, D, device="cuda", generator=gen).to(torch.bfloat16)
    v = torch.randn(1, 1, n_ctx, D, device="cuda", generator=gen).to(torch.bfloat16)
    mask = None
    if kernel != "dense":
        sink, recent = (4, 64) if page == 1 else (1, 1)
        units = kept_mask(1, 1, n_ctx // page, fraction, gen, "cuda", sink, recent)
        mask = units.to(torch.uint8).contiguous()
    return q, k, v, mask


def compiled(jit_fn, returned):
    """The CompiledKernel of the last launch (returned by the launch in Triton 3.x; else the
    newest entry of the JIT cache)."""
    if returned is not None and hasattr(returned, "metadata"):
        return returned
    cache = next(iter(jit_fn.device_caches.values()))[0]
    return list(cache.values())[-1]


def launch_partial(q, k, v, mask, page, chunk, block_n, warps, stages, bufs=None):
    """One launch of the partial kernel (no merge); returns the CompiledKernel (or None)."""
    B, H_q, _ = q.shape
    H_kv, N = k.shape[1], k.shape[2]
    S = -(-N // chunk)
    if bufs is None:
        bufs = (torch.empty(B * H_q * S, D, device="cuda", dtype=torch.float32),
                torch.empty(B * H_q * S, device="cuda", dtype=torch.float32),
                torch.empty(B * H_q * S, device="cuda", dtype=torch.float32))
    acc, mx, den = bufs
    masked = mask is not None
    m = mask if masked else q
    s_mb, s_mh = (mask.stride(0), mask.stride(1)) if masked else (0, 0)
    return _split_kv_partial[(B * H_kv, S)](
        q, k, v, m, acc, mx, den, N, page, D ** -0.5,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), s_mb, s_mh,
        H_KV=H_kv, G=H_q // H_kv, G_PAD=16, D=D, BLOCK_N=block_n, MASKED=masked, CHUNK=chunk,
        num_warps=warps, num_stages=stages)


def occupancy(regs, shared, warps):
    """Resident CTAs per SM on sm_90: 64 warps, 32 CTAs, 64 Ki registers (256 per warp granule),
    228 KiB shared memory with 1 KiB reserved per CTA."""
    by_warps = 64 // warps
    regs_per_warp = math.ceil(max(regs, 1) * 32 / 256) * 256
    by_regs = 65536 // (regs_per_warp * warps)
    by_smem = 233472 // (shared + 1024)
    return min(32, by_warps, by_regs, by_smem), {"by_warps": by_warps, "by_regs": by_regs, "by_smem": by_smem}


def structure(info, out_dir):
    gen = torch.Generator(device="cuda").manual_seed(1)
    q, k, v, mask = make_stream(4096, "vrow", 1, 0.5, gen)
    texts, table = [], {}
    for masked in (False, True):
        for block_n, warps, stages in SHAPES:
            for chunk in (2048,):
                ck = compiled(_split_kv_partial,
                              launch_partial(q, k, v, mask if masked else None, 1, chunk, block_n, warps, stages))
                torch.cuda.synchronize()
                shared = int(ck.metadata.shared)
                ctas, limits = occupancy(ck.n_regs, shared, warps)
                ttgir = ck.asm.get("ttgir", "")
                key = f"masked={int(masked)} block_n={block_n} warps={warps} stages={stages} chunk={chunk}"
                table[key] = {"n_regs": ck.n_regs, "n_spills": ck.n_spills, "shared_bytes": shared,
                              "ctas_per_sm": ctas, **limits,
                              "async_copies": ttgir.count("async_copy_global_to_local"),
                              "plain_loads": ttgir.count("tt.load"),
                              "async_waits": ttgir.count("async_wait")}
                if chunk == 2048 and (block_n, warps, stages) in ((64, 4, 2), (64, 4, 3)):
                    texts.append(f"// ===== {key}\n{ttgir}")
                print(key, table[key], flush=True)
    acc = torch.randn(512 * 128, D, device="cuda")
    mx, den = torch.randn(512 * 128, device="cuda"), torch.rand(512 * 128, device="cuda") + 1
    out = torch.empty(512, D, device="cuda", dtype=torch.bfloat16)
    for s_pad in (16, 64, 128):
        ck = compiled(_split_kv_reduce,
                      _split_kv_reduce[(512,)](acc, mx, den, out, s_pad, D=D, S_PAD=s_pad, num_warps=4))
        torch.cuda.synchronize()
        ctas, limits = occupancy(ck.n_regs, int(ck.metadata.shared), 4)
        table[f"reduce S_PAD={s_pad}"] = {"n_regs": ck.n_regs, "n_spills": ck.n_spills,
                                          "shared_bytes": int(ck.metadata.shared), "ctas_per_sm": ctas, **limits}
    info["partial_kernel_structure"] = table
    (out_dir / f"{TAG}_microbench_sm_ttgir.txt").write_text("\n".join(texts))


# ---------------------------------------------------------------- latency

@triton.jit
def _chase(X, Out, start, n_hops):
    p = tl.load(X + start)
    for _ in range(n_hops):
        p = tl.load(X + p)
    tl.store(Out, p)


@triton.jit
def _chase_under_load(X, Out, start, n_hops, Y, n_y_blocks, Flag, Count, Sink, max_it,
                      BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    if pid == 0:
        p = tl.load(X + start)
        for _ in range(n_hops):
            p = tl.load(X + p)
        tl.store(Out, p)
        tl.store(Flag, (p != -7).to(tl.int32))  # set only once the chase's data is in
    else:
        streamers = tl.num_programs(0) - 1
        acc = tl.zeros([BLOCK], tl.float32)
        it = pid * 0
        done = pid * 0
        while done == 0:
            blk = ((pid - 1 + it * streamers) % n_y_blocks).to(tl.int64)
            acc += tl.load(Y + blk * BLOCK + tl.arange(0, BLOCK)).to(tl.float32)
            it += 1
            done = ((tl.load(Flag, volatile=True) != 0) | (it >= max_it)).to(tl.int32)
        tl.atomic_add(Count, it)
        tl.store(Sink + pid, tl.sum(acc, 0))


def chase_table(n_slots, stride, gen):
    """int64 buffer holding one random cycle over n_slots lines `stride` elements apart."""
    perm = torch.randperm(n_slots, generator=gen, device="cuda")
    x = torch.zeros(n_slots * stride, device="cuda", dtype=torch.int64)
    x[perm * stride] = torch.roll(perm, -1) * stride
    return x, int(perm[0]) * stride


def latency(rows, repeats):
    gen = torch.Generator(device="cuda").manual_seed(2)
    x, start = chase_table(16384, 32, gen)  # 4 MiB, 256 B apart: few TLB pages, cold after a flush
    out = torch.empty(1, device="cuda", dtype=torch.int64)
    cold, hot = Timer("cuda"), HotTimer("cuda")
    for name, timer in (("dram", cold), ("l2", hot)):
        t = {n: timer.times(lambda n=n: _chase[(1,)](x, out, start, n), repeats) for n in (1000, 5000)}
        per_hop = (np.median(t[5000]) - np.median(t[1000])) / 4000
        rows.append(result(f"chase_{name}_unloaded", t[5000], value=per_hop, unit="s/hop",
                           notes="one thread; (t(5000 hops) - t(1000 hops)) / 4000", hops=5000))
        print(name, "latency", per_hop * 1e9, "ns", flush=True)
    y = torch.randn(1 << 29, device="cuda", dtype=torch.bfloat16)  # 1 GiB
    block = 16384
    flag = torch.zeros(1, device="cuda", dtype=torch.int32)
    count = torch.zeros(1, device="cuda", dtype=torch.int32)
    sink = torch.empty(1024, device="cuda", dtype=torch.float32)
    for streamers in (0, 32, 66, 131, 263, 395):
        def run(n, streamers=streamers):
            flag.zero_()
            count.zero_()
            _chase_under_load[(1 + streamers,)](x, out, start, n, y, y.numel() // block, flag, count, sink,
                                                1 << 20, BLOCK=block, num_warps=8)
        t = {}
        for n in (500, 2500):
            t[n] = cold.times(lambda n=n: run(n), repeats)
        per_hop = (np.median(t[2500]) - np.median(t[500])) / 2000
        streamed = int(count.item()) * block * 2
        rows.append(result("chase_dram_loaded", t[2500], nbytes=streamed, value=per_hop, unit="s/hop",
                           notes="CTA 0 chases cold lines while the other CTAs read a 1 GiB buffer in "
                                 "32 KiB blocks until it is done; gb_s = bytes those read / time",
                           streamers=streamers, hops=2500))
        print("loaded", streamers, per_hop * 1e9, "ns", streamed / np.median(t[2500]) / 1e9, "GB/s", flush=True)
    del y


# ---------------------------------------------------------------- partial-kernel scans

def scans(rows, repeats, save):
    gen = torch.Generator(device="cuda").manual_seed(3)
    timer = Timer("cuda")
    chunk = 2048
    for kernel, page, fraction in VARIANTS:
        for grid in GRIDS:
            q, k, v, mask = make_stream(grid * chunk, kernel, page, fraction, gen)
            kept = 1.0 if mask is None else float(mask.float().mean())
            v_bytes = k.numel() * 2 * kept
            for block_n, warps, stages in SCAN_SHAPES:
                chunks = (512, chunk) if grid == 1 else (chunk,)
                for c in chunks:
                    n_ctx = grid * c
                    qq, kk, vv = q, k[:, :, :n_ctx], v[:, :, :n_ctx]
                    mm = None if mask is None else mask[:, :, : n_ctx // page].contiguous()
                    fn = lambda: launch_partial(qq, kk, vv, mm, page, c, block_n, warps, stages)
                    times = timer.times(fn, repeats)
                    nbytes = kk.numel() * 2 + v_bytes * n_ctx / (grid * chunk)
                    rows.append(result("partial_scan", times, nbytes=nbytes, kernel=kernel, page=page,
                                       fraction=fraction, kept=round(kept, 5), ctas=grid, chunk=c,
                                       block_n=block_n, warps=warps, stages=stages))
            print(kernel, page, fraction, grid, f"{rows[-1]['time_s'] * 1e6:.1f} us", flush=True)
            save()
            del q, k, v, mask
    torch.cuda.empty_cache()


def merge_and_launch(rows, repeats):
    hot = HotTimer("cuda")
    x = torch.empty(1, device="cuda")
    rows.append(result("empty_launch_hot", hot.times(lambda: _noop[(1,)](x), repeats)))
    rows.append(result("empty_launch_flushed", Timer("cuda").times(lambda: _noop[(1,)](x), repeats)))
    rows.append(result("empty_launch_pair_flushed",
                       Timer("cuda").times(lambda: (_noop[(1,)](x), _noop[(1,)](x)), repeats)))
    for n_rows in (32, 512):
        for splits in (2, 16, 64, 128):
            s_pad = max(16, triton.next_power_of_2(splits))
            acc = torch.randn(n_rows * splits, D, device="cuda")
            mx = torch.randn(n_rows * splits, device="cuda")
            den = torch.rand(n_rows * splits, device="cuda") + 1
            out = torch.empty(n_rows, D, device="cuda", dtype=torch.bfloat16)
            fn = lambda: _split_kv_reduce[(n_rows,)](acc, mx, den, out, splits, D=D, S_PAD=s_pad, num_warps=4)
            rows.append(result("merge_hot", hot.times(fn, repeats), nbytes=acc.numel() * 4,
                               notes="partials in L2 (no flush), as right after the partial kernel",
                               rows=n_rows, splits=splits))


@triton.jit
def _noop(X):
    pass


# ---------------------------------------------------------------- SDPA structure

def sdpa_structure(info):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.profiler import ProfilerActivity, profile
    import torch.nn.functional as F
    found = {}
    for B, N in ((1, 4096), (1, 32768), (16, 4096), (16, 32768)):
        q = torch.randn(B, 32, D, device="cuda").to(torch.bfloat16)
        k = torch.randn(B, 8, N, D, device="cuda").to(torch.bfloat16)
        v = torch.randn(B, 8, N, D, device="cuda").to(torch.bfloat16)
        call = lambda: F.scaled_dot_product_attention(q.unsqueeze(2), k, v, enable_gqa=True).squeeze(2)
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            call()
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(3):
                    call()
                torch.cuda.synchronize()
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "trace.json")
            prof.export_chrome_trace(path)
            events = json.loads(Path(path).read_text())["traceEvents"]
        kernels = [{"name": e["name"][:240], "dur_us": e.get("dur"),
                    **{k: e.get("args", {}).get(k) for k in ("grid", "block", "registers per thread",
                                                               "shared memory", "blocks per SM",
                                                               "est. achieved occupancy %")}}
                   for e in events if e.get("cat") == "kernel"]
        found[f"B={B} N={N}"] = kernels
        print(B, N, [(x["name"][:60], x["grid"], x["dur_us"]) for x in kernels[: len(kernels) // 3 or 1]],
              flush=True)
    info["sdpa_kernels"] = found


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--tag", default="h100", help="file prefix: the device's short name")
    p.add_argument("--sections", nargs="+", default=["structure", "sdpa", "merge_and_launch", "latency", "scans"])
    args = p.parse_args()
    global TAG
    TAG = args.tag
    args.out.mkdir(parents=True, exist_ok=True)
    from decode_kernels import provenance, write_csv, write_json
    info = provenance(argparse.Namespace(seed=0))
    base = {"device": info["torch_device_name"], "date": info["date_utc"][:10]}
    rows, errors = [], {}

    def save():
        write_csv(args.out / f"{TAG}_microbench_sm.csv", COLUMNS, [{**base, "repeats": 0, **r} for r in rows])
        write_json(args.out / f"{TAG}_microbench_sm.provenance.json", {**info, "errors": errors})
    sections = [("structure", lambda: structure(info, args.out)), ("sdpa", lambda: sdpa_structure(info)),
                ("merge_and_launch", lambda: merge_and_launch(rows, args.repeats)),
                ("latency", lambda: latency(rows, max(10, args.repeats // 2))),
                ("scans", lambda: scans(rows, args.repeats, save))]
    for name, fn in sections:
        if name not in args.sections:
            continue
        try:
            fn()
        except Exception:  # one broken section must not cost the others (single device run)
            errors[name] = traceback.format_exc()[-3000:]
            print(errors[name], flush=True)
        save()
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
