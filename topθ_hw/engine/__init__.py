"""Replay engine: dense, top-k and Top-θ attention on captured traces, with calibration and statistics.

Public entry points: :func:`replay_layer` (numpy arrays in, per-row/tile results out),
:func:`replay_trace` (a trace store → the tidy engine-stats frame), :func:`calibrate`
(trace → :class:`ThresholdTable`), :data:`METHODS` (name → method class).
"""

from topθ_hw.engine.methods import METHODS, AttentionMethod, Dense, ScoreBlock, Selection, TopK, TopTheta
from topθ_hw.engine.replay import LayerResult, replay_layer
from topθ_hw.engine.thresholds import ThresholdTable, load_thresholds

__all__ = ["METHODS", "AttentionMethod", "Dense", "TopK", "TopTheta", "ScoreBlock", "Selection",
           "LayerResult", "replay_layer", "ThresholdTable", "load_thresholds"]
