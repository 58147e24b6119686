"""Kept V-row and page fractions for a study point, from real engine statistics on a trace.

The replay engine runs once per (trace, method, k). Its decode statistics carry, for every layer,
KV group and step, the union mask of V rows the group's query heads need (``kept_v_mask``). A
study point asks for a context N that is usually far longer than the trace, so each measured
mask is *stretched* to N, keeping its kept-row count:

- the first ``SINK_TOKENS`` positions (attention sinks) stay where they are,
- the last ``RECENT_TOKENS`` positions keep their distance from the end (the recent window),
- every other kept position j moves to the same relative place in the middle of N tokens.

Then ``kept_v_fraction`` = kept rows / N for row (sector) fetch, and for page size P the
fraction of ⌈N/P⌉ pages that hold a stretched kept row. The count is held because Top-θ
thresholds and top-k both keep about k entries per head and row whatever n is; spreading the
middle rows apart is the pessimistic choice for pages (clusters in the middle are pulled apart).
Where N lies inside the measured decode range the point is marked ``kept_source = "measured"``,
elsewhere ``"extrapolated"``. A study whose trace is a measured long-context mask file
(:mod:`topθ_hw.study.masks`, e.g. masks at 4k–32k) reads the masks measured at the context
nearest N instead, so points at those contexts are measured, not stretched from a short trace;
``sims/results/longctx/`` compares this rule with such measured masks. Dense keeps everything, and so do top-k and Top-θ where k ≥ N
(rows with n ≤ k stay dense).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from topθ_hw.errors import UserError
from topθ_hw.study.spec import PAGE_SIZES

SINK_TOKENS = 16
RECENT_TOKENS = 64
MAX_MASKS = 2048  # decode masks used per replay (an even stride over all of them)


@dataclass(frozen=True)
class KeptMasks:
    """The decode union masks of one replay, as kept positions per (layer, group, step, sequence)."""

    positions: list[np.ndarray]   # kept V-row positions, each < its context
    contexts: np.ndarray          # context length N of each mask

    @property
    def measured_range(self) -> tuple[int, int]:
        return int(self.contexts.min()), int(self.contexts.max())


def kept_masks(stats: pd.DataFrame, source: str = "engine statistics") -> KeptMasks:
    """The decode, level "group" masks of an engine-stats frame (an even subsample of them)."""
    missing = sorted({"level", "phase", "context_len", "kept_v_mask"} - set(stats.columns))
    if missing:
        raise UserError(f"{source}: engine statistics lack column(s) {missing}")
    decode = stats[(stats["level"] == "group") & (stats["phase"] == "decode")]
    if decode.empty:
        raise UserError(f"{source}: no decode rows at level 'group'; the trace needs decode steps")
    decode = decode.iloc[:: max(1, math.ceil(len(decode) / MAX_MASKS))]
    positions = []
    for packed, n in zip(decode["kept_v_mask"], decode["context_len"]):
        bits = np.unpackbits(np.frombuffer(packed, dtype=np.uint8), count=int(n))
        positions.append(np.flatnonzero(bits))
    return KeptMasks(positions, decode["context_len"].to_numpy(dtype=np.int64))


def stretch(positions: np.ndarray, n_measured: int, n_target: int) -> np.ndarray:
    """Kept positions of an ``n_measured`` mask moved to ``n_target`` tokens (see module doc)."""
    sink = min(SINK_TOKENS, n_target)
    recent = min(RECENT_TOKENS, n_target - sink)
    middle_in = max(n_measured - SINK_TOKENS - RECENT_TOKENS, 1)
    middle_out = n_target - sink - recent
    out = positions.copy()
    tail = positions >= n_measured - RECENT_TOKENS
    mid = (positions >= SINK_TOKENS) & ~tail
    out[tail] = positions[tail] - n_measured + n_target
    out[mid] = sink + (positions[mid] - SINK_TOKENS) * middle_out // middle_in
    return np.unique(np.clip(out, 0, n_target - 1))


def kept_fractions(masks: KeptMasks, context: int) -> dict[int, float]:
    """Page size → fraction of fetch units read at ``context`` (page size 1: V rows)."""
    needed = dict.fromkeys(PAGE_SIZES, 0)
    for positions, n in zip(masks.positions, masks.contexts):
        stretched = stretch(positions, int(n), context)
        for page in PAGE_SIZES:
            needed[page] += np.unique(stretched // page).size
    total = len(masks.positions)
    return {p: needed[p] / (total * math.ceil(context / p)) for p in PAGE_SIZES}


def kept_fraction(fractions: dict[int, float] | None, measured_range: tuple[int, int] | None,
                  context: int, page_size: int, k: int, engine_method: str) -> tuple[float, str]:
    """(fraction of V rows or pages read, where it comes from) for one point."""
    if engine_method == "dense" or k >= context:
        return 1.0, "dense"
    fraction = max(fractions[page_size], 1.0 / math.ceil(context / page_size))
    lo, hi = measured_range
    return min(fraction, 1.0), "measured" if lo <= context <= hi else "extrapolated"
