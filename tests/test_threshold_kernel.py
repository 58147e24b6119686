"""The fused Top-θ decode kernel (sims/validation/kernels.py) and the simulator's model of it.

The Triton kernels run on the CPU under TRITON_INTERPRET=1 (in a subprocess, since the variable must
be set before Triton is imported) and are checked against a float64 reference; the model of the
threshold kernel is checked for the mechanisms it claims (no mask round trip, whole-tile skipping)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from topθ_hw.errors import UserError
from topθ_hw.sim import simulate_kernel
from topθ_hw.sim.tiles import KernelOptions

ROOT = Path(__file__).resolve().parents[1]
THRESHOLD, PRECOMPUTED = KernelOptions(mask="threshold"), KernelOptions(mask="precomputed")


def run(fraction, fetch, kernel, device="h200", method="toptheta"):
    return simulate_kernel(device, 16, 32768, 32, 8, 128, "bf16", fraction, fetch, method, kernel=kernel)


def test_threshold_kernel_matches_float64_reference_on_cpu():
    pytest.importorskip("triton")
    out = subprocess.run([sys.executable, str(ROOT / "sims/validation/decode_grid.py"), "--cpu-check"],
                         env={**os.environ, "TRITON_INTERPRET": "1"}, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [line for line in out.stdout.splitlines() if line.startswith("page")]
    assert len(lines) == 3  # rows, 16- and 64-token pages; each checked for both families
    for line in lines:
        rel = [float(x) for x in line.split("rel ")[1].split(" / ")]
        assert max(rel) < 2e-2


def test_threshold_kernel_has_no_mask_round_trip():
    """Same bytes, but the precomputed kernel waits for its keep bytes before each V copy."""
    for fetch in ("row", "page16", "page64"):
        t, p = run(0.1, fetch, THRESHOLD), run(0.1, fetch, PRECOMPUTED)
        assert t["bytes_v"] == p["bytes_v"]
        assert t["time_s"] < p["time_s"]


def test_threshold_time_falls_with_kept_fraction_and_respects_the_byte_bound():
    dense = run(1.0, "row", THRESHOLD, method="dense")
    times = [run(f, "page64", THRESHOLD)["time_s"] for f in (1.0, 0.5, 0.3, 0.1, 0.03)]
    assert all(a > b for a, b in zip(times, times[1:]))
    # K is read in full: the speedup can never beat 1 / (0.5 + 0.5 f) (SPEC.md)
    assert dense["time_s"] / times[-1] < 1 / (0.5 + 0.5 * 0.03)
    assert dense["time_s"] / times[-1] > 1.3


def test_kernel_description_names_the_build():
    r = simulate_kernel("h100", 4, 8192, 32, 8, 128, "bf16", 0.2, "page16", "toptheta",
                        split_tokens=1024, kernel=KernelOptions(block_keys=128, warps=8, stages=2))
    assert r["kernel"] == {"family": "triton-splitkv", "mask": "threshold", "block_keys": 128, "warps": 8,
                           "stages": 2, "split_tokens": 1024, "label": r["kernel"]["label"]}
    assert "threshold, 128-key tiles, 8 warps, 2 stages, 1024-key splits" in r["kernel"]["label"]


@pytest.mark.parametrize("kwargs, split, message", [
    (dict(block_keys=96), 512, "--block-keys 96"),
    (dict(warps=6), 512, "--warps 6"),
    (dict(stages=9), 512, "--stages 9"),
    (dict(mask="sorted"), 512, "--mask 'sorted'"),
    (dict(block_keys=128), 576, "--split-tokens 576: must be a positive multiple of --block-keys 128"),
    (dict(block_keys=256, stages=6), 512, "needs .* KiB of shared memory"),
])
def test_impossible_kernel_configurations_are_refused(kwargs, split, message):
    with pytest.raises(UserError, match=message):
        simulate_kernel("h100", 1, 4096, 32, 8, 128, "bf16", 0.5, "row", split_tokens=split,
                        kernel=KernelOptions(**kwargs))


def test_golden_section_finds_the_minimum_the_threshold_fit_relies_on():
    from topθ_hw.sim.crossval import golden_section
    assert golden_section(lambda x: (x - 1234.5) ** 2, 600.0, 2400.0) == pytest.approx(1234.5, abs=20)
    assert golden_section(lambda x: abs(x - 0.3), 0.2, 1.0) == pytest.approx(0.3, abs=0.01)


@pytest.mark.parametrize("axis, value, message", [
    ("warps", 3, "--warps 3"), ("mask", '"sorted"', "--mask 'sorted'"),
    ("split_tokens", 96, "axes.split_tokens"),
])
def test_study_kernel_axes_are_checked_on_load(tmp_path, axis, value, message):
    from topθ_hw.study.spec import load_study
    study = tmp_path / "s.toml"
    study.write_text('[study]\nname = "s"\n[axes]\ndevice = ["h100"]\ncontext = [4096]\n'
                     f"{axis} = [{value}]\n")
    with pytest.raises(UserError, match=message):
        load_study(study)


def test_sim_results_name_the_kernel_they_assume():
    from topθ_hw.sim import load_device
    from topθ_hw.sim.stats import sim_results_meta
    h100 = load_device("h100")
    meta = sim_results_meta(h100, {"method": "toptheta"}, "stats.parquet", "page16", 1024,
                            kernel=KernelOptions(mask="precomputed", block_keys=128, warps=8, stages=2))
    assert meta["kernel"] == "triton-splitkv precomputed, 128-key tiles, 8 warps, 2 stages, 1024-key splits"
    assert "pallas-tpu" in sim_results_meta(load_device("tpu-v5e"), {"method": "toptheta"}, "stats.parquet")["kernel"]
