"""``toptheta calibrate | replay | headline``: thresholds, replay statistics and the paper's headline.

Only the standard library is imported here; the handlers import numpy/numba lazily.
"""

from __future__ import annotations

import argparse

from topθ_hw.outputs import add_overwrite, prepare_output

METHOD_NAMES = ("toptheta", "topk", "dense", "topp", "quest", "streaming", "h2o")


def names(text: str | None, flag: str = "") -> list[str] | None:
    """'a,b' -> ['a', 'b']; a repeated item is refused (it would count its data twice)."""
    if not text:
        return None
    items = [s.strip() for s in text.split(",") if s.strip()]
    repeated = sorted({s for s in items if items.count(s) > 1})
    if repeated:
        from topθ_hw.errors import UserError
        raise UserError(f"{flag or 'list'} {text!r} repeats {repeated}; expected each item once")
    return items


def int_list(flag: str, text: str | None) -> list[int] | None:
    """'16,32' -> [16, 32], each ≥ 1; anything else is one line naming the flag."""
    from topθ_hw.errors import UserError

    items = names(text, flag)
    try:
        values = [int(x) for x in items] if items else None
    except ValueError:
        raise UserError(f"{flag} {text!r}: expected comma-separated integers, e.g. 16,32,64") from None
    if values is not None and min(values) < (0 if flag == "--layers" else 1):
        raise UserError(f"{flag} {text!r}: expected integers ≥ {0 if flag == '--layers' else 1}")
    return values


def add_threads(p) -> None:
    p.add_argument("--threads", type=int, default=None,
                   help="numba threads for the kernels (default $TOPTHETA_THREADS or 1: on a shared machine "
                   "one thread is fastest; BLAS threads follow OPENBLAS_NUM_THREADS)")


def add_k_options(p, k_help: str) -> None:
    p.add_argument("--k", type=int, default=64, help=k_help)
    p.add_argument("--layer-k", default=None, metavar="L:K,...",
                   help="per-layer k overrides, e.g. 0:512,1:512 (the paper keeps layers 0 and 1 at 512)")


def register(subparsers) -> None:
    cal = subparsers.add_parser(
        "calibrate", help="calibrate Top-θ thresholds θ[layer, head, n] from trace sequences",
        description="Per (layer, query head, causal length n): the (k+1)-th largest valid score of each "
        "calibration row, aggregated as mean + sigma·std over rows with the same n; also the offline SDC "
        "table (mean dropped probability mass). Writes a safetensors artifact with JSON metadata.")
    cal.add_argument("--traces", required=True, help="trace store (e.g. traces/smollm2-135m.zarr)")
    cal.add_argument("--sequences", default=None,
                     help="comma-separated calibration sequences (default: the first one; replay then "
                     "evaluates on the others)")
    add_k_options(cal, "kept elements per row the thresholds aim at (rows with n ≤ k stay dense)")
    cal.add_argument("--placement", choices=("pre", "post"), default="pre",
                     help="threshold logits (pre-softmax) or probabilities (post-softmax)")
    cal.add_argument("--sigma", type=float, default=0.1, help="θ = mean + sigma·std (default 0.1, the paper's)")
    cal.add_argument("--out", required=True, help="output .safetensors file")
    add_overwrite(cal)
    add_threads(cal)
    cal.set_defaults(func=run_calibrate)

    rep = subparsers.add_parser(
        "replay", help="replay dense / top-k / Top-θ / top-p / Quest / StreamingLLM / H2O attention on a trace "
        "and write statistics",
        description="Replays a method on every (sequence, layer) of a trace and writes the tidy engine-stats "
        "table (kept elements, V rows per KV group, pages, per-row counts, error against dense) as Parquet.")
    rep.add_argument("--traces", required=True, help="trace store")
    rep.add_argument("--method", choices=METHOD_NAMES, required=True)
    rep.add_argument("--thresholds", help="threshold artifact from `toptheta calibrate` (Top-θ only)")
    add_k_options(rep, "top-k: kept per row; Quest, H2O: token budget per row; StreamingLLM: sinks + window "
                  "when --window is not given (Top-θ takes k per layer from the thresholds)")
    rep.add_argument("--p", type=float, default=0.9, help="top-p: softmax mass to keep, in (0, 1] (default 0.9)")
    rep.add_argument("--page-size", type=int, default=16, help="Quest: tokens per page, a power of two (default 16)")
    rep.add_argument("--sinks", type=int, default=4, help="StreamingLLM: attention-sink tokens kept (default 4)")
    rep.add_argument("--window", type=int, default=None,
                     help="StreamingLLM: recent tokens kept (default --k minus --sinks)")
    rep.add_argument("--recent", type=int, default=None,
                     help="H2O: most recent tokens never evicted (default half of --k)")
    rep.add_argument("--placement", choices=("pre", "post"), default=None,
                     help="Top-θ placement; must match the thresholds (default: theirs)")
    rep.add_argument("--capk", action="store_true", help="Top-θ: keep at most k survivors, the most recent")
    rep.add_argument("--sdc", choices=("none", "exact", "expthr", "offline"), default="none",
                     help="softmax-denominator compensation (pre-softmax only)")
    rep.add_argument("--lam", type=float, default=1.0, help="SDC weight λ on the missing denominator")
    rep.add_argument("--vmc", action="store_true", help="V-mean compensation of the lost probability mass")
    rep.add_argument("--lookup", choices=("nearest", "interp"), default="interp",
                     help="threshold for an uncalibrated n: nearest calibrated n or linear interpolation")
    rep.add_argument("--extrapolate", choices=("hold", "logfit"), default="hold",
                     help="past the longest calibrated n: hold its θ or fit θ against log n")
    rep.add_argument("--sequences", default=None,
                     help="comma-separated sequences (default: all not used for calibration)")
    rep.add_argument("--layers", default=None, help="comma-separated layers (default: all)")
    rep.add_argument("--decode-only", action="store_true",
                     help="skip prefill rows (most of the work) when only decode statistics are needed")
    rep.add_argument("--prefill-stride", type=int, default=1, metavar="S",
                     help="row sampling: replay only every S-th prefill tile of 64 query rows (prefill figures "
                     "become estimates, S times less work; decode statistics stay exact). Default 1: every row")
    rep.add_argument("--out", required=True, help="output Parquet file")
    add_overwrite(rep)
    add_threads(rep)
    rep.set_defaults(func=run_replay)

    head = subparsers.add_parser(
        "headline", help="the paper's headline on a trace: kept fractions of Top-θ vs top-k for k = 16..256",
        description="Calibrates Top-θ on one sequence, replays Top-θ and top-k on the others for each k, and "
        "writes overall, per-layer and per-length tables (CSV and Markdown) of prefill elements kept and "
        "decode V rows kept.")
    head.add_argument("--traces", required=True, help="trace store")
    head.add_argument("--calibrate-on", default=None, help="calibration sequence(s) (default: the first)")
    head.add_argument("--evaluate-on", default=None, help="evaluation sequences (default: all others)")
    head.add_argument("--ks", default="16,32,64,128,256", help="comma-separated k values")
    head.add_argument("--layer-k", default=None, help="per-layer k overrides applied to both methods")
    head.add_argument("--placement", choices=("pre", "post"), default="pre")
    head.add_argument("--sigma", type=float, default=0.1)
    head.add_argument("--out", required=True, help="output directory")
    add_overwrite(head)
    add_threads(head)
    head.set_defaults(func=run_headline)


def progress_bar():
    from tqdm import tqdm
    return tqdm


def run_calibrate(args: argparse.Namespace) -> int:
    from topθ_hw.engine.calibrate import calibrate
    from topθ_hw.store import open_trace

    prepare_output(args.out, [args.traces], overwrite=args.overwrite)
    trace = open_trace(args.traces)
    sequences = names(args.sequences, "--sequences") or trace.sequences[:1]
    table = calibrate(trace, sequences, args.k, args.layer_k, args.placement, args.sigma, progress_bar(),
                      args.threads)
    path = table.save(args.out)
    print(f"wrote {path}: {table.meta['rows_calibrated']} calibration rows from {sequences} "
          f"({args.placement}-softmax, k per layer {table.layer_k.tolist()}, sigma {args.sigma})")
    return 0


def build_method(args):
    from topθ_hw.engine.methods import METHODS
    from topθ_hw.errors import UserError

    if args.method == "toptheta":
        if not args.thresholds:
            raise UserError("--method toptheta needs --thresholds FILE (make one with `toptheta calibrate`)")
        return METHODS["toptheta"](args.thresholds, placement=args.placement, capk=args.capk, sdc=args.sdc,
                                   lam=args.lam, vmc=args.vmc, lookup=args.lookup, extrapolate=args.extrapolate)
    if args.method == "topk":
        return METHODS["topk"](k=args.k, layer_k=args.layer_k)
    if args.method in ("topp", "quest", "streaming", "h2o"):
        from topθ_hw.compare.methods import engine_method
        return engine_method(args.method, args.k, p=args.p, page_size=args.page_size, sinks=args.sinks,
                             window=args.window, recent=args.recent, layer_budget=args.layer_k)
    return METHODS["dense"]()


def run_replay(args: argparse.Namespace) -> int:
    from topθ_hw.engine.run import replay_trace
    from topθ_hw.store import open_trace
    from topθ_hw.tables import write_table

    prepare_output(args.out, [args.traces, args.thresholds], overwrite=args.overwrite)
    trace = open_trace(args.traces)
    method = build_method(args)
    layers = int_list("--layers", args.layers)
    bad = [x for x in layers or [] if x not in trace.meta.captured_layers]
    if bad:
        from topθ_hw.errors import UserError
        raise UserError(f"--layers: {bad} not captured in {trace.path} (it holds {trace.meta.captured_layers})")
    frame, meta = replay_trace(trace, method, names(args.sequences, "--sequences"), layers, progress_bar(),
                               args.decode_only, args.threads, args.prefill_stride)
    write_table(frame, args.out, meta)
    heads = frame[frame.level == "head"]
    groups = frame[(frame.level == "group") & (frame.phase == "decode")]
    print(f"wrote {args.out}: {len(frame)} rows; sequences {meta['sequences']}; kept "
          f"{heads.kept_elements.sum() / max(heads.dense_elements.sum(), 1):.3f} of attention elements, "
          f"{groups.kept_v_rows.sum() / max(groups.v_rows_total.sum(), 1):.3f} of decode V rows")
    if meta.get("extrapolated_rows"):
        print(f"note: {meta['extrapolated_rows']} (head, row) pairs lay past the longest calibrated length "
              f"and used --extrapolate {args.extrapolate}")
    return 0


def run_headline(args: argparse.Namespace) -> int:
    from topθ_hw.engine.headline import headline
    from topθ_hw.store import open_trace

    prepare_output(args.out, [args.traces], overwrite=args.overwrite, directory=True)
    trace = open_trace(args.traces)
    ks = int_list("--ks", args.ks)
    paths = headline(trace, ks, args.out, names(args.calibrate_on, "--calibrate-on"),
                     names(args.evaluate_on, "--evaluate-on"), args.layer_k,
                     args.placement, args.sigma, progress=progress_bar(), threads=args.threads)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
