"""Measured mask statistics: the file format, its recount, and how studies read it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from topθ_hw.engine.longctx import layer_tables
from topθ_hw.engine.methods import TopK
from topθ_hw.errors import UserError
from topθ_hw.store import open_trace
from topθ_hw.study.masks import load_mask_stats, measured_fractions, write_mask_stats

SHIPPED = Path("traces/qwen2.5-coder-0.5b-longctx-masks.safetensors")


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    trace = open_trace("traces/smollm2-135m.zarr")
    method = TopK(k=16)
    method.check(trace.meta)
    _, dec = layer_tables(trace.sequence("seq_0001").layer(4), 4, method, 512, 3, 8, (128, 256))
    frame = dec[dec.level == "group"].assign(method="topk", k=16)
    path = write_mask_stats(frame, tmp_path_factory.mktemp("m") / "m.safetensors", {"model_id": "smollm2-135m"})
    return path, frame


def test_masks_round_trip_bit_for_bit(small_file):
    path, frame = small_file
    stats = load_mask_stats(path)
    assert list(stats.cuts("topk", 16)) == [128, 256, 512]
    got = stats.masks("topk", 16, 256)
    want = frame[frame.context == 256]
    assert [len(p) for p in got.positions] == list(want.kept_v_rows)
    assert list(got.contexts) == list(want.context_len)


def test_measured_fractions_label_measured_and_extrapolated(small_file):
    stats = load_mask_stats(small_file[0])
    r = measured_fractions(stats, "topk", 16, [256, 1024])
    assert r["sources"] == {"256": "measured", "1024": "extrapolated"}
    rows = small_file[1]
    at256 = rows[rows.context == 256]
    # the kept count is held at the context asked for (a few rows may merge when squeezed)
    assert r["fractions"]["256"][1] == pytest.approx(at256.kept_v_rows.mean() / 256, rel=0.02)
    with pytest.raises(UserError, match="holds no masks for toptheta at k = 16"):
        measured_fractions(stats, "toptheta", 16, [256])


def test_shipped_mask_file_matches_a_recount_of_its_bits():
    stats = load_mask_stats(SHIPPED)
    c = stats.columns
    counts = np.diff(stats.offsets)
    assert (counts == (c["context_len"] + 7) // 8).all()
    for method, k, cut, kept, total in stats.meta["kept_v_rows"]:
        m = stats.masks(method, k, cut)
        assert sum(len(p) for p in m.positions) == kept and int(m.contexts.sum()) == total
    assert SHIPPED.stat().st_size < 8e6
