"""The SimPy model against things known exactly: the roofline where it is exact, bytes by
construction, bandwidth sharing on the channels, load imbalance from masks."""

import numpy as np
import pytest

from topθ_hw.errors import UserError
import simpy

from topθ_hw.sim import load_device, simulate_call, simulate_kernel
from topθ_hw.sim.model import HBM, KernelOptions, assign_to_units
from topθ_hw.sim.workload import DecodeStream, Shape, decode_call, fetched_units, kernel_workload, split_sums

H100 = load_device("h100")


@pytest.mark.parametrize("device", ["h100", "h200", "a100"])
def test_bandwidth_bound_dense_decode_matches_roofline(device):
    r = simulate_kernel(device, 16, 65536, 32, 8, 128, "bf16", 1.0, "row", "dense")
    assert r["time_s"] == pytest.approx(r["roofline_time_s"], rel=0.02)
    assert r["time_s"] >= r["roofline_time_s"]


def test_small_shared_memory_runs_fewer_stages_and_falls_behind_the_roofline():
    """MI300X's 64 KiB LDS holds one 2-stage CTA of 64-key tiles (3 stages do not fit): one CTA
    per CU cannot keep enough bytes in flight, so dense decode falls short of the bandwidth bound."""
    r = simulate_kernel("mi300x", 16, 65536, 32, 8, 128, "bf16", 1.0, "row", "dense")
    assert r["kernel"]["stages"] == 2
    assert 1.03 * r["roofline_time_s"] < r["time_s"] < 1.5 * r["roofline_time_s"]
    with pytest.raises(UserError, match="--block-keys 64 with --stages 3 needs 70 KiB"):
        simulate_kernel("mi300x", 16, 65536, 32, 8, 128, "bf16", 1.0, "row", "dense",
                        kernel=KernelOptions(stages=3))


def test_bytes_by_construction():
    B, N, Hq, Hkv, d = 2, 4096, 32, 8, 128
    dense = kernel_workload(B, N, Hq, Hkv, d, "bf16", 1.0, "row", "dense")
    assert dense.total("k") == dense.total("v") == B * Hkv * N * d * 2
    tt = kernel_workload(B, N, Hq, Hkv, d, "bf16", 0.2, "row", "toptheta")
    assert tt.total("k") == dense.total("k")                       # every key is scored
    assert tt.total("v") == round(0.2 * N) * B * Hkv * d * 2       # kept rows only
    assert tt.total("thresholds") == B * Hkv * (Hq // Hkv) * 4
    page = kernel_workload(B, N, Hq, Hkv, d, "bf16", 0.2, "page64", "toptheta")
    assert page.total("v") == round(0.2 * N / 64) * 64 * B * Hkv * d * 2
    topk = kernel_workload(B, N, Hq, Hkv, d, "bf16", 0.2, "row", "topk")
    assert topk.total("scores") >= B * Hq * N * 4 * 2              # written once, read by the selection
    odd = kernel_workload(1, 256, 4, 1, 40, "fp16", 1.0, "row", "toptheta", granule_bytes=32)
    assert odd.total("v") == 256 * 96                              # 80 B rows cost three 32 B sectors


def test_mask_helpers_match_a_plain_loop():
    rng = np.random.default_rng(3)
    kept = rng.random(1000) < 0.3
    units = fetched_units(kept, 16)
    assert list(units) == [kept[i:i + 16].any() for i in range(0, 1000, 16)]
    counts, runs = split_sums(kept, 128, 8)
    for s in range(8):
        part = kept[s * 128:(s + 1) * 128]
        assert counts[s] == part.sum()
        assert runs[s] == sum(1 for i in range(len(part)) if part[i] and (i == 0 or not part[i - 1]))


def test_hbm_channels_share_bandwidth_and_add_latency():
    env = simpy.Environment()
    hbm = HBM(env, bandwidth_B_per_ns=100.0, unit_cap_B_per_ns=40.0, latency_ns=500.0)
    done = []
    for nbytes in (4000, 4000, 4000, 4000):
        hbm.read(nbytes).callbacks.append(lambda ev: done.append(env.now))
    env.run()
    # four transfers share 100 B/ns (25 each, under the 40 cap): 160 ns of streaming, then latency
    assert done == pytest.approx([660.0] * 4)
    env2 = simpy.Environment()
    one = HBM(env2, bandwidth_B_per_ns=100.0, unit_cap_B_per_ns=40.0, latency_ns=500.0)
    one.read(4000).callbacks.append(lambda ev: done.append(env2.now))
    env2.run()
    assert done[-1] == pytest.approx(600.0)  # alone it is capped at one unit's 40 B/ns


def test_list_scheduling_balances_uneven_items():
    cost = np.array([10.0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1])
    unit_of = assign_to_units(cost, 2)
    loads = np.bincount(unit_of, weights=cost)
    assert sorted(loads) == [10.0, 10.0]


def test_load_imbalance_from_masks_costs_time():
    """Same number of kept V pages; crowded into two splits instead of spread: slower, since
    the splits that hold them run every tile with a V round trip while the others wait (two
    pipeline stages: the round trip is on the critical path, as the lone-CTA scans of
    sims/validation/h100_microbench_sm.csv show: page64 f=0.5 1.78 us/tile, f=0.05 1.61)."""
    shape, N, streams = Shape(32, 8, 128, "bf16"), 32768, 2  # few items: one CTA per unit
    spread = np.zeros(N, bool)
    for page in range(0, N, 256):
        spread[page:page + 64] = True
    crowded = np.zeros(N, bool)
    crowded[: N // 4] = True
    time = {}
    for name, kept in (("spread", spread), ("crowded", crowded)):
        call = decode_call(shape, [DecodeStream(N, kept)] * streams, "toptheta", "page64", split_tokens=4096)
        time[name] = simulate_call(call, H100, KernelOptions(stages=2))["time_s"]
        assert call.total("v") == streams * (N // 4) * 256
    assert time["crowded"] > 1.05 * time["spread"]


def test_methods_order_and_determinism():
    t = {m: simulate_kernel("h100", 4, 16384, 32, 8, 128, "bf16", 1.0 if m == "dense" else 0.1, "row", m)
         for m in ("dense", "toptheta", "topk")}
    assert t["toptheta"]["time_s"] < t["dense"]["time_s"]
    assert t["topk"]["time_s"] > t["toptheta"]["time_s"]   # score row written, selected, read back
    again = simulate_kernel("h100", 4, 16384, 32, 8, 128, "bf16", 0.1, "row", "toptheta")
    assert again == t["toptheta"]


def test_energy_and_utilisation_are_consistent():
    r = simulate_kernel("h100", 8, 32768, 32, 8, 128, "bf16", 1.0, "row", "dense")
    e = H100.energy
    assert r["energy_hbm_j"] == pytest.approx(r["bytes_total"] * e.hbm_pJ_per_byte * 1e-12)
    assert r["energy_j"] == pytest.approx(r["energy_hbm_j"] + r["energy_sram_j"] + r["energy_compute_j"])
    assert 0.5 < r["utilisation"] <= H100.memory.stream_efficiency_fraction
