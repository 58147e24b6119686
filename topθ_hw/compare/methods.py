"""One budget, two worlds: the engine (replay) and live (in-model) object of each alternative.

A budget k means the same for every budgeted method: at most k keys per row (top-k: k; Quest: k
tokens of pages; StreamingLLM: sinks + window = k; H2O: a cache of k keys). Top-p has no budget:
its mass p is swept and its kept count measured.
"""

from __future__ import annotations

from dataclasses import dataclass

from topθ_hw.errors import UserError

ALTERNATIVES = ("topp", "quest", "streaming", "h2o")   # the simulator's list (sim/alternatives.py) agrees


def streaming_window(budget: int, sinks: int, window: int | None) -> int:
    if window is not None:
        return window
    if budget - sinks < 1:
        raise UserError(f"--k {budget}: StreamingLLM keeps sinks + window = k, so k must exceed --sinks {sinks}")
    return budget - sinks


def engine_method(name: str, budget: int, p: float = 0.9, page_size: int = 16, sinks: int = 4,
                  window: int | None = None, recent: int | None = None, layer_budget: str | None = None):
    """The replay engine's method object for an alternative."""
    from topθ_hw.engine.methods import H2O, Quest, StreamingLLM, TopP

    if name == "topp":
        return TopP(p=p)
    if name == "quest":
        return Quest(budget=budget, page_size=page_size, layer_budget=layer_budget)
    if name == "streaming":
        if layer_budget:
            raise UserError("--layer-k: StreamingLLM has one window for every layer; give --window or --k only")
        return StreamingLLM(window=streaming_window(budget, sinks, window), sinks=sinks)
    if name == "h2o":
        return H2O(budget=budget, recent=recent, layer_budget=layer_budget)
    raise UserError(f"method {name!r} is not one of the alternatives {ALTERNATIVES}")


def live_method(name: str, budget: int, p: float = 0.9, page_size: int = 16, sinks: int = 4,
                window: int | None = None, recent: int | None = None):
    """The same rule as a live method inside the model (``topθ_hw.quality.methods``)."""
    from topθ_hw.quality import methods as live

    if name == "topp":
        return live.TopP(p)
    if name == "quest":
        return live.Quest(budget, page_size)
    if name == "streaming":
        return live.StreamingLLM(streaming_window(budget, sinks, window), sinks)
    if name == "h2o":
        return live.H2O(budget, recent)
    raise UserError(f"method {name!r} is not one of the alternatives {ALTERNATIVES}")


# ------------------------------------------------------------------ the compared settings
FAMILIES = ("dense", "topk", "toptheta", "toptheta+comp", "topp", "quest", "streaming", "h2o")
# Exact SDC divides by the full-row denominator, which a fused online-softmax kernel has when the row
# ends (every score is exponentiated anyway); VMC adds the running mean of V. On SmolLM2 it beat
# sdc=expthr+vmc (whose exp-threshold bound over-estimates the dropped mass) by 5-13x in KL.
DEFAULT_COMPENSATION = "sdc=exact+vmc"


def parse_compensation(text: str) -> dict:
    """'sdc=exact+vmc' → {"sdc": "exact", "vmc": True}: the pre-softmax modifiers of `toptheta evaluate`."""
    from topθ_hw.quality.settings import parse_variant

    variant = parse_variant("pre+" + text)
    if variant.capk:
        raise UserError(f"--compensation {text!r}: capk is not a compensation; use sdc=... and/or vmc")
    if variant.sdc == "offline":
        raise UserError(f"--compensation {text!r}: offline SDC needs a trace-calibrated table; the comparison "
                        "calibrates live, so use sdc=exact or sdc=expthr")
    if not (variant.sdc or variant.vmc):
        raise UserError(f"--compensation {text!r}: name sdc=exact|expthr and/or vmc")
    return {"sdc": variant.sdc or "none", "vmc": variant.vmc}


@dataclass(frozen=True)
class Entry:
    """One compared setting: a family at a budget k (or a mass p for top-p)."""

    family: str
    k: int | None = None
    p: float | None = None

    @property
    def label(self) -> str:
        if self.family == "dense":
            return "dense"
        return f"{self.family} p={self.p:g}" if self.family == "topp" else f"{self.family} k={self.k}"


def entries(families: list[str], ks: list[int], ps: list[float]) -> list[Entry]:
    bad = [f for f in families if f not in FAMILIES]
    if bad:
        raise UserError(f"--methods: {bad} unknown; expected some of {list(FAMILIES)}")
    out = []
    for family in families:
        if family == "dense":
            out.append(Entry("dense"))
        elif family == "topp":
            out += [Entry("topp", p=p) for p in ps]
        else:
            out += [Entry(family, k=k) for k in ks]
    return out


@dataclass(frozen=True)
class Options:
    page_size: int = 16
    sinks: int = 4
    recent: int | None = None
    compensation: str = DEFAULT_COMPENSATION


def engine_for(entry: Entry, opts: Options, thresholds: dict | None = None):
    """The replay engine's method for ``entry``; Top-θ takes its ThresholdTable from ``thresholds[k]``."""
    from topθ_hw.engine.methods import Dense, TopK, TopTheta

    if entry.family == "dense":
        return Dense()
    if entry.family == "topk":
        return TopK(k=entry.k)
    if entry.family.startswith("toptheta"):
        extra = parse_compensation(opts.compensation) if entry.family == "toptheta+comp" else {}
        return TopTheta(thresholds=thresholds[entry.k], placement="pre", **extra)
    return engine_method(entry.family, entry.k or 0, p=1.0 if entry.p is None else entry.p,
                         page_size=opts.page_size, sinks=opts.sinks, recent=opts.recent)


def live_for(entry: Entry, opts: Options, thresholds: dict | None = None):
    """The live (in-model) method for ``entry``; Top-θ takes LiveThresholds from ``thresholds[k]``."""
    from topθ_hw.quality import methods as live

    if entry.family == "dense":
        return live.Dense()
    if entry.family == "topk":
        return live.TopK(entry.k)
    if entry.family.startswith("toptheta"):
        comp = parse_compensation(opts.compensation) if entry.family == "toptheta+comp" else {"sdc": "none"}
        return live.TopTheta(thresholds[entry.k], sdc=None if comp["sdc"] == "none" else comp["sdc"],
                             vmc=comp.get("vmc", False))
    return live_method(entry.family, entry.k or 0, p=1.0 if entry.p is None else entry.p,
                       page_size=opts.page_size, sinks=opts.sinks, recent=opts.recent)


def check_entries(entries_: list[Entry], opts: Options) -> None:
    """Build every non-Top-θ method once so that bad parameters fail before any work."""
    if any(e.family == "toptheta+comp" for e in entries_):
        parse_compensation(opts.compensation)
    for e in entries_:
        if not e.family.startswith("toptheta"):
            engine_for(e, opts)
