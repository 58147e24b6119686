"""Install a live method as a Hugging Face model's attention function, for the span of a ``with``.

Uses the same seam as capture: ``AttentionInterface.register(name, fn)`` plus
``model.set_attn_implementation(name)``; both are undone in ``finally``. Nothing is patched at
import. transformers builds no attention mask for a custom implementation, so rows are causal over
the whole KV cache: one sequence (or equal-length, unpadded windows) per batch.
"""

from __future__ import annotations

import itertools
from contextlib import contextmanager

from topθ_hw.errors import UserError

from .attention import KeptCounter, attend
from .methods.base import LiveMethod

_names = itertools.count()


def attention_function(method: LiveMethod, counter: KeptCounter | None):
    def live_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        if attention_mask is not None:
            raise UserError("live sparse attention got an attention mask (padding?); "
                            "evaluate one unpadded sequence at a time")
        if kwargs.get("sliding_window"):
            raise UserError("live sparse attention does not model sliding-window layers yet")
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        return attend(method, query, key, value, scale, module.layer_idx, counter), None
    return live_attention


@contextmanager
def sparsified(model, method: LiveMethod, counter: KeptCounter | None = None):
    """``with sparsified(model, TopTheta(table)) as counter:`` runs every attention call under ``method``."""
    from transformers import AttentionInterface

    name = f"toptheta_live_{next(_names)}"
    previous = model.config._attn_implementation
    AttentionInterface.register(name, attention_function(method, counter))
    try:
        model.set_attn_implementation(name)
        yield counter
    finally:
        model.set_attn_implementation(previous)
        AttentionInterface._global_mapping.pop(name, None)  # transformers has no public unregister
