"""The handlers behind ``toptheta evaluate`` and ``toptheta generate``: every check before any work."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from topθ_hw.errors import UserError

from .settings import DEFAULT_KS, build_settings, parse_variant
from .thresholds import check_identity, check_model, load_live_thresholds


def artifact_paths(items: list[str]) -> list[Path]:
    paths = []
    for item in items:
        p = Path(item)
        found = sorted(p.glob("*.safetensors")) if p.is_dir() else [p]
        if p.is_dir() and not found:
            raise UserError(f"--thresholds {p}: directory holds no *.safetensors artifact")
        paths += found
    return paths


def parse_ks(text: str) -> list[int]:
    try:
        ks = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--k: {text!r} is not a comma-separated list of integers") from None
    if any(k < 1 for k in ks):
        raise UserError(f"--k: every k must be ≥ 1, got {text!r}")
    return ks


def read_texts(paths: list[str]) -> str:
    for p in paths:
        if not Path(p).is_file():
            raise UserError(f"--text {p}: no such file")
    try:
        return "\n\n".join(Path(p).read_text(encoding="utf-8") for p in paths)
    except UnicodeDecodeError as exc:
        raise UserError(f"--text: a file is not UTF-8 text ({exc})") from None


def load_checked(args, placement: str | None = None):
    """Artifacts and model, every cross-check done before the model loads or any evaluation starts."""
    from topθ_hw.capture.models import load_model, resolve, weights_sha256

    tables = [load_live_thresholds(p, args.lookup, args.extrapolate) for p in artifact_paths(args.thresholds)]
    sha256 = weights_sha256(resolve(args.model))
    for t in tables:
        check_identity(t, args.model, sha256, placement)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    loaded = load_model(args.model, dtype="float32")
    loaded.model.to(args.device)
    for t in tables:
        check_model(t, loaded, placement)
    return loaded, tables


def evaluate_command(args) -> int:
    from topθ_hw.tables import write_table

    from .evaluate import evaluate
    from .plot import plot_tradeoff

    variants = [parse_variant(v) for v in args.variants.split(",") if v.strip()]
    if args.placement:
        variants = [v for v in variants if v.placement in (None, args.placement)]
    if args.window < 2:
        raise UserError(f"--window must be ≥ 2, got {args.window}")
    text = read_texts(args.text)
    loaded, tables = load_checked(args, args.placement)
    ks = parse_ks(args.k) if args.k else sorted({t.base_k for t in tables}) or list(DEFAULT_KS)
    settings = build_settings(variants, ks, tables)
    ids = loaded.tokenizer(text, return_tensors="pt").input_ids[0]
    ids = ids[:args.max_tokens] if args.max_tokens else ids
    for t in {id(t): t for t in (s.thresholds for s in settings) if t}.values():
        if t.uncalibrated_layers:
            print(f"note: {t.source} holds no thresholds for layers {t.uncalibrated_layers} (not in its "
                  "calibration trace); they run dense", file=sys.stderr)
        if min(args.window, len(ids)) > t.max_calibrated_n:
            print(f"note: {t.source} is calibrated up to n = {t.max_calibrated_n}; longer rows (up to "
                  f"{min(args.window, len(ids))}) use lookup {t.lookup!r} with extrapolation {t.extrapolate!r}",
                  file=sys.stderr)
    if not 0 <= args.score_from < args.window:
        raise UserError(f"--score-from must lie in 0..{args.window - 1} (--window), got {args.score_from}")
    if not 0 <= args.dense_context < args.window - 1:
        raise UserError(f"--dense-context must lie in 0..{args.window - 2} (--window - 2), got {args.dense_context}")
    summary, layers = evaluate(loaded.model, ids, settings, args.window, args.decode_from,
                               score_from=args.score_from, dense_context=args.dense_context)
    out = Path(args.out)
    meta = {"kind": "quality", "model_id": loaded.model_id, "model_file_sha256": loaded.sha256,
            "texts": [str(p) for p in args.text], "tokens": int(len(ids)), "window": args.window,
            "score_from": args.score_from, "dense_context": args.dense_context,
            "thresholds": [t.source for t in tables], "command": shlex.join(["toptheta"] + sys.argv[1:])}
    out.mkdir(parents=True, exist_ok=True)
    write_table(summary, out / "quality.parquet", meta)
    write_table(layers, out / "quality_layers.parquet", {**meta, "kind": "quality-layers"})
    write_csv(summary, out / "quality.csv")
    plot_tradeoff(summary, out / "quality.png", f"{loaded.model_id}: {', '.join(Path(p).name for p in args.text)} "
                  f"({len(ids)} tokens, windows of {args.window})")
    print(format_summary(summary, args.ppl_tolerance, args.agreement_tolerance))
    print(f"wrote {out}/quality.csv, quality.parquet, quality_layers.parquet, quality.png")
    return 0


def write_csv(df, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    df.to_csv(tmp, index=False, float_format="%.6g")
    tmp.replace(path)


def format_summary(summary, ppl_tol: float, agree_tol: float) -> str:
    from .claim import sparsest_within

    cols = ["setting", "ppl", "ppl_increase", "disagreement", "kl_mean", "kept_element_fraction",
            "kept_v_row_fraction"]
    lines = [summary[cols].to_string(index=False, float_format=lambda x: f"{x:.4g}")]
    for fraction in ("kept_v_row_fraction", "kept_element_fraction"):
        best = sparsest_within(summary, ppl_tol, agree_tol, fraction)
        lines.append(f"sparsest by {fraction} within +{ppl_tol:.1%} perplexity and {agree_tol:.1%} disagreement: "
                     + ("none" if best is None else
                        f"{best['setting']} ({best[fraction]:.3f} kept, {1 / best[fraction]:.2f}x reduction)"))
    return "\n".join(lines)


def generate_command(args) -> int:
    from .generate import generate_pair, side_by_side

    variant = parse_variant(args.variant)
    if not Path(args.prompt_file).is_file():
        raise UserError(f"--prompt-file {args.prompt_file}: no such file")
    prompt = Path(args.prompt_file).read_text(encoding="utf-8")
    if args.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be ≥ 1, got {args.max_new_tokens}")
    loaded, tables = load_checked(args, variant.placement)
    ks = [args.k] if args.k else sorted({t.base_k for t in tables})
    if not ks:
        raise UserError("generate: give --thresholds (Top-θ) or --k (top-k)")
    setting = build_settings([variant], ks[:1], tables)[0]
    dense, sparse = generate_pair(loaded, setting, prompt, args.max_new_tokens)
    print(side_by_side(dense, sparse))
    if setting.thresholds and setting.thresholds.extrapolated:
        print(f"note: rows up to n = {setting.thresholds.longest_used_n} exceed the calibrated n = "
              f"{setting.thresholds.max_calibrated_n}; extrapolation {setting.thresholds.extrapolate!r} was used")
    return 0


def calibrate_live_command(args) -> int:
    import math

    from topθ_hw.capture.models import load_model

    from .calibrate import calibrate_live

    ks = parse_ks(args.k)
    placements = tuple(p.strip() for p in args.placement.split(",") if p.strip())
    if not placements or set(placements) - {"pre", "post"}:
        raise UserError(f"--placement: {args.placement!r}, expected pre, post or pre,post")
    if not math.isfinite(args.sigma):
        raise UserError(f"--sigma must be finite, got {args.sigma}")
    if args.window < 2:
        raise UserError(f"--window must be ≥ 2, got {args.window}")
    texts = {Path(p).name: read_texts([p]) for p in args.text}
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    loaded = load_model(args.model, dtype="float32")
    loaded.model.to(args.device)
    tables = calibrate_live(loaded, texts, ks, args.layer_k, placements, args.sigma, args.window)
    out = Path(args.out)
    for (k, placement), table in tables.items():
        path = table.save(out / f"k{k}-{placement}.safetensors")
        print(f"wrote {path}: {table.meta['rows_calibrated']} calibration rows, lengths "
              f"{table.lengths.min()}..{table.lengths.max()}")
    return 0
