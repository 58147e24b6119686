"""``toptheta demo``: the whole pipeline on the shipped trace, in a few minutes.

trace → calibrate (sequence 0) → replay dense / top-k / Top-θ (the other sequences) →
simulate on the default devices → a what-if study → the report. Every intermediate file
is kept under ``--out`` so each stage can be rerun or inspected on its own.
"""

from __future__ import annotations

import time
from pathlib import Path

from topθ_hw.outputs import add_overwrite, prepare_output
from topθ_hw.shipped import shipped

DEFAULT_TRACE = "traces/smollm2-135m.zarr"  # shipped with the package; --trace overrides
DEFAULT_STUDY = "sims/studies/demo.toml"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="calibrate, replay, simulate and report on the shipped trace (the README's main job)",
        description="Run the whole pipeline on the shipped SmolLM2 trace: calibrate Top-θ thresholds on the "
        "first sequence, replay dense, top-k and Top-θ on the others, simulate the decode steps on each "
        "device, run the demo what-if study, and write an HTML/Markdown/CSV report.")
    p.add_argument("--trace", default=None, help=f"trace store (default: the shipped {DEFAULT_TRACE})")
    p.add_argument("--out", default="out/demo", help="output directory (default out/demo)")
    p.add_argument("--k", type=int, default=64, help="target kept count k (default 64)")
    p.add_argument("--layer-k", default="0:512,1:512",
                   help="k per layer overrides, as in the paper: layers 0 and 1 at 512 (default)")
    p.add_argument("--devices", default="h100,tpu-v5e",
                   help="devices for the per-step simulation of the replayed trace (default h100,tpu-v5e)")
    p.add_argument("--study", default=None, help=f"what-if study file (default: the shipped {DEFAULT_STUDY})")
    p.add_argument("--layers", default=None, metavar="L,...",
                   help="calibrate, replay and simulate only these captured layers (default: all; a quick look)")
    add_overwrite(p)
    p.set_defaults(func=run_demo)


def _stage(name: str, started: float) -> None:
    print(f"[{time.perf_counter() - started:6.1f} s] {name}", flush=True)


def run_demo(args) -> int:
    from tqdm import tqdm

    from topθ_hw.engine.calibrate import calibrate
    from topθ_hw.engine.cli import int_list
    from topθ_hw.engine.methods import METHODS
    from topθ_hw.engine.run import replay_trace
    from topθ_hw.report import build_report
    from topθ_hw.sim import load_device, simulate_stats
    from topθ_hw.sim.stats import sim_results_meta
    from topθ_hw.store import open_trace
    from topθ_hw.study.run import run_study
    from topθ_hw.tables import write_table

    started, out = time.perf_counter(), Path(args.out)
    trace_path, study = args.trace or shipped(DEFAULT_TRACE), args.study or shipped(DEFAULT_STUDY)
    prepare_output(out, [trace_path, study], overwrite=args.overwrite, directory=True)
    out.mkdir(parents=True, exist_ok=True)
    trace = open_trace(trace_path)
    layers = int_list("--layers", args.layers)
    devices = [load_device(name) for name in args.devices.split(",")]  # fail early on a bad name
    calibration = trace.sequences[:1]
    _stage(f"calibrate Top-θ (k={args.k}, layers {args.layer_k}) on {calibration}", started)
    table = calibrate(trace, calibration, args.k, args.layer_k, "pre", 0.1, tqdm, layers=layers)
    thresholds = table.save(out / "thresholds.safetensors")

    methods = {"dense": METHODS["dense"](), "topk": METHODS["topk"](k=args.k, layer_k=args.layer_k),
               "toptheta": METHODS["toptheta"](str(thresholds), placement="pre")}
    evaluation = [s for s in trace.sequences if s not in calibration]
    results = [thresholds]
    for name, method in methods.items():
        _stage(f"replay {name} on {evaluation}", started)
        frame, meta = replay_trace(trace, method, evaluation, layers, progress=tqdm)
        stats = write_table(frame, out / f"stats-{name}.parquet", meta)
        results.append(stats)
        for device in devices:
            sim = simulate_stats(frame, meta, device, progress=True)
            sim_meta = sim_results_meta(device, meta, stats)
            results.append(write_table(sim, out / f"sim-{name}-{device.name}.parquet", sim_meta))
    _stage(f"study {study}", started)
    study_out = out / "study.parquet"
    run_study(study, study_out, workers=0)
    results.append(study_out)
    _stage("report", started)
    index = build_report(results, out / "report")
    _stage(f"done: open {index}  (Markdown: {index.parent / 'report.md'})", started)
    return 0
