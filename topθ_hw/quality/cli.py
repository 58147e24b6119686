"""``toptheta evaluate`` and ``toptheta generate``: live Top-θ inside a Hugging Face model.

Only the standard library is imported here; torch and transformers load inside the handlers.
"""

from __future__ import annotations

import argparse

from topθ_hw.outputs import add_overwrite, prepare_output

EVALUATE_HELP = """Teacher-forced evaluation of live sparse attention against the dense model.
The held-out text is cut into windows of --window tokens; each window runs dense once and once per
setting (variant x k). Reports perplexity, next-token agreement and KL(dense || setting), with the
kept attention-element fraction (prefill) and kept V-row fraction per KV group (rows whose context is
at least --decode-from tokens, i.e. decode steps under teacher forcing) of the same run. Writes
DIR/quality.csv, DIR/quality.parquet (kind "quality"), DIR/quality_layers.parquet and DIR/quality.png."""

VARIANTS_HELP = """comma-separated variants: topk, dense, or pre|post followed by +sdc=exact|expthr|offline, +vmc,
+capk (e.g. pre,post+vmc,pre+sdc=exact+vmc,topk). Default: %(default)s"""


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m", help="short name, .gguf file or HF directory (default %(default)s)")
    p.add_argument("--thresholds", nargs="*", default=[], metavar="FILE_OR_DIR",
                   help="threshold artifacts from `toptheta calibrate` (a directory: its *.safetensors)")
    p.add_argument("--lookup", default="interp", choices=("interp", "nearest"),
                   help="θ for an uncalibrated length n (default %(default)s)")
    p.add_argument("--extrapolate", default="hold", choices=("hold", "logfit"),
                   help="θ past the longest calibrated length (default %(default)s)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--device", default="cpu", help="torch device for the model, e.g. cpu or cuda (default %(default)s)")


def evaluate_handler(args) -> int:
    from topθ_hw.quality.run import evaluate_command
    prepare_output(args.out, [*args.text, *args.thresholds, args.model], overwrite=args.overwrite, directory=True)
    return evaluate_command(args)


def generate_handler(args) -> int:
    from topθ_hw.quality.run import generate_command
    return generate_command(args)


def calibrate_live_handler(args) -> int:
    from topθ_hw.quality.run import calibrate_live_command
    prepare_output(args.out, [*args.text, args.model], overwrite=args.overwrite, directory=True)
    return calibrate_live_command(args)


def register(subparsers) -> None:
    c = subparsers.add_parser("calibrate-live", help="Top-θ thresholds for many k from one dense pass of the model",
                              description="Calibrate Top-θ inside the model on text windows: for every k and "
                              "placement at once, the (k+1)-th largest score of each row aggregated per "
                              "(layer, head, n) as mean + sigma*std, the definition of `toptheta calibrate` "
                              "without writing a trace. Writes DIR/k{K}-{placement}.safetensors (the engine's "
                              "artifact; no offline-SDC table).")
    c.add_argument("--model", default="smollm2-135m", help="short name, .gguf file or HF directory")
    c.add_argument("--text", nargs="+", required=True, metavar="FILE", help="calibration text file(s)")
    c.add_argument("--k", default="16,32,64,128,256,512", help="comma-separated k values (default %(default)s)")
    c.add_argument("--layer-k", default=None, metavar="L:K,...", help="per-layer k overrides, e.g. 0:512,1:512")
    c.add_argument("--placement", default="pre,post", help="pre, post or pre,post (default %(default)s)")
    c.add_argument("--sigma", type=float, default=0.1, help="θ = mean + sigma·std (default %(default)s)")
    c.add_argument("--window", type=int, default=1024, help="tokens per window (default %(default)s)")
    c.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    c.add_argument("--device", default="cpu", help="torch device for the model (default %(default)s)")
    c.add_argument("--out", required=True, metavar="DIR", help="output directory")
    add_overwrite(c)
    c.set_defaults(func=calibrate_live_handler)

    p = subparsers.add_parser("evaluate", help="perplexity / agreement / KL vs dense of live Top-θ and top-k",
                              description=EVALUATE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p)
    p.add_argument("--text", nargs="+", required=True, metavar="FILE", help="held-out UTF-8 text file(s)")
    p.add_argument("--k", default="", help="comma-separated k values (default: the k of each artifact given; "
                   "16,32,64,128,256,512 for top-k alone)")
    p.add_argument("--variants", default="pre,pre+sdc=expthr,pre+sdc=exact+vmc,post,post+vmc,pre+capk,topk",
                   help=VARIANTS_HELP)
    p.add_argument("--placement", choices=("pre", "post"), help="only variants of this placement (and top-k); "
                   "an artifact of the other placement is refused")
    p.add_argument("--window", type=int, default=1024, help="tokens per teacher-forced window (default %(default)s)")
    p.add_argument("--decode-from", type=int, help="rows with at least this context count as decode steps "
                   "(default: window/2)")
    p.add_argument("--max-tokens", type=int, default=0, help="evaluate only the first N tokens (0: all)")
    p.add_argument("--score-from", type=int, default=0, help="score only tokens predicted from at least this "
                   "many tokens of context (long-context quality; default %(default)s: all)")
    p.add_argument("--dense-context", type=int, default=0, metavar="C", help="prefill each window's first C "
                   "tokens densely once; only the rest runs (and is scored) under each setting, as decode rows "
                   "over the cached context (default %(default)s: the whole window runs under each setting)")
    p.add_argument("--ppl-tolerance", type=float, default=0.01, help="for the summary line (default %(default)s)")
    p.add_argument("--agreement-tolerance", type=float, default=0.01, help="for the summary line (default %(default)s)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    add_overwrite(p)
    p.set_defaults(func=evaluate_handler)

    g = subparsers.add_parser("generate", help="the same prompt generated dense and with live Top-θ, side by side",
                              description="Greedy generation of one prompt, dense and under one live variant, "
                              "printed side by side with the kept fractions of the sparse run.")
    add_model_arguments(g)
    g.add_argument("--prompt-file", required=True, help="UTF-8 text file holding the prompt")
    g.add_argument("--max-new-tokens", type=int, default=64)
    g.add_argument("--variant", default="pre", help="one variant (see `evaluate --variants`; default %(default)s)")
    g.add_argument("--k", type=int, help="k of the artifact to use when several are given")
    g.set_defaults(func=generate_handler)
