"""The alternatives live inside SmolLM2 keep what the replay engine keeps, on the same Q/K/V;
generation-time decode with a KV cache equals teacher-forced prefill rows (H2O's cache carried
across calls); the dense limits hold inside the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from topθ_hw.compare.methods import engine_method, live_method
from topθ_hw.engine import replay_layer
from topθ_hw.quality.attention import KeptCounter, attend
from topθ_hw.quality.live import sparsified
from topθ_hw.store import open_trace
from test_quality import prefill_and_cached_decode

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"topp": dict(budget=0, p=0.9), "quest": dict(budget=64, page_size=16),
            "streaming": dict(budget=48, sinks=4), "h2o": dict(budget=64, recent=16)}


@pytest.fixture(scope="module")
def hamlet():
    return open_trace(ROOT / "traces" / "smollm2-135m.zarr").sequence("seq_0001")


@pytest.fixture(scope="module")
def loaded():
    from topθ_hw.capture.models import load_model
    return load_model("smollm2-135m", dtype="float32")


class MaskRecorder:
    """A KeptCounter stand-in that keeps every row's mask ([H, T, T])."""

    def __init__(self, n_heads, n_rows):
        self.kept = np.zeros((n_heads, n_rows, n_rows), bool)

    def record(self, layer, kept, rows, n_kv_heads, prefill):
        self.kept[:, rows.n.numpy() - 1, :kept.shape[-1]] = kept[0].numpy()


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_live_method_keeps_what_the_engine_keeps_on_real_rows(name, hamlet):
    params = SETTINGS[name]
    for layer in (0, 16):
        qkv = hamlet.layer(layer)
        engine = engine_method(name, **params)
        ref = replay_layer(qkv, engine, layer, hamlet.prompt_len, engine.begin_sequence(hamlet), keep_outputs=True)
        rec = MaskRecorder(*qkv.q.shape[:2])
        q, k, v = (torch.from_numpy(x)[None] for x in (qkv.q, qkv.k, qkv.v))
        out = attend(live_method(name, **params), q, k, v, qkv.scaling, layer, rec)[0].transpose(0, 1).numpy()
        counts = rec.kept.sum(-1)
        assert (counts != ref.rows["kept"]).sum() <= (2 if name == "topp" else 0), f"layer {layer}"
        assert np.abs(out - ref.out_sparse).max() <= 2e-5 * np.abs(ref.out_sparse).max()
        union = rec.kept.reshape(3, 3, *rec.kept.shape[1:]).any(1)
        for tile in (t for t in ref.tiles if t["phase"] == "decode"):
            row = tile["row_start"]
            mask = np.unpackbits(np.frombuffer(tile["kept_v_mask"], np.uint8), count=row + 1).astype(bool)
            assert (union[tile["kv_group"], row, :row + 1] != mask).sum() <= (1 if name == "topp" else 0)
        if name != "topp":
            assert counts[:, 200:].max() <= params["budget"]


def test_decode_with_kv_cache_equals_prefill_rows(loaded):
    """H2O's cache is carried from the prompt call through every decode call."""
    ids = loaded.tokenizer((ROOT / "traces" / "texts" / "kjv-genesis.txt").read_text(), return_tensors="pt").input_ids
    prompt, total = 64, 72
    cached, full, prefill_counter, decode_counter = prefill_and_cached_decode(
        loaded.model, lambda: live_method("h2o", budget=40, recent=8), ids[:, :total], prompt)
    assert torch.allclose(cached, full, atol=2e-3)
    assert np.array_equal(decode_counter.kept_v_rows, prefill_counter.kept_v_rows)
    assert decode_counter.v_row_fraction() < 0.7


def test_dense_limits_inside_the_model_reproduce_dense_logits(loaded):
    ids = loaded.tokenizer((ROOT / "traces" / "texts" / "kjv-genesis.txt").read_text(), return_tensors="pt").input_ids
    x = ids[:, :64]
    with torch.no_grad():
        ref = loaded.model(x).logits
        for name, params in [("topp", dict(budget=0, p=1.0)), ("streaming", dict(budget=64, sinks=0)),
                             ("quest", dict(budget=64, page_size=16)), ("h2o", dict(budget=64))]:
            with sparsified(loaded.model, live_method(name, **params)):
                assert (loaded.model(x).logits - ref).abs().max() < 2e-3, name
