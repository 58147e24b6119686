"""The trace store: captured post-RoPE Q, K, V per layer and head, on disk as zarr v3.

Format documented in ``traces/README.md``. Write with :class:`TraceWriter`, read with
:func:`open_trace`.
"""


__all__ = ["TraceMeta", "SequenceInfo", "TraceWriter", "SequenceWriter", "open_trace", "Trace",
           "SequenceReader", "LayerQKV"]

from topθ_hw.lazy import lazy_attributes  # noqa: E402

# Imported on first use (PEP 562), so that `toptheta --help` does not load numpy, zarr or SimPy.
_LAZY = {
    'SequenceInfo': 'topθ_hw.store.meta',
    'TraceMeta': 'topθ_hw.store.meta',
    'LayerQKV': 'topθ_hw.store.reader',
    'SequenceReader': 'topθ_hw.store.reader',
    'Trace': 'topθ_hw.store.reader',
    'open_trace': 'topθ_hw.store.reader',
    'SequenceWriter': 'topθ_hw.store.writer',
    'TraceWriter': 'topθ_hw.store.writer',
}
__getattr__ = lazy_attributes(__name__, _LAZY)
