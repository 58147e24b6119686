"""The quality-at-scale claim table, built from the committed results of real runs (sims/results/quality-scale)."""

from pathlib import Path

import pandas as pd
import pytest

from topθ_hw.tasks.claim import claim_table, markdown

ROOT = Path(__file__).resolve().parents[1] / "sims/results/quality-scale"


def test_claim_table_reads_every_criterion_and_applies_both_conditions():
    t = claim_table(ROOT)
    assert {"perplexity", "next-token agreement", "HumanEval pass@1", "passkey retrieval"} <= set(t.criterion)
    # the claim is exactly: loss within 1 % (or 1 point) and at least 3x fewer decode V rows
    assert (t.claim_holds == ((t.loss <= 0.01) & (1 / t.kept_v_row_fraction >= 3))).all()
    q = pd.read_csv(ROOT / "ppl-4k/quality.csv").set_index("setting")
    row = t[(t.criterion == "perplexity") & (t.setting == "topk k=128") & t.length.str.startswith("4096")].iloc[0]
    assert row.loss == pytest.approx(q.loc["topk k=128", "ppl_increase"])
    assert row.kept_v_row_fraction == pytest.approx(q.loc["topk k=128", "kept_v_row_fraction"])


def test_claim_table_orders_contexts_numerically_within_a_criterion():
    t = claim_table(ROOT)
    for _, part in t.groupby("criterion", sort=False):
        n = pd.to_numeric(part.length.str.extract(r"^(\d+)", expand=False), errors="coerce").fillna(0)
        assert n.is_monotonic_increasing
    assert markdown(t).count("\n") == len(t) + 2


def test_claim_table_of_an_empty_folder_is_one_line(tmp_path):
    with pytest.raises(SystemExit, match="no ppl-"):
        claim_table(tmp_path)


def test_passkey_runs_are_pooled_per_length():
    from topθ_hw.tasks.claim import pooled_passkey

    one = ROOT / "passkey-8k/passkey_summary.csv"
    twice = pooled_passkey([one, one]).set_index("setting")
    single = pd.read_csv(one).set_index("setting")
    assert (twice.n == 2 * single.n).all() and (twice.correct == 2 * single.correct).all()
    sparse = single.index[single.family != "dense"]
    assert twice.loc[sparse, "kept_v_row_fraction"].to_numpy() == pytest.approx(
        single.loc[sparse, "kept_v_row_fraction"].to_numpy(), rel=1e-5)
    both = pooled_passkey([ROOT / "passkey/passkey_summary.csv", one])
    assert sorted(both.length.unique()) == [4096, 8192]
    assert (both.groupby("length").setting.nunique() == both.setting.nunique()).all()
