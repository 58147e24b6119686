"""The trace store: captured post-RoPE Q, K, V per layer and head, on disk as zarr v3.

Format documented in ``traces/README.md``. Write with :class:`TraceWriter`, read with
:func:`open_trace`.
"""

from topθ_hw.store.meta import SequenceInfo, TraceMeta
from topθ_hw.store.reader import LayerQKV, SequenceReader, Trace, open_trace
from topθ_hw.store.writer import SequenceWriter, TraceWriter

__all__ = ["TraceMeta", "SequenceInfo", "TraceWriter", "SequenceWriter", "open_trace", "Trace",
           "SequenceReader", "LayerQKV"]
