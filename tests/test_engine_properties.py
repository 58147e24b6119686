"""Properties of the engine that must hold on any input (hypothesis), plus the method registry sweep."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_engine_reference import REAL_TRACE, table_for, tiny_meta
from topθ_hw.engine import METHODS, Dense, TopK, TopTheta, replay_layer
from topθ_hw.engine.calibrate import row_thresholds
from topθ_hw.engine.stats import layer_frame
from topθ_hw.store import LayerQKV

FAST = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def layers(draw, scale=st.floats(0.1, 4.0)):
    """A random layer: 1–3 KV groups of 1–3 heads, 8–90 rows, optional sliding window."""
    kv, group, rows = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(8, 90))
    d = draw(st.sampled_from([4, 8, 16]))
    window = draw(st.one_of(st.none(), st.integers(3, 60)))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    s = np.float32(draw(scale))
    layer = LayerQKV(q=rng.standard_normal((kv * group, rows, d)).astype(np.float32) * s,
                     k=rng.standard_normal((kv, rows, d)).astype(np.float32) * s,
                     v=rng.standard_normal((kv, rows, d)).astype(np.float32),
                     positions=np.arange(rows), scaling=d ** -0.5, sliding_window=window)
    prompt = draw(st.integers(1, rows))
    return layer, prompt


def meta_of(layer):
    return tiny_meta(1, layer.q.shape[0], layer.k.shape[0], layer.q.shape[2], window=layer.sliding_window)


def run(layer, prompt, method):
    method.check(meta_of(layer))
    return replay_layer(layer, method, 0, prompt, keep_outputs=True)


def n_valid(layer):
    t = np.arange(layer.q.shape[1])
    return np.minimum(t + 1, layer.sliding_window) if layer.sliding_window else t + 1


def assert_dense(res, layer):
    np.testing.assert_array_equal(res.rows["kept"], np.broadcast_to(n_valid(layer), res.rows["kept"].shape))
    np.testing.assert_allclose(res.out_sparse, res.out_dense, rtol=1e-5, atol=1e-5)
    assert not res.rows["empty"].any()


@FAST
@given(layers(), st.sampled_from(["pre", "post"]))
def test_theta_minus_infinity_or_zero_probability_is_dense(case, placement):
    layer, prompt = case
    theta = np.full((1, layer.q.shape[0], layer.q.shape[1]), -np.inf if placement == "pre" else 0.0)
    assert_dense(run(layer, prompt, TopTheta(table_for(theta, 1, placement, meta_of(layer)))), layer)


@FAST
@given(layers(), st.integers(0, 20))
def test_k_at_least_n_is_dense(case, extra):
    layer, prompt = case
    k = layer.q.shape[1] + extra
    assert_dense(run(layer, prompt, TopK(k=k)), layer)
    theta = np.full((1, layer.q.shape[0], layer.q.shape[1]), 1e9)   # would drop everything if applied
    assert_dense(run(layer, prompt, TopTheta(table_for(theta, k, "pre", meta_of(layer)))), layer)


@FAST
@given(layers(), st.sampled_from(["pre", "post"]), st.booleans(), st.floats(0.0, 2.0))
def test_higher_theta_never_keeps_more(case, placement, capk, delta):
    layer, prompt = case
    rng = np.random.default_rng(0)
    shape = (1, layer.q.shape[0], layer.q.shape[1])
    low = rng.normal(0.0, 1.0, shape) if placement == "pre" else 10 ** rng.uniform(-3, -0.5, shape)
    high = low + delta if placement == "pre" else low * (1 + delta)
    kept = [run(layer, prompt, TopTheta(table_for(th, 2, placement, meta_of(layer)), capk=capk)).rows["kept"]
            for th in (low, high)]
    assert (kept[1] <= kept[0]).all()


@FAST
@given(layers(), st.integers(1, 12), st.sampled_from(["pre", "post"]))
def test_calibration_row_replayed_with_its_own_threshold_keeps_exactly_k(case, k, placement):
    layer, prompt = case
    theta = row_thresholds(layer, 0, prompt, k, placement == "post")[None]
    res = run(layer, prompt, TopTheta(table_for(np.nan_to_num(theta), k, placement, meta_of(layer))))
    sparse = n_valid(layer) > k
    assert (res.rows["kept"][:, sparse] == k).all()
    assert (res.rows["kept"][:, ~sparse] == n_valid(layer)[~sparse]).all()


@FAST
@given(layers(scale=st.floats(0.01, 300.0)), st.sampled_from(["exact", "expthr", "offline"]), st.booleans(),
       st.floats(0.0, 4.0))
def test_sdc_and_vmc_never_produce_nan_or_inf(case, sdc, vmc, lam):
    layer, prompt = case
    rng = np.random.default_rng(1)
    shape = (1, layer.q.shape[0], layer.q.shape[1])
    theta = rng.normal(0.0, 30.0, shape)
    rho = rng.uniform(0.0, 1.0, shape)
    res = run(layer, prompt, TopTheta(table_for(theta, 2, "pre", meta_of(layer), rho), sdc=sdc, vmc=vmc, lam=lam))
    assert np.isfinite(res.out_sparse).all() and np.isfinite(res.out_dense).all()
    assert np.isfinite(res.rows["err2"]).all() and (res.rows["dropped_mass"] <= 1).all()


@FAST
@given(layers(), st.integers(1, 10))
def test_group_union_between_largest_head_and_g_times_it(case, k):
    layer, prompt = case
    res = run(layer, prompt, TopK(k=k))
    group = layer.q.shape[0] // layer.k.shape[0]
    kept = res.rows["kept"]
    for tile in res.tiles:
        heads = slice(tile["kv_group"] * group, (tile["kv_group"] + 1) * group)
        rows = kept[heads, tile["row_start"]:tile["row_end"]]
        assert rows.max() <= tile["kept_v_rows"] <= min(rows.sum(), tile["v_hi"] - tile["v_lo"] + 1)
        if tile["phase"] == "decode":
            assert tile["kept_v_rows"] <= group * rows.max()
            assert tile["v_row_uses_max"] <= group


def registry_instance(name, layer):
    if name == "toptheta":
        theta = row_thresholds(layer, 0, 40, 4, False)[None]
        return TopTheta(table_for(np.nan_to_num(theta), 4, "pre", meta_of(layer)))
    return METHODS[name](**({"k": 4} if name == "topk" else {}))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_registered_method_replays_a_real_layer_into_the_stats_contract(name):
    """One test over the registry: real SmolLM2 rows in, the COMMON.md columns out, counts consistent."""
    from test_engine_reference import real_layer
    _, layer = real_layer(layer_index=8, rows=96)
    method = registry_instance(name, layer)
    res = run(layer, 40, method)
    frame = layer_frame(res, layer.q.shape[0] // layer.k.shape[0], "seq_0001")
    need = {"sequence", "layer", "kv_group", "head", "level", "phase", "step", "row_start", "row_end",
            "context_len", "kept_elements", "dense_elements", "empty_rows", "kept_per_row_mean",
            "kept_per_row_p99", "kept_per_row_max", "rel_l2_error", "cosine", "dropped_mass", "kept_v_rows",
            "v_rows_total", "kv_tiles_total", "kv_tiles_nonempty", "kept_v_mask", "v_row_uses_mean",
            "v_row_uses_max"} | {f"pages_{w}_{p}" for p in (1, 8, 16, 32, 64, 128) for w in ("needed", "total")}
    assert need <= set(frame.columns)
    heads, groups = frame[frame.level == "head"], frame[frame.level == "group"]
    assert heads.kept_elements.sum() == groups.kept_elements.sum() == res.rows["kept"].sum()
    assert (groups.kept_v_rows <= groups.v_rows_total).all()
    for p in (1, 8, 16, 32, 64, 128):
        assert (groups[f"pages_needed_{p}"] <= groups[f"pages_total_{p}"]).all()
    assert (groups.pages_needed_1 == groups.kept_v_rows).all()
    if name == "dense":
        assert (heads.rel_l2_error == 0).all() and (groups.kept_v_rows == groups.v_rows_total).all()
    decode = groups[groups.phase == "decode"]
    assert len(decode) == 56 * layer.k.shape[0] and (decode.kept_v_mask.str.len() > 0).all()


def test_real_trace_calibration_rows_replay_to_k():
    """bf16 scores can tie; a tie at the (k+1)-th value keeps fewer. Calibration and replay sum the
    same float32 products in different orders (BLAS vs the numba kernel), so a score at θ can land one
    ulp above it: at most one extra, on a few per cent of rows (bf16 K makes near-ties common)."""
    from test_engine_reference import real_layer
    _, layer = real_layer(layer_index=12, rows=300)
    theta = row_thresholds(layer, 0, 250, 32, False)[None]
    res = run(layer, 250, TopTheta(table_for(np.nan_to_num(theta), 32, "pre", meta_of(layer))))
    sparse = res.rows["kept"][:, n_valid(layer) > 32]
    assert (sparse <= 33).all() and (sparse == 32).mean() > 0.97  # measured here: 1.6 % of rows at 33
    assert REAL_TRACE  # the layer above came from the shipped trace
    assert isinstance(Dense(), METHODS["dense"])


def test_stateful_methods_see_decode_rows_one_at_a_time_in_order():
    """The seam H2O needs: per-sequence state, one decode row per block in order, final weights observed."""
    from dataclasses import dataclass

    from topθ_hw.engine.methods.base import AttentionMethod, Selection, valid_keep

    @dataclass
    class AccumulatedAttention(AttentionMethod):   # H2O's bookkeeping without its eviction rule
        def __post_init__(self):
            self.name, self.stateful = "accumulated", True

        def begin_sequence(self, seq):
            return {"rows": [], "mass": None}

        def select(self, block, layer_ctx, state):
            return Selection(keep=valid_keep(block))

        def observe(self, block, weights, state):
            if state["mass"] is None:
                state["mass"] = np.zeros(200)
            state["rows"].append((block.phase, block.rows.tolist()))
            state["mass"][block.key_lo:block.key_lo + weights.shape[1]] += weights.sum(0)

    layer = LayerQKV(q=np.random.default_rng(0).standard_normal((2, 200, 8)).astype(np.float32),
                     k=np.random.default_rng(1).standard_normal((1, 200, 8)).astype(np.float32),
                     v=np.random.default_rng(2).standard_normal((1, 200, 8)).astype(np.float32),
                     positions=np.arange(200), scaling=8 ** -0.5, sliding_window=None)
    method = AccumulatedAttention()
    state = method.begin_sequence(None)
    replay_layer(layer, method, 0, 150, state)
    decode = [rows for phase, rows in state["rows"] if phase == "decode"]
    assert decode == [[t] for t in range(150, 200)]
    np.testing.assert_allclose(state["mass"].sum(), 2 * 200, rtol=1e-5)   # every row's weights sum to 1


@settings(max_examples=60, deadline=None)
@given(st.integers(1024, 5000), st.integers(1, 300), st.sampled_from(["random", "increasing", "ties", "constant"]),
       st.integers(0, 2**31))
def test_kth_largest_is_exact_on_long_and_adversarial_rows(n, rank, kind, seed):
    from topθ_hw.engine.calibrate import kth_largest
    rng = np.random.default_rng(seed)
    row = {"random": rng.standard_normal(n), "increasing": np.arange(n) * 0.5,
           "ties": rng.integers(0, 5, n) * 1.0, "constant": np.full(n, 2.5)}[kind].astype(np.float32)
    rank = min(rank, n)
    assert kth_largest(row, rank) == np.sort(row)[::-1][rank - 1]


def test_thread_count_does_not_change_results():
    from test_engine_reference import real_layer
    _, layer = real_layer(layer_index=4, rows=160)
    method = TopK(k=8)
    method.check(meta_of(layer))
    one = replay_layer(layer, method, 0, 120, threads=1, keep_outputs=True)
    two = replay_layer(layer, method, 0, 120, threads=2, keep_outputs=True)
    np.testing.assert_array_equal(one.rows["kept"], two.rows["kept"])
    # same kept sets; outputs equal up to float32 summation order (BLAS splits its sums by thread)
    np.testing.assert_allclose(one.out_sparse, two.out_sparse, rtol=1e-5, atol=1e-6)
    assert [t["kept_v_rows"] for t in one.tiles] == [t["kept_v_rows"] for t in two.tiles]
