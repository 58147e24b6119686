"""Random damage to every file a user hands the package: the trace reader, the threshold loader and
the device and study TOML loaders either refuse it with a UserError (one line at the CLI, exit 2)
or, when the damage changed nothing they read, return exactly what the intact file gives. Never
another exception (a traceback), never different data as if nothing had happened."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli_helpers import REPO, TRACE, subset_trace
from topθ_hw.engine.calibrate import calibrate
from topθ_hw.engine.thresholds import load_thresholds
from topθ_hw.errors import UserError
from topθ_hw.sim.hardware import load_device
from topθ_hw.store import open_trace
from topθ_hw.study.spec import load_study

FUZZ = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
DEVICE = REPO / "sims" / "hardware" / "h100.toml"
STUDY = REPO / "sims" / "studies" / "toptheta_vs_topk.toml"


def damage(data: bytes, how: str, at: float, payload: bytes) -> bytes:
    """Truncate, overwrite, insert or delete bytes at relative position ``at``."""
    i = min(int(at * len(data)), max(len(data) - 1, 0))
    if how == "truncate":
        return data[:i]
    if how == "overwrite":
        return data[:i] + payload + data[i + len(payload):]
    if how == "insert":
        return data[:i] + payload + data[i:]
    return data[:i] + data[i + max(1, len(payload)):]  # delete


DAMAGE = st.tuples(st.sampled_from(["truncate", "overwrite", "insert", "delete"]),
                   st.floats(0, 1, allow_nan=False), st.binary(min_size=1, max_size=16))


@pytest.fixture(scope="module")
def small_trace(tmp_path_factory) -> Path:
    return subset_trace(TRACE, tmp_path_factory.mktemp("fuzz") / "t.zarr", [2])


def read_everything(path: Path) -> dict:
    """What a replay reads: every sequence's prompt length, positions and Q, K, V."""
    trace = open_trace(path)
    out = {}
    for name in trace.sequences:
        seq = trace.sequence(name)
        qkv = seq.layer(2)
        out[name] = (seq.prompt_len, qkv.positions.copy(), qkv.q.copy(), qkv.k.copy(), qkv.v.copy())
    return out


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        x[0] == y[0] and all(np.array_equal(u, v) for u, v in zip(x[1:], y[1:])) for x, y in zip(a.values(),
                                                                                                   b.values()))


@FUZZ
@given(pick=st.floats(0, 1, allow_nan=False, exclude_max=True), hit=DAMAGE)
def test_trace_reader(small_trace, tmp_path_factory, pick, hit):
    intact = read_everything(small_trace)
    copy = shutil.copytree(small_trace, tmp_path_factory.mktemp("t") / "t.zarr")
    files = sorted(p for p in copy.rglob("*") if p.is_file())
    victim = files[int(pick * len(files))]
    victim.write_bytes(damage(victim.read_bytes(), *hit))
    try:
        got = read_everything(copy)
    except UserError:
        return
    assert same(got, intact), f"{victim.relative_to(copy)} damaged ({hit[0]}) but read as valid, different data"


@pytest.fixture(scope="module")
def artifact(small_trace, tmp_path_factory) -> Path:
    trace = open_trace(small_trace)
    return calibrate(trace, trace.sequences[:1], k=64).save(tmp_path_factory.mktemp("th") / "th.safetensors")


@FUZZ
@given(hit=DAMAGE)
def test_threshold_loader(artifact, tmp_path_factory, hit):
    intact = load_thresholds(artifact)
    path = tmp_path_factory.mktemp("th") / "th.safetensors"
    path.write_bytes(damage(artifact.read_bytes(), *hit))
    try:
        got = load_thresholds(path)
    except UserError:
        return
    assert got.meta == intact.meta and all(
        np.array_equal(getattr(got, k), getattr(intact, k), equal_nan=True)
        for k in ("lengths", "theta", "theta_std", "count", "sdc_dropped_mass", "layer_k"))


def text_damage(text: str, hit) -> bytes:
    return damage(text.encode(), *hit)


@FUZZ
@given(hit=DAMAGE)
def test_device_loader(tmp_path_factory, hit):
    """Damage that leaves the TOML meaning the same loads the same device; anything else is refused
    unless it is still a complete, sourced, consistent device (then it loads as that device)."""
    folder = tmp_path_factory.mktemp("dev")
    path = folder / "h100.toml"
    path.write_bytes(text_damage(DEVICE.read_text(), hit))
    try:
        device = load_device(path)
    except UserError:
        return
    try:
        changed = tomllib.loads(path.read_text()) != tomllib.loads(DEVICE.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        pytest.fail("an unparsable device file was loaded")
    assert changed or device.compute == load_device(DEVICE).compute


@FUZZ
@given(hit=DAMAGE)
def test_study_loader(tmp_path_factory, hit):
    path = tmp_path_factory.mktemp("study") / "s.toml"
    path.write_bytes(text_damage(STUDY.read_text(), hit))
    try:
        study = load_study(path, known_device=lambda name: (REPO / "sims" / "hardware" / f"{name}.toml").exists())
    except UserError:
        return
    assert study.points()  # a study that loads is a usable point set


@FUZZ
@given(axis=st.sampled_from(["k", "context", "batch", "page_size", "bandwidth_scale"]),
       value=st.sampled_from(["[]", "[0]", "[-1]", '["x"]', "[1.5e400]", "3", "[true]", "[1, 1]"]))
def test_study_loader_refuses_bad_axis_values(tmp_path_factory, axis, value):
    text = "\n".join(f"{axis} = {value}" if line.startswith(f"{axis} =") else line
                     for line in STUDY.read_text().splitlines())
    if f"{axis} = {value}" not in text:
        text = text.replace("[axes]", f"[axes]\n{axis} = {value}")
    path = tmp_path_factory.mktemp("study") / "s.toml"
    path.write_text(text)
    with pytest.raises(UserError):
        load_study(path)
