"""Task sweeps: every setting (dense first) on every HumanEval problem or passkey prompt, with the
decode V-row fraction of the very generations that were scored.

A generation's decode steps are the calls after its prompt's prefill: a fresh :class:`KeptCounter`
per prompt counts rows with n > prompt length, summed over prompts per setting. Dense runs through
the model's own SDPA attention (its V-row fraction is 1 by definition).

HumanEval runs every method over the whole prompt and the generation. Passkey prompts are 4k-16k
tokens: their context (haystack + needle) is prefilled once densely and its KV cache copied for each
method, which then runs the question rows and the answer's decode steps (the rows the decode V-row
claim is about) with attention over the whole cached context. Prefill sparsity of the context is not
exercised there.
"""

from __future__ import annotations

import copy
import random
from contextlib import nullcontext
from dataclasses import dataclass

import pandas as pd
import torch

from topθ_hw.quality.attention import KeptCounter
from topθ_hw.quality.generate import greedy
from topθ_hw.quality.live import sparsified
from topθ_hw.quality.settings import Setting

from . import humaneval, passkey
from .sandbox import Limits, run_program


@dataclass
class Generated:
    text: str
    new_tokens: int
    kept_v_rows: float
    v_rows: float


def generate(loaded, setting: Setting, prompt: str, max_new_tokens: int, stop: tuple[str, ...] = ()) -> Generated:
    model, tok = loaded.model, loaded.tokenizer
    ids = tok(prompt, return_tensors="pt").input_ids.to(model.device)
    counter = KeptCounter(model.config.num_hidden_layers, decode_from=ids.shape[1] + 1)
    dense = setting.variant.family == "dense"
    with nullcontext() if dense else sparsified(model, setting.method, counter):
        out = greedy(model, ids, max_new_tokens, stop, tok)
    steps = float(counter.v_rows_total.sum())
    return Generated(tok.decode(out, skip_special_tokens=True), len(out),
                     steps if dense else float(counter.kept_v_rows.sum()), steps)


def run_humaneval(loaded, settings: list[Setting], problems: list[dict], max_new_tokens: int,
                  limits: Limits = Limits(), progress: bool = True) -> pd.DataFrame:
    """One row per (setting, problem): the completion, its sandbox outcome and its decode V rows."""
    from tqdm.auto import tqdm

    rows = []
    for setting in tqdm(settings, desc="humaneval settings", disable=not progress):
        for problem in tqdm(problems, desc=setting.label, leave=False, disable=not progress):
            g = generate(loaded, setting, problem["prompt"], max_new_tokens, humaneval.STOP)
            completion = humaneval.truncate(g.text)
            outcome = run_program(humaneval.program(problem, completion), limits)
            rows.append({**setting_fields(setting), "task_id": problem["task_id"], "passed": outcome.passed,
                         "status": outcome.status, "new_tokens": g.new_tokens, "kept_v_rows": g.kept_v_rows,
                         "v_rows": g.v_rows, "completion": completion})
    return pd.DataFrame(rows)


@torch.no_grad()
def answer_after_context(loaded, settings: list[Setting], context: str, question: str,
                         max_new_tokens: int) -> list[Generated]:
    """Greedy answers to ``question`` after a dense prefill of ``context``, one per setting."""
    model, tok = loaded.model, loaded.tokenizer
    ctx = tok(context, return_tensors="pt").input_ids.to(model.device)
    q = tok(question, return_tensors="pt", add_special_tokens=False).input_ids.to(model.device)
    cache = model(ctx, use_cache=True, logits_to_keep=1).past_key_values
    answers = []
    for setting in settings:
        counter = KeptCounter(model.config.num_hidden_layers, decode_from=ctx.shape[1] + 1)
        dense = setting.variant.family == "dense"
        with nullcontext() if dense else sparsified(model, setting.method, counter):
            out = greedy_after(model, q, copy.deepcopy(cache), max_new_tokens)
        steps = float(counter.v_rows_total.sum())
        answers.append(Generated(tok.decode(out, skip_special_tokens=True), len(out),
                                 steps if dense else float(counter.kept_v_rows.sum()), steps))
    return answers


def greedy_after(model, x: torch.Tensor, cache, max_new_tokens: int) -> list[int]:
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    out = []
    for _ in range(max_new_tokens):
        logits = model(x, past_key_values=cache, use_cache=True, logits_to_keep=1).logits[0, -1]
        out.append(int(logits.argmax()))
        if out[-1] in eos:
            break
        x = torch.tensor([[out[-1]]], device=x.device)
    return out


def run_passkey(loaded, settings: list[Setting], haystack: str, lengths: list[int], depths: list[float],
                seed: int = 0, max_new_tokens: int = 8, progress: bool = True) -> pd.DataFrame:
    """One row per (setting, length, depth): a 5-digit key (seeded per prompt) hidden in ``haystack``."""
    from tqdm.auto import tqdm

    rng = random.Random(seed)
    prompts = [passkey.build(loaded.tokenizer, haystack, n, d, str(rng.randrange(10_000, 100_000)))
               for n in lengths for d in depths]
    rows = []
    for prompt in tqdm(prompts, desc="passkey prompts", disable=not progress):
        answers = answer_after_context(loaded, settings, prompt.context, passkey.QUESTION, max_new_tokens)
        for setting, g in zip(settings, answers):
            rows.append({**setting_fields(setting), "length": prompt.length, "tokens": prompt.tokens,
                         "depth": prompt.depth, "measured_depth": prompt.measured_depth, "key": prompt.key,
                         "retrieved": passkey.retrieved(prompt.key, g.text), "answer": g.text,
                         "kept_v_rows": g.kept_v_rows, "v_rows": g.v_rows})
    return pd.DataFrame(rows)


def setting_fields(setting: Setting) -> dict:
    return {"setting": setting.label, "family": setting.variant.family, "variant": setting.variant.name,
            "k": -1 if setting.k is None else setting.k}


def summarize(frame: pd.DataFrame, success: str, by: tuple[str, ...] = ()) -> pd.DataFrame:
    """Accuracy per setting (and ``by`` groups) beside dense, with the decode V-row fraction and the
    claim's test: accuracy within 1 point of dense at ≥ 3× fewer decode V rows."""
    keys = ["setting", "family", "variant", "k", *by]
    s = frame.groupby(keys, sort=False).agg(n=(success, "size"), correct=(success, "sum"),
                                            kept_v_rows=("kept_v_rows", "sum"), v_rows=("v_rows", "sum"))
    s = s.reset_index()
    s["accuracy"] = s["correct"] / s["n"]
    s["kept_v_row_fraction"] = (s["kept_v_rows"] / s["v_rows"].clip(lower=1.0)).where(s["family"] != "dense", 1.0)
    s["v_row_reduction"] = 1.0 / s["kept_v_row_fraction"].clip(lower=1e-12)
    dense = s[s["family"] == "dense"].set_index(list(by))["accuracy"] if by else \
        s.loc[s["family"] == "dense", "accuracy"]
    s["dense_accuracy"] = (s.set_index(list(by)).index.map(dense).to_numpy() if by
                           else float(dense.iloc[0]) if len(dense) else float("nan"))
    s["accuracy_change"] = s["accuracy"] - s["dense_accuracy"]
    s["within_1pt_at_3x"] = (s["accuracy_change"] >= -0.01) & (s["v_row_reduction"] >= 3.0)
    return s
