"""Live (torch) semantics of each attention method, one module each, mirroring ``topθ_hw.engine``."""

from .base import LiveMethod, Rows
from .dense import Dense
from .topk import TopK
from .toptheta import TopTheta

__all__ = ["Dense", "LiveMethod", "Rows", "TopK", "TopTheta"]
