"""How long one live evaluation setting takes: Top-θ (pre, k=64) on ~20k tokens with SmolLM2, CPU.

The goal (issue 6): evaluating one setting on 20k tokens with the smallest model in < 5 minutes on
this machine. Prints, measured side by side in one run: the dense reference passes, the sparse
passes, the whole evaluation, and the ratios to the dense pass and to the 5-minute goal.

    .venv/bin/python benchmarks/bench_quality.py [--tokens 20000] [--window 1024] [--k 64]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXTS = sorted((ROOT / "traces" / "texts").glob("*.txt"))
GOAL_S = 300.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=20_000)
    p.add_argument("--window", type=int, default=1024)
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--variant", default="pre+sdc=expthr+vmc")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args()

    import torch
    if args.threads:
        torch.set_num_threads(args.threads)

    from topθ_hw.capture.models import load_model
    from topθ_hw.quality.calibrate import calibrate_live
    from topθ_hw.quality.evaluate import evaluate
    from topθ_hw.quality.settings import build_settings, parse_variant
    from topθ_hw.quality.thresholds import LiveThresholds

    loaded = load_model("smollm2-135m", dtype="float32")
    text = "\n\n".join(t.read_text() for t in TEXTS)
    ids = loaded.tokenizer(text, return_tensors="pt").input_ids[0]
    ids = ids.repeat(args.tokens // len(ids) + 1)[:args.tokens]   # the committed texts hold ~12k tokens
    start = time.perf_counter()
    tables = calibrate_live(loaded, {"austen-emma": (ROOT / "traces/texts/austen-emma.txt").read_text()},
                            [args.k], "0:512,1:512", ("pre",), 0.1, args.window, progress=False)
    calibrate_s = time.perf_counter() - start
    settings = build_settings([parse_variant(args.variant)], [args.k], [LiveThresholds(tables[(args.k, "pre")])])
    start = time.perf_counter()
    summary, _ = evaluate(loaded.model, ids, settings, window=args.window)
    total_s = time.perf_counter() - start
    row = summary.iloc[0]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {len(ids)} tokens in windows of "
          f"{args.window}; setting {row['setting']}")
    print(f"live calibration (Emma, {args.k}, pre): {calibrate_s:8.1f} s")
    print(f"dense reference passes:               {row['dense_seconds']:8.1f} s")
    print(f"sparse passes ({row['setting']}):  {row['seconds']:8.1f} s  = {row['seconds'] / row['dense_seconds']:.2f}x dense")
    print(f"whole evaluation (both + metrics):    {total_s:8.1f} s  = {total_s / GOAL_S:.2f} of the 5-minute goal "
          f"({'met' if total_s < GOAL_S else 'NOT met'})")
    print(f"result: ppl {row['ppl']:.3f} vs dense {row['ppl_dense']:.3f} ({row['ppl_increase']:+.2%}), "
          f"disagreement {row['disagreement']:.2%}, kept elements {row['kept_element_fraction']:.3f}, "
          f"kept V rows {row['kept_v_row_fraction']:.3f}")


if __name__ == "__main__":
    main()
