"""The one interface every sparse-attention method implements (see ../METHODS.md for how top-p,
Quest, StreamingLLM and H2O plug in) (kvpress spirit: the method only
decides *what to keep* and *how to renormalise*; the engine scores, normalises, multiplies by V,
measures error and counts hardware units, identically for every method).

How a method plugs in
---------------------
``prepare_layer(layer, qkv)`` runs once per (sequence, layer) and returns anything the method
needs to decide: Top-θ looks its thresholds up for every row; Quest would build per-page
min/max key summaries here (and declare ``reads_keys = "page_summaries"``); StreamingLLM needs
nothing. ``begin_sequence(seq)`` returns per-sequence state carried across decode steps (H2O's
accumulated attention and evicted set); a method with ``stateful = True`` is fed one decode row
per block, in order, and sees every block's final weights through ``observe`` (H2O accumulates
them and evicts). ``select(block, layer_ctx, state)`` returns a :class:`Selection` for a
:class:`ScoreBlock`. top-p reads ``block.scores``/``row_max`` (it needs the full row:
``needs_full_row = True``); Quest reads ``block.q`` and its page summaries, not the scores.

What a method reads is declared for the hardware model: ``reads_keys`` ("full" or
"page_summaries") and ``needs_full_row`` (the decision needs the whole score row before any
element can be dropped: top-k, post-softmax Top-θ, top-p; pre-softmax Top-θ decides tile by tile).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from topθ_hw.errors import UserError


@dataclass
class ScoreBlock:
    """The G query heads of one KV group × R consecutive rows, scored against keys [key_lo, key_lo+m).

    Row r of ``scores`` is head ``heads[r // R]``, trace row ``rows[r % R]``; entries outside a
    row's valid keys [row_lo, row_hi] are -inf.
    """

    layer: int
    kv_group: int
    heads: np.ndarray      # [G] query head indices
    rows: np.ndarray       # [R] trace rows (t); causal length n = t + 1
    row_lo: np.ndarray     # [R] first valid key (sliding window), absolute
    row_hi: np.ndarray     # [R] last valid key (= rows)
    key_lo: int
    scores: np.ndarray     # [G*R, m] float32 scaled logits a = q·k·scaling
    row_max: np.ndarray    # [G*R] float32 max valid logit per row
    q: np.ndarray          # [G, R, d] float32 raw queries (for methods that score summaries)
    phase: str             # "prefill" | "decode"

    @property
    def n_valid(self) -> np.ndarray:
        """[R] valid keys per row."""
        return self.row_hi - self.row_lo + 1


@dataclass
class Selection:
    """What to keep and how to normalise the kept weights.

    weight of kept j = exp(a_j - m) / (den_scale·D_kept + miss_weight·D_missed + den_add);
    the defaults renormalise over the kept entries (pre-softmax thresholding, top-k).
    ``vmc``: add (1 - Σ weights)·mean(V over the valid rows) to the output.
    ``empty``: rows that had to fall back to the empty-row rule inside ``select``.
    """

    keep: np.ndarray                       # [G*R, m] bool
    den_scale: np.ndarray | None = None    # [G*R] float64, default 1
    den_add: np.ndarray | None = None      # [G*R] float64, default 0
    miss_weight: float = 0.0
    vmc: bool = False
    empty: np.ndarray | None = None        # [G*R] bool


@dataclass
class AttentionMethod:
    """Base class: subclasses are small dataclasses of their parameters."""

    name: str = field(default="", init=False)
    reads_keys: str = field(default="full", init=False)
    needs_full_row: bool = field(default=True, init=False)
    stateful: bool = field(default=False, init=False)

    def params(self) -> dict:
        """JSON-able parameters recorded in the statistics' metadata."""
        from dataclasses import asdict
        return {k: v for k, v in asdict(self).items()
                if k not in ("name", "reads_keys", "needs_full_row", "stateful") and not k.startswith("_")}

    def check(self, meta, where: str = "") -> None:
        """Raise UserError if the method cannot run on a trace with this TraceMeta."""

    def begin_sequence(self, seq) -> object:
        return None

    def prepare_layer(self, layer: int, qkv) -> object:
        return None

    def select(self, block: ScoreBlock, layer_ctx, state) -> Selection:
        raise NotImplementedError

    def observe(self, block: ScoreBlock, weights: np.ndarray, state) -> None:
        """Stateful methods see the final sparse weights [G*R, m] of every block, in row order.

        ``weights`` is a view into a buffer the engine reuses: copy what must outlive the call.
        """

    def report(self) -> dict:
        """Extra facts for the statistics' metadata after a replay (e.g. extrapolated rows)."""
        return {}


def valid_keep(block: ScoreBlock) -> np.ndarray:
    """All valid keys (the dense selection)."""
    return block.scores > -np.inf


def parse_layer_k(spec: str | None, k: int, n_layers: int, where: str = "--layer-k") -> np.ndarray:
    """'0:512,1:512' → per-layer k array (others get k); errors name the bad item."""
    if k < 1:
        raise UserError(f"--k must be ≥ 1, got {k}")
    out = np.full(n_layers, int(k), np.int64)
    for item in filter(None, (s.strip() for s in (spec or "").split(","))):
        try:
            layer, value = (int(x) for x in item.split(":"))
        except ValueError:
            raise UserError(f"{where}: item {item!r} is not LAYER:K (e.g. 0:512)") from None
        if not 0 <= layer < n_layers:
            raise UserError(f"{where}: layer {layer} does not exist (model has layers 0..{n_layers - 1})")
        if value < 1:
            raise UserError(f"{where}: k for layer {layer} must be ≥ 1, got {value}")
        out[layer] = value
    return out
