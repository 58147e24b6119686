"""Whole-model cost as study axes, and the report section "cost per token"."""

from pathlib import Path

import pandas as pd
import pytest

from topθ_hw.errors import UserError
from topθ_hw.report import build_report
from topθ_hw.study.evaluate import evaluate_point
from topθ_hw.study.run import build_tasks, validate
from topθ_hw.tables import write_table

TRACE = Path(__file__).resolve().parents[1] / "traces" / "smollm2-135m.zarr"
STUDY = f"""
[study]
name = "cost_test"
[axes]
model = ["llama-3.1-8b"]
device = ["h200"]
method = ["dense", "toptheta"]
context = [32768]
batch = [4, 64]
graphs = [true]
trace = ["{TRACE}"]
"""


def write(tmp_path, text=STUDY) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("edit, message", [
    (('model = ["llama-3.1-8b"]', 'model = ["llama-9b"]'), "'axes.model' names 'llama-9b'"),
    (('graphs = [true]', 'graphs = [true]\nphase = ["training"]'), "'axes.phase' has ['training']"),
    (('graphs = [true]', 'graphs = [true]\ntp = [0]'), "'axes.tp' has [0]"),
])
def test_bad_cost_axes_are_refused(tmp_path, edit, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate(write(tmp_path, STUDY.replace(*edit)))


def test_cost_points_and_report_section(tmp_path):
    tasks = build_tasks(validate(write(tmp_path)))
    assert len(tasks) == 4
    for t in tasks:  # a given kept fraction instead of the trace replay (tested in test_study.py)
        t.update(kept_v_fraction=1.0 if t["engine_method"] == "dense" else 0.1, kept_source="given",
                 kept_rows_fraction=1.0)
    rows = pd.DataFrame([evaluate_point(t) for t in tasks])
    fit = rows[rows["fits"]]
    assert set(fit["batch"]) == {4} and (fit["step_time_s"] > fit["attention_time_s"]).all()
    assert "does not fit" in rows.loc[~rows["fits"], "cost_note"].iloc[0]
    results = write_table(rows, tmp_path / "study.parquet", {"kind": "study-results", "study": {}})
    report = build_report([results], tmp_path / "report")
    md = (report.parent / "report.md").read_text()
    assert "## Cost per token: the Amdahl split (attention vs the rest)" in md
    assert "## cost_points_that_do_not_fit" in md
    table = pd.read_csv(report.parent / "cost_per_token.csv")
    top = table[table["method"] == "toptheta"].iloc[0]
    dense = table[table["method"] == "dense"].iloc[0]
    assert top["speedup_vs_dense"] == pytest.approx(dense["step_time_s"] / top["step_time_s"])
    # Amdahl: the end-to-end change is always closer to 1 than the attention-only one
    assert abs(top["speedup_vs_dense"] - 1) < abs(top["attention_speedup_vs_dense"] - 1)
    assert (report.parent / "cost_per_token.png").stat().st_size > 10_000
