"""Long-context capture in small: chunked prefill, decode stride, disk check (real SmolLM2)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from topθ_hw.capture.chunked import prefill_chunks  # noqa: E402
from topθ_hw.capture.models import load_model  # noqa: E402
from topθ_hw.capture.run import capture_texts  # noqa: E402
from topθ_hw.errors import UserError  # noqa: E402
from topθ_hw.store import open_trace  # noqa: E402

EMMA = "traces/texts/austen-emma.txt"
LAYERS = [0, 7, 29]


@pytest.fixture(scope="module")
def lm():
    return load_model("smollm2-135m", "float32")


@pytest.fixture(scope="module")
def one_shot(lm, tmp_path_factory):
    out = tmp_path_factory.mktemp("cap") / "one.zarr"
    return open_trace(capture_texts([EMMA], out, loaded=lm, dtype="float32", max_prompt_tokens=300,
                                    max_new_tokens=6, progress=False, layers=LAYERS))


def test_prefill_chunks_cover_the_prompt_once():
    assert prefill_chunks(300, 64) == [(0, 64), (64, 128), (128, 192), (192, 256), (256, 300)]
    assert prefill_chunks(300, None) == [(0, 300)] == prefill_chunks(300, 512)


def test_chunked_prefill_stores_the_same_qkv_as_one_pass(lm, one_shot, tmp_path):
    out = capture_texts([EMMA], tmp_path / "chunked.zarr", loaded=lm, dtype="float32", max_prompt_tokens=300,
                        max_new_tokens=6, progress=False, layers=LAYERS, chunk_tokens=64)
    a, b = one_shot.sequence("seq_0000"), open_trace(out).sequence("seq_0000")
    assert a.token_ids == b.token_ids and b.prompt_len == 300 and b.n_tokens == 306
    for layer in LAYERS:
        x, y = a.layer(layer), b.layer(layer)
        for kind in ("q", "k", "v"):
            ref, got = getattr(x, kind), getattr(y, kind)
            # Only the summation order of attention over earlier chunks differs (float32).
            assert np.abs(got - ref).max() <= 2e-4 * np.abs(ref).max(), (layer, kind)
        # Layer 0's Q/K/V are computed before any attention: chunking cannot change them at all.
        if layer == 0:
            assert np.array_equal(x.k, y.k) and np.array_equal(x.q, y.q)


def test_decode_stride_keeps_every_nth_query_and_all_keys(lm, one_shot, tmp_path):
    out = capture_texts([EMMA], tmp_path / "stride.zarr", loaded=lm, dtype="float32", max_prompt_tokens=300,
                        max_new_tokens=6, progress=False, layers=[7], decode_every=4)
    seq, ref = open_trace(out).sequence("seq_0000"), one_shot.sequence("seq_0000").layer(7)
    got = seq.layer(7)
    assert seq.info.decode_every == 4 and got.decode_every == 4
    kept, skipped = [300, 304], [301, 302, 303, 305]
    assert np.array_equal(got.q[:, kept], ref.q[:, kept]) and not got.q[:, skipped].any()
    assert np.array_equal(got.k, ref.k) and np.array_equal(got.v, ref.v)
    # replay skips the steps without a real query, and refuses methods that need every step
    from topθ_hw.engine.methods import TopK
    from topθ_hw.engine.methods.h2o import H2O
    from topθ_hw.engine.run import replay_trace
    frame, _ = replay_trace(open_trace(out), TopK(k=16), ["seq_0000"], [7], decode_only=True)
    assert sorted(frame[frame.level == "group"].step.unique()) == [0, 4]
    with pytest.raises(UserError, match="every 4th decode step"):
        replay_trace(open_trace(out), H2O(budget=32, recent=8), ["seq_0000"], [7], decode_only=True)


def test_not_enough_disk_is_refused_before_anything_is_written(lm, tmp_path, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=10_000))
    with pytest.raises(UserError, match=r"needs up to .* GB .* free"):
        capture_texts([EMMA], tmp_path / "full.zarr", loaded=lm, dtype="float32", max_prompt_tokens=300,
                      max_new_tokens=2, progress=False)
    assert not (tmp_path / "full.zarr").exists()


def test_prompt_past_the_model_positions_is_one_line_or_truncated(lm, tmp_path):
    long_text = tmp_path / "long.txt"
    long_text.write_text(open(EMMA).read() * 12)  # ~35k tokens > 8192 positions
    with pytest.raises(UserError, match="exceeds the model's context of 8192 positions") as err:
        capture_texts([long_text], tmp_path / "x.zarr", loaded=lm, dtype="float32", max_prompt_tokens=40_000,
                      max_new_tokens=2, progress=False, chunk_tokens=1024)
    assert "\n" not in str(err.value)
    with pytest.warns(UserWarning, match="truncated"):
        from topθ_hw.capture.run import prompt_token_ids
        ids = prompt_token_ids(lm, long_text.read_text(), "long.txt", 40_000, 2, truncate=True)
    assert len(ids) == 8190
