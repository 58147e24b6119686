"""Task accuracy: the sandbox, HumanEval scoring, passkey construction and retrieval, on real SmolLM2.

The sandbox checks need no model; the rest load SmolLM2-135M (~3 s from the fp32 cache) and run two
HumanEval problems with a short completion and one short passkey, so the file stays well under a minute.
"""

import time
from pathlib import Path

import pytest

from topθ_hw.cli import main
from topθ_hw.errors import UserError
from topθ_hw.quality.evaluate import evaluate
from topθ_hw.quality.settings import Variant, build_settings
from topθ_hw.tables import read_table
from topθ_hw.tasks import humaneval, passkey
from topθ_hw.tasks.run import run_passkey, summarize
from topθ_hw.tasks.sandbox import Limits, run_program

ROOT = Path(__file__).resolve().parents[1]
EMMA = ROOT / "traces" / "texts" / "austen-emma.txt"


@pytest.fixture(scope="module")
def loaded():
    from topθ_hw.capture.models import load_model
    return load_model("smollm2-135m", dtype="float32")


def test_sandbox_kills_an_infinite_loop_by_cpu_time_and_a_sleeper_by_wall_clock():
    start = time.perf_counter()
    assert run_program("while True:\n    pass\n", Limits(wall_seconds=30, cpu_seconds=1)).status == "timeout"
    assert run_program("import time\ntime.sleep(60)\n", Limits(wall_seconds=1, cpu_seconds=5)).status == "timeout"
    assert time.perf_counter() - start < 20
    hog = run_program("x = bytearray(1 << 31)\n", Limits(memory_bytes=256 << 20))
    assert hog.status == "failed" and "MemoryError" in hog.stderr_tail


def test_a_known_correct_completion_passes_and_a_wrong_one_fails():
    problems = humaneval.load_problems(2)
    assert [p["task_id"] for p in problems] == ["HumanEval/0", "HumanEval/1"]
    assert len(humaneval.load_problems()) == 164
    for p in problems:
        assert run_program(humaneval.program(p, p["canonical_solution"])).passed
        assert run_program(humaneval.program(p, "    return None\n")).status == "failed"
    assert humaneval.truncate("    return 1\n\ndef other():\n    pass") == "    return 1\n"
    with pytest.raises(UserError, match="HumanEval/999"):
        humaneval.load_problems(task_ids=["HumanEval/999"])


def test_passkey_sits_at_the_stated_depth(loaded):
    text = EMMA.read_text()
    for depth in (0.0, 0.25, 0.5, 0.9):
        p = passkey.build(loaded.tokenizer, text, 1024, depth, "48213")
        assert abs(p.tokens - 1024) <= 8
        assert abs(p.measured_depth - depth) < 0.05          # one line of prose is < 5 % of 1024 tokens
        ids = loaded.tokenizer(p.text).input_ids
        needle = loaded.tokenizer.decode(ids[p.needle_token:p.needle_token + 12])
        assert "pass key is 48213" in needle
    with pytest.raises(UserError, match="fewer than"):
        passkey.build(loaded.tokenizer, text[:2000], 1024, 0.5, "1")


def test_dense_smollm2_retrieves_a_short_passkey_and_top_k_counts_fewer_v_rows(loaded):
    settings = build_settings([Variant("dense"), Variant("topk")], [16], [])
    frame = run_passkey(loaded, settings, EMMA.read_text(), [512], [0.5], seed=3, progress=False)
    dense, topk = frame.iloc[0], frame.iloc[1]
    assert dense["retrieved"], dense["answer"]
    assert topk["v_rows"] > 0 and topk["kept_v_rows"] < 0.25 * topk["v_rows"]
    s = summarize(frame, "retrieved", by=("length",)).set_index("setting")
    assert s.loc["dense", "accuracy"] == 1.0 and s.loc["dense", "kept_v_row_fraction"] == 1.0


def test_humaneval_from_the_command_line_on_two_problems(tmp_path, capsys):
    out = tmp_path / "he"
    assert main(["task", "humaneval", "--model", "smollm2-135m", "--first", "2", "--max-new-tokens", "12",
                 "--variants", "dense,topk", "--k", "16", "--out", str(out)]) == 0
    summary, meta = read_table(out / "humaneval_summary.parquet", kind="task-humaneval")
    assert list(summary["setting"]) == ["dense", "topk k=16"] and list(summary["n"]) == [2, 2]
    assert meta["problems"] == ["HumanEval/0", "HumanEval/1"]
    assert (out / "humaneval.png").stat().st_size > 5_000 and "within_1pt_at_3x" in capsys.readouterr().out


@pytest.mark.parametrize("argv, flag", [(["passkey", "--haystack", str(EMMA), "--depths", "1.5"], "--depths"),
                                        (["humaneval", "--problems", "HumanEval/x", "--k", "16"], "--problems"),
                                        (["passkey", "--haystack", "/nonexistent.txt"], "--haystack")])
def test_bad_task_input_is_one_line_and_exit_2(argv, flag, tmp_path, capsys):
    assert main(["task", *argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert flag in err and len(err.splitlines()) == 1 and not (tmp_path / "o").exists()


def test_score_from_scores_only_the_far_tokens_of_each_window(loaded):
    ids = loaded.tokenizer(EMMA.read_text(), return_tensors="pt").input_ids[0][:120]   # windows of 80 and 40
    settings = build_settings([Variant("dense")], [], [])
    full, _ = evaluate(loaded.model, ids, settings, window=80, progress=False)
    far, _ = evaluate(loaded.model, ids, settings, window=80, progress=False, score_from=60)
    assert full["tokens"].iloc[0] == 79 + 39 and far["tokens"].iloc[0] == 20    # the 40-token window is too short
    assert abs(far["ppl_increase"].iloc[0]) < 1e-5 and far["agreement"].iloc[0] == 1.0


def test_a_dense_context_prefix_scores_only_the_rows_after_it_and_matches_the_full_pass(loaded):
    ids = loaded.tokenizer(EMMA.read_text(), return_tensors="pt").input_ids[0][:80]
    settings = build_settings([Variant("dense"), Variant("topk")], [8], [])
    full, _ = evaluate(loaded.model, ids, settings[:1], window=80, progress=False, score_from=61)
    cached, _ = evaluate(loaded.model, ids, settings, window=80, progress=False, dense_context=60)
    assert cached["tokens"].iloc[0] == full["tokens"].iloc[0] == 19
    assert abs(cached["ppl_dense"].iloc[0] - full["ppl_dense"].iloc[0]) < 1e-3 * full["ppl_dense"].iloc[0]
    topk = cached.set_index("setting").loc["topk k=8"]
    assert topk["decode_steps"] == 20 and 0 < topk["kept_v_row_fraction"] < 0.2
