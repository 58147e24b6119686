"""Capture post-RoPE Q, K, V from Hugging Face causal LMs into a trace store.

``capture_texts(texts, out, model="smollm2-135m", ...)`` is what ``toptheta capture`` runs;
``capture(model, sink)`` is the attention-interface hook on its own; ``load_model`` loads a
known short name, a GGUF file or a local Hugging Face directory offline. torch and
transformers are imported only when these run.
"""


__all__ = ["capture_texts", "capture", "load_model", "KNOWN_MODELS"]

from topθ_hw.lazy import lazy_attributes  # noqa: E402

# Imported on first use (PEP 562), so that `toptheta --help` does not load numpy, zarr or SimPy.
_LAZY = {
    'capture': 'topθ_hw.capture.hook',
    'KNOWN_MODELS': 'topθ_hw.capture.models',
    'load_model': 'topθ_hw.capture.models',
    'capture_texts': 'topθ_hw.capture.run',
}
__getattr__ = lazy_attributes(__name__, _LAZY)
