"""The cross-model long-context summary, built from the committed tables of real traces (sims/results/longctx)."""

from pathlib import Path

import pandas as pd
import pytest

from topθ_hw.engine.longctx_summary import markdown, model_tables, summary

ROOT = Path(__file__).resolve().parents[1] / "sims/results/longctx"


def test_summary_cells_are_the_model_tables_cells():
    tables = model_tables(ROOT)
    assert "qwen2.5-coder-0.5b" in tables and not any(m.endswith("-stretch") for m in tables)
    s = summary(tables)
    assert set(s.model) == set(tables) and set(s.k) == {64, 128}
    for _, r in s.iterrows():
        t = tables[r.model]
        theta = t[(t.method == "toptheta") & (t.k == r.k) & (t.context == r.context) & (t.extrapolate == "logfit")
                  & (t.n_cal == t.n_cal.max())]
        topk = t[(t.method == "topk") & (t.k == r.k) & (t.context == r.context)]
        assert len(theta) == 1 and len(topk) == 1
        assert r["Top-θ decode V rows"] == theta.decode_v_rows_kept.iloc[0]
        assert r["top-k decode V rows"] == topk.decode_v_rows_kept.iloc[0]
        assert r["reduction vs dense"] == pytest.approx(1 / theta.decode_v_rows_kept.iloc[0])
    assert markdown(s).count("\n") == len(s) + 2


def test_summary_of_a_folder_without_tables_is_one_line(tmp_path):
    pd.DataFrame({"a": [1]}).to_csv(tmp_path / "x-stretch.csv")
    with pytest.raises(SystemExit, match="no long-context tables"):
        model_tables(tmp_path)
