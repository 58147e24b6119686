"""Whole-model cost per token (topθ_hw/cost): model files, capacity arithmetic, Amdahl sanity, CLI."""

import json

import pytest

from topθ_hw.cli import main
from topθ_hw.cost.capacity import MEMORY_UTILISATION, kv_bytes_per_sequence, max_batch
from topθ_hw.cost.models import known_models, load_model
from topθ_hw.cost.run import cost_of
from topθ_hw.errors import UserError
from topθ_hw.sim import load_device

SHIPPED = ["gemma-3-27b", "llama-3.1-70b", "llama-3.1-8b", "mistral-7b", "qwen2.5-32b", "qwen2.5-72b",
           "qwen2.5-7b", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "smollm2-135m"]


def test_every_shipped_model_loads_with_a_source_per_number():
    assert known_models() == SHIPPED
    for name in SHIPPED:
        m = load_model(name)
        assert set(m.sources) == {"layers", "hidden_size", "q_heads", "kv_heads", "head_dim", "intermediate_size",
                                  "mlp", "vocab_size", "tied_embeddings", "qkv_bias", "norms_per_layer",
                                  "sliding_window_tokens", "full_attention_every", "max_position_embeddings"}


def test_parameter_counts_match_the_published_ones():
    # Meta's and Qwen's published exact counts (safetensors totals of the bf16 checkpoints)
    assert load_model("llama-3.1-8b").parameters() == 8_030_261_248
    assert load_model("qwen2.5-7b").parameters() == 7_615_616_512
    assert load_model("gemma-3-27b").sliding_layers == 52  # 10 of 62 layers attend fully


@pytest.mark.parametrize("edit, message", [
    (("layers = 32", "layers = 0"), "shape.layers' must be a whole number ≥ 1"),
    (("kv_heads = 8", "kv_heads = 7"), "shape.kv_heads' inconsistent"),
    (("mlp = \"gated\"", "mlp = \"moe\""), "shape.mlp' must be one of"),
    (("layers = \"ref:hf_config num_hidden_layers\"", "layers = \"trust me\""), "source 'trust me' must start"),
    (("vocab_size = 128256\n", "vocab_size = 128256\nexperts = 8\n"), "unknown field(s) ['shape.experts']"),
])
def test_bad_model_fields_are_named(tmp_path, edit, message):
    text = load_model("llama-3.1-8b").path
    bad = tmp_path / "bad.toml"
    bad.write_text(open(text).read().replace(*edit, 1))
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        load_model(bad)


def test_hf_config_json_gives_the_same_shape(tmp_path):
    cfg = {"model_type": "llama", "num_hidden_layers": 32, "hidden_size": 4096, "num_attention_heads": 32,
           "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 128256, "tie_word_embeddings": False,
           "attention_bias": False, "max_position_embeddings": 131072, "rope_theta": 500000.0}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    a, b = load_model(tmp_path), load_model("llama-3.1-8b")
    assert a.parameters() == b.parameters() and a.head_dim == 128 and a.sliding_layers == 0


def test_unknown_names_list_the_shipped_ones():
    with pytest.raises(UserError, match="known models: gemma-3-27b, llama-3.1-70b"):
        load_model("llama-9b")
    with pytest.raises(UserError, match="known devices: a100, b200"):
        cost_of("llama-3.1-8b", "h201", 1, 4096)


def test_capacity_by_hand_llama_8b_on_h200():
    m, d = load_model("llama-3.1-8b"), load_device("h200")
    per_seq = 32768 * 32 * 2 * 8 * 128 * 2            # tokens × layers × (K, V) × KV heads × d × bf16
    assert kv_bytes_per_sequence(m, 32768, 1) == per_seq == 4_294_967_296
    weights = (32 * m.layer_parameters() + 2 * 128256 * 4096 + 4096) * 2
    assert max_batch(m, d, 32768, 1) == int((141e9 * MEMORY_UTILISATION - weights) // per_seq) == 25
    # StreamingLLM keeping 10 % of the context fits about 10x more sequences; Top-θ keeps every row
    assert max_batch(m, d, 32768, 1, "streaming", 0.1) >= 10 * 25
    assert max_batch(m, d, 32768, 1, "toptheta", 0.1) == 25


def test_a_batch_that_does_not_fit_says_bytes_needed_and_available():
    with pytest.raises(UserError, match=r"needs 290.9 GB per device .* h200 has 126.9 GB usable"):
        cost_of("llama-3.1-8b", "h200", 64, 32768)


def test_attention_share_grows_with_context():
    shares = [cost_of("llama-3.1-8b", "h200", 8, n, graphs=True)["attention_share"] for n in (2048, 8192, 32768)]
    assert shares[0] < shares[1] < shares[2]


def test_end_to_end_speedup_is_below_the_attention_speedup():
    r = cost_of("llama-3.1-8b", "h200", 4, 16384, method="streaming", kept_v_fraction=0.1, graphs=True)
    v = r["vs_dense"]
    assert v["attention_speedup"] > 2 and 1 < v["speedup"] < v["attention_speedup"]


@pytest.mark.parametrize("device, batch, context", [("h100", 16, 16384), ("h200", 16, 32768), ("h200", 1, 4096)])
def test_toptheta_end_to_end_change_is_a_diluted_attention_change(device, batch, context):
    """Amdahl, whichever way the attention model goes: the end-to-end ratio lies between 1 and the
    attention-only ratio, diluted by the rest of the step."""
    v = cost_of("llama-3.1-8b", device, batch, context, method="toptheta", kept_v_fraction=0.1, graphs=True)["vs_dense"]
    assert min(1, v["attention_speedup"]) < v["speedup"] < max(1, v["attention_speedup"])


def test_tensor_parallel_two_devices_are_faster_for_70b():
    # bf16 70B (141 GB) needs two H200s; a B200 (192 GB) holds it alone
    one = cost_of("llama-3.1-70b", "b200", 4, 8192, graphs=True)["step_time_s"]
    two = cost_of("llama-3.1-70b", "b200", 4, 8192, tp=2, graphs=True)["step_time_s"]
    assert two < 0.75 * one
    with pytest.raises(UserError, match="weights 141.1 GB"):
        cost_of("llama-3.1-70b", "h200", 4, 8192)


def test_graphs_beat_eager_at_batch_one():
    eager = cost_of("smollm2-135m", "h200", 1, 2048)["step_time_s"]
    graphs = cost_of("smollm2-135m", "h200", 1, 2048, graphs=True)["step_time_s"]
    assert graphs < 0.6 * eager


def test_missing_price_and_power_leave_the_columns_out():
    r = cost_of("smollm2-135m", "npu", 1, 2048)
    assert "usd_per_million_tokens" not in r and "joules_per_token" not in r
    assert any("no [cost] section" in n for n in r["notes"]) and any("no [power]" in n for n in r["notes"])
    assert cost_of("smollm2-135m", "npu", 1, 2048, price_per_hour=2.0)["usd_per_million_tokens"] > 0


KEYS = {"step_time_s", "attention_time_s", "tokens_per_s", "joules_per_token", "usd_per_million_tokens", "vs_dense",
        "max_batch"}


def test_cli_json_keys(capsys):
    assert main(["cost", "--model", "llama-3.1-8b", "--hardware", "h200", "--context", "8192", "--batch", "4",
                 "--method", "toptheta", "--kept-v-fraction", "0.2", "--graphs", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert KEYS <= set(r) and r["vs_dense"]["step_time_s_ratio"] > 0
    assert main(["cost", "--model", "llama-3.1-8b", "--hardware", "h200", "--batch", "2", "--phase", "prefill",
                 "--prompt-tokens", "4096", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert {"time_to_first_token_s", "tokens_per_s", "usd_per_million_tokens"} <= set(r)
    assert r["time_to_first_token_s"] == r["step_time_s"]


@pytest.mark.parametrize("flags, message", [
    (["--context", "32768", "--batch", "64"], "does not fit"),
    (["--context", "4096", "--batch", "1", "--tp", "3"], "--tp 3 does not divide"),
    (["--context", "4096", "--batch", "1", "--method", "toptheta"], "needs --kept-v-fraction F or --stats"),
    (["--context", "4096", "--batch", "1", "--method", "toptheta", "--kept-v-fraction", "1.5"], "outside (0, 1]"),
    (["--batch", "1", "--phase", "prefill"], "--phase prefill needs --prompt-tokens"),
    (["--context", "200000", "--batch", "1"], "--context 200000 outside 1..131072"),
    (["--context", "4096", "--batch", "1", "--tp", "16"], "links at most 8 devices"),
])
def test_cli_bad_input_is_one_line(capsys, flags, message):
    assert main(["cost", "--model", "llama-3.1-8b", "--hardware", "h200", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err


def test_stats_give_the_kept_fraction_from_real_masks(tmp_path):
    """--stats: the kept fraction of the replay's real decode masks (top-k, k = 64 on the shipped
    trace's layer 2), measured at the trace's own context and stretched beyond it."""
    from pathlib import Path

    from topθ_hw.engine import TopK
    from topθ_hw.engine.run import replay_trace
    from topθ_hw.store import open_trace
    from topθ_hw.tables import write_table

    trace = open_trace(Path(__file__).resolve().parents[1] / "traces" / "smollm2-135m.zarr")
    stats, meta = replay_trace(trace, TopK(k=64), sequences=trace.sequences[1:], layers=[2], decode_only=True)
    path = write_table(stats, tmp_path / "stats.parquet", {**meta, "kind": "engine-stats"})
    inside = int(stats.loc[stats["phase"] == "decode", "context_len"].max())
    r = cost_of("smollm2-135m", "h200", 1, inside, stats=path, graphs=True)
    assert r["method"] == "topk" and r["kept_source"] == "measured"
    assert 64 / inside <= r["kept_v_fraction"] <= 3 * 64 / inside  # union over the 3 heads of a group
    far = cost_of("smollm2-135m", "h200", 1, 8192, stats=path, graphs=True)
    assert far["kept_source"] == "extrapolated" and far["kept_v_fraction"] < r["kept_v_fraction"]


def test_launch_model_by_hand():
    """Eager: a kernel starts when the host has dispatched it and the previous one finished."""
    from topθ_hw.cost.step import launched_time_s
    d = load_device("h200")
    k, s = d.kernel, d.step
    tail = (k.launch_overhead_us - k.launch_gap_us) * 1e-6
    tiny = [1e-7] * 100                       # host-bound: 100 dispatches, then the last kernel
    assert launched_time_s(tiny, d, False) == pytest.approx(100 * s.eager_dispatch_us * 1e-6 + 1e-7 + tail)
    long = [1e-3] * 10                        # device-bound: the host is ahead after the first dispatch
    assert launched_time_s(long, d, False) == pytest.approx(
        s.eager_dispatch_us * 1e-6 + 10e-3 + 9 * k.launch_gap_us * 1e-6 + tail)
    assert launched_time_s(long, d, True) == pytest.approx(
        k.launch_overhead_us * 1e-6 + 10e-3 + 9 * s.graph_launch_gap_us * 1e-6)


def test_attention_cache_is_keyed_by_the_device_numbers(tmp_path, monkeypatch):
    from topθ_hw.cost import attention
    from topθ_hw.study.evaluate import scaled_device
    monkeypatch.setenv("TOPTHETA_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(attention, "_MEMORY", {})  # as in a fresh process
    d = load_device("h200")
    full = attention.decode_attention(d, 4, 8192, 32, 8, 128, 1.0, "dense")
    half = attention.decode_attention(scaled_device(d, 0.5, 1.0), 4, 8192, 32, 8, 128, 1.0, "dense")
    assert half["time_s"] > 1.5 * full["time_s"]
    assert len(list(tmp_path.glob("*.json"))) == 2
    attention._MEMORY.clear()                 # a fresh process reads the same result from disk
    assert attention.decode_attention(d, 4, 8192, 32, 8, 128, 1.0, "dense") == full
