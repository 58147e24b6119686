"""Teacher-forced evaluation of live settings against the dense model on held-out text.

The text is cut into non-overlapping windows of ``window`` tokens; each window runs once dense
(the model's own SDPA attention) and once per setting, and every setting is scored on the same
next tokens: perplexity, agreement of its arg-max next token with dense, KL(dense ‖ setting), and
the kept-element and V-row fractions of that very run (see :class:`KeptCounter`; rows with causal
length ≥ ``decode_from`` count as decode steps). ``score_from`` restricts the scored tokens to those
predicted with at least that much context (long-context quality: score only the far half of a window).

With ``dense_context`` = c > 0, each window's first c tokens are prefilled once by the dense model
and that KV cache is copied for every setting, which runs only the window's remaining rows (with
attention over the whole cache); only tokens those rows predict are scored. This is the decode regime
of a long context (the rows the decode V-row claim is about) at a fraction of a full sparse pass's cost;
prefill sparsity of the context is then not exercised.

Logits are never held for a whole window (at 8k tokens and a 152k vocabulary that would be 5 GB):
each pass keeps the final hidden states, and the output head runs on ``LOGIT_ROWS`` rows at a time,
the dense rows recomputed from the dense pass's hidden states beside each setting's.
"""

from __future__ import annotations

import copy
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


LOGIT_ROWS = 512


@torch.no_grad()
def final_hidden(model, x: torch.Tensor, context: int = 0, cache=None) -> torch.Tensor:
    """[T - context, hidden] final (normed) hidden states of rows context.. of a [1, T] window, after a
    copy of ``cache`` (the first ``context`` tokens' KV cache); the output head is not applied."""
    if not context:
        return model.get_decoder()(x, use_cache=False).last_hidden_state[0]
    return model.get_decoder()(x[:, context:], past_key_values=copy.deepcopy(cache),
                               use_cache=True).last_hidden_state[0]


@torch.no_grad()
def dense_prefill(model, x: torch.Tensor, context: int):
    """The dense model's KV cache of the window's first ``context`` tokens (None when context = 0)."""
    return model.get_decoder()(x[:, :context], use_cache=True).past_key_values if context else None


@torch.no_grad()
def chunked_logprobs(model, hidden: torch.Tensor, start: int):
    """(row offset, float32 [rows, vocab] log-probabilities) for hidden rows start .. T-2, in chunks."""
    head = model.get_output_embeddings()
    for r0 in range(start, hidden.shape[0] - 1, LOGIT_ROWS):
        r1 = min(hidden.shape[0] - 1, r0 + LOGIT_ROWS)
        yield r0, F.log_softmax(head(hidden[r0:r1]).float(), dim=-1)


def evaluate(model, ids: torch.Tensor, settings: list[Setting], window: int = 1024, decode_from: int | None = None,
             progress: bool = True, score_from: int = 0, dense_context: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Summary (one row per setting) and per-layer kept fractions of a teacher-forced run over ``ids``;
    tokens predicted from fewer than ``score_from`` tokens of context are not scored; the first
    ``dense_context`` tokens of each window run dense, once (see the module doc)."""
    from tqdm.auto import tqdm

    decode_from = (window // 2 if decode_from is None else decode_from) if not dense_context else dense_context + 1
    n_layers = model.config.num_hidden_layers
    totals = {s.label: Totals(KeptCounter(n_layers, decode_from)) for s in settings}
    windows = [x for x in text_windows(ids, window) if x.shape[1] > max(score_from, dense_context + 1, 1)]
    dense_nll, dense_seconds, n_tokens = 0.0, 0.0, 0
    first = max(score_from - 1 - dense_context, 0)       # hidden row r predicts token dense_context + r + 1
    with tqdm(total=len(windows) * (1 + len(settings)), desc="evaluate", unit="pass", disable=not progress) as bar:
        for x in windows:
            x = x.to(model.device)
            start = time.perf_counter()
            cache = dense_prefill(model, x, dense_context)
            ref_hidden = final_hidden(model, x, dense_context, cache)
            for r0, ref in chunked_logprobs(model, ref_hidden, first):
                dense_nll -= float(ref.gather(1, targets(x, dense_context + r0, len(ref))).sum())
                n_tokens += len(ref)
            dense_seconds += time.perf_counter() - start
            bar.update()
            for s in settings:
                bar.set_postfix_str(s.label)
                score_setting(model, x, s, totals[s.label], ref_hidden, first, dense_context, cache)
                bar.update()
    summary = pd.DataFrame([summary_row(s, totals[s.label], n_tokens, dense_nll) for s in settings])
    summary["dense_seconds"] = dense_seconds
    summary["window"], summary["decode_from"], summary["score_from"] = window, decode_from, score_from
    summary["dense_context"] = dense_context
    return summary, per_layer_frame(settings, totals)


def targets(x: torch.Tensor, position: int, rows: int) -> torch.Tensor:
    """[rows, 1] next tokens of the rows at ``position``.. of window ``x``."""
    return x[0, position + 1:position + 1 + rows, None]


def score_setting(model, x, setting: Setting, tot: Totals, ref_hidden: torch.Tensor, first: int,
                  context: int = 0, cache=None) -> None:
    start = time.perf_counter()
    with sparsified(model, setting.method, tot.counter):
        hidden = final_hidden(model, x, context, cache)
    for (r0, out), (_, ref) in zip(chunked_logprobs(model, hidden, first), chunked_logprobs(model, ref_hidden, first)):
        tot.nll -= float(out.gather(1, targets(x, context + r0, len(out))).sum())
        tot.agree += int((out.argmax(-1) == ref.argmax(-1)).sum())
        tot.kl += float(F.kl_div(out, ref, log_target=True, reduction="sum"))  # KL(dense ‖ setting)
    tot.seconds += time.perf_counter() - start


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
