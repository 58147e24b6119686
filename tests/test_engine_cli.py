"""The engine's commands end to end (calibrate → replay → headline) and its answers to bad input."""

import numpy as np
import pytest

from test_engine_reference import tiny_meta
from topθ_hw.cli import main
from topθ_hw.engine import TopK, TopTheta, load_thresholds
from topθ_hw.engine.calibrate import calibrate
from topθ_hw.engine.methods import parse_layer_k
from topθ_hw.engine.run import replay_trace
from topθ_hw.errors import TraceError, UserError
from topθ_hw.store import TraceWriter, open_trace
from topθ_hw.tables import read_table


def write_trace(path, meta, n_sequences=2, prompt=90, decode=6, poison=False):
    rng = np.random.default_rng(0)
    rows = prompt + decode
    with TraceWriter(path, meta) as writer:
        for s in range(n_sequences):
            with writer.sequence(f"text-{s}", list(range(prompt)), max_rows=rows) as seq:
                for layer in range(meta.n_layers):
                    q = rng.standard_normal((meta.n_q_heads, rows, meta.head_dim)).astype(np.float32) * 2
                    k, v = (rng.standard_normal((meta.n_kv_heads, rows, meta.head_dim)).astype(np.float32)
                            for _ in range(2))
                    if poison and layer == 1:
                        k[0, 5, 0] = np.nan
                    seq.append(layer, q, k, v)
    return open_trace(path)


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    return write_trace(tmp_path_factory.mktemp("engine") / "t.zarr", tiny_meta(n_layers=2, window=None))


def test_calibrate_replay_headline_commands(trace, tmp_path):
    th = tmp_path / "th.safetensors"
    assert main(["calibrate", "--traces", str(trace.path), "--k", "8", "--layer-k", "0:16", "--placement", "pre",
                 "--sigma", "0.1", "--out", str(th)]) == 0
    table = load_thresholds(th)
    assert table.meta["sequences"] == ["seq_0000"] and table.layer_k.tolist() == [16, 8]
    assert table.meta["model_file_sha256"] == trace.meta.model_file_sha256 and table.meta["placement"] == "pre"
    assert (table.count[:, :, -1] == 1).all() and np.isfinite(table.sdc_dropped_mass[1, :, -1]).all()
    stats = tmp_path / "s.parquet"
    assert main(["replay", "--traces", str(trace.path), "--method", "toptheta", "--thresholds", str(th),
                 "--sdc", "offline", "--vmc", "--out", str(stats)]) == 0
    frame, meta = read_table(stats, kind="engine-stats")
    assert meta["sequences"] == ["seq_0001"] and meta["calibration_overlap"] == []   # disjoint by default
    assert meta["method"] == "toptheta" and meta["params"]["sdc"] == "offline" and meta["n_kv_heads"] == 2
    assert set(frame.sequence) == {"seq_0001"} and set(frame.layer) == {0, 1}
    assert main(["replay", "--traces", str(trace.path), "--method", "topk", "--k", "8",
                 "--out", str(tmp_path / "k.parquet")]) == 0
    out = tmp_path / "headline"
    assert main(["headline", "--traces", str(trace.path), "--ks", "8,16", "--out", str(out)]) == 0
    text = (out / "headline.md").read_text()
    assert "seq_0000" in text and "| 16 | toptheta |" in text and (out / "headline_per_layer.csv").exists()


def test_thresholds_of_another_model_or_placement_are_refused(trace, tmp_path):
    table = calibrate(trace, ["seq_0000"], 8)
    other = write_trace(tmp_path / "other.zarr", tiny_meta(n_layers=2, sha="b" * 64), n_sequences=1)
    with pytest.raises(UserError, match="model_file_sha256"):
        replay_trace(other, TopTheta(table))
    with pytest.raises(UserError, match="placement"):
        replay_trace(trace, TopTheta(table, placement="post"))
    with pytest.raises(UserError, match="pre-softmax"):
        TopTheta(calibrate(trace, ["seq_0000"], 8, placement="post"), sdc="exact")


def test_bad_k_and_layer_k_are_refused(trace):
    with pytest.raises(UserError, match="k must be ≥ 1"):
        TopK(k=0)
    with pytest.raises(UserError, match="layer 5 does not exist"):
        calibrate(trace, ["seq_0000"], 8, layer_k="5:64")
    with pytest.raises(UserError, match="LAYER:K"):
        parse_layer_k("0=64", 8, 2)
    with pytest.raises(UserError, match="layer 0 must be ≥ 1"):
        parse_layer_k("0:0", 8, 2)
    assert main(["calibrate", "--traces", str(trace.path), "--k", "0", "--out", "/dev/null"]) == 2


def test_nan_trace_is_refused_naming_layer(tmp_path):
    bad = write_trace(tmp_path / "nan.zarr", tiny_meta(n_layers=2), n_sequences=1, poison=True)
    with pytest.raises(TraceError, match="layer 1 k: 1 NaN"):
        replay_trace(bad, TopK(k=4), ["seq_0000"])


def test_bad_threshold_files_and_sequences(trace, tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="junk.safetensors"):
        load_thresholds(junk)
    with pytest.raises(UserError, match="no such threshold file"):
        load_thresholds(tmp_path / "missing.safetensors")
    table = calibrate(trace, ["seq_0000", "seq_0001"], 8)
    with pytest.raises(UserError, match="used for calibration"):
        replay_trace(trace, TopTheta(table))
    with pytest.raises(UserError, match="seq_0009"):
        replay_trace(trace, TopK(k=4), ["seq_0009"])


def test_lookup_nearest_interp_and_extrapolation(trace):
    table = calibrate(trace, ["seq_0000"], 8)
    xs = table.lengths
    n = np.array([xs[0] - 3, xs[5] + 0.5, xs[-1] + 400], np.float64)
    near = table.thresholds_for_rows(0, n, "nearest", "hold")
    interp = table.thresholds_for_rows(0, n, "interp", "hold")
    fit = table.thresholds_for_rows(0, n, "interp", "logfit")
    th = table.theta[0]
    np.testing.assert_allclose(near[:, 0], th[:, 0])                   # below: hold the first
    np.testing.assert_allclose(near[:, 1], th[:, 5])                   # tie goes to the shorter
    np.testing.assert_allclose(interp[:, 1], (th[:, 5] + th[:, 6]) / 2)
    np.testing.assert_allclose(interp[:, 2], th[:, -1])                # hold past the end
    assert np.isfinite(fit).all() and not np.allclose(fit[:, 2], th[:, -1])
    with pytest.raises(UserError, match="lookup"):
        TopTheta(table, lookup="cubic")


def test_decode_only_replay_gives_the_same_decode_statistics(trace):
    full, _ = replay_trace(trace, TopK(k=8), ["seq_0001"])
    fast, meta = replay_trace(trace, TopK(k=8), ["seq_0001"], decode_only=True)
    assert set(fast.phase) == {"decode"} and meta["phases"] == ["decode"]
    decode = full[full.phase == "decode"].reset_index(drop=True)
    cols = ["layer", "head", "level", "step", "kept_elements", "kept_v_rows", "pages_needed_16", "kept_v_mask"]
    assert decode[cols].equals(fast[cols].reset_index(drop=True))


def test_replay_layers_and_decode_only_options(trace, tmp_path):
    out = tmp_path / "d.parquet"
    assert main(["replay", "--traces", str(trace.path), "--method", "dense", "--layers", "1", "--decode-only",
                 "--sequences", "seq_0000", "--out", str(out)]) == 0
    frame, meta = read_table(out, kind="engine-stats")
    assert set(frame.layer) == {1} and set(frame.phase) == {"decode"} and meta["phases"] == ["decode"]
    assert (frame[frame.level == "group"].kept_v_rows == frame[frame.level == "group"].v_rows_total).all()
    assert main(["replay", "--traces", str(trace.path), "--method", "dense", "--layers", "7",
                 "--out", str(out)]) == 2


def test_real_trace_calibration_replayed_on_itself_keeps_k_and_refuses_by_default():
    """SmolLM2 trace, full pipeline: σ = 0 thresholds replayed on their own sequence keep k (bf16 ties
    may keep one fewer, never more); by default replay picks the other sequence."""
    real = open_trace("traces/smollm2-135m.zarr")
    table = calibrate(real, ["seq_0000"], 32, placement="post", sigma=0.0)
    assert table.meta["sources"] == [real.sequence("seq_0000").source] and table.meta["model_id"] == "smollm2-135m"
    frame, meta = replay_trace(real, TopTheta(table), ["seq_0000"], layers=[0, 14, 29])
    heads = frame[(frame.level == "head") & (frame.row_start >= 32)]
    assert heads.kept_per_row_max.max() == 32 and heads.kept_per_row_mean.mean() > 31.99
    assert meta["calibration_overlap"] == ["seq_0000"]
    _, meta = replay_trace(real, TopTheta(table), layers=[0], decode_only=True)
    assert meta["sequences"] == [s for s in real.sequences if s != "seq_0000"]
