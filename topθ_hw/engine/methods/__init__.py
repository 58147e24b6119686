"""Sparse-attention methods, one module each, behind :class:`AttentionMethod`.

``METHODS`` maps the CLI name to the class; future methods (top-p, Quest, StreamingLLM, H2O)
add one module and one entry here.
"""

from topθ_hw.engine.methods.base import AttentionMethod, ScoreBlock, Selection, parse_layer_k
from topθ_hw.engine.methods.dense import Dense
from topθ_hw.engine.methods.topk import TopK
from topθ_hw.engine.methods.toptheta import TopTheta

METHODS = {"dense": Dense, "topk": TopK, "toptheta": TopTheta}

__all__ = ["AttentionMethod", "ScoreBlock", "Selection", "parse_layer_k", "Dense", "TopK", "TopTheta",
           "METHODS"]
