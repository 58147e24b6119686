"""Reports on real inputs: thresholds calibrated on the shipped trace, replay statistics, a real
study. The report is opened in real headless Chromium (Debian's ``chromium`` package) over the
DevTools protocol: it renders, every image loads, the console stays clean, a screenshot is taken.

Chromium is driven through ``--remote-debugging-pipe`` (JSON messages, NUL-terminated, on file
descriptors 3 and 4), so the test needs nothing beyond the standard library and the browser.
Set-up: ``apt-get update && apt-get install -y chromium``.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from topθ_hw.engine import TopK, TopTheta
from topθ_hw.engine.run import replay_trace
from topθ_hw.errors import UserError
from topθ_hw.report import build_report
from topθ_hw.sim import load_device
from topθ_hw.sim.stats import simulate_stats
from topθ_hw.store import open_trace
from topθ_hw.study.measure import calibrated_table
from topθ_hw.study.run import run_study, trace_identity
from topθ_hw.tables import read_table, write_table

REPO = Path(__file__).resolve().parents[1]
TRACE = REPO / "traces" / "smollm2-135m.zarr"
LAYERS = [0, 1, 10, 29]
STUDY = f"""
[study]
name = "report_test"
[sparsity]
layers = {LAYERS}
[axes]
device = ["h100", "a100"]
method = ["dense", "topk", "toptheta"]
k = [64]
context = [4096, 32768]
page_size = [1, 16]
bandwidth_scale = [0.5, 1.0, 2.0]
trace = ["{TRACE}"]
"""

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--remote-debugging-pipe"]

needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium: "
                                    "apt-get update && apt-get install -y chromium")


@pytest.fixture(scope="module")
def report_inputs(tmp_path_factory) -> list[Path]:
    """Real inputs: a threshold artifact, top-k and Top-θ statistics, and a small real study."""
    out = tmp_path_factory.mktemp("inputs")
    trace = open_trace(TRACE)
    table = calibrated_table(str(TRACE), trace_identity(TRACE), 64, "pre", 0.1, ())
    table.save(out / "thresholds.safetensors")
    paths = [out / "thresholds.safetensors"]
    for name, method in (("topk", TopK(k=64)), ("toptheta", TopTheta(thresholds=table))):
        stats, meta = replay_trace(trace, method, layers=LAYERS)
        paths.append(write_table(stats, out / f"{name}.parquet", meta))
    device = load_device("h100")  # the real masks of the Top-θ replay, simulated step by step
    steps = simulate_stats(stats, meta, device)
    paths.append(write_table(steps, out / "sim.parquet", {"kind": "sim-results", "device": device.name,
                                                          "device_file": device.path, "fetch": "row"}))
    (out / "study.toml").write_text(STUDY)
    run_study(out / "study.toml", out / "study.parquet", workers=0, progress=False)
    return paths + [out / "study.parquet"]


@pytest.fixture(scope="module")
def report_dir(report_inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    build_report(report_inputs, out)
    return out


def test_report_files_and_provenance(report_dir):
    out, index = report_dir, report_dir / "index.html"
    names = {"theta_curves", "kept_fraction_by_layer", "kept_fraction_by_length", "v_row_and_page_occupancy",
             "cost_by_device", "speedup_vs_context", "bandwidth_whatif", "page_size_effect",
             "decode_step_on_real_masks"}
    for name in names:
        assert (out / f"{name}.png").stat().st_size > 1000
        assert len(pd.read_csv(out / f"{name}.csv")) > 0
    html = index.read_text()
    assert html.count("data:image/png;base64,") == len(names) and 'src="http' not in html
    # every figure names the kind of its numbers and the files they come from
    for prov, file in (("measured", "thresholds.safetensors"), ("measured", "topk.parquet"),
                       ("simulated", "study.parquet"), ("simulated + datasheet", "hbm_bandwidth_GBps"),
                       ("simulated", "sim.parquet")):
        assert f"<b>{prov}</b>" in html and file in html
    md = (out / "report.md").read_text()
    assert md.count("![") == len(names) and "speedup" in md
    assert (out / "sim-steps-sim.csv").exists()
    # θ panels only for the layers the shipped trace holds (it stores 17 of the model's 30)
    captured = open_trace(TRACE).meta.captured_layers
    assert set(pd.read_csv(out / "theta_curves.csv")["layer"]) == set(captured)
    from matplotlib.image import imread  # one 2.6 x 2.0 in panel per captured layer, 6 per row
    height, width = imread(out / "theta_curves.png").shape[:2]
    assert height / width == pytest.approx((-(-len(captured) // 6) * 2.0) / (6 * 2.6), rel=0.1)


def test_report_numbers_match_the_study(report_inputs, report_dir):
    """The speedup table is computed from the study's own rows: dense time / method time."""
    study, _ = read_table(report_inputs[-1], kind="study-results")
    speedups = pd.read_csv(report_dir / "speedup_vs_context.csv")
    row = speedups[(speedups["method"] == "toptheta") & (speedups["device"] == "h100")].iloc[-1]
    match = study[(study["device"] == "h100") & (study["context"] == row["context"]) &
                  (study["page_size"] == 1) & (study["bandwidth_scale"] == 1.0) & (study["batch"] == 1)]
    dense = match[match["method"] == "dense"]["time_s"].iloc[0]
    sparse = match[match["method"] == "toptheta"]["time_s"].iloc[0]
    assert row["speedup_vs_dense"] == pytest.approx(dense / sparse)


def test_report_refuses_unknown_inputs(tmp_path):
    bad = write_table(pd.DataFrame({"a": [1]}), tmp_path / "x.parquet", {"kind": "something-else"})
    with pytest.raises(UserError, match="x.parquet.*'kind'"):
        build_report([bad], tmp_path / "out")
    with pytest.raises(UserError, match="no such file"):
        build_report([tmp_path / "missing.parquet"], tmp_path / "out")


class DevTools:
    """A minimal DevTools-protocol client over Chromium's debugging pipe."""

    def __init__(self, profile: Path):
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # The browser reads commands on fd 3 and writes replies and events on fd 4.
        self.proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=lambda: _pipe_to_fds_3_and_4(to_browser_r, from_browser_w))
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        reply = self._read_until(lambda m: m.get("id") == self._next_id, timeout)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def wait_event(self, method: str, timeout: float = 30.0) -> dict:
        seen = next((e for e in self.events if e.get("method") == method), None)
        return seen or self._read_until(lambda m: m.get("method") == method, timeout)

    def _read_until(self, done, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                message = json.loads(raw)
                if "method" in message:
                    self.events.append(message)
                if done(message):
                    return message
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the debugging pipe")
            self._buffer += chunk
        raise TimeoutError("no answer from chromium")

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._to_browser)
        os.close(self._from_browser)


def _pipe_to_fds_3_and_4(read_end: int, write_end: int) -> None:
    """In the child: move the pipe ends to fds 3 and 4 (via fds ≥ 10, so neither clobbers the other)."""
    high_read, high_write = fcntl.fcntl(read_end, fcntl.F_DUPFD, 10), fcntl.fcntl(write_end, fcntl.F_DUPFD, 10)
    os.dup2(high_read, 3)
    os.dup2(high_write, 4)


def open_page(browser: DevTools, url: str) -> str:
    """Open ``url`` in a new tab with console and log capture on; returns the session id."""
    target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Page", "Runtime", "Log"):
        browser.send(f"{domain}.enable", session=session)
    browser.send("Page.navigate", {"url": url}, session=session)
    browser.wait_event("Page.loadEventFired")
    return session


def console_errors(events: list[dict]) -> list[str]:
    errors = []
    for e in events:
        p = e.get("params", {})
        if e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            errors.append(json.dumps(p.get("args")))
        elif e["method"] == "Runtime.exceptionThrown":
            errors.append(p["exceptionDetails"].get("text", "exception"))
        elif e["method"] == "Log.entryAdded" and p["entry"].get("level") == "error":
            errors.append(p["entry"].get("text", ""))
    return errors


@needs_chromium
def test_report_renders_in_headless_chromium(report_dir, tmp_path):
    index = report_dir / "index.html"
    browser = DevTools(tmp_path / "profile")
    try:
        session = open_page(browser, index.resolve().as_uri())
        check = "JSON.stringify({title: document.title, figures: document.querySelectorAll('figure').length," \
                " images: Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])})"
        page = json.loads(browser.send("Runtime.evaluate", {"expression": check, "returnByValue": True},
                                       session=session)["result"]["value"])
        shot = browser.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                            session=session)
        errors = console_errors(browser.events)
    finally:
        browser.close()
    screenshot = report_dir / "screenshot.png"
    screenshot.write_bytes(base64.b64decode(shot["data"]))
    assert page["title"].startswith("Top-θ")
    assert page["figures"] >= 7 and len(page["images"]) == page["figures"]
    broken = [alt for alt, complete, width in page["images"] if not complete or width <= 0]
    assert not broken, f"images that did not load: {broken}"
    assert not errors, f"console errors: {errors}"
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 10_000


def test_report_on_a_study_without_sparse_methods(tmp_path):
    """A dense-only study (no replay needed): cost and bandwidth figures, no speedup figures."""
    study = tmp_path / "dense.toml"
    study.write_text(f'[axes]\ndevice = ["h100", "tpu-v5e"]\nmethod = ["dense"]\ncontext = [8192, 32768]\n'
                     f'bandwidth_scale = [0.5, 1.0]\ntrace = ["{TRACE}"]\n')
    results = tmp_path / "dense.parquet"
    run_study(study, results, workers=0, progress=False)
    build_report([results], tmp_path / "report")
    pngs = sorted(p.stem for p in (tmp_path / "report").glob("*.png"))
    assert pngs == ["bandwidth_whatif", "cost_by_device"]
    assert "simulated" in (tmp_path / "report" / "report.md").read_text()


def test_where_it_pays_is_the_best_setting(report_inputs, report_dir):
    """Each row is the fastest (k, batch, page) of its device, method and context at datasheet bandwidth."""
    study, _ = read_table(report_inputs[-1], kind="study-results")
    pays = pd.read_csv(report_dir / "where_it_pays.csv")
    assert set(pays["method"]) == {"topk", "toptheta"} and set(pays["device"]) == {"h100", "a100"}
    at_one = study[study["bandwidth_scale"] == 1.0]
    for _, row in pays.iterrows():
        same = at_one[(at_one["device"] == row["device"]) & (at_one["context"] == row["context"])]
        dense = same[same["method"] == "dense"].set_index(["batch", "page_size"])["time_s"]
        sparse = same[same["method"] == row["method"]].set_index(["batch", "page_size"])["time_s"]
        assert row["speedup_vs_dense"] == pytest.approx((dense / sparse).max())
