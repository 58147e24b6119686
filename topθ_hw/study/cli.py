"""``toptheta study STUDY.toml``: sweep devices × methods × k × context × … on Dask."""

from __future__ import annotations

from pathlib import Path

from topθ_hw.outputs import add_overwrite


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "study", help="run a what-if study (sweep devices, methods, k, context, bandwidth...) on Dask",
        description="Run the study declared in a TOML file (see sims/studies/): the cartesian product of "
        "its axes is the point set; each point is one simulated decode-attention call whose kept V-row "
        "or page fraction comes from replaying the trace (once per trace, method and k). Finished points "
        "are saved as they complete, so an interrupted study resumes where it stopped when re-run with "
        "the same --out.")
    p.add_argument("study", help="study file, e.g. sims/studies/toptheta_vs_topk.toml")
    p.add_argument("--out", help="results Parquet (default: results/<study name>.parquet)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="address of a running Dask scheduler (default: start a local cluster)")
    p.add_argument("--workers", type=int, default=2,
                   help="workers of the local cluster (default 2); 0 runs in this process without Dask")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--yes", action="store_true",
                   help="run a study larger than the size that needs confirming (printed when it is refused)")
    add_overwrite(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from topθ_hw.errors import UserError
    from topθ_hw.study.run import run_study

    if args.workers < 0:
        raise UserError(f"--workers is {args.workers}, expected 0 (in-process) or more")
    out = Path(args.out) if args.out else Path("results") / f"{Path(args.study).stem}.parquet"
    results = run_study(args.study, out, scheduler=args.scheduler, workers=args.workers,
                        progress=not args.no_progress, overwrite=args.overwrite, yes=args.yes)
    print(f"wrote {out} ({len(results)} points)")
    return 0
