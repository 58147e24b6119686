"""Capture post-RoPE Q, K, V from Hugging Face causal LMs into a trace store.

``capture_texts(texts, out, model="smollm2-135m", ...)`` is what ``toptheta capture`` runs;
``capture(model, sink)`` is the attention-interface hook on its own; ``load_model`` loads a
known short name, a GGUF file or a local Hugging Face directory offline. torch and
transformers are imported only when these run.
"""

from topθ_hw.capture.hook import capture
from topθ_hw.capture.models import KNOWN_MODELS, load_model
from topθ_hw.capture.run import capture_texts

__all__ = ["capture_texts", "capture", "load_model", "KNOWN_MODELS"]
