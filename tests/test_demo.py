"""`toptheta demo`, the README's main job, end to end on the shipped trace (a 3-point study)."""

from pathlib import Path

import pandas as pd

from topθ_hw.cli import main
from topθ_hw.tables import read_table

REPO = Path(__file__).resolve().parents[1]
SMALL_STUDY = (REPO / "sims" / "studies" / "demo.toml").read_text()
for axis, values in {"device": '["h100"]', "context": "[4096]", "batch": "[1]", "page_size": "[1]",
                     "bandwidth_scale": "[1.0]"}.items():
    SMALL_STUDY = "\n".join(f"{axis} = {values}" if line.startswith(f"{axis} =") else line
                            for line in SMALL_STUDY.splitlines())


def test_demo_calibrates_replays_simulates_and_reports(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)  # the demo's defaults are repository paths, as in the README
    study = tmp_path / "small.toml"
    study.write_text(SMALL_STUDY)
    assert main(["demo", "--out", str(tmp_path / "demo"), "--devices", "h100", "--study", str(study)]) == 0
    out = tmp_path / "demo"
    assert f"open {out / 'report' / 'index.html'}" in capsys.readouterr().out
    kept = {}
    for method in ("dense", "topk", "toptheta"):
        stats, meta = read_table(out / f"stats-{method}.parquet", kind="engine-stats")
        assert meta["sequences"] == ["seq_0001"]  # evaluated on the text it was not calibrated on
        decode = stats[(stats.level == "group") & (stats.phase == "decode")]
        kept[method] = decode.kept_v_rows.sum() / decode.v_rows_total.sum()
        sim, _ = read_table(out / f"sim-{method}-h100.parquet", kind="sim-results")
        assert (sim[sim.scope == "step"].time_s > 0).all()
    assert kept["dense"] == 1.0 and 0 < kept["toptheta"] < 0.6 and 0 < kept["topk"] < 0.6
    study_rows, _ = read_table(out / "study.parquet", kind="study-results")
    assert len(study_rows) == 3
    html = (out / "report" / "index.html").read_text()
    assert html.count("data:image/png;base64,") >= 5
    assert len(pd.read_csv(out / "report" / "kept_fraction_by_layer.csv")) > 0
