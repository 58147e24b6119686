"""Record post-RoPE Q, K, V at transformers' attention-function seam.

Every model family whose attention calls ``ALL_ATTENTION_FUNCTIONS.get_interface(...)``
(LLaMA, Qwen2/3, Mistral, Gemma, Phi, SmolLM, ...) hands the attention function the
post-RoPE query ``[B, H_q, T, d]``, the cached key/value ``[B, H_kv, T_total, d]`` (GQA heads
not repeated), the module (``layer_idx``) and ``scaling``. :func:`capture` registers a wrapper
around the model's current implementation (sdpa or eager) under a fresh name, selects it with
``set_attn_implementation`` and restores everything on exit. The wrapper only copies tensors
out and then calls the original function with the original arguments, so outputs are unchanged.
"""

from __future__ import annotations

import itertools
import sys
from contextlib import contextmanager
from typing import Protocol

from topθ_hw.errors import UserError

_names = itertools.count()


class RowSink(Protocol):
    """Receives each layer's new rows; :class:`topθ_hw.store.SequenceWriter` is one."""

    def append(self, layer: int, q, k, v) -> None: ...


def base_attention(implementation: str):
    """The attention function the model would call for ``implementation`` (sdpa, eager, ...)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if implementation == "eager":  # eager lives in each model's own module
        return None
    return ALL_ATTENTION_FUNCTIONS[implementation]


def eager_of(module):
    fn = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if fn is None:
        raise UserError(f"{type(module).__name__}: no eager_attention_forward in {type(module).__module__}; "
                        "load the model with attn_implementation='sdpa' to capture it")
    return fn


class AttentionRecorder:
    """The wrapper function: copies each call's new rows to ``sink``, then runs the real attention."""

    def __init__(self, model, sink: RowSink, base):
        self.sink, self.base = sink, base
        config = model.config.get_text_config()
        self.n_layers = config.num_hidden_layers
        self.calls_per_layer = [0] * self.n_layers
        self.scalings: dict[int, float] = {}

    def __call__(self, module, query, key, value, attention_mask, *args, **kwargs):
        if query.shape[0] != 1:
            raise UserError(f"capture records batch size 1 only; got a batch of {query.shape[0]}")
        layer = getattr(module, "layer_idx", None)
        if layer is None:
            raise UserError(f"{type(module).__name__} has no layer_idx; cannot tell which layer is attending")
        t = query.shape[2]
        if key.shape[2] < t:
            raise UserError(f"layer {layer}: key holds {key.shape[2]} rows but the query has {t}; "
                            "the cache does not hand over the new rows at the end")
        # The new rows are the last t of the cache's key/value. Clone: the cache tensor may be
        # updated in place (static caches) and a view would keep the whole cache alive.
        self.sink.append(layer, query[0].detach().clone(), key[0, :, -t:].detach().clone(),
                         value[0, :, -t:].detach().clone())
        self.calls_per_layer[layer] += 1
        scaling = kwargs.get("scaling")  # None: the attention functions use 1/sqrt(head_dim)
        self.scalings[layer] = float(scaling if scaling is not None else query.shape[-1] ** -0.5)
        base = self.base or eager_of(module)
        return base(module, query, key, value, attention_mask, *args, **kwargs)

    def check_all_layers_seen(self, forwards: int) -> None:
        """After ``forwards`` passes every layer must have been recorded exactly that often."""
        if any(c != forwards for c in self.calls_per_layer):
            missed = [i for i, c in enumerate(self.calls_per_layer) if c != forwards]
            raise UserError(f"layers {missed} did not route attention through transformers' attention "
                            f"interface ({forwards} forward passes, calls per layer {self.calls_per_layer}); "
                            "this architecture cannot be captured")


def check_hookable(model) -> None:
    """Refuse models whose attention does not go through the attention interface."""
    model_type = getattr(model.config, "model_type", type(model).__name__)
    if not model._can_set_attn_implementation():
        raise UserError(f"model type {model_type!r} ({type(model).__name__}) does not call transformers' "
                        "AttentionInterface, so its attention cannot be captured at that seam")


@contextmanager
def capture(model, sink: RowSink):
    """Within the block, every forward pass of ``model`` appends its new Q/K/V rows to ``sink``.

    Yields the :class:`AttentionRecorder` (per-layer call counts and scalings). Registration is
    undone in ``finally``, so the model and transformers' registries are as before afterwards.
    """
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    from transformers.modeling_utils import AttentionInterface

    check_hookable(model)
    original = model.config._attn_implementation
    if original not in ("sdpa", "eager"):
        raise UserError(f"capture wraps the 'sdpa' or 'eager' attention; the model uses {original!r}")
    recorder = AttentionRecorder(model, sink, base_attention(original))
    name = f"toptheta_capture_{next(_names)}"
    AttentionInterface.register(name, recorder)
    # The same mask as the wrapped implementation (an unregistered name would get no mask at
    # all, silently dropping sliding windows).
    AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[original])
    try:
        model.set_attn_implementation(name)
        yield recorder
    finally:
        model.set_attn_implementation(original)
        AttentionInterface._global_mapping.pop(name, None)
        AttentionMaskInterface._global_mapping.pop(name, None)
