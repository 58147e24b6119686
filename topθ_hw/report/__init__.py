"""Reports: ``build_report(results_paths, out_dir)`` writes ``index.html`` (self-contained, plots
embedded as base64 PNG), ``report.md``, one PNG and one CSV per figure, and the input tables as CSV.

Every figure states where its numbers come from: measured (replay of a real trace, a calibration
artifact), simulated (``topθ_hw.sim`` on a device file) or datasheet (a device file's figure used
in a formula), naming the files. The work is in ``build.py``; it is imported on first use, so that
``toptheta --help`` does not load matplotlib.
"""

__all__ = ["build_report"]


def __getattr__(name: str):
    if name == "build_report":
        from topθ_hw.report.build import build_report
        return build_report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
