"""Capture overhead and trace read time, measured side by side (not a timed test).

Goals (issue 2): capture at most 30 % slower than the same generation without the hook;
the shipped trace opens and one layer reads in under a second.

    .venv/bin/python benchmarks/bench_capture.py [--prompt 512] [--new 64] [--repeats 3]

Runs are interleaved (plain, hook only, full capture, plain, ...) and the median of each
is reported, so load from other processes hits all variants alike. Both wall time and
process CPU time (all threads, the writer thread included) are printed: wall time is what a
user waits, CPU time the work capture adds (steadier on a shared machine).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT = ROOT / "traces/texts/austen-emma.txt"
SHIPPED = ROOT / "traces/smollm2-135m.zarr"


class DiscardSink:
    def append(self, layer, q, k, v):
        pass


def plain_generation(lm, ids, new_tokens, sink=None):
    """The greedy loop capture runs, with (``sink``) or without the attention hook."""
    from contextlib import nullcontext

    from topθ_hw.capture.hook import capture
    from topθ_hw.capture.run import greedy_generate

    with capture(lm.model, sink) if sink else nullcontext():
        greedy_generate(lm.model, ids, new_tokens)


def timed(fn) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of fn()."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def bench_overhead(prompt: int, new: int, repeats: int) -> None:
    from topθ_hw.capture.models import load_model
    from topθ_hw.capture.run import capture_texts

    lm = load_model("smollm2-135m", "bfloat16")
    ids = list(lm.tokenizer(TEXT.read_text()).input_ids[:prompt])
    tmp = Path(tempfile.mkdtemp())
    runs = {"plain generation": [], "hook, rows discarded": [], "full capture to store": []}
    plain_generation(lm, ids, 2)  # warm-up
    for r in range(repeats):
        runs["plain generation"].append(timed(lambda: plain_generation(lm, ids, new)))
        runs["hook, rows discarded"].append(timed(lambda: plain_generation(lm, ids, new, DiscardSink())))
        runs["full capture to store"].append(timed(lambda: capture_texts(
            [TEXT], tmp / f"r{r}.zarr", loaded=lm, max_prompt_tokens=prompt, max_new_tokens=new,
            progress=False)))
    import torch

    print(f"SmolLM2-135M bf16 on CPU ({torch.get_num_threads()} torch threads), prompt {len(ids)} + {new} "
          f"greedy decode steps, median of {repeats}:")
    base = [statistics.median(t[i] for t in runs["plain generation"]) for i in (0, 1)]
    for name, times in runs.items():
        med = [statistics.median(t[i] for t in times) for i in (0, 1)]
        print(f"  {name:<24} wall {med[0]:7.2f} s x{med[0] / base[0]:.3f}   cpu {med[1]:7.2f} s "
              f"x{med[1] / base[1]:.3f}   (wall runs: {', '.join(f'{t[0]:.2f}' for t in times)})")
    over = [statistics.median(t[i] for t in runs["full capture to store"]) / base[i] - 1 for i in (0, 1)]
    hook = statistics.median(t[1] for t in runs["hook, rows discarded"]) / base[1] - 1
    print(f"capture overhead: wall {over[0]:+.1%}, CPU {over[1]:+.1%} (goal <= +30%); the hook alone: "
          f"CPU {hook:+.1%}, the rest is compressing and checksumming the store (in a writer thread)")


def bench_read() -> None:
    if not SHIPPED.exists():
        print(f"{SHIPPED}: not there; skip read timing")
        return
    # A fresh interpreter, so imports and file-system metadata reads count as a user sees them.
    code = ("import time; t0 = time.perf_counter(); from topθ_hw.store import open_trace; t1 = time.perf_counter();"
            f"tr = open_trace({str(SHIPPED)!r}); s = tr.sequence(tr.sequences[0]); L = s.layer(15);"
            "t2 = time.perf_counter(); print(f'{t1 - t0:.3f} {t2 - t1:.3f} {L.q.shape}')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    print(f"shipped trace: import {float(out[0]):.3f} s, open + read layer 15 of {SHIPPED.name} "
          f"{float(out[1]):.3f} s (goal < 1 s)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompt", type=int, default=512)
    p.add_argument("--new", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1: no OpenMP spin-waiting inflates CPU time on a busy machine)")
    p.add_argument("--read-only", action="store_true", help="only time the shipped trace read")
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    bench_read()
    if not args.read_only:
        bench_overhead(args.prompt, args.new, args.repeats)


if __name__ == "__main__":
    main()
