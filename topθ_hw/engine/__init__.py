"""Replay engine: dense, top-k and Top-θ attention on captured traces, with calibration and statistics.

Public entry points: :func:`replay_layer` (numpy arrays in, per-row/tile results out),
:func:`replay_trace` (a trace store → the tidy engine-stats frame), :func:`calibrate`
(trace → :class:`ThresholdTable`), :data:`METHODS` (name → method class).
"""


__all__ = ["METHODS", "AttentionMethod", "Dense", "TopK", "TopTheta", "ScoreBlock", "Selection",
           "LayerResult", "replay_layer", "ThresholdTable", "load_thresholds"]

from topθ_hw.lazy import lazy_attributes  # noqa: E402

# Imported on first use (PEP 562), so that `toptheta --help` does not load numpy, zarr or SimPy.
_LAZY = {
    'METHODS': 'topθ_hw.engine.methods',
    'AttentionMethod': 'topθ_hw.engine.methods',
    'Dense': 'topθ_hw.engine.methods',
    'ScoreBlock': 'topθ_hw.engine.methods',
    'Selection': 'topθ_hw.engine.methods',
    'TopK': 'topθ_hw.engine.methods',
    'TopTheta': 'topθ_hw.engine.methods',
    'LayerResult': 'topθ_hw.engine.replay',
    'replay_layer': 'topθ_hw.engine.replay',
    'ThresholdTable': 'topθ_hw.engine.thresholds',
    'load_thresholds': 'topθ_hw.engine.thresholds',
}
__getattr__ = lazy_attributes(__name__, _LAZY)
