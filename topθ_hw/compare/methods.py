"""One budget, two worlds: the engine (replay) and live (in-model) object of each alternative.

A budget k means the same for every budgeted method: at most k keys per row (top-k: k; Quest: k
tokens of pages; StreamingLLM: sinks + window = k; H2O: a cache of k keys). Top-p has no budget:
its mass p is swept and its kept count measured.
"""

from __future__ import annotations

from topθ_hw.errors import UserError

ALTERNATIVES = ("topp", "quest", "streaming", "h2o")


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
