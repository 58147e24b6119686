"""The prefill Triton kernels (sims/validation/prefill_kernels.py) under TRITON_INTERPRET=1 on CPU:
outputs against float64 attention with the same keep rule, and the kernel's kept / skipped-tile
counters against a NumPy recount of ``score > θ``. float16 operands: the Triton 3.6 interpreter
multiplies bf16 tl.dot operands as raw integers."""
import importlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

VALIDATION = Path(__file__).resolve().parents[1] / "sims" / "validation"
TILE = 64


# Run in a fresh interpreter: TRITON_INTERPRET must be set before triton is first imported.
LAUNCHES = """
import os, sys
os.environ["TRITON_INTERPRET"] = "1"
sys.path.insert(0, sys.argv[1])
import numpy as np, torch
import prefill_inputs, prefill_kernels
prefill_kernels.interpreter_scalar_loops()
arrays = {}
for name, pattern, context, fraction, seed, blocks in (("scattered", "scattered", 256, 0.1, 5, (64, 128)),
                                                      ("dense", "dense", 256, 1.0, 6, (64, 128)),
                                                      ("clustered", "clustered", 384, 0.2, 7, (64,))):
    q, k, v, theta, planted = prefill_inputs.make_inputs(pattern, 1, 2, 1, context, 64, fraction, seed, "cpu",
                                                         torch.float16)
    if name == "scattered":
        theta[0, 1, 130:140] = 1e4   # rows that keep nothing: they must keep their maximum
    arrays.update({f"{name}/q": q.numpy(), f"{name}/k": k.numpy(), f"{name}/v": v.numpy(), f"{name}/theta": theta.numpy()})
    if planted is not None:
        arrays[f"{name}/planted"] = planted
    for bm in blocks:
        out, counts, occ = prefill_kernels.prefill_attention(q, k, v, theta, block_m=bm, count=True)
        arrays.update({f"{name}/out{bm}": out.numpy(), f"{name}/counts{bm}": counts.numpy(), f"{name}/occ{bm}": occ.numpy()})
    if name == "dense":
        arrays[f"{name}/dense"] = prefill_kernels.prefill_attention(q, k, v, block_m=128).numpy()
np.savez(sys.argv[2], **arrays)
"""


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """The kernels' outputs and counters on tiny shapes, run under the Triton interpreter."""
    path = tmp_path_factory.mktemp("prefill") / "launches.npz"
    subprocess.run([sys.executable, "-c", LAUNCHES, str(VALIDATION), str(path)], check=True, timeout=600,
                   env={**os.environ, "PYTHONWARNINGS": "ignore"})
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def kern():
    sys.path.insert(0, str(VALIDATION))
    try:
        yield importlib.import_module("prefill_kernels"), importlib.import_module("prefill_inputs")
    finally:
        sys.path.remove(str(VALIDATION))


def case(launched, name):
    return {key.split("/", 1)[1]: (torch.from_numpy(a) if key.split("/", 1)[1] in ("q", "k", "v", "theta") else a)
            for key, a in launched.items() if key.startswith(name + "/")}


def recount(kernels, q, k, theta, block_m):
    """NumPy: per (batch, head, query block) [kept scores, non-empty key tiles, tiles scored, kept key
    columns per tile summed, empty rows], and the per-(block, key tile) occupancy."""
    B, H, T, D = q.shape
    G = H // k.shape[1]
    scores = q.double().numpy() @ np.repeat(k.double().numpy(), G, axis=1).swapaxes(-1, -2)
    theta_qk = kernels.theta_in_qk_units(theta, D).double().numpy()
    keep = (scores > theta_qk[..., None]) & np.tri(T, dtype=bool)
    blocks = keep.reshape(B, H, T // block_m, block_m, T // TILE, TILE)
    occupancy = blocks.any(axis=(3, 5))
    counts = np.stack([blocks.sum(axis=(3, 4, 5)), occupancy.sum(axis=-1),
                       np.broadcast_to((np.arange(T // block_m) + 1) * block_m // TILE, (B, H, T // block_m)),
                       blocks.any(axis=3).sum(axis=(3, 4)),
                       (~keep.any(axis=-1)).reshape(B, H, T // block_m, block_m).sum(axis=-1)], axis=-1)
    return counts, occupancy


@pytest.mark.parametrize("block_m", [64, 128])
def test_scattered_threshold_matches_float64_and_recount(kern, launched, block_m):
    kernels, _ = kern
    c = case(launched, "scattered")
    q, k, v, theta = c["q"], c["k"], c["v"], c["theta"]
    ref, keep = kernels.reference_prefill(q, k, v, theta)
    out = torch.from_numpy(c[f"out{block_m}"])
    assert kernels.check_prefill("threshold", out, ref) < 1e-2
    want_counts, want_occ = recount(kernels, q, k, theta, block_m)
    np.testing.assert_array_equal(c[f"counts{block_m}"], want_counts)
    np.testing.assert_array_equal(c[f"occ{block_m}"].astype(bool), want_occ)
    assert want_counts[..., 4].sum() >= 10 and 0.05 < want_counts[..., 0].sum() / (256 * 257) < 0.15
    scores = q[0, 1].double() @ k[0, 0].double().T
    best = torch.where(torch.ones(256, 256).tril().bool(), scores, -torch.inf)[130:140].argmax(dim=-1)
    torch.testing.assert_close(out[0, 1, 130:140].double(), v[0, 0, best].double(), atol=2e-3, rtol=0)


def test_dense_kernel_and_theta_minus_inf_match_float64(kern, launched):
    kernels, _ = kern
    c = case(launched, "dense")
    ref, _ = kernels.reference_prefill(c["q"], c["k"], c["v"])
    assert kernels.check_prefill("dense", torch.from_numpy(c["dense"]), ref) < 1e-2
    for block_m in (64, 128):
        assert kernels.check_prefill("theta -inf", torch.from_numpy(c[f"out{block_m}"]), ref) < 1e-2
        assert c[f"counts{block_m}"][..., 1].sum() == c[f"counts{block_m}"][..., 2].sum()  # no tile skipped


def test_planted_clusters_come_out_of_the_kernels_threshold(kern, launched):
    kernels, inputs = kern
    c = case(launched, "clustered")
    q, k, v, theta, planted = c["q"], c["k"], c["v"], c["theta"], c["planted"]
    want_counts, want_occ = recount(kernels, q, k, theta, 64)
    np.testing.assert_array_equal(c["counts64"], want_counts)
    np.testing.assert_array_equal(c["occ64"].astype(bool), want_occ)
    for head in range(2):
        np.testing.assert_array_equal(want_occ[:, head], planted[:, 0])
    assert 0 < planted.sum() < 6 * 7 // 2                                # some causal tiles are skipped
    summary = inputs.occupancy_summary(torch.from_numpy(c["counts64"]), torch.from_numpy(c["occ64"]), 1, 64)
    np.testing.assert_array_equal(summary["kv_tiles_nonempty"], planted.sum(axis=-1))
    ref, _ = kernels.reference_prefill(q, k, v, theta)
    assert kernels.check_prefill("clustered", torch.from_numpy(c["out64"]), ref) < 1e-2
