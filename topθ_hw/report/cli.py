"""``toptheta report RESULTS... --out DIR``: HTML + Markdown + CSV report."""

from __future__ import annotations

from topθ_hw.outputs import add_overwrite, prepare_output


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report", help="write an HTML/Markdown/CSV report from study results, statistics and thresholds",
        description="Write a report directory: index.html (self-contained, plots embedded), report.md, "
        "one PNG and CSV per figure. Inputs may mix study results (toptheta study), engine statistics "
        "(toptheta replay), simulation results (toptheta simulate), quality tables (toptheta evaluate) "
        "and threshold artifacts (toptheta calibrate, .safetensors). Every figure names its source: "
        "measured, simulated or datasheet.")
    p.add_argument("results", nargs="+", help="input files (.parquet tables, .safetensors thresholds)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--title", default="Top-θ attention: hardware cost report", help="report title")
    add_overwrite(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from topθ_hw.report import build_report

    prepare_output(args.out, args.results, overwrite=args.overwrite, directory=True)
    index = build_report(args.results, args.out, title=args.title)
    print(f"report: {index}")
    return 0
