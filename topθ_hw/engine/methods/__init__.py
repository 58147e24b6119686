"""Sparse-attention methods, one module each, behind :class:`AttentionMethod`.

``METHODS`` maps the CLI name to the class; a new method adds one module and one entry here
(top-p, Quest, StreamingLLM and H2O did).
"""

from topθ_hw.engine.methods.base import AttentionMethod, ScoreBlock, Selection, parse_layer_k
from topθ_hw.engine.methods.dense import Dense
from topθ_hw.engine.methods.h2o import H2O
from topθ_hw.engine.methods.quest import Quest
from topθ_hw.engine.methods.streaming import StreamingLLM
from topθ_hw.engine.methods.topk import TopK
from topθ_hw.engine.methods.topp import TopP
from topθ_hw.engine.methods.toptheta import TopTheta

METHODS = {"dense": Dense, "topk": TopK, "toptheta": TopTheta,
           "topp": TopP, "quest": Quest, "streaming": StreamingLLM, "h2o": H2O}

__all__ = ["AttentionMethod", "ScoreBlock", "Selection", "parse_layer_k", "Dense", "TopK", "TopTheta",
           "TopP", "Quest", "StreamingLLM", "H2O", "METHODS"]
