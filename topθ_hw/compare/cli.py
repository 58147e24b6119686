"""``toptheta compare``: dense, top-k, Top-θ (± compensation), top-p, Quest, StreamingLLM and H2O on the
same traces, text and devices — quality against K, V and total bytes and simulated decode time.

Only the standard library is imported here; the handler loads the engine, simulator and model.
"""

from __future__ import annotations

import argparse

from topθ_hw.outputs import add_overwrite, prepare_output
from topθ_hw.shipped import shipped

DESCRIPTION = """Compare sparse-attention methods in hardware units at matched budgets.
Hardware side: each setting is replayed on every --traces store (decode rows; H2O from row 0; Top-θ
calibrated on --calibrate-on, pre-softmax, at the same k) and every --step-every-th decode step is
simulated on each --hardware device from its real masks (K, V, scores and other bytes, time).
Quality side: each setting runs live inside the model on --text (teacher-forced windows) against the
dense model: perplexity, next-token agreement, KL(dense || setting); Top-θ calibrated live on
--calibration-text. A budget k means k keys per row: exactly for top-k, at most for Quest (k tokens of
pages), StreamingLLM (sinks + window = k) and H2O (a k-key cache), on average over calibration rows for
Top-θ (thresholds calibrated at k); top-p has no budget and sweeps --p.
Writes DIR/alternatives.{parquet,csv,md,png} and DIR/command.txt."""


def csv_list(cast):
    def parse(text: str):
        try:
            return [cast(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of {cast.__name__}") from None
    return parse


def register(subparsers) -> None:
    p = subparsers.add_parser("compare", help="top-p, Quest, StreamingLLM, H2O vs dense / top-k / Top-θ: "
                              "quality against bytes and simulated time", description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--traces", nargs="+", default=[str(shipped("traces/smollm2-135m.zarr"))],
                   help="trace stores (default %(default)s)")
    p.add_argument("--methods", type=csv_list(str),
                   default="dense,topk,toptheta,toptheta+comp,topp,quest,streaming,h2o",
                   help="families to compare (default: all eight)")
    p.add_argument("--k", type=csv_list(int), default="32,64,128", help="budgets k (default %(default)s)")
    p.add_argument("--p", type=csv_list(float), default="0.7,0.8,0.9,0.95", help="top-p masses (default %(default)s)")
    p.add_argument("--page-size", type=int, default=16, help="Quest page size, a power of two (default 16)")
    p.add_argument("--sinks", type=int, default=4, help="StreamingLLM sink tokens (default 4)")
    p.add_argument("--recent", type=int, default=None, help="H2O recent window (default k/2)")
    p.add_argument("--compensation", default="sdc=exact+vmc",
                   help="Top-θ's compensated variant (toptheta+comp): sdc=exact|expthr and/or vmc, "
                   "'+'-joined (default %(default)s)")
    p.add_argument("--hardware", type=csv_list(str), default="h100,tpu-v5e",
                   help="devices to simulate on (default %(default)s)")
    p.add_argument("--layers", type=csv_list(int), default=None,
                   help="replay only these layers (default: all captured)")
    p.add_argument("--calibrate-on", type=csv_list(str), default=None,
                   help="trace sequences Top-θ is calibrated on (default: the first); the others are evaluated")
    p.add_argument("--step-every", type=int, default=8, help="simulate every N-th decode step (default 8)")
    p.add_argument("--text", nargs="*", default=[str(shipped(f"traces/texts/{t}.txt")) for t in ("shakespeare-hamlet", "kjv-genesis")],
                   help="held-out text for the live quality evaluation (default: %(default)s); none: skip quality")
    p.add_argument("--calibration-text", nargs="*",
                   default=[str(shipped(f"traces/texts/{t}.txt")) for t in ("austen-emma", "austen-pride-and-prejudice")],
                   help="text Top-θ is calibrated on live (default: %(default)s)")
    p.add_argument("--model", default="smollm2-135m", help="model for the quality side (default %(default)s)")
    p.add_argument("--window", type=int, default=1024, help="teacher-forced window in tokens (default 1024)")
    p.add_argument("--decode-from", type=int, default=None, help="rows with this context count as decode steps "
                   "(default window/2)")
    p.add_argument("--max-tokens", type=int, default=0, help="evaluate only the first N tokens (0: all)")
    p.add_argument("--sigma", type=float, default=0.1, help="Top-θ calibration sigma (default 0.1)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    add_overwrite(p)
    p.set_defaults(func=compare_handler)


def compare_handler(args) -> int:
    from topθ_hw.compare.run import compare_command
    prepare_output(args.out, [*args.traces, *args.text, *args.calibration_text, args.model],
                   overwrite=args.overwrite, directory=True)
    return compare_command(args)
