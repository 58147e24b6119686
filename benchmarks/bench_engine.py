"""Engine speed and memory, side by side in one run on this machine (prints ratios).

1. Prefill replay of one layer (n = 4096, d = 128, 4 query heads on 1 KV head, pre-softmax Top-θ):
   the engine (sparse + dense outputs, error, statistics) vs a torch-eager CPU implementation of
   the same semantics that materialises the scores per head, vs numpy BLAS doing only the
   causal QKᵀ and P·V products (the floor).
2. Decode replay: 64 decode steps over a 32k context, same three.
3. Calibration of the same prefill layer vs torch.quantile (per row, 'lower') and torch.kthvalue.
4. Peak memory of one layer's prefill replay at n = 32768 (child process, RSS above the inputs).

Usage: .venv/bin/python benchmarks/bench_engine.py [--quick] [--threads N]
Times are best-of wall clock and process CPU time; on a shared machine the CPU time at
``--threads 1`` is the steadier comparison of work done.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

import numpy as np

from topθ_hw.engine import ThresholdTable, TopTheta, replay_layer
from topθ_hw.engine.calibrate import row_thresholds
from topθ_hw.store import LayerQKV, TraceMeta

K = 64


def make_layer(n_rows, heads=4, kv_heads=1, d=128, seed=0):
    rng = np.random.default_rng(seed)
    # queries correlated with their keys so attention is peaked, as in real layers
    k = rng.standard_normal((kv_heads, n_rows, d), dtype=np.float32)
    q = (rng.standard_normal((heads, n_rows, d), dtype=np.float32)
         + 0.5 * np.repeat(k, heads // kv_heads, axis=0))
    v = rng.standard_normal((kv_heads, n_rows, d), dtype=np.float32)
    return LayerQKV(q=q, k=k, v=v, positions=np.arange(n_rows), scaling=d ** -0.5, sliding_window=None)


def method_for(layer, theta_rows):
    heads, n_rows, d = layer.q.shape
    meta = TraceMeta(model_id="bench", model_file_sha256="0" * 64, architecture="llama", n_layers=1,
                     n_q_heads=heads, n_kv_heads=layer.k.shape[0], head_dim=d, dtype="float32",
                     scalings=[layer.scaling], sliding_windows=[None])
    theta = np.nan_to_num(theta_rows, nan=0.0)[None]
    table = ThresholdTable(lengths=np.arange(1, n_rows + 1), theta=theta, theta_std=np.zeros_like(theta),
                           count=np.ones(theta.shape, np.int64), sdc_dropped_mass=np.zeros_like(theta),
                           layer_k=np.array([K]), meta={"model_id": "bench", "model_file_sha256": "0" * 64,
                                                        "placement": "pre", "sigma": 0.0, "sequences": []})
    method = TopTheta(table)
    method.check(meta)
    return method


CPU_TIMES = {}


def best_of(fn, repeats):
    """Best wall-clock seconds; the matching process CPU seconds go to CPU_TIMES[fn]."""
    best = (float("inf"), 0.0)
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        best = min(best, (time.perf_counter() - t0, time.process_time() - c0))
    CPU_TIMES[fn] = best[1]
    return best[0]


def timed(fn, repeats):
    wall = best_of(fn, repeats)
    return wall, CPU_TIMES[fn]


def torch_replay(layer, theta_rows, row_start):
    """Torch eager, scores materialised per head: masks, dense+sparse softmax, outputs, error, unions."""
    import torch
    q, k, v = (torch.from_numpy(x) for x in (layer.q, layer.k, layer.v))
    heads, n_rows, _ = q.shape
    group = heads // k.shape[0]
    theta = torch.from_numpy(np.nan_to_num(theta_rows, nan=-np.inf)).float()
    causal = torch.ones(n_rows - row_start, n_rows, dtype=torch.bool).tril(row_start)
    union = torch.zeros(k.shape[0], n_rows - row_start, n_rows, dtype=torch.bool)
    for h in range(heads):
        g = h // group
        s = (q[h, row_start:] @ k[g].T) * layer.scaling
        s = s.masked_fill(~causal, float("-inf"))
        m = s.max(dim=-1, keepdim=True).values
        e = torch.exp(s - m)
        p_dense = e / e.sum(-1, keepdim=True)
        keep = (s > theta[h, row_start:, None]) & causal
        keep |= (~keep.any(-1, keepdim=True)) & (s == m)
        e_kept = torch.where(keep, e, 0.0)
        p_sparse = e_kept / e_kept.sum(-1, keepdim=True)
        o_dense, o_sparse = p_dense @ v[g], p_sparse @ v[g]
        err = ((o_sparse - o_dense) ** 2).sum(-1) / (o_dense ** 2).sum(-1)
        kept = keep.sum(-1)
        dropped = 1 - (p_dense * keep).sum(-1)
        union[g] |= keep
        del s, e, p_dense, keep, e_kept, p_sparse
    if row_start == 0:   # prefill: union over 64-row tiles
        tiles = union[:, : n_rows // 64 * 64].view(union.shape[0], -1, 64, n_rows).any(2)
    else:
        tiles = union
    pages = {p: tiles[..., : n_rows // p * p].view(*tiles.shape[:2], -1, p).any(-1).sum(-1) for p in (8, 16, 64)}
    return err, kept, dropped, tiles.sum(-1), pages


def torch_decode_per_step(layer, theta_rows, row_start):
    """Torch eager one decode step at a time, as generation (and the reference code) computes it."""
    for t in range(row_start, layer.q.shape[1]):
        one = LayerQKV(q=layer.q[:, : t + 1], k=layer.k[:, : t + 1], v=layer.v[:, : t + 1],
                       positions=layer.positions[: t + 1], scaling=layer.scaling, sliding_window=None)
        torch_replay(one, theta_rows[:, : t + 1], t)


def blas_floor(layer, row_start, chunk=512):
    """Only the causal QKᵀ and P·V products, chunked like the engine, into reused buffers."""
    q, k, v = layer.q, layer.k, layer.v
    heads, n_rows, d = q.shape
    group = heads // k.shape[0]
    buf = np.empty(chunk * n_rows, np.float32)
    out = np.empty((chunk, d), np.float32)
    for h in range(heads):
        for t0 in range(row_start, n_rows, chunk):
            t1 = min(t0 + chunk, n_rows)
            s = buf[: (t1 - t0) * t1].reshape(t1 - t0, t1)
            np.matmul(q[h, t0:t1], k[h // group, :t1].T, out=s)
            np.matmul(s, v[h // group, :t1], out=out[: t1 - t0])


def torch_calibrate_quantile(layer, row_start, every=1):
    import torch
    q, k = torch.from_numpy(layer.q), torch.from_numpy(layer.k)
    heads, n_rows, _ = q.shape
    out = torch.full((heads, n_rows), float("nan"))
    for h in range(heads):
        s = (q[h] @ k[h // (heads // k.shape[0])].T) * layer.scaling
        for t in range(max(K, row_start), n_rows, every):
            out[h, t] = torch.quantile(s[t, : t + 1], 1 - K / (t + 1), interpolation="lower")
    return out


def torch_calibrate_kthvalue(layer):
    import torch
    q, k = torch.from_numpy(layer.q), torch.from_numpy(layer.k)
    heads, n_rows, _ = q.shape
    causal = torch.ones(n_rows, n_rows, dtype=torch.bool).tril()
    out = []
    for h in range(heads):
        s = ((q[h] @ k[h // (heads // k.shape[0])].T) * layer.scaling).masked_fill(~causal, float("-inf"))
        out.append(torch.kthvalue(s, n_rows - K, dim=-1).values)  # (k+1)-th largest, -inf padding below
    return out


def peak_memory_child(n_rows):
    """Run in a fresh process: peak RSS growth (sampled every 2 ms) and tracemalloc peak of one layer's
    prefill replay at n_rows, above the inputs and a warmed JIT cache."""
    import threading
    import tracemalloc

    import psutil
    layer = make_layer(n_rows, heads=1, kv_heads=1)
    method = method_for(layer, np.full((1, n_rows), 2.0))
    small = make_layer(256, heads=1, kv_heads=1)
    replay_layer(small, method_for(small, np.full((1, 256), 2.0)), 0, 256)  # load the JIT cache first
    proc, peak, done = psutil.Process(), [0], threading.Event()
    base = proc.memory_info().rss

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    t0 = time.perf_counter()
    replay_layer(layer, method, 0, n_rows)
    secs = time.perf_counter() - t0
    done.set()
    sampler.join()
    tracemalloc.start()   # a second run for the numpy-allocation peak (tracing slows it down)
    replay_layer(layer, method, 0, n_rows)
    traced = tracemalloc.get_traced_memory()[1]
    inputs = sum(x.nbytes for x in (layer.q, layer.k, layer.v))
    print(f"{(peak[0] - base) / 2**20:.1f} {traced / 2**20:.1f} {inputs / 2**20:.1f} {secs:.1f}")


def report(name, engine, eager, floor):
    (ew, ec), (tw, tc), (fw, fc) = engine, eager, floor
    print(f"{name}\n{'':8s} wall: engine {ew:7.3f} s | torch eager {tw:7.3f} s ({tw / ew:5.1f}x) | BLAS floor {fw:7.3f} s "
          f"(engine {ew / fw:4.2f}x floor)")
    print(f"{'':8s} cpu:  engine {ec:7.3f} s | torch eager {tc:7.3f} s ({tc / ec:5.1f}x) | BLAS floor {fc:7.3f} s "
          f"(engine {ec / fc:4.2f}x floor)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (n=2048, 8k decode) for a fast look")
    parser.add_argument("--threads", type=int, default=None, help="threads for numba, BLAS and torch")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        peak_memory_child(args.memory_child)
        return 0
    if args.threads and os.environ.get("NUMBA_NUM_THREADS") != str(args.threads):
        for var in ("NUMBA_NUM_THREADS", "TOPTHETA_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                    "MKL_NUM_THREADS"):
            os.environ[var] = str(args.threads)
        os.execv(sys.executable, [sys.executable, *sys.argv])   # BLAS reads its thread count at load
    import numba
    import torch
    n_pre, n_ctx, steps = (2048, 8192, 64) if args.quick else (4096, 32768, 64)
    print(f"threads: numba {numba.get_num_threads()}, torch {torch.get_num_threads()}; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (shared with other work: compare ratios "
          "from the same run)")

    layer = make_layer(n_pre)
    theta = row_thresholds(layer, 0, n_pre, K, False)
    method = method_for(layer, theta)
    replay_layer(make_layer(300), method_for(make_layer(300), theta[:, :300]), 0, 300)   # warm the JIT cache
    report(f"prefill n={n_pre}", timed(lambda: replay_layer(layer, method, 0, n_pre), 2),
           timed(lambda: torch_replay(layer, theta, 0), 2), timed(lambda: blas_floor(layer, 0), 2))
    dec = make_layer(n_ctx + steps)
    dec_theta = np.full((dec.q.shape[0], dec.q.shape[1]), np.nan)
    dec_theta[:, n_ctx:] = np.nanmedian(theta[:, -256:])   # a typical late-row threshold of this layer
    dec_method = method_for(dec, dec_theta)
    engine = timed(lambda: replay_layer(dec, dec_method, 0, n_ctx, decode_only=True), 3)
    floor = timed(lambda: blas_floor(dec, n_ctx), 3)
    report(f"decode {steps} steps at {n_ctx}, torch batched over steps", engine,
           timed(lambda: torch_replay(dec, dec_theta, n_ctx), 3), floor)
    report(f"decode {steps} steps at {n_ctx}, torch one step at a time", engine,
           timed(lambda: torch_decode_per_step(dec, dec_theta, n_ctx), 1), floor)

    cal = timed(lambda: row_thresholds(layer, 0, n_pre, K, False), 2)
    every = 16
    quant = timed(lambda: torch_calibrate_quantile(layer, 0, every), 1)
    kth = timed(lambda: torch_calibrate_kthvalue(layer), 2)
    print(f"calibrate n={n_pre} wall: engine {cal[0]:.3f} s | torch.quantile per row {quant[0] * every:.3f} s "
          f"({quant[0] * every / cal[0]:.1f}x; every {every}th row timed, scaled) | torch.kthvalue batched "
          f"{kth[0]:.3f} s ({kth[0] / cal[0]:.1f}x)")
    print(f"{'':8s} cpu:  engine {cal[1]:.3f} s | torch.quantile {quant[1] * every:.3f} s "
          f"({quant[1] * every / cal[1]:.1f}x) | torch.kthvalue {kth[1]:.3f} s ({kth[1] / cal[1]:.1f}x)")

    n_mem = 8192 if args.quick else 32768
    out = subprocess.run([sys.executable, __file__, "--memory-child", str(n_mem)], capture_output=True,
                         text=True, check=True).stdout.split()
    grown, traced, inputs, secs = (float(x) for x in out)
    print(f"memory   prefill of one layer (1 head, d=128) at n={n_mem}: peak RSS +{grown:.0f} MiB "
          f"(numpy allocations peak {traced:.0f} MiB) above {inputs:.0f} MiB of inputs ({secs:.1f} s); "
          "materialised scores would need "
          f"{n_mem * n_mem * 4 / 2**30:.1f} GiB per head")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
