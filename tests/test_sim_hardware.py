"""Device files: every shipped one loads and sources every number; bad files fail by file and field."""

import dataclasses
import re
import shutil

import pytest

from topθ_hw.errors import UserError
from topθ_hw.sim.hardware import OPTIONAL_SECTIONS, SECTIONS, Build, hardware_dir, known_devices, load_device

SHIPPED = ["a100", "b200", "h100", "h200", "mi300x", "npu", "tpu-v5e"]


def test_every_shipped_device_loads_with_a_source_per_number():
    assert known_devices() == SHIPPED
    for name in SHIPPED:
        d = load_device(name)
        present = {**SECTIONS, **{s: cls for s, cls in OPTIONAL_SECTIONS.items() if getattr(d, s) is not None}}
        expected = {f"{s}.{f.name}" for s, cls in present.items() for f in dataclasses.fields(cls)}
        if d.dma is None:  # GPUs: from sims/kernels/triton-splitkv.toml
            expected |= {f"build.{f.name}" for f in dataclasses.fields(Build)}
        assert set(d.sources) == expected
        assert all(d.sources[k].split(":")[0] in ("ref", "measured", "derived", "assumed") for k in expected)
        with pytest.raises(dataclasses.FrozenInstanceError):
            d.memory.hbm_bandwidth_GBps = 1.0


def test_datasheet_figures_not_the_sparsity_ones():
    h100 = load_device("h100")
    assert h100.compute.matrix_TFLOPS == pytest.approx(989.4)
    assert h100.memory.hbm_bandwidth_GBps == 3350 and h100.compute.units == 132
    assert load_device(hardware_dir() / "h200.toml").memory.hbm_bandwidth_GBps == 4800


def test_unknown_device_lists_known_ones():
    with pytest.raises(UserError, match=r"unknown device 'h1000'.*a100, b200, h100"):
        load_device("h1000")


def _write_variant(tmp_path, edit):
    """An edited copy of h100.toml, with the measurement file its sources cite beside it."""
    (tmp_path / "validation").mkdir(exist_ok=True)
    for name in ("h100_microbench.csv", "h100_microbench_sm.csv"):
        shutil.copy(hardware_dir().parent / "validation" / name, tmp_path / "validation")
    (tmp_path / "hardware").mkdir(exist_ok=True)
    path = tmp_path / "hardware" / "dev.toml"
    path.write_text(edit((hardware_dir() / "h100.toml").read_text()))
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("units = 132\n", ""), r"dev.toml: field 'compute.units' missing"),
    (lambda t: t.replace("hbm_latency_ns = 353", "hbm_latency_ns = -5"), r"'memory.hbm_latency_ns' must be > 0"),
    (lambda t: t.replace("units = 132", "units = 13.5"), r"'compute.units' must be a whole number"),
    (lambda t: t.replace("gather_efficiency_fraction = 0.728", "gather_efficiency_fraction = 0.99"),
     r"'memory.gather_efficiency_fraction' inconsistent"),
    (lambda t: t.replace("stream_efficiency_fraction = 0.955", "stream_efficiency_fraction = 1.5"),
     r"'memory.stream_efficiency_fraction' is a fraction"),
    (lambda t: t.replace('l2_MiB = "ref:whitepaper"\n', ""), r"'memory.l2_MiB' has no source"),
    (lambda t: t.replace('l2_MiB = "ref:whitepaper"', 'l2_MiB = "ref:nowhere"'), r"ref:nowhere, which \[references\]"),
    (lambda t: t.replace('l2_MiB = "ref:whitepaper"', 'l2_MiB = "trust me"'), r"must start with one of"),
    (lambda t: t.replace('l2_MiB = "ref:whitepaper"', 'l2_MiB = "measured: missing.csv"'), r"does not exist"),
    (lambda t: t.replace("l2_MiB = 50", "l2_MiB = 50\nl3_MiB = 3"), r"unknown field\(s\) \['memory.l3_MiB'\]"),
    (lambda t: t.replace("line_bytes = 128", "line_bytes = 100"), r"'memory.line_bytes' inconsistent"),
    (lambda t: t.replace("[energy]\n", "[energy\n"), r"dev.toml: invalid TOML"),
    (lambda t: t.replace("matrix_TFLOPS = 989.4", 'matrix_TFLOPS = "fast"'), r"must be a finite number"),
])
def test_bad_device_file_names_file_and_field(tmp_path, edit, message):
    path = _write_variant(tmp_path, edit)
    with pytest.raises(UserError, match=message):
        load_device(path)


def test_measured_source_resolves_relative_to_the_file(tmp_path):
    path = _write_variant(tmp_path, lambda t: t)
    assert load_device(path).sources["memory.stream_efficiency_fraction"].startswith(
        "measured:../validation/h100_microbench.csv")
    (tmp_path / "validation" / "h100_microbench.csv").unlink()
    # A copy of a shipped device keeps citing the shipped measurement (issue 13) ...
    assert load_device(path).memory == load_device("h100").memory
    # ... but a measurement that exists nowhere is refused.
    path.write_text(path.read_text().replace("../validation/h100_microbench.csv", "../validation/gone.csv"))
    with pytest.raises(UserError, match=r"gone.csv, which does not exist"):
        load_device(path)
