"""``toptheta compare`` end to end on a small slice (one layer of the shipped trace, 160 tokens of
held-out text), its report figure, and bad input refused before any work."""

from __future__ import annotations

import numpy as np
import pytest

from topθ_hw.cli import main
from topθ_hw.tables import read_table

TEXT = "traces/texts/kjv-genesis.txt"


def run_compare(out, *args) -> None:
    assert main(["compare", "--layers", "4", "--k", "32", "--p", "0.9", "--step-every", "16", *args,
                 "--out", str(out)]) == 0


@pytest.fixture(scope="module")
def costs(tmp_path_factory):
    """Every family, hardware side only (no --text): replayed on one layer, simulated on two devices."""
    out = tmp_path_factory.mktemp("costs")
    run_compare(out, "--hardware", "h100,tpu-v5e", "--text")
    return out


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    """Quality beside cost for four families on 64 held-out tokens (the live side is the slow one)."""
    out = tmp_path_factory.mktemp("compare")
    # a short calibration text keeps the live calibration quick (beside the output, never inside it)
    calibration = tmp_path_factory.mktemp("calibration") / "emma-start.txt"
    calibration.write_text(open("traces/texts/austen-emma.txt", encoding="utf-8").read()[:600], encoding="utf-8")
    run_compare(out, "--hardware", "h100", "--methods", "dense,toptheta,quest,h2o", "--text", TEXT,
                "--calibration-text", str(calibration), "--window", "64", "--max-tokens", "64")
    return out


def test_each_family_reads_what_its_access_pattern_says(costs):
    df, meta = read_table(costs / "alternatives.parquet", kind="alternatives-comparison")
    assert meta["devices"] == ["h100", "tpu-v5e"] and meta["tokens"] == 0 and "kl_mean" not in df
    assert sorted(df.setting.unique()) == sorted(["dense", "topk k=32", "toptheta k=32", "toptheta+comp k=32",
                                                  "topp p=0.9", "quest k=32", "streaming k=32", "h2o k=32"])
    assert len(df) == 16 and df[["bytes_total", "time_s", "trace_rel_l2_error"]].notna().all().all()
    h100 = df[df.device == "h100"].set_index("setting")
    assert h100.loc["dense", "time_reduction_vs_dense"] == 1.0 and h100.loc["dense", "trace_rel_l2_error"] == 0
    dense_k = h100.loc["dense", "bytes_k"]
    # who reads all of K: top-k, top-p, Top-θ; Quest reads page summaries; StreamingLLM and H2O their cache
    for full_k in ("topk k=32", "toptheta k=32", "topp p=0.9"):
        assert h100.loc[full_k, "bytes_k"] == dense_k
    assert h100.loc["quest k=32", "bytes_k"] < dense_k / 2
    for cache in ("streaming k=32", "h2o k=32"):
        assert h100.loc[cache, "bytes_k"] == h100.loc[cache, "bytes_v"] < dense_k / 10
    assert h100.loc["h2o k=32", "bytes_scores"] > 0 == h100.loc["streaming k=32", "bytes_scores"]
    assert h100.loc["topp p=0.9", "time_s"] > h100.loc["toptheta k=32", "time_s"]   # sort pass, score traffic
    assert np.isclose(h100.loc["streaming k=32", "trace_kept_v_fraction"], 32 / h100.loc["dense", "context_mean"],
                      rtol=0.02)
    for name in ("alternatives.csv", "alternatives.md", "alternatives.png", "command.txt"):
        assert (costs / name).stat().st_size > 0


def test_compare_puts_live_quality_beside_the_costs(comparison):
    df, meta = read_table(comparison / "alternatives.parquet", kind="alternatives-comparison")
    assert meta["tokens"] == 64 and len(df) == 4
    q = df.set_index("setting")
    assert q.loc["dense", "kl_mean"] < 1e-6 and q.loc["dense", "agreement"] == 1.0
    assert (q.drop("dense").kl_mean > 0).all() and np.isfinite(q.ppl).all()
    assert (q.drop("dense").live_kept_v_fraction < 1).all()


def test_the_report_shows_the_comparison(comparison, tmp_path):
    assert main(["report", str(comparison / "alternatives.parquet"), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "alternatives_alternatives.png").exists()
    assert "alternatives" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("args,match", [(["--page-size", "12"], "power of two"), (["--p", "0"], r"\(0, 1\]"),
                                        (["--k", "0"], "≥ 1"), (["--methods", "dense,magic"], "magic"),
                                        (["--hardware", "nosuchdevice"], "nosuchdevice"),
                                        (["--methods", "topk"], "must include dense"),
                                        (["--compensation", "sdc=offline"], "offline SDC"),
                                        (["--compensation", "capk"], "not a compensation"),
                                        (["--page-size", "4"], "simulator models Quest pages")])
def test_bad_input_is_refused_before_any_work(args, match, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compare", *args, "--text", "--out", str(out)]) == 2
    assert not out.exists()
    import re
    assert re.search(match, capsys.readouterr().err)
