"""``toptheta task humaneval|passkey``: task accuracy of dense vs live Top-θ (and top-k) in the model.

Only the standard library is imported here; torch and transformers load inside the handlers.
"""

from __future__ import annotations

import argparse

from topθ_hw.quality.cli import VARIANTS_HELP, add_model_arguments

HUMANEVAL_HELP = """HumanEval pass@1 (greedy): each setting completes each problem's prompt (cut at the Codex stop
sequences); the program prompt + completion + the problem's tests runs in a child process with a
wall-clock timeout and RLIMIT_CPU / RLIMIT_AS / RLIMIT_FSIZE limits. Reports pass@1 beside dense and
the kept V-row fraction of the decode steps. Writes DIR/humaneval.csv (per problem),
DIR/humaneval_summary.csv, DIR/humaneval_summary.parquet (kind "task-humaneval") and DIR/humaneval.png."""

PASSKEY_HELP = """Passkey retrieval (RULER-style single needle): a 5-digit key line hidden at each depth of a real
long text cut to each length; the context is prefilled densely once, then the question and the answer
(greedy, --max-new-tokens) run under each setting over the whole cached context. Reports the fraction
retrieved per setting and length, and the kept V-row fraction of those rows. Writes DIR/passkey.csv,
DIR/passkey_summary.csv, DIR/passkey_summary.parquet (kind "task-passkey") and DIR/passkey.png."""


def handler(args) -> int:
    from topθ_hw.tasks.commands import humaneval_command, passkey_command
    return {"humaneval": humaneval_command, "passkey": passkey_command}[args.task](args)


def add_common(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--variants", default="dense,pre+sdc=exact+vmc", help=VARIANTS_HELP.replace(
        "Default", "dense is always run first. Default"))
    p.add_argument("--k", default="", help="comma-separated k values (default: the k of each artifact given)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.set_defaults(func=handler)


def register(subparsers) -> None:
    t = subparsers.add_parser("task", help="task accuracy (HumanEval pass@1, passkey retrieval) dense vs live Top-θ",
                              description="Task accuracy of live sparse attention against the dense model.")
    tasks = t.add_subparsers(dest="task", metavar="TASK", required=True)
    h = tasks.add_parser("humaneval", help="HumanEval pass@1, greedy, code run in a resource-limited subprocess",
                         description=HUMANEVAL_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(h)
    h.add_argument("--first", type=int, default=0, help="only the first N problems in file order (0: all 164)")
    h.add_argument("--problems", default="", help="comma-separated task ids instead, e.g. HumanEval/0,HumanEval/2")
    h.add_argument("--max-new-tokens", type=int, default=384, help="per completion (default %(default)s)")
    h.add_argument("--timeout", type=float, default=20.0, help="wall-clock seconds per test program (default %(default)s)")
    h.add_argument("--cpu-seconds", type=int, default=10, help="RLIMIT_CPU per test program (default %(default)s)")
    h.add_argument("--memory-mb", type=int, default=1024, help="RLIMIT_AS per test program (default %(default)s)")
    p = tasks.add_parser("passkey", help="passkey retrieval in real long text at several lengths and depths",
                         description=PASSKEY_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p)
    p.add_argument("--haystack", nargs="+", required=True, metavar="FILE", help="real long UTF-8 text file(s)")
    p.add_argument("--lengths", default="4096,8192", help="prompt tokens, comma-separated (default %(default)s)")
    p.add_argument("--depths", default="0.1,0.5,0.9", help="needle depths in 0..1 (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the keys (default %(default)s)")
    p.add_argument("--max-new-tokens", type=int, default=8, help="answer tokens (default %(default)s)")
