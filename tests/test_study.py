"""Studies on the shipped trace and devices: validation before work, kept fractions from real
replays, identical results in-process and on Dask, and resumption after a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from topθ_hw.engine import TopK
from topθ_hw.engine.run import replay_trace
from topθ_hw.errors import UserError
from topθ_hw.sim import load_device
from topθ_hw.store import open_trace
from topθ_hw.study.evaluate import evaluate_point, scaled_device
from topθ_hw.study.kept import kept_fractions, kept_masks, stretch
from topθ_hw.study.parts import parts_dir
from topθ_hw.study.run import build_tasks, run_study, validate
from topθ_hw.tables import read_table

REPO = Path(__file__).resolve().parents[1]
TRACE = REPO / "traces" / "smollm2-135m.zarr"
STUDY = f"""
[study]
name = "test"
[sparsity]
layers = [0, 1]
[axes]
device = ["h100", "mi300x"]
method = ["dense", "topk"]
k = [32, 64]
context = [2048, 16384]
batch = [1, 4]
page_size = [1, 16, 64]
bandwidth_scale = [1.0, 2.0]
trace = ["{TRACE}"]
"""
N_POINTS = 2 * 2 * 2 * 2 * 2 * 3 * 2


def write_study(tmp_path: Path, text: str = STUDY) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def in_process(tmp_path_factory) -> pd.DataFrame:
    """The reference: the test study run in this process, without Dask."""
    tmp = tmp_path_factory.mktemp("ref")
    return run_study(write_study(tmp), tmp / "ref.parquet", workers=0, progress=False)


@pytest.mark.parametrize("edit, key", [
    (("[axes]", "[axes]\ncolour = [1]"), "axes.colour"),
    (("[study]", "[study]\nowner = 'me'"), "study.owner"),
    (("[sparsity]", "[sparsity]\nsigmaa = 0.1"), "sparsity.sigmaa"),
    (('context = [2048, 16384]', "context = []"), "axes.context"),
    (('device = ["h100", "mi300x"]', 'device = ["h100", "h900"]'), "axes.device"),
    (('method = ["dense", "topk"]', 'method = ["dense", "quest"]'), "axes.method"),
    (("page_size = [1, 16, 64]", "page_size = [1, 12]"), "axes.page_size"),
    (("k = [32, 64]", "k = [0]"), "axes.k"),
    (("bandwidth_scale = [1.0, 2.0]", "bandwidth_scale = ['fast']"), "axes.bandwidth_scale"),
    ((f'trace = ["{TRACE}"]', 'trace = ["traces/nope.zarr"]'), "axes.trace"),
    (("[axes]", "[kernel]\nq_heads = 30\nkv_heads = 8\n[axes]"), "kernel"),
    (("[axes]", "[methods.mine]\nengine = 'quest'\n[axes]"), "methods.mine.engine"),
    (("[axes]", "[axes]\nsram_scale = [0.01]"), "axes.sram_scale"),
])
def test_bad_study_is_refused_before_any_work(tmp_path, edit, key):
    path = write_study(tmp_path, STUDY.replace(*edit))
    out = tmp_path / "out.parquet"
    with pytest.raises(UserError, match=key.replace(".", r"\.")) as err:
        run_study(path, out, workers=0, progress=False)
    assert str(path) in str(err.value)
    assert not out.exists() and not parts_dir(out).exists()


def test_points_are_the_cartesian_product(tmp_path):
    tasks = build_tasks(validate(write_study(tmp_path)))
    assert len(tasks) == N_POINTS == len({t["point_hash"] for t in tasks})
    assert {t["device"] for t in tasks} == {"h100", "mi300x"}


def test_kept_fractions_come_from_the_replay(in_process):
    """At the measured context, stretched masks give the engine's own page counts; far past it,
    the kept-row count is held (fraction × context is the same)."""
    trace = open_trace(TRACE)
    stats, _ = replay_trace(trace, TopK(k=64), layers=[0, 1])
    decode = stats[(stats["level"] == "group") & (stats["phase"] == "decode")]
    masks = kept_masks(decode)
    n = int(masks.contexts[0])
    at_n = kept_masks(decode[decode["context_len"] == n])
    measured = kept_fractions(at_n, n)
    for page in (1, 16, 64):
        rows = decode[decode["context_len"] == n]
        assert measured[page] == pytest.approx(rows[f"pages_needed_{page}"].sum() / rows[f"pages_total_{page}"].sum())
    topk = in_process[(in_process["method"] == "topk") & (in_process["k"] == 64) & (in_process["page_size"] == 1)]
    kept_rows = topk.groupby("context")["kept_v_fraction"].first() * topk.groupby("context")["context"].first()
    assert kept_rows.iloc[0] == pytest.approx(kept_rows.iloc[-1], rel=1e-6)
    assert set(in_process.loc[in_process["method"] == "dense", "kept_v_fraction"]) == {1.0}


def test_stretch_keeps_count_sinks_and_recent_window():
    positions = np.array([0, 3, 100, 200, 300, 500, 511])
    out = stretch(positions, 512, 32768)
    assert len(out) == len(positions)
    assert list(out[:2]) == [0, 3] and list(out[-2:]) == [32768 - 12, 32767]


def test_bandwidth_and_sram_scaling_derive_a_device(tmp_path):
    h100 = load_device("h100")
    fast = scaled_device(h100, 2.0, 0.5)
    assert fast.memory.hbm_bandwidth_GBps == 2 * h100.memory.hbm_bandwidth_GBps
    assert fast.compute.sram_per_unit_KiB == 0.5 * h100.compute.sram_per_unit_KiB
    assert load_device("h100") == h100  # the shipped device is untouched
    task = next(t for t in build_tasks(validate(write_study(tmp_path)))
                if t["method"] == "dense" and t["context"] == 16384 and t["batch"] == 4)
    task.update(kept_v_fraction=1.0, kept_source="dense", kept_rows_fraction=1.0)
    slow, quick = (evaluate_point({**task, "bandwidth_scale": s}) for s in (1.0, 2.0))
    assert quick["time_s"] < slow["time_s"] and quick["bytes_total"] == slow["bytes_total"]


def test_local_cluster_and_scheduler_give_identical_results(in_process, tmp_path):
    from dask.distributed import LocalCluster

    study = write_study(tmp_path)
    local = run_study(study, tmp_path / "local.parquet", workers=2, progress=False)
    pd.testing.assert_frame_equal(local, in_process)
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0") as cluster:
        remote = run_study(study, tmp_path / "remote.parquet", scheduler=cluster.scheduler_address,
                           progress=False)
    pd.testing.assert_frame_equal(remote, in_process)
    assert len(in_process) == N_POINTS and in_process["time_s"].gt(0).all()


def test_killed_study_resumes_without_losing_finished_points(in_process, tmp_path):
    study, out = write_study(tmp_path), tmp_path / "results.parquet"
    cmd = [sys.executable, "-m", "topθ_hw", "study", str(study), "--out", str(out), "--workers", "0",
           "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    parts = parts_dir(out)
    deadline = time.monotonic() + 120
    while not list(parts.glob("part-*.parquet")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = sum(len(read_table(p)[0]) for p in parts.glob("part-*.parquet"))
    assert 0 < finished < N_POINTS, "the kill should land mid-way"
    assert not out.exists()
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
    assert f"{N_POINTS} points, {finished} already done, {N_POINTS - finished} to run" in again.stderr
    pd.testing.assert_frame_equal(read_table(out, kind="study-results")[0], in_process)
    assert not parts.exists()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
    assert f"{N_POINTS} already done, 0 to run" in done.stderr and "replaying" not in done.stderr
