"""Quest (Tang et al., "Quest: Query-Aware Sparsity for Efficient Long-Context LLM Inference",
arXiv 2406.10774, ICML 2024): per-page min/max key bounds pick the top pages for each query.

The KV cache is cut into pages of ``page_size`` consecutive positions (a power of two). Each page
keeps a summary per KV head: the element-wise minimum m and maximum M of its keys. For query q,
the page's upper bound on any of its scores is U = Σ_i max(q_i·m_i, q_i·M_i)
(= q·(M+m)/2 + |q|·(M−m)/2, two matrix products). Rule per row t and query head:
- the current page (holding t, still filling: its summary is not final) is always kept;
- of the other pages intersecting the row's valid keys, the max(1, budget // page_size) − 1 with
  the largest U are kept (ties: the most recent page);
- every valid key of a kept page is kept; the weights are renormalised over them.
The full cache is kept (nothing is evicted): another query may pick other pages. When every page
fits the budget the row is dense. The softmax scaling is positive and does not change the order,
so U is computed on the raw query.

What it must read to decide: the page summaries (2·d elements per page and KV head), *not* all of
K (``reads_keys = "page_summaries"``); then K and V of the selected pages only. Selection is per
query head; under GQA the pages fetched are the union over the group's heads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from topθ_hw.engine.methods.base import AttentionMethod, Selection, parse_layer_k
from topθ_hw.errors import UserError


def check_page_size(page_size: int, where: str = "--page-size") -> None:
    if not isinstance(page_size, (int, np.integer)) or page_size < 1 or page_size & (page_size - 1):
        raise UserError(f"{where}: page size must be a power of two ≥ 1 (e.g. 16), got {page_size!r}")


def page_summaries(k: np.ndarray, page_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Centre (M+m)/2 and half-range (M−m)/2 per page, float64 [H_kv, n_pages, d].

    The last page may be partial; it is only ever some row's current page (always kept), so its
    summary never decides anything.
    """
    n_kv, n_rows, d = k.shape
    n_pages = -(-n_rows // page_size)
    padded = np.pad(k, ((0, 0), (0, n_pages * page_size - n_rows), (0, 0)), mode="edge")
    pages = padded.reshape(n_kv, n_pages, page_size, d).astype(np.float64)
    lo, hi = pages.min(axis=2), pages.max(axis=2)
    return (hi + lo) / 2, (hi - lo) / 2


def page_bounds(q: np.ndarray, centre: np.ndarray, half: np.ndarray) -> np.ndarray:
    """U[r, p] = Σ_i max(q_i·m_i, q_i·M_i) for q [rows, d] and one KV head's summaries [n_pages, d]."""
    q = q.astype(np.float64)
    return q @ centre.T + np.abs(q) @ half.T


def selected_pages(bounds: np.ndarray, first_page: np.ndarray, current_page: np.ndarray, n_select: int) -> np.ndarray:
    """bool [rows, n_pages]: the current page plus the n_select − 1 best-bounded earlier valid pages."""
    n_rows, n_pages = bounds.shape
    pages = np.arange(n_pages)[None, :]
    candidate = (pages >= first_page[:, None]) & (pages < current_page[:, None])
    ranked = np.where(candidate, bounds, -np.inf)[:, ::-1]          # most recent page first: ties go to it
    order = np.argsort(-ranked, axis=1, kind="stable")[:, :max(n_select - 1, 0)]
    chosen = np.zeros((n_rows, n_pages), np.bool_)
    rows = np.arange(n_rows)[:, None]
    chosen[rows, n_pages - 1 - order] = np.take_along_axis(ranked, order, axis=1) > -np.inf
    chosen[np.arange(n_rows), current_page] = True
    return chosen


@dataclass
class Quest(AttentionMethod):
    budget: int = 64            # tokens; pages kept = max(1, budget // page_size)
    page_size: int = 16
    layer_budget: str | None = None   # e.g. "0:512,1:512"
    _budget_per_layer: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self):
        self.name, self.needs_full_row, self.reads_keys = "quest", False, "page_summaries"
        check_page_size(self.page_size)
        parse_layer_k(None, self.budget, 1, "--k (Quest token budget)")

    def check(self, meta, where: str = "") -> None:
        self._budget_per_layer = parse_layer_k(self.layer_budget, self.budget, meta.n_layers, "--layer-k")

    def prepare_layer(self, layer, qkv):
        budget = int(self._budget_per_layer[layer]) if self._budget_per_layer is not None else self.budget
        return page_summaries(qkv.k, self.page_size), max(1, budget // self.page_size)

    def select(self, block, layer_ctx, state) -> Selection:
        (centre, half), n_select = layer_ctx
        n_heads, n_rows, d = block.q.shape
        bounds = page_bounds(block.q.reshape(-1, d), centre[block.kv_group], half[block.kv_group])
        first = np.tile(block.row_lo // self.page_size, n_heads)
        current = np.tile(block.row_hi // self.page_size, n_heads)
        chosen = selected_pages(bounds, first, current, n_select)
        key_pages = (block.key_lo + np.arange(block.scores.shape[1])) // self.page_size
        return Selection(keep=chosen[:, key_pages] & (block.scores > -np.inf))
