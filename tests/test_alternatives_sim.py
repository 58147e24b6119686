"""The alternatives' decode kernels in the simulator: bytes by construction of each access pattern,
times ordered as the patterns imply, and the engine statistics → simulator hand-off."""

from __future__ import annotations

import numpy as np
import pytest

from topθ_hw.errors import UserError
from topθ_hw.sim import load_device, simulate_call
from topθ_hw.sim.alternatives import decode_call
from topθ_hw.sim.workload import DecodeStream, Shape
from topθ_hw.sim.workload import decode_call as base_decode_call

SHAPE = Shape(32, 8, 128, "bf16")          # Llama-3-8B-shaped layer: G = 4, 256 B per K/V row
N, ROW, G = 16384, 256, 4


@pytest.fixture(scope="module")
def h100():
    return load_device("h100")


def streams(mask_of) -> list[DecodeStream]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(SHAPE.kv_heads):
        mask = mask_of(rng)
        out.append(DecodeStream(N, mask, kept_per_head=float(mask.sum()) / 2))
    return out


def pages_mask(rng, page=16, chosen=63):
    mask = np.zeros(N, bool)
    for p in rng.choice(N // page - 1, chosen, replace=False):
        mask[p * page:(p + 1) * page] = True
    mask[-page:] = True          # the current page
    return mask


def window_mask(rng, keep=1024):
    mask = np.zeros(N, bool)
    mask[:4] = True
    mask[N - keep + 4:] = True
    return mask


def scattered_mask(rng, keep=1024):
    mask = np.zeros(N, bool)
    mask[rng.choice(N, keep, replace=False)] = True
    return mask


def bytes_of(call, kind):
    return call.total(kind)


def test_quest_reads_page_summaries_then_the_selected_pages_k_and_v():
    call = decode_call(SHAPE, streams(pages_mask), "quest", {"page_size": 16})
    pages, selected = N // 16, 64
    assert [p.name for p in call.passes] == ["quest_estimate", "quest_select", "quest_attend", "split_kv_reduce"]
    assert bytes_of(call, "k") == SHAPE.kv_heads * (pages * 2 * ROW + selected * 16 * ROW)
    assert bytes_of(call, "v") == SHAPE.kv_heads * selected * 16 * ROW
    assert call.passes[0].bytes["scores"].sum() == SHAPE.kv_heads * G * pages * 4   # bounds per query head
    assert call.fetch == "page16"


def test_streaming_and_h2o_read_only_their_cache(h100):
    window = decode_call(SHAPE, streams(window_mask), "streaming", {})
    h2o = decode_call(SHAPE, streams(scattered_mask), "h2o", {})
    for call in (window, h2o):
        assert bytes_of(call, "k") == bytes_of(call, "v") == SHAPE.kv_heads * 1024 * ROW
    assert bytes_of(window, "scores") == 0
    # H2O: the step's weights written and read back (G per row, fp32) plus the row's max / denominator
    assert bytes_of(h2o, "scores") == SHAPE.kv_heads * (2 * G * 1024 * 4 + 2 * G * 2 * 4)
    assert h2o.passes[-1].name == "h2o_accumulate"
    t_window, t_h2o = (simulate_call(c, h100)["time_s"] for c in (window, h2o))
    assert t_window < t_h2o                 # same bytes of K/V; H2O also maintains its scores
    dense = simulate_call(base_decode_call(SHAPE, [DecodeStream(N)] * SHAPE.kv_heads, "dense", "row"), h100)
    assert t_h2o < dense["time_s"]


def test_topp_reads_all_of_k_and_pays_a_sort_pass(h100):
    mask_streams = streams(scattered_mask)
    topp = decode_call(SHAPE, mask_streams, "topp", {})
    topk = base_decode_call(SHAPE, mask_streams, "topk", "row")
    theta = base_decode_call(SHAPE, mask_streams, "toptheta", "row")
    assert bytes_of(topp, "k") == bytes_of(theta, "k") == SHAPE.kv_heads * N * ROW
    assert bytes_of(topp, "v") == bytes_of(theta, "v")
    assert [p.name for p in topp.passes][:3] == ["split_kv_scores", "topp_select", "split_kv_gather"]
    assert topp.passes[1].vector_flops.sum() > topk.passes[1].vector_flops.sum()   # softmax + sort + scan
    assert simulate_call(topp, h100)["time_s"] > simulate_call(theta, h100)["time_s"]


def test_everything_kept_costs_the_dense_bytes():
    full = [DecodeStream(N, np.ones(N, bool), kept_per_head=N)] * SHAPE.kv_heads
    dense = base_decode_call(SHAPE, [DecodeStream(N)] * SHAPE.kv_heads, "dense", "row")
    for name in ("streaming", "h2o"):
        call = decode_call(SHAPE, full, name, {})
        assert bytes_of(call, "k") == bytes_of(dense, "k") and bytes_of(call, "v") == bytes_of(dense, "v")
    quest = decode_call(SHAPE, full, "quest", {"page_size": 16})
    assert bytes_of(quest, "v") == bytes_of(dense, "v") and bytes_of(quest, "k") > bytes_of(dense, "k")


def test_bad_method_or_page_size_is_refused():
    with pytest.raises(UserError, match="alternatives"):
        decode_call(SHAPE, streams(scattered_mask), "magic", {})
    with pytest.raises(UserError, match="page size 4"):
        decode_call(SHAPE, streams(scattered_mask), "quest", {"page_size": 4})


def test_replayed_statistics_of_an_alternative_simulate_with_its_kernel(tmp_path, h100):
    from topθ_hw.engine.methods import Dense, Quest
    from topθ_hw.engine.run import replay_trace
    from topθ_hw.sim.stats import simulate_stats
    from topθ_hw.store import open_trace

    trace = open_trace("traces/smollm2-135m.zarr")
    results, frames = {}, {}
    for method in (Quest(budget=64, page_size=16), Dense()):
        frame, meta = replay_trace(trace, method, ["seq_0001"], [6], decode_only=True)
        frames[method.name] = frame = frame[frame.step.isin([0, 63]) | (frame.level == "head")]
        results[method.name] = simulate_stats(frame, meta, h100)
    quest = results["quest"][results["quest"].scope == "step"]
    dense = results["dense"][results["dense"].scope == "step"]
    assert set(quest.method) == {"quest"} and set(quest.fetch) == {"page16"}
    assert (quest.bytes_v.to_numpy() < dense.bytes_v.to_numpy() / 2).all()
    # step 63 (context 576 = 36 full pages): 2 summary rows per page + 16 K rows per page the group's
    # heads selected (the union: 4 pages per head, the current one shared), 128 B rows
    last = frames["quest"][(frames["quest"].level == "group") & (frames["quest"].step == 63)]
    assert 4 * 3 <= last.pages_needed_16.sum() <= 3 * (3 * 3 + 1)
    assert quest.bytes_k.iloc[-1] == (3 * 36 * 2 + 16 * last.pages_needed_16.sum()) * 128
