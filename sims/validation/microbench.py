"""H100 microbenchmarks that calibrate the simulator: streaming read, device-to-device copy,
row gathers at V-row granularity (256 B = d 128 bf16, 128 B = d 64 bf16) and launch latency."""
import time

import numpy as np
import torch
import triton
import triton.language as tl


@triton.jit
def _read_tile_sum(X, Out, n, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(X + offs, mask=offs < n, other=0.0)
    tl.store(Out + pid, tl.sum(x.to(tl.float32), 0))


@triton.jit
def _gather_rows_sum(X, Idx, Out, n_idx, D: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    ok = offs < n_idx
    rows = tl.load(Idx + offs, mask=ok, other=0).to(tl.int64)
    x = tl.load(X + rows[:, None] * D + tl.arange(0, D)[None, :], mask=ok[:, None], other=0.0)
    tl.store(Out + pid * D + tl.arange(0, D), tl.sum(x.to(tl.float32), 0))


@triton.jit
def _empty(X):
    pass


class Timer:
    """Device-event timing of one call after a clean L2 (a 256 MB read evicts the 50 MB L2
    without leaving dirty lines to write back during the timed call). Repetitions are queued in
    groups behind a GPU spin (torch.cuda._sleep), so the host is always ahead of the GPU and the
    events measure GPU time, not Python launch gaps."""

    def __init__(self, device, flush_bytes=256 << 20, group=10):
        self.flush_buf = torch.ones(flush_bytes // 4, device=device, dtype=torch.float32)
        self.flush_out = torch.empty((), device=device, dtype=torch.float32)
        self.group = group
        self.spin_cycles = 4_000_000  # about 2 ms at 1.98 GHz; doubled when the host is slower
        self.host_behind = 0

    def flush(self):
        torch.sum(self.flush_buf, dim=0, out=self.flush_out)

    def _queue_group(self, fn, pairs):
        torch.cuda._sleep(self.spin_cycles)
        t0 = time.perf_counter()
        for start, end in pairs:
            self.flush()
            start.record()
            fn()
            end.record()
        host_s = time.perf_counter() - t0
        torch.cuda.synchronize()
        if host_s > 0.8 * self.spin_cycles / 1.98e9:  # the GPU may have waited for the host
            self.host_behind += 1
            self.spin_cycles *= 2
            return False
        return True

    def times(self, fn, repeats, warmup=5):
        for _ in range(warmup):
            fn()
        torch.cuda.synchronize()
        out = []
        while len(out) < repeats:
            pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                     for _ in range(min(self.group, repeats - len(out)))]
            if self._queue_group(fn, pairs):  # a group the host did not keep ahead of is redone
                out += [s.elapsed_time(e) * 1e-3 for s, e in pairs]
        return np.array(out)


def summary(times):
    p10, p50, p90 = np.quantile(times, [0.1, 0.5, 0.9])
    return {"time_s": p50, "time_s_p10": p10, "time_s_p90": p90, "repeats": len(times)}


def row(bench, nbytes, times, notes):
    s = summary(times)
    return {"bench": bench, "bytes": int(nbytes), **s, "gb_s": nbytes / s["time_s"] / 1e9, "notes": notes}


def read_benches(timer, device, repeats):
    rows = []
    big = torch.randn(1 << 30, device=device, dtype=torch.bfloat16)  # 2 GiB
    for mib in (8, 16, 32, 64, 128, 256, 512, 1024, 2048):
        n = (mib << 20) // 2
        x = big[:n]
        out = torch.empty(triton.cdiv(n, 4096), device=device, dtype=torch.float32)
        fn = lambda: _read_tile_sum[(out.numel(),)](x, out, n, BLOCK=4096, num_warps=8)
        rows.append(row(f"read_triton_{mib}MiB", 2 * n, timer.times(fn, repeats),
                        "Triton tile-sum over bf16, 8 KiB per program, L2 flushed before each rep"))
    f32 = big.view(torch.float32)
    res = torch.empty((), device=device, dtype=torch.float32)
    rows.append(row("read_torch_sum_2048MiB", f32.numel() * 4,
                    timer.times(lambda: torch.sum(f32, dim=0, out=res), repeats),
                    "torch.sum over float32 view of the 2 GiB buffer"))
    dst = torch.empty(1 << 29, device=device, dtype=torch.bfloat16)
    src = big[: 1 << 29]
    rows.append(row("copy_d2d_1024MiB", 2 * dst.numel() * 2,
                    timer.times(lambda: dst.copy_(src), repeats),
                    "dst.copy_(src) 1 GiB; bytes count read + write"))
    return rows


def gather_benches(timer, device, repeats, seed):
    rows = []
    gen = torch.Generator(device=device).manual_seed(seed)
    buf = torch.randn(1 << 31, device=device, dtype=torch.bfloat16)  # 4 GiB
    for d in (128, 64):
        n_rows = buf.numel() // d
        table = buf.view(n_rows, d)
        for order, fraction in (("sorted", 1.0), ("sorted", 0.25), ("sorted", 0.05), ("random", 0.05)):
            n_idx = int(n_rows * fraction)
            if fraction == 1.0:
                idx = torch.arange(n_rows, device=device, dtype=torch.int32)
            else:
                pick = torch.randperm(n_rows, generator=gen, device=device)[:n_idx]
                idx = (pick.sort().values if order == "sorted" else pick).to(torch.int32)
            out = torch.empty(triton.cdiv(n_idx, 256), d, device=device, dtype=torch.float32)
            fn = lambda: _gather_rows_sum[(out.shape[0],)](table, idx, out, n_idx, D=d, BLOCK=256,
                                                            num_warps=8)
            rows.append(row(f"gather_{2 * d}B_{order}_f{fraction}", n_idx * 2 * d, timer.times(fn, repeats),
                            f"{n_idx} rows of {2 * d} B out of {n_rows} in a 4 GiB buffer, {order} "
                            f"indices; bytes = rows only (int32 index reads add {4 / (2 * d):.1%})"))
            del idx, out
    return rows


def launch_benches(timer, device, repeats):
    x = torch.empty(1, device=device)
    launch = lambda: _empty[(1,)](x)
    rows = [row("empty_kernel_event", 0, timer.times(launch, repeats),
                "one empty Triton launch between two events after an L2 flush: the fixed cost "
                "the attention timings carry per launch")]
    two = lambda: (_empty[(1,)](x), _empty[(1,)](x))
    rows.append(row("empty_kernel_pair_event", 0, timer.times(two, repeats),
                    "two empty Triton launches between two events (split-KV + reduce pattern)"))
    n = 1000
    torch.cuda.synchronize()
    walls = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            launch()
        torch.cuda.synchronize()
        walls.append((time.perf_counter() - t0) / n)
    rows.append(row("empty_kernel_host_launch", 0, np.array(walls),
                    f"host wall time per launch over {n} back-to-back Triton launches (Python launch cost)"))
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        launch()
        torch.cuda.synchronize()
        with torch.cuda.graph(graph, stream=stream):
            for _ in range(100):
                launch()
    times = timer.times(graph.replay, repeats) / 100
    rows.append(row("empty_kernel_graph_replay", 0, times,
                    "per kernel: one CUDA-graph replay of 100 empty Triton kernels / 100"))
    return rows


def run_microbench(device, repeats, seed):
    timer = Timer(device)
    rows = read_benches(timer, device, repeats)
    torch.cuda.empty_cache()
    rows += gather_benches(timer, device, repeats, seed)
    torch.cuda.empty_cache()
    rows += launch_benches(timer, device, repeats)
    return rows
