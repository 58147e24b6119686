"""Passkey retrieval in real long text (RULER's single needle, arXiv 2404.06654): a key line hidden at a
stated depth of a haystack, the question at the end, the answer generated greedily.

The haystack is cut to the token budget first, then the needle goes in at the line break at or after
``depth`` of its characters (so a Python-source haystack stays one statement per line); the needle is a
comment line, ``# The pass key is 48213. Remember it. 48213 is the pass key.``. Success: the key's digits
appear in the first generated tokens. The context (haystack + needle) is one prefix shared by every
method; ``topθ_hw.tasks.run.answer_after_context`` prefills it densely once and runs the question and
the answer under each method.
"""

from __future__ import annotations

from dataclasses import dataclass

from topθ_hw.errors import UserError

NEEDLE = "# The pass key is {key}. Remember it. {key} is the pass key.\n"
QUESTION = "\n# What is the pass key? The pass key is"


@dataclass(frozen=True)
class PasskeyPrompt:
    context: str            # haystack with the needle
    key: str
    length: int             # asked: prompt tokens
    depth: float            # asked: fraction of the haystack before the needle
    needle_token: int       # measured: index of the needle's first token in the tokenised prompt
    haystack_tokens: int    # tokens of haystack around the needle
    tokens: int             # whole prompt

    @property
    def text(self) -> str:
        return self.context + QUESTION

    @property
    def measured_depth(self) -> float:
        return self.needle_token / self.haystack_tokens


def build(tokenizer, haystack: str, length: int, depth: float, key: str) -> PasskeyPrompt:
    """A prompt of about ``length`` tokens with ``key`` at ``depth`` (0 = start, 1 = end) of the haystack."""
    if not 0.0 <= depth <= 1.0:
        raise UserError(f"--depths: {depth} is outside 0..1")
    needle = NEEDLE.format(key=key)
    n_question = len(tokenizer(QUESTION, add_special_tokens=False).input_ids)
    extra = len(tokenizer(needle, add_special_tokens=False).input_ids) + n_question
    ids = tokenizer(haystack).input_ids
    if len(ids) < length - extra:
        raise UserError(f"--haystack holds {len(ids)} tokens, fewer than the {length} asked for")
    body = tokenizer.decode(ids[:length - extra])
    cut = body.find("\n", int(depth * len(body)))
    cut = len(body) if cut < 0 else cut + 1
    before = body[:cut]
    context = before + needle + body[cut:]
    text = context + QUESTION
    n_before = len(tokenizer(before).input_ids)
    n_total = len(tokenizer(text).input_ids)
    n_needle = len(tokenizer(before + needle).input_ids) - n_before
    return PasskeyPrompt(context, key, length, depth, n_before, n_total - n_needle - n_question, n_total)


def retrieved(key: str, answer: str) -> bool:
    return key in answer
