"""Replay a method over a trace store → the tidy engine-stats frame and its metadata."""

from __future__ import annotations

import pandas as pd

from topθ_hw.engine.methods import AttentionMethod, TopTheta
from topθ_hw.engine.replay import replay_layer
from topθ_hw.engine.stats import layer_frame
from topθ_hw.errors import UserError


def evaluation_sequences(trace, method: AttentionMethod, requested: list[str] | None) -> list[str]:
    """The requested sequences, or by default every sequence not used to calibrate the thresholds."""
    if requested:
        missing = [s for s in requested if s not in trace.sequences]
        if missing:
            raise UserError(f"{trace.path}: --sequences names {missing}, not in {trace.sequences}")
        return list(requested)
    calibrated = set()
    if isinstance(method, TopTheta):
        calibrated = set(method.calibration_sequences)
    chosen = [s for s in trace.sequences if s not in calibrated]
    if not trace.sequences:
        raise UserError(f"{trace.path}: holds no complete sequence (incomplete: {trace.partial_sequences}); "
                        "re-run the capture")
    if not chosen:
        raise UserError(f"{trace.path}: every sequence {trace.sequences} was used for calibration; "
                        "pass --sequences explicitly to replay on calibration data")
    return chosen


def stats_meta(trace, method: AttentionMethod, sequences: list[str]) -> dict:
    m = trace.meta
    meta = {"kind": "engine-stats", "model_id": m.model_id, "model_file_sha256": m.model_file_sha256,
            "n_layers": m.n_layers, "n_q_heads": m.n_q_heads, "n_kv_heads": m.n_kv_heads,
            "head_dim": m.head_dim, "dtype": m.dtype, "method": method.name, "params": method.params(),
            "reads_keys": method.reads_keys, "needs_full_row": method.needs_full_row,
            "trace": str(trace.path), "sequences": sequences,
            "sources": {s: trace.sequence(s).source for s in sequences}}
    if isinstance(method, TopTheta):
        meta["calibration_overlap"] = sorted(set(sequences) & set(method.calibration_sequences))
    return meta


def replay_trace(trace, method: AttentionMethod, sequences: list[str] | None = None, layers=None,
                 progress=None, decode_only: bool = False, threads: int | None = None,
                 prefill_stride: int = 1) -> tuple[pd.DataFrame, dict]:
    """Replay ``method`` on every (sequence, layer); ``progress`` is tqdm-like or None.

    ``decode_only`` skips prefill rows (most of the work) when only decode statistics are needed;
    ``prefill_stride = S`` replays every S-th prefill tile only (sampled prefill estimates, exact decode).
    """
    if prefill_stride < 1:
        raise UserError(f"--prefill-stride is {prefill_stride}, expected at least 1")
    method.check(trace.meta, str(trace.path))
    sequences = evaluation_sequences(trace, method, sequences)
    layers = trace.meta.captured_layers if layers is None else list(layers)
    group = trace.meta.group_size
    frames = []
    bar = progress(total=len(sequences) * len(layers), desc=f"replay {method.name}", unit="layer") \
        if progress else None
    for name in sequences:
        seq = trace.sequence(name)
        state = method.begin_sequence(seq)
        for layer in layers:
            res = replay_layer(seq.layer(layer), method, layer, seq.prompt_len, state, decode_only=decode_only,
                               threads=threads, prefill_stride=prefill_stride)
            frames.append(layer_frame(res, group, name))
            bar and bar.update()
    bar and bar.close()
    meta = stats_meta(trace, method, sequences)
    meta["phases"] = ["decode"] if decode_only else ["prefill", "decode"]
    meta["prefill_stride"] = prefill_stride  # > 1: prefill figures are estimates over every S-th tile
    meta.update(method.report())
    return pd.concat(frames, ignore_index=True), meta
