"""An independent float64 NumPy reference of dense, top-k and Top-θ attention (SPEC.md), row by row.

Deliberately plain: every row materialises its full score vector in float64 and applies the
rules literally. The other engine test modules import it from here; the reference itself imports nothing from
topθ_hw.engine. Below it: the engine checked against it on small random layers (scores exactly
representable, so threshold decisions cannot differ by rounding) and on the shipped real trace.
"""

from __future__ import annotations

import numpy as np


def valid_range(t: int, window: int | None) -> tuple[int, int]:
    return (max(0, t - window + 1) if window else 0), t


def topk_mask(a: np.ndarray, k: int) -> np.ndarray:
    """k largest of a; ties at the k-th value go to the most recent (rightmost) positions."""
    if len(a) <= k:
        return np.ones(len(a), bool)
    order = sorted(range(len(a)), key=lambda j: (a[j], j), reverse=True)
    mask = np.zeros(len(a), bool)
    mask[order[:k]] = True
    return mask


def reference_row(a, vals, rule: dict, theta: float | None, rho: float | None):
    """One row: a [n] float64 valid logits, vals [n, d] V rows → (mask, sparse out, dense out, dropped)."""
    m = a.max()
    e = np.exp(a - m)
    p = e / e.sum()
    name, k = rule["method"], rule.get("k", 0)
    if len(a) <= k:  # dense row: no threshold, no compensation
        theta = rho = None
    if name == "dense" or len(a) <= k:
        mask = np.ones(len(a), bool)
    elif name == "topk":
        mask = topk_mask(a, k)
    elif rule["placement"] == "pre":
        mask = a > theta
    else:
        mask = p > theta
    if name == "toptheta" and rule.get("capk") and mask.sum() > k:
        keep_idx = np.flatnonzero(mask)[-k:]
        mask = np.zeros(len(a), bool)
        mask[keep_idx] = True
    empty = not mask.any()
    if empty:  # empty-row rule: the most recent maximum
        mask[np.flatnonzero(a == m)[-1]] = True
    d_kept, d_miss = e[mask].sum(), e[~mask].sum()
    sdc, lam = rule.get("sdc", "none"), rule.get("lam", 1.0)
    if name == "toptheta" and rule["placement"] == "post":
        den = e.sum()
    elif name == "toptheta" and sdc == "exact" and theta is not None:
        den = d_kept + lam * d_miss
    elif name == "toptheta" and sdc == "expthr" and theta is not None:
        den = d_kept + lam * (~mask).sum() * np.exp(theta - m)
    elif name == "toptheta" and sdc == "offline" and theta is not None:
        den = d_kept + lam * d_kept * rho / (1 - rho)
    else:
        den = d_kept
    w = np.where(mask, e / den, 0.0)
    out = w @ vals
    if rule.get("vmc"):
        out = out + (1 - w.sum()) * vals.mean(axis=0)
    return mask, out, p @ vals, d_miss / e.sum(), empty


def reference_layer(q, k, v, scaling, window, rule, theta_rows=None, rho_rows=None):
    """Whole layer: returns dict of [H, T] kept counts, dropped mass and [H, T, d] outputs, and masks."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    n_heads, n_rows, d = q.shape
    group = n_heads // k.shape[0]
    kept = np.zeros((n_heads, n_rows), np.int64)
    empty = np.zeros((n_heads, n_rows), bool)
    dropped = np.zeros((n_heads, n_rows))
    out_s, out_d = np.zeros((n_heads, n_rows, d)), np.zeros((n_heads, n_rows, d))
    masks = {}
    for h in range(n_heads):
        g = h // group
        for t in range(n_rows):
            lo, hi = valid_range(t, window)
            a = (k[g, lo:hi + 1] @ q[h, t]) * scaling
            theta = None if theta_rows is None else theta_rows[h, t]
            rho = None if rho_rows is None else rho_rows[h, t]
            mask, o_s, o_d, dm, empty[h, t] = reference_row(a, v[g, lo:hi + 1], rule, theta, rho)
            full = np.zeros(n_rows, bool)
            full[lo:hi + 1] = mask
            masks[h, t] = full
            kept[h, t], dropped[h, t], out_s[h, t], out_d[h, t] = mask.sum(), dm, o_s, o_d
    return {"kept": kept, "empty": empty, "dropped": dropped, "out_sparse": out_s, "out_dense": out_d, "masks": masks}


def reference_row_thresholds(q, k, scaling, window, k_keep, placement):
    """Calibration rows: the (k+1)-th largest valid score (or its probability); NaN for n ≤ k."""
    q, k = np.asarray(q, np.float64), np.asarray(k, np.float64)
    n_heads, n_rows, _ = q.shape
    group = n_heads // k.shape[0]
    out = np.full((n_heads, n_rows), np.nan)
    for h in range(n_heads):
        for t in range(n_rows):
            lo, hi = valid_range(t, window)
            a = (k[h // group, lo:hi + 1] @ q[h, t]) * scaling
            if len(a) > k_keep:
                value = np.sort(a)[::-1][k_keep]
                out[h, t] = value if placement == "pre" else np.exp(value - a.max()) / np.exp(a - a.max()).sum()
    return out


# ---------------------------------------------------------------- engine against the reference
import pytest  # noqa: E402

from topθ_hw.engine import Dense, ThresholdTable, TopK, TopTheta, replay_layer  # noqa: E402
from topθ_hw.store import LayerQKV, TraceMeta  # noqa: E402

REAL_TRACE = "traces/smollm2-135m.zarr"


def tiny_meta(n_layers=1, n_q_heads=4, n_kv_heads=2, head_dim=8, sha="a" * 64, window=None):
    return TraceMeta(model_id="tiny-random", model_file_sha256=sha, architecture="llama", n_layers=n_layers,
                     n_q_heads=n_q_heads, n_kv_heads=n_kv_heads, head_dim=head_dim, dtype="float32",
                     scalings=[0.25] * n_layers, sliding_windows=[window] * n_layers)


def exact_layer(seed, heads=4, kv_heads=2, rows=150, d=8, window=None, scale=1.0):
    """q, k on a 0.5 grid and scaling 1/4: every score is a multiple of 1/16, exact in float32."""
    rng = np.random.default_rng(seed)
    grid = lambda *s: rng.integers(-4, 5, size=s).astype(np.float32) * np.float32(0.5 * scale)  # noqa: E731
    return LayerQKV(q=grid(heads, rows, d), k=grid(kv_heads, rows, d),
                    v=rng.standard_normal((kv_heads, rows, d)).astype(np.float32),
                    positions=np.arange(rows), scaling=0.25, sliding_window=window)


def table_for(theta, layer_k, placement, meta, rho=None):
    """In-memory threshold artifact with θ[l, h, n-1] for n = 1..T."""
    n_layers, n_heads, n_rows = theta.shape
    return ThresholdTable(lengths=np.arange(1, n_rows + 1), theta=theta, theta_std=np.zeros_like(theta),
                          count=np.ones(theta.shape, np.int64),
                          sdc_dropped_mass=np.full(theta.shape, 0.3) if rho is None else rho,
                          layer_k=np.full(n_layers, layer_k, np.int64),
                          meta={"model_id": meta.model_id, "model_file_sha256": meta.model_file_sha256,
                                "placement": placement, "sigma": 0.0, "sequences": ["seq_0000"]})


def off_grid_thresholds(seed, shape, placement):
    """Pre: odd multiples of 1/32 (never equal to a score); post: probabilities."""
    rng = np.random.default_rng(seed)
    if placement == "pre":
        return (rng.integers(-16, 48, size=shape) * 2 + 1) / 32.0
    return 10.0 ** rng.uniform(-2.5, -0.7, size=shape)


CONFIGS = [
    {"method": "dense"},
    {"method": "topk", "k": 5},
    {"method": "toptheta", "k": 6, "placement": "pre"},
    {"method": "toptheta", "k": 6, "placement": "pre", "capk": True},
    {"method": "toptheta", "k": 6, "placement": "pre", "sdc": "exact", "lam": 0.5},
    {"method": "toptheta", "k": 6, "placement": "pre", "sdc": "expthr"},
    {"method": "toptheta", "k": 6, "placement": "pre", "sdc": "offline", "vmc": True},
    {"method": "toptheta", "k": 6, "placement": "pre", "vmc": True},
    {"method": "toptheta", "k": 6, "placement": "post"},
    {"method": "toptheta", "k": 6, "placement": "post", "vmc": True, "capk": True},
]


def build(rule, meta, theta=None, rho=None):
    if rule["method"] == "dense":
        method = Dense()
    elif rule["method"] == "topk":
        method = TopK(k=rule["k"])
    else:
        table = table_for(theta, rule["k"], rule["placement"], meta, rho)
        method = TopTheta(table, capk=rule.get("capk", False), sdc=rule.get("sdc", "none"),
                          lam=rule.get("lam", 1.0), vmc=rule.get("vmc", False), lookup="nearest")
    method.check(meta)
    return method


def compare(layer, rule, prompt_len, theta_rows=None, rho_rows=None, method=None, exact=True):
    res = replay_layer(layer, method, 0, prompt_len, keep_outputs=True)
    ref = reference_layer(layer.q, layer.k, layer.v, layer.scaling, layer.sliding_window, rule, theta_rows, rho_rows)
    if exact:
        np.testing.assert_array_equal(res.rows["kept"], ref["kept"])
        np.testing.assert_array_equal(res.rows["empty"].astype(bool), ref["empty"])
    np.testing.assert_allclose(res.out_dense, ref["out_dense"], rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(res.out_sparse, ref["out_sparse"], rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(res.rows["dropped_mass"], ref["dropped"], atol=1e-5)
    return res, ref


def union_of(ref, heads, rows):
    return np.logical_or.reduce([ref["masks"][h, t] for h in heads for t in rows])


@pytest.mark.parametrize("window", [None, 40])
@pytest.mark.parametrize("rule", CONFIGS, ids=lambda r: "-".join(str(v) for v in r.values()))
def test_engine_matches_reference_on_exact_scores(rule, window):
    meta = tiny_meta(window=window)
    layer = exact_layer(seed=len(str(rule)), window=window)
    theta = off_grid_thresholds(1, (1, 4, 150), rule.get("placement", "pre"))
    rho = np.random.default_rng(2).uniform(0.05, 0.6, size=theta.shape)
    method = build(rule, meta, theta, rho)
    res, ref = compare(layer, rule, 120, theta[0], rho[0], method)
    group = 2
    for tile in res.tiles:                          # V rows per KV group: union over heads and tile rows
        heads = range(tile["kv_group"] * group, (tile["kv_group"] + 1) * group)
        union = union_of(ref, heads, range(tile["row_start"], tile["row_end"]))
        assert tile["kept_v_rows"] == union.sum()
        for size in (1, 16, 128):
            assert tile[f"pages_needed_{size}"] == len(np.unique(np.flatnonzero(union) // size))
        if tile["phase"] == "decode":
            mask = np.unpackbits(np.frombuffer(tile["kept_v_mask"], np.uint8))[:tile["row_end"]].astype(bool)
            np.testing.assert_array_equal(mask, union[:tile["row_end"]])
    if rule["method"] == "toptheta":
        assert ref["empty"].any() or rule["placement"] == "post" or rule.get("capk")  # the rule is exercised


def test_calibration_matches_reference_thresholds(tmp_path):
    from topθ_hw.engine.calibrate import row_thresholds
    layer = exact_layer(seed=5, rows=130)
    for placement in ("pre", "post"):
        got = row_thresholds(layer, 0, 100, 7, placement == "post")
        want = reference_row_thresholds(layer.q, layer.k, layer.scaling, None, 7, placement)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got, want, rtol=1e-5)


def real_layer(layer_index=4, rows=256, sequence="seq_0001"):
    from topθ_hw.store import open_trace
    trace = open_trace(REAL_TRACE)
    full = trace.sequence(sequence).layer(layer_index)
    cut = lambda x: np.ascontiguousarray(x[:, -rows:])  # noqa: E731  keep the prefill end and decode rows
    return trace, LayerQKV(q=cut(full.q), k=cut(full.k), v=cut(full.v), positions=np.arange(rows),
                           scaling=full.scaling, sliding_window=full.sliding_window)


@pytest.mark.parametrize("rule", [CONFIGS[1], CONFIGS[5], CONFIGS[9]], ids=["topk", "pre-expthr", "post-vmc-capk"])
def test_engine_matches_reference_on_real_trace(rule):
    """bf16 SmolLM2 Q/K/V (the last 256 rows of a layer, re-rooted at position 0)."""
    import os
    if not os.path.isdir(REAL_TRACE):
        pytest.fail(f"{REAL_TRACE} missing: the shipped trace is part of the repository")
    trace, layer = real_layer()
    n_heads = layer.q.shape[0]
    rule = {**rule, "k": 16} if rule["method"] != "topk" else rule
    theta = np.stack([reference_row_thresholds(layer.q, layer.k, layer.scaling, None, rule["k"], rule.get("placement", "pre"))])
    theta = np.where(np.isnan(theta), 0.0, theta * (1.0 + 0.05 * np.sign(theta)))   # a little above the (k+1)-th
    meta = trace.meta
    method = build(rule, tiny_meta(1, n_heads, layer.k.shape[0], layer.q.shape[2], sha=meta.model_file_sha256), theta)
    res, ref = compare(layer, rule, 200, theta[0], None, method, exact=False)
    differ = res.rows["kept"] != ref["kept"]
    assert differ.mean() < 0.01       # only rows with a score at the threshold may differ
    assert np.abs(res.rows["kept"] - ref["kept"]).max() <= 1
