"""The simulator against real H100 decode-attention timings (sims/validation/, GPU helper).

Every parameter comes from the device file (datasheet figures plus the H100 microbenchmarks:
streaming and gather bandwidth, launch overhead and gap, loaded latency) or from the measured
kernel's own structure (its split length from the provenance log; a kept-mask load before the V
load, i.e. two dependent round trips per key tile; torch SDPA's flash backend splitting as
FlashAttention-2's heuristic does). Nothing is fitted to the timed points.

Points whose own repetitions spread more than 2x between p10 and p90 are reported but not
scored: the first sweep's README says host launch gaps leaked into some batch-1 timings.
"""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from topθ_hw.sim import load_device, simulate_kernel
from topθ_hw.sim.model import KernelOptions
from topθ_hw.sim.simulate import fa2_split_tokens

VALIDATION = Path(__file__).resolve().parents[1] / "sims" / "validation"
COLUMNS = ["device", "date", "kernel", "batch", "context", "q_heads", "kv_heads", "head_dim", "dtype",
           "kept_v_fraction", "page_size", "time_s", "time_s_p10", "time_s_p90", "bytes_k", "bytes_v",
           "bytes_total", "repeats"]
TARGET = 0.10  # the per-point goal: met by the bandwidth-bound points, not yet by all
# What the model reaches today (regression guard, not the goal): all points, then batch 16.
BOUNDS = {"all": (0.12, 0.50), "batch 16": (0.07, 0.20)}


def measured_points():
    with open(VALIDATION / "h100_decode_attention.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and set(COLUMNS) <= set(rows[0]), "validation CSV does not follow the COMMON.md schema"
    return rows


def kernel_configs():
    log = json.loads((VALIDATION / "h100_decode_attention.provenance.json").read_text())["checks_and_configs"]
    return {key: v["config"] for key, v in log.items() if "config" in v}


def predict(row, device, configs):
    B, N, kernel = int(row["batch"]), int(row["context"]), row["kernel"]
    page = int(row["page_size"])
    shape = (B, N, int(row["q_heads"]), int(row["kv_heads"]), int(row["head_dim"]), row["dtype"])
    if kernel in ("dense", "sdpa"):
        split = (fa2_split_tokens(B, shape[3], N, device.compute.units) if kernel == "sdpa"
                 else configs[f"dense B={B} N={N}"]["chunk"])
        return simulate_kernel(device, *shape, 1.0, "row", "dense", split_tokens=split)
    fetch = "row" if kernel == "vrow" else f"page{page}"
    return simulate_kernel(device, *shape, float(row["kept_v_fraction"]), fetch, "toptheta",
                           split_tokens=configs[f"dense B={B} N={N}"]["chunk"],
                           kernel=KernelOptions())


@pytest.fixture(scope="module")
def predictions():
    device, configs = load_device("h100"), kernel_configs()
    out = []
    for row in measured_points():
        sim = predict(row, device, configs)
        measured = float(row["time_s"])
        stable = float(row["time_s_p90"]) <= 2 * float(row["time_s_p10"])
        out.append({"row": row, "sim": sim, "error": sim["time_s"] / measured - 1, "stable": stable})
    return out


def test_bytes_match_the_kernels_by_construction(predictions):
    for p in predictions:
        row, sim = p["row"], p["sim"]
        assert sim["bytes_k"] == int(row["bytes_k"])
        if row["kernel"] != "page":  # page kernels: whole pages, the CSV counts the same pages' rows
            assert sim["bytes_v"] == pytest.approx(int(row["bytes_v"]), rel=0.02)


def error_summary(points):
    errors = np.array([abs(p["error"]) for p in points])
    worst = max(points, key=lambda p: abs(p["error"]))["row"]
    text = (f"{len(points)} points: median |error| {np.median(errors):.3f}, max {errors.max():.3f} "
            f"({worst['kernel']} B={worst['batch']} N={worst['context']} f={worst['kept_v_fraction']}), "
            f"within {TARGET:.0%}: {np.mean(errors <= TARGET):.0%}")
    return np.median(errors), errors.max(), text


def test_time_error_on_every_stable_point(predictions):
    scored = [p for p in predictions if p["stable"]]
    assert len(scored) >= 0.75 * len(predictions)
    for name, subset in (("all", scored), ("batch 16", [p for p in scored if p["row"]["batch"] == "16"])):
        median, worst, text = error_summary(subset)
        print(f"{name}: {text}")
        assert median <= BOUNDS[name][0] and worst <= BOUNDS[name][1], f"{name}: {text}"


def test_dense_batch16_within_target(predictions):
    """Where the kernel is bandwidth-bound the model meets the issue's 10 % goal."""
    for p in predictions:
        if p["row"]["kernel"] == "dense" and p["row"]["batch"] == "16":
            assert abs(p["error"]) <= TARGET, (p["row"]["context"], p["error"])
