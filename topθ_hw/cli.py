"""The ``toptheta`` command.

Each stage owns its subcommands in ``topθ_hw/<stage>/cli.py``, which defines
``register(subparsers)``. Those modules import only the standard library at
module level (heavy imports go inside the handlers), so ``--help`` stays fast
and a replay-only install never needs torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from topθ_hw import __version__
from topθ_hw.errors import EXIT_USER, run_command

# One line per stage; order is the order `toptheta --help` lists them.
STAGE_CLIS = [
    "topθ_hw.store.cli",
    "topθ_hw.capture.cli",
    "topθ_hw.engine.cli",
    "topθ_hw.sim.cli",
    "topθ_hw.cost.cli",
    "topθ_hw.quality.cli",
    "topθ_hw.tasks.cli",
    "topθ_hw.compare.cli",
    "topθ_hw.study.cli",
    "topθ_hw.report.cli",
    "topθ_hw.demo",
]


class OneLineParser(argparse.ArgumentParser):
    """A usage error is one line naming the flag and the expected value, exit 2 (subcommands too)."""

    def error(self, message: str):
        self.exit(EXIT_USER, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="toptheta",
        description="Capture attention traces from Hugging Face models, replay dense/top-k/Top-θ "
        "attention on them, and cost the result on GPUs and accelerators.",
    )
    parser.add_argument("--version", action="version", version=f"toptheta-hw {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in STAGE_CLIS:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) or a usage error, already printed as one line (2)
        return int(exc.code or 0)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return run_command(args.command, args.func, args, argv)


if __name__ == "__main__":
    sys.exit(main())
