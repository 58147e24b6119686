"""The DMA-pipelined accelerator model (sim/dma.py): near the bandwidth bound for dense decode or a
named cause, descriptor-bound row gathers that page fetch recovers, scratchpad fit, buffer depth,
bytes conserved from the workload to the blocks."""

import dataclasses

import numpy as np
import pytest

from topθ_hw.errors import UserError
from topθ_hw.sim import load_device, simulate_call
from topθ_hw.sim.dma import item_work, simulate_dma_call, simulate_dma_pass, unit_blocks
from topθ_hw.sim.dma_kernel import dma_kernel_for
from topθ_hw.sim.workload import BYTE_KINDS, DecodeStream, Shape, decode_call, kernel_workload

ACCELERATORS = ["tpu-v5e", "npu"]
SHAPE = dict(q_heads=32, kv_heads=8, head_dim=128, dtype="bf16")


def decode(batch, context, kept=1.0, fetch="row", method="dense"):
    if method == "dense":   # no masks to draw: every stream reads all of its context
        streams = [DecodeStream(context)] * (batch * SHAPE["kv_heads"])
        return decode_call(Shape(**SHAPE), streams, "dense", fetch)
    return kernel_workload(batch, context, SHAPE["q_heads"], SHAPE["kv_heads"], SHAPE["head_dim"], SHAPE["dtype"],
                           kept, fetch, method)


@pytest.mark.parametrize("name", ACCELERATORS)
@pytest.mark.parametrize("batch", [1, 8, 64])
@pytest.mark.parametrize("context", [4096, 32768, 131072])
def test_dense_decode_is_near_its_bandwidth_bound_or_names_a_cause(name, batch, context):
    device = load_device(name)
    call = decode(batch, context)
    kv_gb = 2 * batch * SHAPE["kv_heads"] * context * 256 / 1e9
    if kv_gb > device.memory.hbm_capacity_GB:
        with pytest.raises(UserError, match="hbm_capacity_GB"):
            simulate_call(call, device)
        return
    r = simulate_call(call, device)
    assert r["execution"] == "dma-blocks" and r["validation"].startswith("unvalidated")
    assert r["bandwidth_bound_s"] == pytest.approx(r["bytes_total"] / (device.memory.hbm_bandwidth_GBps * 1e9))
    assert r["time_s"] >= r["roofline_time_s"] >= r["bandwidth_bound_s"]
    assert r["time_s"] <= 2 * r["bandwidth_bound_s"] or r["cause"], r
    if context >= 32768:   # long dense decode streams: no excuse needed
        assert r["time_s"] <= 1.5 * r["bandwidth_bound_s"] and r["cause"] == ""


def test_tpu_row_gathers_are_descriptor_bound_and_page_fetch_recovers():
    tpu = load_device("tpu-v5e")
    per_byte = {}
    for fetch, method, kept in [("row", "dense", 1.0), ("row", "toptheta", 0.3), ("page64", "toptheta", 0.3)]:
        r = simulate_call(decode(4, 32768, kept, fetch, method), tpu)
        per_byte[fetch, method] = (r["time_s"] / r["bytes_total"], r["cause"])
    stream, _ = per_byte["row", "dense"]
    gather, cause = per_byte["row", "toptheta"]
    paged, page_cause = per_byte["page64", "toptheta"]
    assert gather > 2 * stream and cause.startswith("descriptor-bound gather")
    assert paged < 1.25 * stream and page_cause == ""
    # the mechanism, not a constant: with free descriptors the same gather streams
    free = dataclasses.replace(tpu, dma=dataclasses.replace(tpu.dma, descriptor_issue_ns=1e-3))
    r = simulate_call(decode(4, 32768, 0.3, "row", "toptheta"), free)
    assert r["time_s"] / r["bytes_total"] < 0.5 * gather and "descriptor" not in r["cause"]


def test_matrix_unit_padding_is_charged():
    tpu = load_device("tpu-v5e")
    kernel = dma_kernel_for(tpu)
    p = decode(1, 8192).passes[0]
    work = item_work(p, tpu, kernel, 256)
    useful = p.matrix_flops.sum() / (tpu.compute.matrix_TFLOPS * 1e3)
    assert (work["qk"] + work["pv"]).sum() == pytest.approx(useful * 128 / 4)   # G = 4 rows padded to 128


def test_block_that_does_not_fit_the_scratchpad_is_one_clear_line():
    npu = load_device("npu")
    with pytest.raises(UserError, match=r"block_keys.*--buffers") as err:
        simulate_dma_call(decode(1, 4096), npu, dma_kernel_for(npu, block_keys=8192, buffers=3))
    assert "\n" not in str(err.value) and "sram_per_unit_KiB" in str(err.value) and "12288 KiB" in str(err.value)
    with pytest.raises(UserError, match=r"kernel field 'buffers' \(--buffers\) must be a whole number ≥ 2"):
        dma_kernel_for(npu, buffers=1)
    gpu_like = dataclasses.replace(npu, architecture="sm90")
    with pytest.raises(UserError, match=r"field 'architecture' is 'sm90'.*known: npu, tpu-v5"):
        dma_kernel_for(gpu_like)


@pytest.mark.parametrize("name", ACCELERATORS)
def test_more_buffers_are_never_slower(name):
    device = load_device(name)
    calls = (decode(2, 16384), decode(2, 16384, 0.1, "row", "toptheta"), decode(2, 16384, 0.1, "page16", "toptheta"))
    for call in calls:
        times = [simulate_dma_call(call, device, dma_kernel_for(device, buffers=b))["time_s"] for b in (2, 3, 4, 6)]
        assert all(later <= earlier * (1 + 1e-9) for earlier, later in zip(times, times[1:])), times

def test_a_third_buffer_hides_the_round_trip_of_short_blocks():
    tpu = load_device("tpu-v5e")   # 256-token blocks: compute + grid step + latency exceed one transfer
    two, three = (simulate_dma_call(decode(1, 32768), tpu, dma_kernel_for(tpu, block_keys=256, buffers=b))["time_s"]
                  for b in (2, 3))
    assert three < 0.95 * two


@pytest.mark.parametrize("name", ACCELERATORS)
def test_bytes_are_conserved_from_workload_to_blocks(name):
    device = load_device(name)
    kernel = dma_kernel_for(device)
    call = decode(3, 5000, 0.2, "row", "toptheta")   # ragged: 5000 keys is no multiple of a block
    r = simulate_dma_call(call, device, kernel)
    for kind in BYTE_KINDS:
        assert r[f"bytes_{kind}"] == call.total(kind)
    for p in call.passes:
        work = item_work(p, device, kernel, call.shape.row_bytes)
        total = sum(p.bytes[kind] for kind in BYTE_KINDS).sum()
        assert work["channel"].sum() >= total
        units = unit_blocks(p, device, kernel, call.shape.row_bytes, kernel.block_rows(call.shape.kv_heads))
        assert sum(u.count for u in units) <= device.compute.units
        assert sum(u.count * sum(u.channel_bytes) for u in units) == pytest.approx(work["channel"].sum())
        assert sum(u.count * sum(u.issue_ns) for u in units) == pytest.approx(work["issue"].sum())
        assert all(np.all(np.asarray(u.channel_bytes) >= 0) for u in units)


@pytest.mark.parametrize("name", ACCELERATORS)
def test_tiny_calls_name_the_launch_overhead(name):
    device = load_device(name)
    r = simulate_call(decode(1, 128), device)
    assert r["time_s"] > 2 * r["bandwidth_bound_s"]
    assert r["cause"].startswith("launch overhead at tiny size")


def test_pipeline_limits_are_exact():
    """Free compute: one stream of bytes plus one access latency. Free memory: the compute of every
    block plus the first block's arrival."""
    tpu = load_device("tpu-v5e")
    kernel = dataclasses.replace(dma_kernel_for(tpu), grid_step_overhead_ns=1e-6)
    p = decode(2, 32768).passes[0]
    rows = kernel.block_rows(8)
    infinite = dataclasses.replace(tpu.compute, matrix_TFLOPS=1e9, vector_TFLOPS=1e9)
    free_compute = dataclasses.replace(tpu, compute=infinite,
                                       dma=dataclasses.replace(tpu.dma, descriptor_issue_ns=1e-6))
    channel = item_work(p, free_compute, kernel, 256)["channel"].sum()
    body = simulate_dma_pass(p, free_compute, kernel, 256, rows)["body_ns"]
    assert body == pytest.approx(channel / (free_compute.stream_bandwidth_Bps * 1e-9) + tpu.memory.hbm_latency_ns,
                                 rel=1e-3)
    fast = dataclasses.replace(tpu.memory, hbm_bandwidth_GBps=1e9, unit_bandwidth_GBps=1e9, hbm_latency_ns=1e-6)
    free_memory = dataclasses.replace(tpu, memory=fast, dma=dataclasses.replace(tpu.dma, descriptor_issue_ns=1e-6))
    work = item_work(p, free_memory, kernel, 256)
    compute = (work["qk"] + work["pv"] + work["vector"]).sum()
    assert simulate_dma_pass(p, free_memory, kernel, 256, rows)["body_ns"] == pytest.approx(compute, rel=1e-3)


def test_bad_kernel_family_file_names_file_and_field(tmp_path, monkeypatch):
    shipped = dma_kernel_for(load_device("tpu-v5e")).path
    text = open(shipped).read()
    monkeypatch.setenv("TOPTHETA_KERNELS_DIR", str(tmp_path))
    page = "'architectures.tpu-v5.page_tokens'"
    for edit, message in [
        (lambda t: t.replace('page_tokens = "ref:rpa_blocks', 'page_tokens = "trust me'), page + ".*must start with"),
        (lambda t: t.replace("page_tokens = 128", "page_tokens = 0"), page + " must be a whole number"),
        (lambda t: t.replace("validation = \"unvalidated", "validation = \"validated"), r"must say \"unvalidated"),
        (lambda t: t.replace("buffers = 2\n", "buffers = 2\nstages = 3\n", 1),
         r"unknown field\(s\) \['defaults.stages'\]"),
    ]:
        (tmp_path / "pallas-tpu.toml").write_text(edit(text))
        with pytest.raises(UserError, match=message) as err:
            dma_kernel_for(load_device("tpu-v5e"))
        assert "pallas-tpu.toml" in str(err.value) and "\n" not in str(err.value)


def test_bad_dma_section_names_the_field(tmp_path):
    from topθ_hw.sim.hardware import hardware_dir
    text = (hardware_dir() / "tpu-v5e.toml").read_text()
    text = text.replace("descriptor_issue_ns = 10.0", "descriptor_issue_ns = -1")
    (tmp_path / "tpu.toml").write_text(text)
    with pytest.raises(UserError, match=r"tpu.toml: field 'dma.descriptor_issue_ns' must be > 0"):
        load_device(tmp_path / "tpu.toml")


def test_the_python_api_takes_a_configured_dma_kernel():
    from topθ_hw.sim import dma_kernel_for as configure, simulate_kernel
    tpu = load_device("tpu-v5e")
    r = simulate_kernel(tpu, 1, 8192, 32, 8, 128, "bf16", 1.0, "row", "dense",
                        kernel=configure(tpu, block_keys=512, buffers=3))
    assert r["kernel"]["label"] == "pallas-tpu (block_keys=512, buffers=3)" and r["blocks"] > 8
    assert (r["kernel"]["block_keys"], r["kernel"]["buffers"]) == (512, 3)
    assert "execution" not in simulate_kernel("h100", 1, 8192, 32, 8, 128, "bf16", 1.0, "row", "dense")
