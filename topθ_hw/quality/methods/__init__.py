"""Live (torch) semantics of each attention method, one module each, mirroring ``topθ_hw.engine``."""

from .base import LiveMethod, Rows
from .dense import Dense
from .h2o import H2O
from .quest import Quest
from .streaming import StreamingLLM
from .topk import TopK
from .topp import TopP
from .toptheta import TopTheta

__all__ = ["Dense", "H2O", "LiveMethod", "Quest", "Rows", "StreamingLLM", "TopK", "TopP", "TopTheta"]
