"""Trace store: bit-exact round trip, atomic sequences, and clear errors on damaged stores."""

import json

import numpy as np
import pytest
import torch

from topθ_hw.cli import main
from topθ_hw.errors import TraceError
from topθ_hw.store import TraceMeta, TraceWriter, open_trace


def make_meta(dtype="bfloat16", sha="a" * 64, n_layers=2):
    return TraceMeta(model_id="test", model_file_sha256=sha, architecture="llama", n_layers=n_layers,
                     n_q_heads=4, n_kv_heads=2, head_dim=8, dtype=dtype, scalings=[8 ** -0.5] * n_layers,
                     sliding_windows=[None] * n_layers)


def write_sequence(writer, prompt=300, decode=5, seed=0, dtype=torch.bfloat16):
    """Prefill `prompt` rows then `decode` one-row steps, as capture does; returns what was written."""
    gen = torch.Generator().manual_seed(seed)
    m = writer.meta
    rows = {l: {"q": [], "k": [], "v": []} for l in range(m.n_layers)}
    with writer.sequence("unit-test", list(range(prompt)), max_rows=prompt + decode) as seq:
        for t in [prompt] + [1] * decode:
            for l in range(m.n_layers):
                q = torch.randn(m.n_q_heads, t, m.head_dim, generator=gen).to(dtype)
                k, v = (torch.randn(m.n_kv_heads, t, m.head_dim, generator=gen).to(dtype) for _ in range(2))
                seq.append(l, q, k, v)
                for name, x in zip("qkv", (q, k, v)):
                    rows[l][name].append(x)
    return {l: {n: torch.cat(xs, dim=1) for n, xs in d.items()} for l, d in rows.items()}


def test_bf16_round_trip_is_bit_exact(tmp_path):
    with TraceWriter(tmp_path / "t.zarr", make_meta()) as w:
        written = write_sequence(w)
    seq = open_trace(tmp_path / "t.zarr").sequence("seq_0000")
    assert (seq.prompt_len, seq.n_decode_steps, seq.n_tokens) == (300, 5, 305)
    for l in range(2):
        raw, wide = seq.layer(l, raw=True), seq.layer(l)
        for name in "qkv":
            expected = written[l][name]
            assert np.array_equal(getattr(raw, name), expected.view(torch.int16).numpy().view(np.uint16))
            assert np.array_equal(getattr(wide, name), expected.float().numpy())
    assert np.array_equal(seq.layer(0).positions, np.arange(305))


def test_sequences_are_named_in_order_and_appendable(tmp_path):
    path = tmp_path / "t.zarr"
    with TraceWriter(path, make_meta()) as w:
        write_sequence(w, seed=1)
    with TraceWriter(path, make_meta(), append=True) as w:
        write_sequence(w, seed=2)
    assert open_trace(path).sequences == ["seq_0000", "seq_0001"]
    with pytest.raises(TraceError, match="cannot append"):
        TraceWriter(path, make_meta(sha="b" * 64), append=True)


def test_existing_output_is_refused_without_overwrite(tmp_path):
    path = tmp_path / "t.zarr"
    with TraceWriter(path, make_meta()) as w:
        write_sequence(w)
    with pytest.raises(TraceError, match="--overwrite"):
        TraceWriter(path, make_meta())
    TraceWriter(path, make_meta(), overwrite=True)
    assert open_trace(path).sequences == []


def test_interrupted_sequence_is_refused_and_earlier_ones_survive(tmp_path):
    path = tmp_path / "t.zarr"
    with TraceWriter(path, make_meta()) as w:
        write_sequence(w)
        with pytest.raises(RuntimeError):
            with w.sequence("crash", [1, 2, 3], max_rows=10) as seq:
                seq.append(0, *(torch.zeros(h, 3, 8, dtype=torch.bfloat16) for h in (4, 2, 2)))
                raise RuntimeError("simulated crash mid-capture")
    trace = open_trace(path)
    assert trace.sequences == ["seq_0000"] and trace.partial_sequences == ["seq_0001"]
    assert trace.sequence("seq_0000").layer(1).q.shape == (4, 305, 8)
    with pytest.raises(TraceError, match="incomplete"):
        trace.sequence("seq_0001")


def test_missing_chunk_is_detected_not_read_as_zeros(tmp_path):
    path = tmp_path / "t.zarr"
    with TraceWriter(path, make_meta()) as w:
        write_sequence(w)
    chunk = next((path / "seq_0000" / "layer_01" / "k" / "c").rglob("*"))
    while chunk.is_dir():
        chunk = next(chunk.iterdir())
    chunk.unlink()
    seq = open_trace(path).sequence("seq_0000")
    seq.layer(0)  # other layers still read
    with pytest.raises(TraceError, match=r"seq_0000 layer 1 k: checksum mismatch"):
        seq.layer(1)


def test_corrupt_root_metadata_and_wrong_format(tmp_path):
    with pytest.raises(TraceError, match="no trace store"):
        open_trace(tmp_path / "absent.zarr")
    path = tmp_path / "t.zarr"
    with TraceWriter(path, make_meta()) as w:
        write_sequence(w, prompt=10, decode=1)
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["format_version"] = 99
    (path / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(TraceError, match="format_version"):
        open_trace(path)
    (path / "zarr.json").write_text("{not json")
    with pytest.raises(TraceError, match="zarr.json"):
        open_trace(path)


def test_nan_values_and_bad_shapes_name_sequence_and_layer(tmp_path):
    path = tmp_path / "t.zarr"
    meta = make_meta(dtype="float32", n_layers=1)
    with TraceWriter(path, meta) as w:
        with w.sequence("nan", [0, 1], max_rows=2) as seq:
            q = np.zeros((4, 2, 8), np.float32)
            q[1, 1, 3] = np.nan
            seq.append(0, q, np.zeros((2, 2, 8), np.float32), np.zeros((2, 2, 8), np.float32))
        with pytest.raises(TraceError, match=r"layer 0 k: shape \(3, 2, 8\), expected \(2, 2, 8\)"):
            with w.sequence("bad", [0, 1], max_rows=2) as seq:
                seq.append(0, q, np.zeros((3, 2, 8), np.float32), np.zeros((2, 2, 8), np.float32))
    with pytest.raises(TraceError, match=r"seq_0000 layer 0 q: 1 NaN/Inf"):
        open_trace(path).sequence("seq_0000").layer(0)


def test_traces_info_cli(tmp_path, capsys):
    path = tmp_path / "t.zarr"
    with TraceWriter(path, make_meta()) as w:
        write_sequence(w, prompt=40, decode=3)
    assert main(["traces", "info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["sequences"][0]["prompt_len"] == 40 and info["sequences"][0]["decode_steps"] == 3
    assert main(["traces", "info", str(tmp_path / "nope.zarr")]) == 2
    assert "no trace store" in capsys.readouterr().err


def test_layer_subset_is_stored_and_other_layers_are_refused(tmp_path):
    meta = TraceMeta(**{**make_meta(n_layers=3).to_json(), "layers": [0, 2]})
    with TraceWriter(tmp_path / "t.zarr", meta) as w:
        write_sequence(w, prompt=20, decode=2)  # appends every layer; layer 1 is skipped
    seq = open_trace(tmp_path / "t.zarr").sequence("seq_0000")
    assert open_trace(tmp_path / "t.zarr").meta.captured_layers == [0, 2]
    assert seq.layer(2).k.shape == (2, 22, 8)
    with pytest.raises(TraceError, match=r"layer 1 was not captured.*\[0, 2\]"):
        seq.layer(1)
    with pytest.raises(ValueError, match="layers"):
        TraceMeta(**{**make_meta(n_layers=3).to_json(), "layers": [2, 0]})
