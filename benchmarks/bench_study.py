"""A 1,000-point study, end to end, and how it scales from one Dask worker to two.

    .venv/bin/python benchmarks/bench_study.py [--study sims/studies/toptheta_vs_topk.toml]

Goals (issue 5): the whole study finishes in at most 10 minutes on this machine, and a 2-worker
local cluster evaluates the points at least 1.7× faster than a 1-worker one. The replays that
give the kept fractions (one Dask task per trace and k) run once, on the 2-worker cluster; the
scaling is measured on the point evaluation, each cluster started before its clock starts
(cluster start-up is printed separately). Both runs must give identical results.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from topθ_hw.study import parts
from topθ_hw.study.evaluate import evaluate_point
from topθ_hw.study.measure import measure_all
from topθ_hw.study.run import assemble, attach_kept, build_tasks, validate
from topθ_hw.study.runner import dask_client, run_tasks
from topθ_hw.tables import read_table

REPO = Path(__file__).resolve().parents[1]


def evaluate(tasks: list[dict], client, work_dir: Path, name: str) -> tuple[pd.DataFrame, float]:
    """(results, seconds) evaluating every point on ``client``'s workers."""
    part_dir = work_dir / f"parts-{name}"
    t0 = time.perf_counter()
    run_tasks(tasks, evaluate_point, lambda rows: parts.write_part(part_dir, rows), client=client, progress=False)
    seconds = time.perf_counter() - t0
    rows = pd.concat([read_table(p)[0] for p in part_dir.glob("part-*.parquet")], ignore_index=True)
    return assemble(tasks, rows), seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default=str(REPO / "sims" / "studies" / "toptheta_vs_topk.toml"))
    args = ap.parse_args()
    t_start = time.perf_counter()
    study = validate(args.study)
    tasks = build_tasks(study)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        with dask_client(workers=2) as client:
            start2 = time.perf_counter() - t0
            t0 = time.perf_counter()
            attach_kept(tasks, measure_all(study, tasks, tmp, client=client, log=sys.stdout))
            replay_s = time.perf_counter() - t0
            two, eval2 = evaluate(tasks, client, tmp, "2")
        total_s = time.perf_counter() - t_start
        t0 = time.perf_counter()
        with dask_client(workers=1) as client:
            start1 = time.perf_counter() - t0
            one, eval1 = evaluate(tasks, client, tmp, "1")
    pd.testing.assert_frame_equal(one, two)
    print(f"study {study.name}: {len(tasks)} points, {len(study.axes['device'])} devices")
    print(f"  replays for kept fractions (one Dask task per trace and k, 2 workers): {replay_s:7.1f} s")
    print(f"  evaluate on 1 worker : {eval1:7.1f} s  ({len(tasks) / eval1:6.1f} points/s; cluster start {start1:.1f} s)")
    print(f"  evaluate on 2 workers: {eval2:7.1f} s  ({len(tasks) / eval2:6.1f} points/s; cluster start {start2:.1f} s)")
    print(f"  speed-up 2 workers vs 1: {eval1 / eval2:.2f}x (goal >= 1.7x); "
          f"with start-up: {(start1 + eval1) / (start2 + eval2):.2f}x")
    print(f"  whole study on 2 workers (validate, start, replay, evaluate): {total_s:7.1f} s (goal <= 600 s)")
    print("  results identical on 1 and 2 workers: yes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
