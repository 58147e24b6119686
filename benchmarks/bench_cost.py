"""Speed of the whole-model cost model: one configuration, and a 1,000-configuration sweep.

    .venv/bin/python benchmarks/bench_cost.py [--points 1000] [--workers 2]

Goals (issue 12): ``toptheta cost`` answers one configuration in under a second; a 1,000-
configuration cost study runs in under 2 minutes here. Each is measured with an empty attention
cache (a fresh ``TOPTHETA_CACHE_DIR``: every attention call simulated) and again with it filled.
The sweep is 5 models × 2 devices × 5 batches × 5 contexts × 2 methods × 2 launch modes, each
point a ``cost_of`` call without its dense twin (dense is a point of its own, as in a study),
spread over ``--workers`` processes. Points that do not fit are counted, not timed apart. Last,
the batch-extrapolated attention (used above 16k work items) against the exact simulation.
``--through-study`` also runs the same 1,000 points as a ``toptheta study`` (Dask, 2 workers, kept
fractions from replaying the shipped trace once per method) with an empty attention cache.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODELS = ["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "llama-3.1-8b", "qwen2.5-7b", "gemma-3-27b"]
GRID = dict(model=MODELS, device=["h100", "h200"], batch=[1, 4, 16, 32, 64], context=[2048, 4096, 8192, 16384, 32768],
            method=["dense", "toptheta"], graphs=[False, True])
CLI = ["-m", "topθ_hw", "cost", "--model", "llama-3.1-8b", "--hardware", "h200", "--context", "32768",
       "--batch", "16", "--method", "toptheta", "--kept-v-fraction", "0.1", "--graphs", "--json"]


def cli_seconds(cache: str) -> float:
    env = {**os.environ, "TOPTHETA_CACHE_DIR": cache, "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, *CLI], env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def in_process_seconds() -> tuple[float, float]:
    """One configuration with its dense twin, in this process: (cold cache, warm cache)."""
    from topθ_hw.cost.run import cost_of
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        cost_of("llama-3.1-8b", "h200", 16, 32768, method="toptheta", kept_v_fraction=0.1, graphs=True)
        times.append(time.perf_counter() - t0)
    return times[0], times[1]


def point(p: dict) -> str:
    from topθ_hw.cost.run import cost_of
    from topθ_hw.errors import UserError
    try:
        cost_of(p["model"], p["device"], p["batch"], p["context"], method=p["method"],
                kept_v_fraction=None if p["method"] == "dense" else 0.1, graphs=p["graphs"], compare=False)
        return "ok"
    except UserError as exc:
        if "does not fit" in str(exc):
            return "does not fit"
        raise


def sweep_seconds(points: list[dict], cache: str, workers: int) -> tuple[float, dict]:
    os.environ["TOPTHETA_CACHE_DIR"] = cache
    t0 = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        outcomes = list(pool.map(point, points, chunksize=8))
    return time.perf_counter() - t0, {o: outcomes.count(o) for o in set(outcomes)}


STUDY = """[study]
name = "bench_cost"
[axes]
model = {model}
device = {device}
batch = {batch}
context = {context}
method = {method}
graphs = [false, true]
k = [64]
"""


def study_seconds(cache: str, work: Path) -> tuple[float, int]:
    """End to end through ``run_study`` (replays included), with an empty attention cache."""
    from topθ_hw.study.run import run_study
    os.environ["TOPTHETA_CACHE_DIR"] = cache
    text = STUDY.format(**{k: repr(v).replace("'", '"') for k, v in GRID.items()})
    (work / "study.toml").write_text(text)
    t0 = time.perf_counter()
    results = run_study(work / "study.toml", work / "study.parquet", workers=2, progress=False, log=sys.stdout)
    return time.perf_counter() - t0, len(results)


def extrapolation_errors() -> list[str]:
    from topθ_hw.cost.attention import decode_attention
    from topθ_hw.sim import load_device
    device, lines = load_device("h200"), []
    for batch, context, method, f in [(128, 16384, "dense", 1.0), (128, 16384, "toptheta", 0.1),
                                      (64, 32768, "dense", 1.0), (64, 32768, "toptheta", 0.1)]:
        fast = decode_attention(device, batch, context, 32, 8, 128, f, method)
        exact = decode_attention(device, batch, context, 32, 8, 128, f, method, exact=True)
        lines.append(f"  B={batch} N={context} {method}: extrapolated {fast['extrapolated']}, "
                     f"error {fast['time_s'] / exact['time_s'] - 1:+.1%}")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--through-study", action="store_true", help="also time the points as a toptheta study")
    args = ap.parse_args()
    points = [dict(zip(GRID, v)) for v in itertools.product(*GRID.values())][: args.points]
    with tempfile.TemporaryDirectory() as cache:
        os.environ["TOPTHETA_CACHE_DIR"] = cache
        cold, warm = in_process_seconds()
        print(f"one configuration with its dense twin, in process: cold cache {cold:.2f} s, warm {warm:.3f} s "
              "(goal < 1 s)")
        cli = cli_seconds(cache)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "topθ_hw", "--help"], env={**os.environ, "PYTHONPATH": str(REPO)},
                       check=True, capture_output=True)
        bare = time.perf_counter() - start
        print(f"the same as a `toptheta cost` process: {cli:.2f} s, of which {bare:.2f} s is the CLI's own start-up "
              "(`toptheta --help`: every stage's parser and imports)")
        s_cold, outcomes = sweep_seconds(points, cache, args.workers)
        s_warm, _ = sweep_seconds(points, cache, args.workers)
        print(f"{len(points)} configurations on {args.workers} workers: cold cache {s_cold:.1f} s, warm {s_warm:.1f} s "
              f"(goal < 120 s); outcomes {outcomes}")
        if args.through_study:
            with tempfile.TemporaryDirectory() as study_cache, tempfile.TemporaryDirectory() as work:
                seconds, n = study_seconds(study_cache, Path(work))
            print(f"the same as `toptheta study` ({n} points, replays included, empty cache): {seconds:.1f} s")
        print("batch-extrapolated attention against the exact simulation (h200, 32 q / 8 KV heads, d = 128):")
        print("\n".join(extrapolation_errors()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
