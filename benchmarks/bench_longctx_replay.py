"""Replay of a long trace, all layers, and the row-sampling mode's error (not a timed test).

Goal (issue 11): the engine replays a 32k trace of Qwen2.5-Coder-0.5B, all layers, k = 64, within
~15 min; where exact prefill is too slow, ``--prefill-stride S`` (every S-th 64-row query tile)
estimates the prefill within a stated error while decode statistics stay exact.

    python benchmarks/bench_longctx_replay.py --traces LONG.zarr --calibration-traces CAL.zarr \
        [--k 64] [--stride 4] [--check-rows 4096] [--out results.json]

1. calibrates Top-θ (pre-softmax, σ = 0.1, k on every layer) on the calibration trace;
2. replays every layer of the long trace with ``--stride`` and times it (wall and CPU);
3. on the first ``--check-rows`` rows of the long trace (a 4k prompt), replays the prefill in
   full and sampled, and reports the relative error of the sampled kept-element estimate and
   of the per-layer estimates (:func:`topθ_hw.engine.longctx.prefill_fraction`).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def sampling_check(trace, method, seq, rows: int, strides: str) -> dict:
    """Sampled against full prefill replay on the first ``rows`` rows, per stride."""
    from topθ_hw.engine.longctx import PrefixTrace, prefill_fraction
    from topθ_hw.engine.run import replay_trace

    short = PrefixTrace(trace, rows)
    full, fwall, _ = timed(lambda: replay_trace(short, method, [seq], decode_only=False)[0])
    fh = full[(full.level == "head") & (full.phase == "prefill")]
    exact = prefill_fraction(fh, rows, 1)
    check = {"rows": rows, "exact": exact, "full_wall_s": fwall, "strides": {}}
    for s in (int(x) for x in strides.split(",")):
        sampled, swall, _ = timed(lambda: replay_trace(short, method, [seq], prefill_stride=s)[0])
        sh = sampled[(sampled.level == "head") & (sampled.phase == "prefill")]
        per_layer = [abs(prefill_fraction(sh[sh.layer == la], rows, s)
                         / prefill_fraction(fh[fh.layer == la], rows, 1) - 1) for la in sh.layer.unique()]
        check["strides"][s] = {"estimate": prefill_fraction(sh, rows, s),
                               "rel_error": prefill_fraction(sh, rows, s) / exact - 1,
                               "layer_rel_error_max": float(np.max(per_layer)), "wall_s": swall}
    return check


def main(argv=None) -> dict:
    from topθ_hw.engine.calibrate import calibrate
    from topθ_hw.engine.longctx import prefill_fraction
    from topθ_hw.engine.methods import TopTheta
    from topθ_hw.engine.run import replay_trace
    from topθ_hw.store import open_trace

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--traces", required=True)
    p.add_argument("--calibration-traces", required=True)
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--stride", type=int, default=4)
    p.add_argument("--check-rows", type=int, default=4096, help="prefix for the sampled-vs-full check (0: skip it)")
    p.add_argument("--check-strides", default="4,8,16")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    trace, cal = open_trace(a.traces), open_trace(a.calibration_traces)
    table, cal_wall, _ = timed(lambda: calibrate(cal, cal.sequences[:1], k=a.k))
    method = TopTheta(table)
    seq = trace.sequences[0]
    frame, wall, cpu = timed(lambda: replay_trace(trace, method, [seq], prefill_stride=a.stride)[0])
    heads = frame[(frame.level == "head") & (frame.phase == "prefill")]
    groups = frame[(frame.level == "group") & (frame.phase == "decode")]
    n = trace.sequence(seq).prompt_len // (64 * a.stride) * 64 * a.stride
    result = {"trace": a.traces, "rows": trace.sequence(seq).n_tokens, "layers": len(trace.meta.captured_layers),
              "k": a.k, "stride": a.stride, "calibration_wall_s": cal_wall, "replay_wall_s": wall,
              "replay_cpu_s": cpu, "prefill_elements_kept_estimate": prefill_fraction(heads, n, a.stride),
              "decode_v_rows_kept": groups.kept_v_rows.sum() / groups.v_rows_total.sum(),
              "peak_rss_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if a.check_rows:
        result["check"] = sampling_check(trace, method, seq, a.check_rows, a.check_strides)
    text = json.dumps(result, indent=2, default=float)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    return result


if __name__ == "__main__":
    sys.exit(main() and 0)
