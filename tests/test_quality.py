"""Live Top-θ inside SmolLM2: one semantics with the trace engine, prefill = decode, evaluation, bad input.

Real weights (SmolLM2-135M, ~3 s from the fp32 cache), the shipped real trace and thresholds the
engine calibrates from it (Emma, k = 32, layer 0 at 128); the live path runs on Hamlet's rows.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from topθ_hw.cli import main
from topθ_hw.engine import methods as engine_methods
from topθ_hw.engine import replay_layer
from topθ_hw.engine.calibrate import calibrate
from topθ_hw.errors import UserError
from topθ_hw.quality import methods as live_methods
from topθ_hw.engine.methods.base import parse_layer_k
from topθ_hw.quality.attention import KeptCounter, attend
from topθ_hw.quality.calibrate import Calibrator, ThresholdSums, threshold_table
from topθ_hw.quality.evaluate import evaluate
from topθ_hw.quality.live import sparsified
from topθ_hw.quality.settings import Setting, Variant, build_settings, parse_variant
from topθ_hw.quality.thresholds import LiveThresholds, check_model, load_live_thresholds
from topθ_hw.store import open_trace
from topθ_hw.tables import read_table

ROOT = Path(__file__).resolve().parents[1]
TEXT = ROOT / "traces" / "texts" / "shakespeare-hamlet.txt"


@pytest.fixture(scope="session")
def trace():
    return open_trace(ROOT / "traces" / "smollm2-135m.zarr")


@pytest.fixture(scope="session")
def engine_tables(trace):
    return {p: calibrate(trace, ["seq_0000"], k=32, layer_k="0:128", placement=p) for p in ("pre", "post")}


@pytest.fixture(scope="session")
def live_tables(engine_tables):
    return {p: LiveThresholds(t) for p, t in engine_tables.items()}


@pytest.fixture(scope="session")
def loaded():
    from topθ_hw.capture.models import load_model
    return load_model("smollm2-135m", dtype="float32")


@pytest.fixture(scope="session")
def hamlet_ids(loaded):
    return loaded.tokenizer(TEXT.read_text(), return_tensors="pt").input_ids[0]


# One registry of (engine method, live method) pairs drives the semantics test.
def method_pairs(engine_tables, live_tables):
    pairs = {"dense": (engine_methods.Dense(), live_methods.Dense()),
             "topk": (engine_methods.TopK(k=32), live_methods.TopK(32))}
    variants = [("pre", False, None, False), ("pre", True, None, False), ("pre", False, "exact", True),
                ("pre", False, "expthr", False), ("pre", True, "offline", True), ("post", False, None, False),
                ("post", True, None, True)]
    for placement, capk, sdc, vmc in variants:
        name = f"{placement}{'+capk' if capk else ''}{f'+sdc={sdc}' if sdc else ''}{'+vmc' if vmc else ''}"
        pairs[name] = (engine_methods.TopTheta(thresholds=engine_tables[placement], capk=capk, sdc=sdc or "none",
                                               vmc=vmc),
                       live_methods.TopTheta(live_tables[placement], sdc=sdc, vmc=vmc, capk=capk))
    return pairs


PAIR_NAMES = ["dense", "topk", "pre", "pre+capk", "pre+sdc=exact+vmc", "pre+sdc=expthr", "pre+capk+sdc=offline+vmc",
              "post", "post+capk+vmc"]


class MaskRecorder:
    """Collects the live path's kept masks [Hq, T, T] (a KeptCounter stand-in)."""

    def __init__(self, n_heads, n_rows):
        self.kept = np.zeros((n_heads, n_rows, n_rows), bool)

    def record(self, layer, kept, rows, n_kv_heads, prefill):
        self.kept[:, rows.n.numpy() - 1, :kept.shape[-1]] = kept[0].numpy()


@pytest.mark.parametrize("name", PAIR_NAMES)
def test_live_path_and_engine_keep_the_same_elements_and_agree(name, trace, engine_tables, live_tables):
    engine_method, live_method = method_pairs(engine_tables, live_tables)[name]
    engine_method.check(trace.meta)
    seq = trace.sequence("seq_0001")                      # Hamlet: not the calibration text
    post = name.startswith("post")
    for layer in (0, 14, 29):
        qkv = seq.layer(layer)
        ref = replay_layer(qkv, engine_method, layer, seq.prompt_len, keep_outputs=True)
        rec = MaskRecorder(*qkv.q.shape[:2])
        q, k, v = (torch.from_numpy(x)[None] for x in (qkv.q, qkv.k, qkv.v))
        out = attend(live_method, q, k, v, qkv.scaling, layer, rec)[0].transpose(0, 1).numpy()
        counts = rec.kept.sum(-1)
        differing = counts != ref.rows["kept"]
        # post-softmax decides p > θ through the row's exp sum: a float ulp may flip one boundary element
        assert differing.sum() <= (0.002 * counts.size if post else 0), f"layer {layer}"
        assert np.abs(counts - ref.rows["kept"]).max() <= (1 if post else 0)
        scale = np.abs(ref.out_sparse).max()
        assert np.abs(out - ref.out_sparse).max() <= (2e-4 if post else 2e-6) * scale
        union = rec.kept.reshape(3, 3, *rec.kept.shape[1:]).any(1)      # [Hkv, T, T]
        decode_tiles = [t for t in ref.tiles if t["phase"] == "decode"]
        assert decode_tiles
        for tile in decode_tiles:
            row = tile["row_start"]
            mask = np.unpackbits(np.frombuffer(tile["kept_v_mask"], np.uint8))[:row + 1].astype(bool)
            mismatch = (union[tile["kv_group"], row, :row + 1] != mask).sum()
            assert mismatch <= (1 if post else 0)
            assert tile["kept_v_rows"] == mask.sum()


def test_live_calibration_gives_the_engines_thresholds(trace, engine_tables):
    seq = trace.sequence("seq_0000")
    sums = ThresholdSums(np.stack([parse_layer_k("0:128", 32, 30)]), ("pre", "post"), 9, seq.n_tokens)
    layers = [0, 14, 29]
    for layer in layers:
        qkv = seq.layer(layer)
        attend(Calibrator(sums), *(torch.from_numpy(x)[None] for x in (qkv.q, qkv.k, qkv.v)), qkv.scaling, layer)
    for placement in ("pre", "post"):
        live, engine = threshold_table(sums, 0, placement, 0.1, {}), engine_tables[placement]
        assert np.array_equal(live.lengths, engine.lengths)
        assert np.array_equal(live.count[layers], engine.count[layers])
        # torch and the numba engine sum float32 scores in different orders: equal to a few ulp
        assert np.allclose(live.theta[layers], engine.theta[layers], rtol=2e-5, atol=0, equal_nan=True)


def test_calibrate_live_then_evaluate_from_the_command_line(tmp_path, capsys):
    cal, out = tmp_path / "thresholds", tmp_path / "eval"
    genesis = tmp_path / "genesis.txt"             # ~4 windows of 64 tokens
    genesis.write_text((ROOT / "traces/texts/kjv-genesis.txt").read_text()[:1000])
    assert main(["calibrate-live", "--text", str(genesis), "--k", "8,16",
                 "--placement", "pre,post", "--window", "64", "--out", str(cal)]) == 0
    assert sorted(p.name for p in cal.iterdir()) == [f"k{k}-{p}.safetensors" for k in (16, 8) for p in ("post", "pre")]
    assert main(["evaluate", "--thresholds", str(cal), "--text", str(TEXT), "--max-tokens", "129", "--window", "64",
                 "--k", "8,16", "--variants", "pre,post+vmc,topk", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "sparsest by kept_v_row_fraction" in printed.out
    assert "calibrated up to n = 64" not in printed.err          # windows are no longer than calibrated
    table, meta = read_table(out / "quality.parquet", kind="quality")
    assert len(table) == 6 and meta["tokens"] == 129 and (out / "quality.png").stat().st_size > 10_000
    assert (out / "quality.csv").read_text().startswith("setting,")
    with pytest.raises(UserError, match="sdc_dropped_mass"):
        build_settings([parse_variant("pre+sdc=offline")], [8], [load_live_thresholds(cal / "k8-pre.safetensors")])


def test_dense_live_attention_reproduces_sdpa_logits(loaded, hamlet_ids):
    x = hamlet_ids[None, :200]
    with torch.no_grad():
        ref = loaded.model(x).logits
        with sparsified(loaded.model, live_methods.Dense()):
            live = loaded.model(x).logits
    assert (live - ref).abs().max() < 2e-3
    assert loaded.model.config._attn_implementation == "sdpa"


def prefill_and_cached_decode(model, make_method, x, prompt: int):
    """Run x[:-1] teacher-forced in one call, then the prompt and one-token decode calls with the
    KV cache, each under a fresh method from ``make_method`` (stateful methods must not share).
    Returns (the cached run's logits for rows prompt-1.., the same rows of the one-call run, and
    the two KeptCounters)."""
    total, layers = x.shape[1], model.config.num_hidden_layers
    prefill_counter, decode_counter = KeptCounter(layers, prompt + 1), KeptCounter(layers, prompt + 1)
    with torch.no_grad():
        with sparsified(model, make_method(), prefill_counter):
            full = model(x[:, :total - 1]).logits[0]
        with sparsified(model, make_method(), decode_counter):
            out = model(x[:, :prompt], use_cache=True)
            steps = [out.logits[0, -1]]
            for t in range(prompt, total - 1):
                out = model(x[:, t:t + 1], cache=out.past_key_values, use_cache=True)
                steps.append(out.logits[0, -1])
    return torch.stack(steps), full[prompt - 1:total - 1], prefill_counter, decode_counter


def test_decode_with_kv_cache_equals_prefill_rows(loaded, hamlet_ids, live_tables):
    """Generation-time decode and teacher-forced prefill are one semantics: same logits, same V rows."""
    prompt, total = 96, 112
    cached, full, prefill_counter, decode_counter = prefill_and_cached_decode(
        loaded.model, lambda: live_methods.TopTheta(live_tables["pre"], sdc="exact", vmc=True),
        hamlet_ids[None, :total], prompt)
    assert torch.allclose(cached, full, atol=2e-3)
    assert decode_counter.decode_steps == prefill_counter.decode_steps == total - prompt - 1
    assert np.allclose(decode_counter.kept_v_rows, prefill_counter.kept_v_rows, rtol=2e-3)
    assert 0.05 < decode_counter.v_row_fraction() < 0.9


def test_sparsified_restores_the_model_after_an_error(loaded):
    from transformers import AttentionInterface
    before = set(AttentionInterface._global_mapping)
    with pytest.raises(RuntimeError):
        with sparsified(loaded.model, live_methods.TopK(8)):
            assert loaded.model.config._attn_implementation.startswith("toptheta_live_")
            raise RuntimeError("boom")
    assert loaded.model.config._attn_implementation == "sdpa"
    assert set(AttentionInterface._global_mapping) == before


def test_evaluate_measures_dense_as_lossless_and_top_theta_as_sparser(loaded, hamlet_ids, live_tables):
    settings = [Setting(Variant("dense"), None, live_methods.Dense(), None),
                Setting(Variant("topk"), 512, live_methods.TopK(512), None),   # k >= window: dense
                *build_settings([parse_variant("pre+sdc=expthr+vmc"), parse_variant("post")], [32],
                                list(live_tables.values()))]
    summary, layers = evaluate(loaded.model, hamlet_ids[:161], settings, window=80, decode_from=40,
                               progress=False)
    s = summary.set_index("setting")
    for lossless in ("dense", "topk k=512"):
        assert abs(s.loc[lossless, "ppl_increase"]) < 1e-4 and s.loc[lossless, "kl_mean"] < 1e-6
        assert s.loc[lossless, "agreement"] == 1.0
        assert s.loc[lossless, "kept_element_fraction"] == s.loc[lossless, "kept_v_row_fraction"] == 1.0
    for sparse in ("pre+sdc=expthr+vmc k=32", "post k=32"):
        assert s.loc[sparse, "kept_v_row_fraction"] < 0.9 and s.loc[sparse, "kept_element_fraction"] < 0.9
        assert np.isfinite(s.loc[sparse, ["ppl", "kl_mean"]].astype(float)).all()
        assert s.loc[sparse, "tokens"] == 158 and not s.loc[sparse, "extrapolated"]
    assert set(layers["layer"]) == set(range(30))


def test_rows_past_the_calibrated_lengths_use_the_engines_extrapolation(live_tables, engine_tables):
    table = LiveThresholds(engine_tables["pre"], extrapolate="hold")
    longest = table.max_calibrated_n
    theta = table.theta_rows(4, torch.tensor([longest, longest + 300]))
    assert torch.equal(theta[:, 0], theta[:, 1]) and table.extrapolated
    logfit = LiveThresholds(engine_tables["pre"], extrapolate="logfit").theta_rows(4, torch.tensor([longest + 300]))
    assert not torch.equal(logfit[:, 0], theta[:, 1])


def test_layers_missing_from_the_calibration_trace_run_dense(engine_tables, trace):
    """The shipped trace stores 17 of 30 layers: the others have no θ and must run dense, by name."""
    table = LiveThresholds(engine_tables["pre"])
    missing = sorted(set(range(30)) - set(trace.meta.captured_layers))
    assert table.uncalibrated_layers == missing and 3 in missing
    n = torch.tensor([100, 400])
    assert torch.isneginf(table.theta_rows(3, n)).all()          # keeps every key
    assert torch.isfinite(table.theta_rows(4, n)).all()          # a captured layer is thresholded


def test_thresholds_of_another_model_or_placement_are_refused(engine_tables, loaded, tmp_path, capsys):
    table = engine_tables["pre"]
    foreign = type(table)(**{**table.__dict__, "meta": {**table.meta, "model_file_sha256": "0" * 64}})
    with pytest.raises(UserError, match="model_file_sha256"):
        check_model(LiveThresholds(foreign), loaded)
    foreign.save(tmp_path / "foreign.safetensors")
    table.save(tmp_path / "pre.safetensors")
    base = ["evaluate", "--text", str(TEXT), "--out", str(tmp_path / "out")]
    assert main(base + ["--thresholds", str(tmp_path / "foreign.safetensors")]) == 2
    assert "model_file_sha256" in capsys.readouterr().err
    assert main(base + ["--thresholds", str(tmp_path / "pre.safetensors"), "--placement", "post"]) == 2
    assert "field 'placement' is 'pre'" in capsys.readouterr().err
    assert main(base + ["--thresholds", str(tmp_path / "pre.safetensors"), "--k", "64"]) == 2
    assert "no artifact with k=64" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text", ["pre+sdc=bogus", "mid", "post+sdc=exact", "pre+vmc+fast"])
def test_bad_variants_are_refused(text):
    with pytest.raises(UserError, match="--variants"):
        parse_variant(text)


def test_generate_prints_dense_and_top_theta_side_by_side(engine_tables, tmp_path, capsys):
    engine_tables["pre"].save(tmp_path / "pre.safetensors")
    prompt = tmp_path / "prompt.txt"
    prompt.write_text(TEXT.read_text()[:300])
    assert main(["generate", "--thresholds", str(tmp_path / "pre.safetensors"), "--prompt-file", str(prompt),
                 "--max-new-tokens", "4", "--variant", "pre+sdc=expthr"]) == 0
    out = capsys.readouterr().out
    assert "dense" in out and "pre+sdc=expthr k=32" in out and "decode V rows" in out
