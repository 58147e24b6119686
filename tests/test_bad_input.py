"""Every command, given what a user gets wrong, ends in one line and exit 2 and leaves its inputs as
they were: damaged or truncated inputs, the wrong kind of file, out-of-range flags, an output that
is an input, an output that cannot be written, an existing output without --overwrite.

The inputs are real: a two-layer cut of the shipped SmolLM2 trace, and the thresholds, statistics,
simulation results and study results the commands themselves make from it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from cli_helpers import REPO, TRACE, digest, refused, subset_trace, tiny_study
from topθ_hw.cli import main
from topθ_hw.tables import read_table, write_table

UNWRITABLE = "/proc/toptheta-no-such-folder/out"  # even root cannot create files under /proc
TEXT = REPO / "traces" / "texts" / "austen-emma.txt"


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> SimpleNamespace:
    """Good inputs, made by the commands: trace → thresholds → stats → sim; a tiny study."""
    root = tmp_path_factory.mktemp("inputs")
    trace = subset_trace(TRACE, root / "t.zarr", [2, 4])
    th, stats, sim = root / "th.safetensors", root / "stats.parquet", root / "sim.parquet"
    study = tiny_study(root / "study.toml", trace, methods=("dense", "topk"), layers=(2, 4))
    results = root / "study.parquet"
    for argv in (["calibrate", "--traces", trace, "--k", "64", "--out", th],
                 ["replay", "--traces", trace, "--method", "toptheta", "--thresholds", th, "--decode-only",
                  "--out", stats],
                 ["simulate", "--hardware", "h100", "--stats", stats, "--out", sim],
                 ["study", study, "--workers", "0", "--no-progress", "--out", results]):
        assert main([str(a) for a in argv]) == 0, argv
    device = root / "h100-copy.toml"  # a shipped device copied elsewhere (its measured: paths are relative)
    shutil.copy(REPO / "sims" / "hardware" / "h100.toml", device)
    return SimpleNamespace(root=root, trace=trace, th=th, stats=stats, sim=sim, study=study, results=results,
                           device=device)


def damaged(made, tmp_path, what: str) -> Path:
    """A copy of one of ``made``'s inputs, damaged the way ``what`` says."""
    if what == "truncated-chunk":  # a Q/K/V chunk cut in half
        trace = shutil.copytree(made.trace, tmp_path / "t.zarr")
        chunk = next(p for p in sorted((trace / "seq_0000" / "layer_04" / "k").rglob("*"))
                     if p.is_file() and p.name != "zarr.json")
        chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])
        return trace
    if what == "truncated-positions":
        trace = shutil.copytree(made.trace, tmp_path / "t.zarr")
        for p in (trace / "seq_0000" / "positions").rglob("*"):
            if p.is_file() and p.name != "zarr.json":
                p.write_bytes(p.read_bytes()[:7])
        return trace
    if what == "prompt-past-rows":
        trace = shutil.copytree(made.trace, tmp_path / "t.zarr")
        meta_path = trace / "seq_0000" / "zarr.json"
        meta = json.loads(meta_path.read_text())
        meta["attributes"]["prompt_len"] = meta["attributes"]["n_rows"] + 5
        meta_path.write_text(json.dumps(meta))
        return trace
    if what == "no-shape":
        trace = shutil.copytree(made.trace, tmp_path / "t.zarr")
        meta_path = trace / "seq_0000" / "layer_02" / "q" / "zarr.json"
        meta = json.loads(meta_path.read_text())
        del meta["shape"]
        meta_path.write_text(json.dumps(meta))
        return trace
    if what == "truncated-parquet":
        path = tmp_path / "cut.parquet"
        path.write_bytes(made.stats.read_bytes()[: made.stats.stat().st_size // 2])
        return path
    if what == "relabelled-parquet":  # sim results claiming to be engine statistics
        frame, meta = read_table(made.sim)
        return write_table(frame, tmp_path / "relabelled.parquet", {**meta, "kind": "engine-stats"})
    raise ValueError(what)


def thresholds_with(made, tmp_path, placement=None, theta=None) -> Path:
    """The artifact rewritten with another placement field or θ values (still valid safetensors)."""
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    from topθ_hw.engine.thresholds import checksums

    with safe_open(str(made.th), framework="numpy") as f:
        header = json.loads(f.metadata()["toptheta"])
    tensors = load_file(str(made.th))
    if placement is not None:
        header["placement"] = placement
    if theta is not None:
        tensors["theta"][tensors["theta"] == tensors["theta"]] = theta  # every calibrated entry
    header["crc32"] = checksums(header, tensors)  # a well-formed artifact with a bad field, not a damaged file
    path = tmp_path / "edited.safetensors"
    save_file(tensors, str(path), metadata={"toptheta": json.dumps(header)})
    return path


# --------------------------------------------------------------------------------------------------
# traces info, calibrate, replay, headline: the trace and the thresholds


@pytest.mark.parametrize("what, expect", [
    ("truncated-chunk", "layer 4 k"), ("truncated-positions", "positions"),
    ("prompt-past-rows", "prompt_len"), ("no-shape", "lacks 'shape'")])
def test_damaged_trace(made, tmp_path, capsys, what, expect):
    trace = damaged(made, tmp_path, what)
    argv = ["calibrate", "--traces", trace, "--k", "64", "--out", tmp_path / "th.safetensors"]
    if what in ("prompt-past-rows",):
        refused(capsys, ["traces", "info", trace], [trace], expect)
    refused(capsys, argv, [trace], expect)
    assert not (tmp_path / "th.safetensors").exists()


def test_wrong_kind_of_trace(made, tmp_path, capsys):
    refused(capsys, ["traces", "info", made.stats], [made.stats], "no trace store")
    refused(capsys, ["calibrate", "--traces", made.stats, "--out", tmp_path / "th.safetensors"], [made.stats],
            "no trace store")
    refused(capsys, ["traces", "info", tmp_path / "nothing.zarr"], [], "no trace store")


def test_interrupted_only_store_says_so(made, tmp_path, capsys):
    trace = shutil.copytree(made.trace, tmp_path / "t.zarr")
    for seq in ("seq_0000", "seq_0001"):
        (trace / seq).rename(trace / f".partial-{seq}")
    line = refused(capsys, ["replay", "--traces", trace, "--method", "topk", "--out", tmp_path / "s.parquet"],
                   [trace], "no complete sequence")
    assert "used for calibration" not in line


@pytest.mark.parametrize("flags, expect", [
    (["--k", "0"], "--k must be ≥ 1"),
    (["--sequences", "seq_0000,seq_0000"], "repeats"),
    (["--layer-k", "0:x"], "--layer-k"),
    (["--sigma", "nan"], "--sigma"),
    (["--k", "abc"], "--k"),
])
def test_calibrate_flags(made, tmp_path, capsys, flags, expect):
    refused(capsys, ["calibrate", "--traces", made.trace, *flags, "--out", tmp_path / "th.safetensors"],
            [made.trace], expect)


def test_calibrate_output_is_or_inside_input(made, capsys):
    for out in (made.trace, made.trace / "zarr.json", made.trace / "seq_0000" / "x.safetensors"):
        refused(capsys, ["calibrate", "--traces", made.trace, "--out", out], [made.trace], "input")


def test_unwritable_and_directory_outputs(made, tmp_path, capsys):
    refused(capsys, ["calibrate", "--traces", made.trace, "--out", UNWRITABLE], [made.trace], "not writable")
    refused(capsys, ["calibrate", "--traces", made.trace, "--out", tmp_path], [made.trace], "is a folder")
    refused(capsys, ["replay", "--traces", made.trace, "--method", "topk", "--out", made.th / "x.parquet"],
            [made.trace, made.th], "is a file")


def test_existing_output_needs_overwrite(made, tmp_path, capsys):
    out = tmp_path / "stats.parquet"
    out.write_bytes(b"someone else's file")
    argv = ["replay", "--traces", made.trace, "--method", "topk", "--layers", "2", "--decode-only", "--out", out]
    refused(capsys, argv, [made.trace, out], "--overwrite")
    assert main([str(a) for a in argv + ["--overwrite"]]) == 0
    assert read_table(out, kind="engine-stats")[1]["method"] == "topk"
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~current_umask())


def current_umask() -> int:
    import os
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("edit, expect", [
    ({"placement": "sideways"}, "'placement' is 'sideways'"),
    ({"theta": float("inf")}, "±inf"),
])
def test_replay_refuses_damaged_thresholds(made, tmp_path, capsys, edit, expect):
    th = thresholds_with(made, tmp_path, **edit)
    refused(capsys, ["replay", "--traces", made.trace, "--method", "toptheta", "--thresholds", th,
                     "--out", tmp_path / "s.parquet"], [made.trace, th], expect)


def test_replay_inputs_and_flags(made, tmp_path, capsys):
    out = tmp_path / "s.parquet"
    base = ["replay", "--traces", made.trace, "--out", out]
    refused(capsys, base + ["--method", "toptheta", "--thresholds", made.stats], [made.trace, made.stats],
            "safetensors")
    refused(capsys, ["replay", "--traces", made.trace, "--method", "toptheta", "--thresholds", made.th,
                     "--out", made.th], [made.trace, made.th], "input")
    refused(capsys, base + ["--method", "topk", "--layers", "2,x"], [made.trace], "--layers")
    refused(capsys, base + ["--method", "topk", "--layers", "3"], [made.trace], "not captured")
    refused(capsys, base + ["--method", "topk", "--sequences", "seq_0001,seq_0001"], [made.trace], "repeats")
    refused(capsys, base + ["--method", "quest", "--page-size", "12"], [made.trace], "")
    refused(capsys, base + ["--method", "topp", "--p", "1.5"], [made.trace], "")


def test_bad_thread_count_in_environment(made, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TOPTHETA_THREADS", "many")
    refused(capsys, ["calibrate", "--traces", made.trace, "--out", tmp_path / "th.safetensors"], [made.trace],
            "TOPTHETA_THREADS")


def test_headline_flags(made, tmp_path, capsys):
    refused(capsys, ["headline", "--traces", made.trace, "--ks", "16,abc", "--out", tmp_path / "h"], [made.trace],
            "--ks")
    refused(capsys, ["headline", "--traces", made.trace, "--ks", "0", "--out", tmp_path / "h"], [made.trace],
            "--ks")
    refused(capsys, ["headline", "--traces", made.trace, "--out", made.stats], [made.trace, made.stats],
            "is a file")


# --------------------------------------------------------------------------------------------------
# simulate, simulate-kernel: statistics and devices


@pytest.mark.parametrize("what, expect", [("truncated-parquet", "not a readable Parquet"),
                                          ("relabelled-parquet", "lacks column")])
def test_simulate_damaged_stats(made, tmp_path, capsys, what, expect):
    stats = damaged(made, tmp_path, what)
    refused(capsys, ["simulate", "--hardware", "h100", "--stats", stats, "--out", tmp_path / "sim.parquet"],
            [stats], expect)


def test_simulate_inputs_and_flags(made, tmp_path, capsys):
    out = tmp_path / "sim.parquet"
    base = ["simulate", "--hardware", "h100", "--stats", made.stats]
    refused(capsys, base + ["--out", made.stats], [made.stats], "input")
    refused(capsys, base + ["--split-tokens", "0", "--out", out], [made.stats], "--split-tokens")
    refused(capsys, base + ["--out", UNWRITABLE], [made.stats], "not writable")
    refused(capsys, ["simulate", "--hardware", "h100", "--stats", made.sim, "--out", out], [made.sim],
            "'kind'")
    refused(capsys, ["simulate", "--hardware", "h900", "--stats", made.stats, "--out", out], [made.stats],
            "unknown device")
    broken = tmp_path / "broken.toml"
    broken.write_text(made.device.read_text()[:900])
    refused(capsys, ["simulate", "--hardware", broken, "--stats", made.stats, "--out", out],
            [made.stats, broken], str(broken))


def test_copied_shipped_device_still_loads(made, tmp_path, capsys):
    """Its measured: sources are relative to sims/hardware; a copy elsewhere still finds them."""
    assert main(["simulate-kernel", "--hardware", str(made.device), "--batch", "1", "--context", "4096",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["device"] == "h100"


@pytest.mark.parametrize("flags, expect", [
    (["--batch", "1", "--context", "1000000000"], "hbm_capacity_GB"),
    (["--batch", "0", "--context", "4096"], "≥ 1"),
    (["--batch", "1", "--context", "4096", "--kept-v-fraction", "2"], "--kept-v-fraction"),
    (["--batch", "1", "--context", "4096", "--split-tokens", "0"], "--split-tokens"),
    (["--batch", "1", "--context", "4096", "--dtype", "int3"], "dtype"),
    (["--batch", "x", "--context", "4096"], "--batch"),
])
def test_simulate_kernel_flags(capsys, flags, expect):
    refused(capsys, ["simulate-kernel", "--hardware", "h100", *flags], [], expect)


# --------------------------------------------------------------------------------------------------
# study


def test_study_refuses_before_work(made, tmp_path, capsys):
    broken = tmp_path / "broken.toml"
    broken.write_text(made.study.read_text()[:-20])
    refused(capsys, ["study", broken, "--workers", "0", "--out", tmp_path / "r.parquet"], [broken], "")
    refused(capsys, ["study", made.study, "--workers", "0", "--out", made.study], [made.study], "input")
    refused(capsys, ["study", made.study, "--workers", "-1", "--out", tmp_path / "r.parquet"], [made.study],
            "--workers")
    refused(capsys, ["study", made.study, "--workers", "0", "--out", UNWRITABLE], [made.study], "not writable")
    refused(capsys, ["study", made.study, "--workers", "0", "--out", made.trace / "r.parquet"],
            [made.study, made.trace], "input")


def test_study_keeps_another_studys_results(made, tmp_path, capsys):
    other = tmp_path / "other.toml"
    other.write_text(made.study.read_text().replace('name = "tiny"', 'name = "other"'))
    out = tmp_path / "r.parquet"
    shutil.copy(made.results, out)
    refused(capsys, ["study", other, "--workers", "0", "--no-progress", "--out", out], [other, out], "--overwrite")
    refused(capsys, ["study", other, "--workers", "0", "--no-progress", "--out", made.stats], [made.stats],
            "--overwrite")


def test_large_study_asks_for_yes(made, tmp_path, capsys):
    big = tmp_path / "big.toml"
    big.write_text(made.study.read_text().replace("context = [4096]",
                                                  f"context = {list(range(1024, 1024 + 30_000))}"))
    line = refused(capsys, ["study", big, "--workers", "0", "--out", tmp_path / "r.parquet"], [big], "--yes")
    assert "60000 points" in line


def test_unreachable_scheduler_is_one_line(made, tmp_path, capsys):
    refused(capsys, ["study", made.study, "--scheduler", "tcp://127.0.0.1:9", "--no-progress",
                     "--out", tmp_path / "r.parquet"], [made.study, made.trace], "--scheduler")


# --------------------------------------------------------------------------------------------------
# report, demo, compare


@pytest.mark.parametrize("what, expect", [("truncated-parquet", "not a readable Parquet"),
                                          ("relabelled-parquet", "lacks column")])
def test_report_damaged_inputs(made, tmp_path, capsys, what, expect):
    bad = damaged(made, tmp_path, what)
    refused(capsys, ["report", made.stats, bad, "--out", tmp_path / "rep"], [made.stats, bad], expect)
    assert not (tmp_path / "rep").exists()


def test_report_outputs(made, tmp_path, capsys):
    refused(capsys, ["report", made.stats, TEXT, "--out", tmp_path / "rep"], [made.stats], str(TEXT.name))
    refused(capsys, ["report", made.stats, "--out", made.stats], [made.stats], "")
    refused(capsys, ["report", made.stats, "--out", made.root], [made.stats], "input")
    refused(capsys, ["report", made.stats, "--out", UNWRITABLE], [made.stats], "not writable")


def test_report_folder_is_not_reused_silently(made, tmp_path, capsys):
    out = tmp_path / "rep"
    out.mkdir()
    (out / "stale_figure.png").write_bytes(b"from another run")
    refused(capsys, ["report", made.stats, "--out", out], [made.stats, out], "--overwrite")
    assert main(["report", str(made.stats), "--out", str(out), "--overwrite"]) == 0
    assert not (out / "stale_figure.png").exists() and (out / "index.html").is_file()
    assert oct((out / "index.html").stat().st_mode & 0o777) == oct(0o666 & ~current_umask())


def test_demo_and_compare_refuse_before_work(made, tmp_path, capsys):
    refused(capsys, ["demo", "--trace", made.trace, "--out", made.trace], [made.trace], "input")
    refused(capsys, ["demo", "--trace", made.stats, "--out", tmp_path / "d"], [made.stats], "no trace store")
    refused(capsys, ["demo", "--trace", made.trace, "--layers", "abc", "--out", tmp_path / "d"], [made.trace],
            "--layers")
    refused(capsys, ["demo", "--trace", made.trace, "--out", UNWRITABLE], [made.trace], "not writable")
    refused(capsys, ["compare", "--traces", str(made.trace), "--text", str(TEXT), "--out", TEXT], [TEXT], "input")
    refused(capsys, ["compare", "--traces", str(made.trace), "--k", "8,x", "--out", tmp_path / "c"], [], "--k")


# --------------------------------------------------------------------------------------------------
# capture, evaluate, calibrate-live, generate: the model side (no model is loaded: refused first)


def test_model_commands_refuse_before_loading(made, tmp_path, capsys):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"not a model at all" * 10)
    refused(capsys, ["capture", "--model", fake, "--text", TEXT, "--out", tmp_path / "c.zarr"], [fake, TEXT],
            "GGUF")
    refused(capsys, ["capture", "--text", TEXT, "--out", TEXT], [TEXT], "input")
    refused(capsys, ["capture", "--text", TEXT, "--out", made.th], [TEXT, made.th], "is a file")
    refused(capsys, ["capture", "--text", tmp_path / "none.txt", "--out", tmp_path / "c.zarr"], [], "none.txt")
    refused(capsys, ["capture", "--text", TEXT, "--max-prompt-tokens", "0", "--out", tmp_path / "c.zarr"], [TEXT],
            "--max-prompt-tokens")
    refused(capsys, ["evaluate", "--text", TEXT, "--thresholds", made.th, "--out", made.th], [TEXT, made.th],
            "input")
    refused(capsys, ["evaluate", "--text", TEXT, "--thresholds", made.stats, "--out", tmp_path / "q"],
            [TEXT, made.stats], "safetensors")
    refused(capsys, ["calibrate-live", "--text", TEXT, "--out", UNWRITABLE], [TEXT], "not writable")
    refused(capsys, ["calibrate-live", "--text", TEXT, "--k", "16,x", "--out", tmp_path / "cl"], [TEXT], "")
    refused(capsys, ["generate", "--prompt-file", tmp_path / "none.txt", "--thresholds", made.th], [made.th], "")


# --------------------------------------------------------------------------------------------------
# the installed command itself: one line on stderr, exit 2; an internal error names its log


def test_installed_command_prints_one_line(made, tmp_path):
    before = digest(made.stats)
    run = subprocess.run([sys.executable, "-m", "topθ_hw.cli", "simulate", "--hardware", "h100",
                          "--stats", str(made.stats), "--out", str(made.stats)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    assert digest(made.stats) == before


def test_internal_error_names_its_log(tmp_path, capsys, monkeypatch):
    from topθ_hw.errors import run_command

    monkeypatch.setenv("TOPTHETA_LOG_DIR", str(tmp_path / "logs"))
    code = run_command("report", lambda args: {}["missing"], None, ["report", "x"])
    err = capsys.readouterr().err
    assert code == 3 and err.count("\n") == 1 and "internal error (KeyError" in err
    log = Path(err.rsplit("traceback in ", 1)[1].strip())
    assert log.parent == tmp_path / "logs" and "Traceback" in log.read_text()
