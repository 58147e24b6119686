"""Teacher-forced evaluation of live settings against the dense model on held-out text.

The text is cut into non-overlapping windows of ``window`` tokens; each window runs once dense
(the model's own SDPA attention) and once per setting, and every setting is scored on the same
next tokens: perplexity, agreement of its arg-max next token with dense, KL(dense ‖ setting), and
the kept-element and V-row fractions of that very run (see :class:`KeptCounter`; rows with causal
length ≥ ``decode_from`` count as decode steps).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .attention import KeptCounter
from .live import sparsified
from .settings import Setting


@dataclass
class Totals:
    counter: KeptCounter
    nll: float = 0.0
    agree: int = 0
    kl: float = 0.0
    seconds: float = 0.0
    max_n: int = field(default=0)


def text_windows(ids: torch.Tensor, window: int) -> list[torch.Tensor]:
    """[N] token ids -> [1, ≤window] windows; a last window shorter than 2 tokens predicts nothing."""
    return [ids[s:s + window][None] for s in range(0, len(ids), window) if len(ids[s:s + window]) >= 2]


@torch.no_grad()
def next_token_logprobs(model, x: torch.Tensor) -> torch.Tensor:
    """float32 [T-1, vocab] log-probabilities of each next token."""
    return F.log_softmax(model(x, use_cache=False).logits[0, :-1].float(), dim=-1)


def evaluate(model, ids: torch.Tensor, settings: list[Setting], window: int = 1024, decode_from: int | None = None,
             progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Summary (one row per setting) and per-layer kept fractions of a teacher-forced run over ``ids``."""
    from tqdm.auto import tqdm

    decode_from = window // 2 if decode_from is None else decode_from
    n_layers = model.config.num_hidden_layers
    totals = {s.label: Totals(KeptCounter(n_layers, decode_from)) for s in settings}
    windows = text_windows(ids, window)
    dense_nll, dense_seconds, n_tokens = 0.0, 0.0, 0
    with tqdm(total=len(windows) * (1 + len(settings)), desc="evaluate", unit="pass", disable=not progress) as bar:
        for x in windows:
            x = x.to(model.device)
            start = time.perf_counter()
            ref = next_token_logprobs(model, x)
            dense_seconds += time.perf_counter() - start
            target = x[0, 1:, None]
            dense_nll -= float(ref.gather(1, target).sum())
            ref_top = ref.argmax(-1)
            n_tokens += len(ref)
            bar.update()
            for s in settings:
                bar.set_postfix_str(s.label)
                score_setting(model, x, s, totals[s.label], ref, ref_top, target)
                bar.update()
    summary = pd.DataFrame([summary_row(s, totals[s.label], n_tokens, dense_nll) for s in settings])
    summary["dense_seconds"] = dense_seconds
    summary["window"], summary["decode_from"] = window, decode_from
    return summary, per_layer_frame(settings, totals)


def score_setting(model, x, setting: Setting, tot: Totals, ref, ref_top, target) -> None:
    start = time.perf_counter()
    with sparsified(model, setting.method, tot.counter):
        out = next_token_logprobs(model, x)
    tot.seconds += time.perf_counter() - start
    tot.nll -= float(out.gather(1, target).sum())
    tot.agree += int((out.argmax(-1) == ref_top).sum())
    tot.kl += float(F.kl_div(out, ref, log_target=True, reduction="sum"))  # KL(dense ‖ setting)


def summary_row(s: Setting, tot: Totals, n_tokens: int, dense_nll: float) -> dict:
    c, th = tot.counter, s.thresholds
    ppl, ppl_dense = math.exp(tot.nll / n_tokens), math.exp(dense_nll / n_tokens)
    elements, v_rows = c.element_fraction(), c.v_row_fraction()
    return {
        "setting": s.label, "family": s.variant.family, "variant": s.variant.name,
        "k": s.k if s.k is not None else -1, "placement": s.variant.placement or "",
        "sdc": s.variant.sdc or "", "vmc": s.variant.vmc, "capk": s.variant.capk,
        "tokens": n_tokens, "ppl_dense": ppl_dense, "ppl": ppl, "ppl_increase": ppl / ppl_dense - 1.0,
        "agreement": tot.agree / n_tokens, "disagreement": 1.0 - tot.agree / n_tokens,
        "kl_mean": tot.kl / n_tokens,
        "kept_element_fraction": elements, "element_reduction": 1.0 / max(elements, 1e-12),
        "kept_v_row_fraction": v_rows, "v_row_reduction": 1.0 / max(v_rows, 1e-12),
        "decode_steps": c.decode_steps,
        "thresholds": th.source if th else "", "layer_k": ",".join(map(str, th.k)) if th else "",
        "lookup": th.lookup if th else "", "extrapolate": th.extrapolate if th else "",
        "max_calibrated_n": th.max_calibrated_n if th else -1,
        "extrapolated": bool(th and th.extrapolated), "seconds": tot.seconds,
        "dense_uncalibrated_layers": ",".join(map(str, th.uncalibrated_layers)) if th else "",
    }


def per_layer_frame(settings: list[Setting], totals: dict[str, Totals]) -> pd.DataFrame:
    frames = []
    for s in settings:
        c = totals[s.label].counter
        frames.append(pd.DataFrame({
            "setting": s.label, "layer": np.arange(c.n_layers),
            "kept_element_fraction": c.kept_elements / np.maximum(c.dense_elements, 1),
            "kept_v_row_fraction": c.kept_v_rows / np.maximum(c.v_rows_total, 1)}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
