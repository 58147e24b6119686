"""The same prompt generated greedily dense and under a live method, with the kept fractions of the run."""

from __future__ import annotations

import itertools
import textwrap
from dataclasses import dataclass

import torch

from .attention import KeptCounter
from .live import sparsified
from .settings import Setting


@dataclass
class Generation:
    label: str
    text: str
    token_ids: list[int]
    element_fraction: float | None   # prompt prefill
    v_row_fraction: float | None     # decode steps, union per KV group


@torch.no_grad()
def greedy(model, prompt_ids: torch.Tensor, max_new_tokens: int, stop: tuple[str, ...] = (),
           tokenizer=None) -> list[int]:
    """Greedy continuation; with ``stop`` (and the ``tokenizer``), it ends once any stop string appears."""
    extra = {"stop_strings": list(stop), "tokenizer": tokenizer} if stop else {}
    out = model.generate(prompt_ids, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                         pad_token_id=model.generation_config.eos_token_id, temperature=None, top_p=None,
                         top_k=None, **extra)
    return out[0, prompt_ids.shape[1]:].tolist()


def generate_pair(loaded, setting: Setting, prompt: str, max_new_tokens: int) -> tuple[Generation, Generation]:
    model, tok = loaded.model, loaded.tokenizer
    ids = tok(prompt, return_tensors="pt").input_ids.to(model.device)
    dense_ids = greedy(model, ids, max_new_tokens)
    counter = KeptCounter(model.config.num_hidden_layers, decode_from=ids.shape[1] + 1)
    with sparsified(model, setting.method, counter):
        sparse_ids = greedy(model, ids, max_new_tokens)
    dense = Generation("dense", tok.decode(dense_ids), dense_ids, None, None)
    sparse = Generation(setting.label, tok.decode(sparse_ids), sparse_ids,
                        counter.element_fraction(), counter.v_row_fraction())
    return dense, sparse


def side_by_side(a: Generation, b: Generation, width: int = 58) -> str:
    def column(g: Generation) -> list[str]:
        return [line for para in g.text.splitlines() or [""] for line in textwrap.wrap(para, width) or [""]]

    def fractions(g: Generation) -> str:
        if g.element_fraction is None:
            return "kept: all (dense)"
        return f"kept: {g.element_fraction:.1%} prefill elements, {g.v_row_fraction:.1%} decode V rows"

    same = next((i for i, (x, y) in enumerate(zip(a.token_ids, b.token_ids)) if x != y), None)
    lines = [f"{a.label:<{width}} | {b.label}", f"{fractions(a):<{width}} | {fractions(b)}", "-" * (2 * width + 3)]
    lines += [f"{x:<{width}} | {y}" for x, y in itertools.zip_longest(column(a), column(b), fillvalue="")]
    lines.append("identical tokens" if same is None and len(a.token_ids) == len(b.token_ids)
                 else f"first differing generated token: {same if same is not None else min(map(len, (a.token_ids, b.token_ids)))}")
    return "\n".join(lines)
