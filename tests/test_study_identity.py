"""A resumed study recognises its inputs by content, not by path: a trace rewritten at the same path
(here: its two sequences swapped, as a re-capture with the texts in another order would leave it)
makes every point run again, with the new trace's kept fractions; unchanged inputs reuse every
point; damaged resume files are recomputed, never trusted."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from cli_helpers import TRACE, subset_trace, tiny_study
from topθ_hw.store import open_trace
from topθ_hw.study import parts
from topθ_hw.study.parts import parts_dir
from topθ_hw.study.run import run_study



def run(study, out) -> tuple[pd.DataFrame, str]:
    log = io.StringIO()
    results = run_study(study, out, workers=0, progress=False, log=log)
    return results, log.getvalue()


@pytest.fixture()
def setup(tmp_path):
    trace = subset_trace(TRACE, tmp_path / "t.zarr", [2])
    study = tiny_study(tmp_path / "study.toml", trace, name="identity", more_axes="page_size = [1, 16]")
    return trace, study, tmp_path / "results.parquet"


def test_rewritten_trace_at_the_same_path_is_recomputed(setup):
    trace, study, out = setup
    first, log = run(study, out)
    assert "6 points, 0 already done, 6 to run" in log
    again, log = run(study, out)
    assert "6 already done, 0 to run" in log
    pd.testing.assert_frame_equal(first, again)
    before = open_trace(trace).content_id()
    (trace / "seq_0000").rename(trace / "seq_tmp")
    (trace / "seq_0001").rename(trace / "seq_0000")
    (trace / "seq_tmp").rename(trace / "seq_0001")
    assert open_trace(trace).content_id() != before
    swapped, log = run(study, out)
    assert "0 already done, 6 to run" in log
    sparse = first["method"] != "dense"
    # Calibrated on the other text and evaluated on the other: the kept fractions are the new trace's.
    assert (swapped.loc[sparse, "kept_v_fraction"].to_numpy() != first.loc[sparse, "kept_v_fraction"].to_numpy()).all()


def test_damaged_resume_files_are_recomputed(setup, monkeypatch):
    trace, study, out = setup
    monkeypatch.setattr(parts, "remove_parts", lambda out: None)  # keep the resume files of a finished run
    first, _ = run(study, out)
    cache = sorted(parts_dir(out).glob("kept-*.json"))
    finished = sorted(parts_dir(out).glob("part-*.parquet"))
    assert cache and finished
    for path in cache:
        path.write_text(path.read_text()[:20])  # cut mid-JSON
    for path in finished:
        path.write_bytes(path.read_bytes()[:100])
    out.unlink()  # as if interrupted before the results file was written
    resumed, log = run(study, out)
    assert "0 already done, 6 to run" in log and "replaying" in log
    pd.testing.assert_frame_equal(first, resumed)
