"""Access patterns of the alternatives' decode kernels: what top-p, Quest, StreamingLLM and H2O read,
compute and write per decode step, as kernel passes for the simulator (see ``workload.py``).

Per (batch item, KV head) stream, from the engine's real per-step mask (``kept_v_mask``: the union
of the group's query heads):

- **top-p** (Twilight): like top-k, K is read in full and the score row written; the selection
  needs the row's full softmax (max and denominator) and a sort of the row, then a prefix scan to
  find where the mass reaches p; then the kept V rows are gathered. Passes: scores, select
  (read once when the row fits one unit's SRAM, else softmax read + radix-sort passes of
  (score, index) pairs + scan), gather [+ merge].
- **Quest**: the page summaries (min and max key, 2·d elements per page) are read instead of K,
  each query head's page bounds written; a top-pages selection over the bound row; then K *and* V
  of the selected pages only (the union over the group's heads), whole pages, from a page table
  known before the attention kernel starts. The step's key also updates its page's min/max
  (read and write 2·d elements). Passes: estimate, select, attend [+ merge].
- **StreamingLLM**: the cache *is* the sinks and the recent window (a ring buffer): a dense kernel
  over those rows only, K and V. Pass: attend [+ merge].
- **H2O**: the cache holds the retained rows only: a dense kernel over them that also writes the
  step's attention weights (G per row, fp32); an update pass reads them, adds them to one fp32
  accumulator per cached row (read + write) and finds the minimum outside the recent window
  (the row to evict). Passes: attend [+ merge], accumulate.

Prefill (not the comparison's subject) is costed with the existing tiled kernel: top-p as top-k
(score tile written and selected), the others as the tile-skipping kernel with their kept masks.
"""

from __future__ import annotations

import numpy as np

from topθ_hw.errors import UserError
from topθ_hw.sim.workload import (FETCH_TOKENS, FP32, RADIX_SELECT_PASSES, TILE, AttentionCall, DecodeStream, Pass,
                                  Shape, _empty_bytes, _reduce_pass, _select_pass, _split_pass, prefill_call)

ALTERNATIVES = ("topp", "quest", "streaming", "h2o")
SRAM_ROW_BYTES = 128 * 1024   # a score row up to this size is staged in one unit's SRAM (as top-k's select)


def kept_rows(stream: DecodeStream) -> np.ndarray:
    if stream.kept_rows is None:
        return np.ones(stream.context, bool)
    rows = np.asarray(stream.kept_rows, bool)
    if len(rows) != stream.context:
        raise UserError(f"kept V mask has {len(rows)} rows for context {stream.context}")
    return rows


def _with_merge(passes: list, streams, shape, split_tokens) -> list:
    if any(s.context > split_tokens for s in streams):
        passes.append(_reduce_pass(streams, shape, split_tokens))
    return passes


def _call(method, fetch, shape, passes, streams) -> AttentionCall:
    total = sum(s.context for s in streams)
    kept = sum(int(kept_rows(s).sum()) for s in streams)
    return AttentionCall(phase="decode", method=method, fetch=fetch, shape=shape, passes=passes,
                         kept_v_fraction=kept / max(total, 1))


# ----------------------------------------------------------------------------------------- top-p
def topp_select_pass(streams, shape: Shape) -> Pass:
    """One item per (stream, query head): softmax statistics, sort and scan of the score row."""
    G = shape.group
    n = np.repeat([s.context for s in streams], G).astype(np.int64)
    k = np.ceil(np.repeat([s.kept_per_head if s.kept_per_head is not None else s.context for s in streams], G))
    staged = n * FP32 <= SRAM_ROW_BYTES
    pair = 2 * FP32   # (score, index) pairs move through the sort
    b = _empty_bytes(len(n))
    b["scores"] = np.where(staged, n * FP32, n * FP32 + RADIX_SELECT_PASSES * 2 * n * pair + n * pair)
    b["scores"] += k.astype(np.int64) * FP32   # kept indices out
    vector = 3.0 * n + 3.0 * RADIX_SELECT_PASSES * n + 2.0 * n   # exp-sum, radix sort, prefix scan
    return Pass(name="topp_select", bytes=b, runs=np.ones(len(n), np.int64), matrix_flops=np.zeros(len(n)),
                vector_flops=vector, matrix_rows=1)


def topp_call(shape, streams, fetch, split_tokens, granule) -> AttentionCall:
    page = FETCH_TOKENS[fetch]
    passes = [_split_pass(streams, shape, page, granule, split_tokens, "topk", "scores"),
              topp_select_pass(streams, shape),
              _split_pass(streams, shape, page, granule, split_tokens, "topk", "gather")]
    return _call("topp", fetch, shape, _with_merge(passes, streams, shape, split_tokens), streams)


# ----------------------------------------------------------------------------------------- Quest
def quest_estimate_pass(streams, shape: Shape, page: int, split_tokens: int) -> Pass:
    """Page summaries instead of K: one item per split of the context; bounds written per head."""
    G, d, row = shape.group, shape.head_dim, shape.row_bytes
    parts = []
    for s in streams:
        pages = -(-np.minimum(split_tokens, s.context - np.arange(0, s.context, split_tokens)) // page)
        b = _empty_bytes(len(pages))
        b["k"] = pages * 2 * row                    # min and max key of each page
        b["scores"] = G * pages * FP32              # each query head's bound per page
        b["other"][0] += G * row                    # the query
        b["other"][-1] += 2 * 2 * row               # this step's key updates its page's min/max
        parts.append((b, pages))
    pages = np.concatenate([p for _, p in parts])
    b = {kind: np.concatenate([x[kind] for x, _ in parts]) for kind in parts[0][0]}
    return Pass(name="quest_estimate", bytes=b, runs=np.ones(len(pages), np.int64),
                matrix_flops=np.zeros(len(pages)), vector_flops=4.0 * G * d * pages, matrix_rows=G,
                tiles=-(-2 * pages // TILE))


def page_table(stream: DecodeStream, page: int) -> tuple[np.ndarray, int]:
    """Selected pages (bool per page: any kept row) and the tokens they hold (the current page is partial)."""
    rows = kept_rows(stream)
    chosen = np.pad(rows, (0, (-len(rows)) % page)).reshape(-1, page).any(axis=1)
    last_rows = stream.context - (len(chosen) - 1) * page
    return chosen, int(chosen.sum() * page - (page - last_rows if chosen[-1] else 0))


def quest_attend_pass(tables, shape: Shape, page: int, granule: int, split_tokens: int) -> Pass:
    """K and V of the selected pages only, whole pages, iterated through the page table."""
    per_split, runs = split_tokens // page, []
    for chosen, _ in tables:
        ids = np.flatnonzero(chosen)
        starts = np.ones(len(ids), bool)
        starts[1:] = np.diff(ids) > 1                       # adjacent pages stream as one run
        starts[::per_split] = True                          # each split starts a run
        runs.append(np.add.reduceat(starts, np.arange(0, len(ids), per_split)) * 2)   # K and V
    p = _split_pass([DecodeStream(tokens) for _, tokens in tables], shape, 1, granule, split_tokens, "dense", "fused")
    p.runs = np.concatenate(runs).astype(np.int64)
    p.name, p.fetch_tokens = "quest_attend", page
    return p


def quest_call(shape, streams, page, split_tokens, granule) -> AttentionCall:
    if page not in FETCH_TOKENS.values() or split_tokens % page:
        raise UserError(f"Quest page size {page}: the simulator models pages of {sorted(FETCH_TOKENS.values())} "
                        f"tokens dividing split_tokens {split_tokens}")
    tables = [page_table(s, page) for s in streams]
    bound_rows = [DecodeStream(len(chosen), kept_per_head=float(chosen.sum())) for chosen, _ in tables]
    passes = [quest_estimate_pass(streams, shape, page, split_tokens),
              _rename(_select_pass(bound_rows, shape), "quest_select"),
              quest_attend_pass(tables, shape, page, granule, split_tokens)]
    compact = [DecodeStream(tokens) for _, tokens in tables]
    return _call("quest", f"page{page}", shape, _with_merge(passes, compact, shape, split_tokens), streams)


def _rename(p: Pass, name: str) -> Pass:
    p.name = name
    return p


# ------------------------------------------------------------------------ StreamingLLM and H2O
def retained_streams(streams) -> list[DecodeStream]:
    """The evicting methods' caches hold the kept rows only: a dense stream over them."""
    return [DecodeStream(int(kept_rows(s).sum())) for s in streams]


def streaming_call(shape, streams, split_tokens, granule) -> AttentionCall:
    cache = retained_streams(streams)
    passes = [_rename(_split_pass(cache, shape, 1, granule, split_tokens, "dense", "fused"), "streaming_attend")]
    return _call("streaming", "row", shape, _with_merge(passes, cache, shape, split_tokens), streams)


def h2o_update_pass(cache, shape: Shape, split_tokens: int) -> Pass:
    """Per split of the cache: the step's weights read, accumulators read and written, a min found.
    An element-wise streaming loop without dependent loads: one tile per item (no per-key-tile cost)."""
    G = shape.group
    tokens = np.concatenate([np.minimum(split_tokens, s.context - np.arange(0, s.context, split_tokens))
                             for s in cache]).astype(np.int64)
    b = _empty_bytes(len(tokens))
    b["scores"] = G * tokens * FP32 + G * 2 * FP32           # weights and the row's max / denominator
    b["other"] = 2 * tokens * FP32 + 2 * FP32                 # accumulators in and out, the split's minimum
    return Pass(name="h2o_accumulate", bytes=b, runs=np.ones(len(tokens), np.int64),
                matrix_flops=np.zeros(len(tokens)), vector_flops=(2.0 * G + 2.0) * tokens, matrix_rows=1)


def h2o_call(shape, streams, split_tokens, granule) -> AttentionCall:
    cache = retained_streams(streams)
    attend = _rename(_split_pass(cache, shape, 1, granule, split_tokens, "dense", "fused"), "h2o_attend")
    tokens = np.concatenate([np.minimum(split_tokens, s.context - np.arange(0, s.context, split_tokens))
                             for s in cache]).astype(np.int64)
    attend.bytes["scores"] = attend.bytes["scores"] + shape.group * tokens * FP32   # the weights written out
    passes = _with_merge([attend], cache, shape, split_tokens) + [h2o_update_pass(cache, shape, split_tokens)]
    return _call("h2o", "row", shape, passes, streams)


# ------------------------------------------------------------------------------------ dispatch
def decode_call(shape: Shape, streams: list[DecodeStream], method: str, params: dict, fetch: str = "row",
                split_tokens: int = 512, granule_bytes: int = 32) -> AttentionCall:
    """One decode step of one layer under an alternative; ``params`` as recorded in the statistics."""
    if fetch not in FETCH_TOKENS:
        raise UserError(f"fetch {fetch!r} unknown; expected one of {', '.join(FETCH_TOKENS)}")
    if method == "topp":
        return topp_call(shape, streams, fetch, split_tokens, granule_bytes)
    if method == "quest":
        return quest_call(shape, streams, int(params.get("page_size", 16)), split_tokens, granule_bytes)
    if method == "streaming":
        return streaming_call(shape, streams, split_tokens, granule_bytes)
    if method == "h2o":
        return h2o_call(shape, streams, split_tokens, granule_bytes)
    raise UserError(f"method {method!r} is not one of the alternatives {ALTERNATIVES}")


def alternative_prefill_call(shape: Shape, tiles: dict, method: str, params: dict, fetch: str,
                             granule_bytes: int = 32, l2_bytes: float = 0.0) -> AttentionCall:
    """Prefill under an alternative, costed with the tiled kernel (module docstring)."""
    kernel = "topk" if method == "topp" else "toptheta"
    page = int(params.get("page_size", 1)) if method == "quest" else 1
    fetch = f"page{page}" if page > 1 and f"page{page}" in FETCH_TOKENS else fetch
    call = prefill_call(shape, tiles, kernel, fetch, granule_bytes, l2_bytes)
    call.method = method
    call.passes[0].bytes["thresholds"][:] = 0   # no thresholds: their rules need none
    return call
