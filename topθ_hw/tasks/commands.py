"""The handlers behind ``toptheta task humaneval`` and ``toptheta task passkey``: every check first."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from topθ_hw.errors import UserError
from topθ_hw.quality.run import load_checked, parse_ks, read_texts, write_csv
from topθ_hw.quality.settings import Variant, build_settings, parse_variant


def task_settings(args):
    """(loaded model, settings with dense first) from --variants, --k and --thresholds."""
    variants = [parse_variant(v) for v in args.variants.split(",") if v.strip()]
    variants = [Variant("dense")] + [v for v in variants if v.family != "dense"]
    loaded, tables = load_checked(args)
    ks = parse_ks(args.k) if args.k else sorted({t.base_k for t in tables})
    if not ks and len(variants) > 1:
        raise UserError("--k: give k values (top-k) or --thresholds artifacts (Top-θ)")
    return loaded, build_settings(variants, ks, tables)


def parse_list(text: str, flag: str, kind=int) -> list:
    try:
        values = [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{flag}: {text!r} is not a comma-separated list of {kind.__name__} values") from None
    if not values:
        raise UserError(f"{flag}: empty list")
    return values


def write_results(frame, summary, out: Path, name: str, meta: dict) -> None:
    from topθ_hw.tables import write_table

    out.mkdir(parents=True, exist_ok=True)
    write_csv(frame, out / f"{name}.csv")
    write_csv(summary, out / f"{name}_summary.csv")
    write_table(summary, out / f"{name}_summary.parquet", {**meta, "kind": f"task-{name}"})


def run_meta(loaded, args) -> dict:
    return {"model_id": loaded.model_id, "model_file_sha256": loaded.sha256,
            "command": shlex.join(["toptheta"] + sys.argv[1:])}


def humaneval_command(args) -> int:
    from . import humaneval
    from .plot import plot_accuracy
    from .run import run_humaneval, summarize
    from .sandbox import Limits

    if args.max_new_tokens < 1 or args.first < 0:
        raise UserError("--max-new-tokens must be ≥ 1 and --first ≥ 0")
    if args.timeout <= 0 or args.cpu_seconds < 1 or args.memory_mb < 64:
        raise UserError("--timeout must be > 0, --cpu-seconds ≥ 1 and --memory-mb ≥ 64")
    ids = [t.strip() for t in args.problems.split(",") if t.strip()]
    problems = humaneval.load_problems(args.first, ids)
    loaded, settings = task_settings(args)
    limits = Limits(args.timeout, args.cpu_seconds, args.memory_mb << 20)
    frame = run_humaneval(loaded, settings, problems, args.max_new_tokens, limits)
    summary = summarize(frame, "passed")
    out = Path(args.out)
    write_results(frame, summary, out, "humaneval",
                  {**run_meta(loaded, args), "problems": [p["task_id"] for p in problems]})
    plot_accuracy(summary, out / "humaneval.png", "pass@1", f"{loaded.model_id}: HumanEval pass@1 (greedy), "
                  f"{len(problems)} problems")
    print(summary[["setting", "n", "accuracy", "accuracy_change", "kept_v_row_fraction",
                   "within_1pt_at_3x"]].to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    print(f"wrote {out}/humaneval.csv, humaneval_summary.csv, humaneval_summary.parquet, humaneval.png")
    return 0


def passkey_command(args) -> int:
    from .plot import plot_accuracy
    from .run import run_passkey, summarize

    lengths = parse_list(args.lengths, "--lengths")
    depths = parse_list(args.depths, "--depths", float)
    if any(not 0.0 <= d <= 1.0 for d in depths) or any(n < 64 for n in lengths) or args.max_new_tokens < 1:
        raise UserError("--depths must lie in 0..1, --lengths be ≥ 64 and --max-new-tokens ≥ 1")
    missing = [h for h in args.haystack if not Path(h).is_file()]
    if missing:
        raise UserError(f"--haystack {missing[0]}: no such file")
    haystack = read_texts(args.haystack)
    loaded, settings = task_settings(args)
    limit = getattr(loaded.model.config, "max_position_embeddings", None)
    if limit and max(lengths) + args.max_new_tokens > limit:
        raise UserError(f"--lengths: {max(lengths)} + {args.max_new_tokens} answer tokens exceed the "
                        f"model's {limit} positions")
    frame = run_passkey(loaded, settings, haystack, lengths, depths, args.seed, args.max_new_tokens)
    summary = summarize(frame, "retrieved", by=("length",))
    out = Path(args.out)
    write_results(frame, summary, out, "passkey",
                  {**run_meta(loaded, args), "haystack": [str(p) for p in args.haystack]})
    plot_accuracy(summary, out / "passkey.png", "passkeys retrieved", f"{loaded.model_id}: passkey retrieval, "
                  f"depths {args.depths}", by="length")
    print(summary[["setting", "length", "n", "accuracy", "accuracy_change", "kept_v_row_fraction",
                   "within_1pt_at_3x"]].to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    print(f"wrote {out}/passkey.csv, passkey_summary.csv, passkey_summary.parquet, passkey.png")
    return 0
