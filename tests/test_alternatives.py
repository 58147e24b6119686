"""Top-p, Quest, StreamingLLM and H2O in the replay engine against plain float64 NumPy references.

The references below import nothing from topθ_hw: each applies its paper's rule literally, row by
row, on the full score vector (Quest: on page minima/maxima of K). Layers come from
``exact_layer`` (scores exact in float32, many ties: the tie rules are exercised) and from the
shipped SmolLM2 trace. Then the properties (p = 1, window ≥ context, all pages, budget ≥ context are
dense) and bad parameters refused before any work.
"""

from __future__ import annotations

import numpy as np
import pytest

from test_engine_reference import exact_layer, real_layer, tiny_meta, valid_range
from topθ_hw.engine import METHODS, replay_layer
from topθ_hw.engine.methods import H2O, Quest, StreamingLLM, TopP
from topθ_hw.errors import UserError


# ------------------------------------------------------------------ references (float64, literal)
def ref_topp(a: np.ndarray, p: float) -> np.ndarray:
    """Shortest prefix of the ranking (score desc, most recent first) with softmax mass ≥ p."""
    if p >= 1:
        return np.ones(len(a), bool)
    prob = np.exp(a - a.max()) / np.exp(a - a.max()).sum()
    order = sorted(range(len(a)), key=lambda j: (a[j], j), reverse=True)
    mask, mass = np.zeros(len(a), bool), 0.0
    for j in order:
        if mass >= p:
            break
        mask[j] = True
        mass += prob[j]
    return mask


def ref_streaming(t: int, lo: int, sinks: int, window: int) -> np.ndarray:
    return np.array([j < sinks or j > t - window for j in range(lo, t + 1)])


def ref_quest(q: np.ndarray, k: np.ndarray, t: int, lo: int, page: int, budget: int) -> np.ndarray:
    """Pages of keys 0..T-1; current page kept; best max(1, budget//page) - 1 earlier pages by
    Σ_i max(q_i·min_i, q_i·max_i) (ties: the later page)."""
    current = t // page
    bound = {}
    for p in range(lo // page, current):
        rows = k[p * page:(p + 1) * page]
        bound[p] = sum(max(q[i] * rows[:, i].min(), q[i] * rows[:, i].max()) for i in range(len(q)))
    best = sorted(bound, key=lambda p: (bound[p], p), reverse=True)[:max(1, budget // page) - 1]
    pages = set(best) | {current}
    return np.array([j // page in pages for j in range(lo, t + 1)])


def ref_h2o(scores: np.ndarray, window: int | None, budget: int, recent: int) -> np.ndarray:
    """scores [G, T, T] float64 of one KV group → kept [G, T, T]; the module's four steps, literally."""
    n_heads, n_rows, _ = scores.shape
    acc, cache = {}, []
    kept = np.zeros(scores.shape, bool)
    for t in range(n_rows):
        lo, _ = valid_range(t, window)
        cache = [j for j in cache if j >= lo] + [t]
        acc[t] = 0.0
        while len(cache) > budget:
            old = [j for j in cache if j <= t - recent]
            victim = min(old, key=lambda j: (acc[j], j))
            cache.remove(victim)
        for g in range(n_heads):
            a = scores[g, t, cache]
            w = np.exp(a - a.max()) / np.exp(a - a.max()).sum()
            for j, x in zip(cache, w):
                acc[j] += x
            kept[g, t, cache] = True
    return kept


def reference_masks(layer, name: str, params: dict) -> np.ndarray:
    """[H, T, T] kept masks of the rule ``name`` on a LayerQKV."""
    q, k = layer.q.astype(np.float64), layer.k.astype(np.float64)
    n_heads, n_rows, _ = q.shape
    group = n_heads // k.shape[0]
    scores = np.einsum("htd,hsd->hts", q, np.repeat(k, group, axis=0)) * layer.scaling
    masks = np.zeros((n_heads, n_rows, n_rows), bool)
    if name == "h2o":
        for g in range(k.shape[0]):
            heads = slice(g * group, (g + 1) * group)
            masks[heads] = ref_h2o(scores[heads], layer.sliding_window, params["budget"], params["recent"])
        return masks
    for h in range(n_heads):
        for t in range(n_rows):
            lo, hi = valid_range(t, layer.sliding_window)
            if name == "topp":
                row = ref_topp(scores[h, t, lo:hi + 1], params["p"])
            elif name == "streaming":
                row = ref_streaming(t, lo, params["sinks"], params["window"])
            else:
                row = ref_quest(q[h, t], k[h // group], t, lo, params["page_size"], params["budget"])
            masks[h, t, lo:hi + 1] = row
    return masks


def reference_outputs(layer, masks: np.ndarray) -> np.ndarray:
    q, k, v = (x.astype(np.float64) for x in (layer.q, layer.k, layer.v))
    group = q.shape[0] // k.shape[0]
    a = np.einsum("htd,hsd->hts", q, np.repeat(k, group, axis=0)) * layer.scaling
    a = np.where(masks, a, -np.inf)
    w = np.exp(a - a.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    return np.einsum("hts,hsd->htd", w, np.repeat(v, group, axis=0))


def engine_masks(layer, method, prompt: int):
    """Replay with outputs; the per-row kept counts and the per-(group, decode step) union masks."""
    method.check(tiny_meta(1, layer.q.shape[0], layer.k.shape[0], layer.q.shape[2], window=layer.sliding_window))
    return replay_layer(layer, method, 0, prompt, method.begin_sequence(None), keep_outputs=True)


def build(name: str, params: dict):
    kwargs = {"topp": lambda p: {"p": p["p"]}, "streaming": lambda p: {"window": p["window"], "sinks": p["sinks"]},
              "quest": lambda p: {"budget": p["budget"], "page_size": p["page_size"]},
              "h2o": lambda p: {"budget": p["budget"], "recent": p["recent"]}}[name](params)
    return METHODS[name](**kwargs)


CASES = [("topp", {"p": 0.9}), ("topp", {"p": 0.5}), ("streaming", {"window": 17, "sinks": 4}),
         ("streaming", {"window": 5, "sinks": 0}), ("quest", {"budget": 32, "page_size": 8}),
         ("quest", {"budget": 20, "page_size": 4}), ("h2o", {"budget": 24, "recent": 8}),
         ("h2o", {"budget": 9, "recent": 1})]


def check_against_reference(layer, name, params, prompt):
    res = engine_masks(layer, build(name, params), prompt)
    masks = reference_masks(layer, name, params)
    np.testing.assert_array_equal(res.rows["kept"], masks.sum(-1))
    np.testing.assert_allclose(res.out_sparse, reference_outputs(layer, masks), rtol=1e-4, atol=2e-5)
    group = layer.q.shape[0] // layer.k.shape[0]
    for tile in (t for t in res.tiles if t["phase"] == "decode"):
        row, g = tile["row_start"], tile["kv_group"]
        union = masks[g * group:(g + 1) * group, row, :row + 1].any(0)
        got = np.unpackbits(np.frombuffer(tile["kept_v_mask"], np.uint8), count=row + 1).astype(bool)
        np.testing.assert_array_equal(got, union)
    return res


@pytest.mark.parametrize("name,params", CASES, ids=[f"{n}-{'-'.join(map(str, p.values()))}" for n, p in CASES])
def test_engine_matches_the_numpy_reference_on_exact_scores(name, params):
    check_against_reference(exact_layer(3, rows=70), name, params, prompt=40)


@pytest.mark.parametrize("name,params", [("topp", {"p": 0.8}), ("quest", {"budget": 24, "page_size": 8}),
                                         ("streaming", {"window": 9, "sinks": 2}),
                                         ("h2o", {"budget": 16, "recent": 4})])
def test_engine_matches_the_reference_with_a_sliding_window(name, params):
    check_against_reference(exact_layer(5, rows=60, window=21), name, params, prompt=30)


@pytest.mark.parametrize("name,params", [("topp", {"p": 0.9}), ("quest", {"budget": 64, "page_size": 16}),
                                         ("h2o", {"budget": 48, "recent": 24})])
def test_engine_matches_the_reference_on_real_smollm2_rows(name, params):
    _, layer = real_layer(layer_index=8, rows=120)
    res = check_against_reference(layer, name, params, prompt=90)
    assert (res.rows["kept"][:, 100:] < np.arange(101, 121)).all()   # it really is sparse there


# ------------------------------------------------------------------ properties: the dense limits
def assert_dense(res, layer):
    n_valid = np.array([valid_range(t, layer.sliding_window)[1] - valid_range(t, layer.sliding_window)[0] + 1
                        for t in range(layer.q.shape[1])])
    np.testing.assert_array_equal(res.rows["kept"], np.broadcast_to(n_valid, res.rows["kept"].shape))
    np.testing.assert_allclose(res.out_sparse, res.out_dense, rtol=1e-5, atol=1e-5)
    assert all(t["kept_v_rows"] == t["v_hi"] - t["v_lo"] + 1 for t in res.tiles if t["phase"] == "decode")


@pytest.mark.parametrize("method", [TopP(p=1.0), StreamingLLM(window=70, sinks=0), StreamingLLM(window=80, sinks=3),
                                    Quest(budget=72, page_size=8), Quest(budget=4096, page_size=64),
                                    H2O(budget=70), H2O(budget=500, recent=3)], ids=repr)
def test_limits_are_dense(method):
    layer = exact_layer(11, rows=70, scale=3.0)   # peaked rows: p = 1 must still keep the underflowing keys
    assert_dense(engine_masks(layer, method, 50), layer)


def test_h2o_evicted_rows_never_come_back_and_the_cache_stays_at_budget():
    layer = exact_layer(2, rows=80)
    res = engine_masks(layer, H2O(budget=12, recent=4), 60)
    masks = reference_masks(layer, "h2o", {"budget": 12, "recent": 4})
    assert (res.rows["kept"] <= 12).all() and (res.rows["kept"][:, 12:] == 12).all()
    for g in range(2):
        union = masks[2 * g:2 * g + 2].any(0)            # [T, T]: the group's cache at each row
        dropped_before = np.zeros(80, bool)
        for t in range(1, 80):
            gone = union[t - 1, :t] & ~union[t, :t]
            assert not (union[t, :t] & dropped_before[:t]).any()
            dropped_before[:t] |= gone


def test_h2o_needs_the_rows_from_the_start():
    layer = exact_layer(2, rows=80)
    method = H2O(budget=12)
    method.check(tiny_meta(1, 4, 2, 8))
    with pytest.raises(UserError, match="needs every row in order"):
        replay_layer(layer, method, 0, 60, method.begin_sequence(None), decode_only=True)


# ------------------------------------------------------------------ bad parameters, before any work
@pytest.mark.parametrize("make,match", [
    (lambda: TopP(p=0.0), r"p must be in \(0, 1\]"), (lambda: TopP(p=1.5), r"p must be in \(0, 1\]"),
    (lambda: Quest(page_size=12), "power of two"), (lambda: Quest(page_size=0), "power of two"),
    (lambda: Quest(budget=0), "must be ≥ 1"), (lambda: StreamingLLM(window=0), "window"),
    (lambda: StreamingLLM(sinks=-1), "sinks"), (lambda: H2O(budget=0), "budget"),
    (lambda: H2O(budget=8, recent=9), "recent"), (lambda: H2O(budget=8, recent=0), "recent")])
def test_out_of_range_parameters_are_refused(make, match):
    with pytest.raises(UserError, match=match):
        make()


def test_replay_command_runs_an_alternative_and_refuses_bad_parameters(tmp_path, capsys):
    from topθ_hw.cli import main
    from topθ_hw.tables import read_table

    out = tmp_path / "quest.parquet"
    assert main(["replay", "--traces", "traces/smollm2-135m.zarr", "--method", "quest", "--k", "64",
                 "--page-size", "16", "--sequences", "seq_0001", "--layers", "4", "--decode-only",
                 "--out", str(out)]) == 0
    frame, meta = read_table(out, kind="engine-stats")
    assert meta["method"] == "quest" and meta["params"]["page_size"] == 16 and meta["reads_keys"] == "page_summaries"
    decode = frame[(frame.level == "group") & (frame.phase == "decode")]
    assert (decode.pages_needed_16 <= 3 * 4).all() and (decode.kept_v_rows < decode.v_rows_total).all()
    assert main(["replay", "--traces", "traces/smollm2-135m.zarr", "--method", "topp", "--p", "1.2",
                 "--out", str(tmp_path / "x.parquet")]) == 2
    assert "(0, 1]" in capsys.readouterr().err and not (tmp_path / "x.parquet").exists()
