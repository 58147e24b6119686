"""``toptheta cost``: tokens/s, J/token and $/million tokens of a whole model on a device.

Only the standard library is imported here; the cost model loads inside the handler.
"""

from __future__ import annotations

import argparse
import json

METHODS = ["dense", "toptheta", "topk", "streaming", "h2o"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "cost", help="whole-model cost per token (time, energy, money) of one configuration on a device",
        description="Time one decode step (or the prefill of a batch of prompts) of a whole model on a device: "
                    "every layer's GEMMs (weights streamed from HBM), norms and elementwise work, the attention "
                    "kernel from the validated attention model, the LM head, kernel launches (eager or CUDA "
                    "graphs) and tensor-parallel all-reduces. Prints tokens/s, J/token, $/million tokens, the "
                    "Amdahl split (attention vs the rest), each output's ratio to dense, and the largest batch "
                    "that fits per method.")
    p.add_argument("--model", required=True, help="shipped model name (see sims/models/), a model .toml, "
                                                  "or a Hugging Face config.json (or its folder)")
    p.add_argument("--hardware", required=True, help="shipped device name or a path to a device .toml")
    p.add_argument("--context", type=int, help="keys in the KV cache of every sequence (decode)")
    p.add_argument("--batch", type=int, required=True, help="sequences in the batch")
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel devices of one node (default 1)")
    p.add_argument("--method", choices=METHODS, default=None,
                   help="attention method (default dense, or the method of --stats); streaming/h2o evict: "
                        "the cache holds --kept-v-fraction of the context")
    kept = p.add_mutually_exclusive_group()
    kept.add_argument("--kept-v-fraction", type=float, help="fraction of V rows read (toptheta/topk) or retained "
                                                            "(streaming/h2o)")
    kept.add_argument("--stats", help="engine-stats Parquet (toptheta replay): kept fraction from its real masks, "
                                      "stretched to --context")
    p.add_argument("--graphs", action="store_true", help="launches replayed from a CUDA graph (default: eager)")
    p.add_argument("--phase", choices=["decode", "prefill"], default="decode")
    p.add_argument("--prompt-tokens", type=int, help="prompt length of each sequence (--phase prefill)")
    p.add_argument("--price-per-hour", type=float, help="USD per device-hour (overrides the device file's)")
    p.add_argument("--exact-attention", action="store_true",
                   help="simulate attention at the full batch (default: batch-extrapolated above 16k work items)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=cost_handler)


def cost_handler(args: argparse.Namespace) -> int:
    from topθ_hw.cost.run import cost_of
    from topθ_hw.errors import UserError

    if args.phase == "prefill":
        if args.prompt_tokens is None:
            raise UserError("--phase prefill needs --prompt-tokens")
        context = args.prompt_tokens
    else:
        if args.context is None:
            raise UserError("--phase decode needs --context")
        context = args.context
    if args.price_per_hour is not None and args.price_per_hour <= 0:
        raise UserError(f"--price-per-hour {args.price_per_hour}: expected a positive price")
    r = cost_of(args.model, args.hardware, args.batch, context, tp=args.tp, method=args.method or "dense",
                kept_v_fraction=args.kept_v_fraction, stats=args.stats, graphs=args.graphs, phase=args.phase,
                price_per_hour=args.price_per_hour, exact_attention=args.exact_attention)
    print(json.dumps(r, sort_keys=True) if args.json else "\n".join(text_lines(r)))
    return 0


def _fmt(r: dict, key: str, scale: float, unit: str) -> str:
    return f"{r[key] * scale:.4g} {unit}" if key in r else "n/a"


def text_lines(r: dict) -> list[str]:
    what = "time to first token" if r["phase"] == "prefill" else "time per output token"
    key = "time_to_first_token_s" if r["phase"] == "prefill" else "time_per_output_token_s"
    v = r["vs_dense"]
    length = "prompt tokens" if r["phase"] == "prefill" else "context"
    lines = [f"{r['model']} on {r['device']} x{r['tp']}: {r['phase']}, batch {r['batch']}, {length} {r['context']}, "
             f"{r['method']} (kept V {r['kept_v_fraction']:.3g}, {r['kept_source']}), "
             f"{'CUDA graphs' if r['graphs'] else 'eager'}",
             f"  {what:24s} {r[key] * 1e3:.3f} ms   tokens/s {r['tokens_per_s']:.1f}",
             f"  attention {r['attention_time_s'] * 1e3:.3f} ms ({r['attention_share']:.0%} of the step), "
             f"rest {r['rest_time_s'] * 1e3:.3f} ms, {r['kernels']} kernels",
             f"  energy {_fmt(r, 'joules_per_token', 1, 'J/token')}   cost {_fmt(r, 'usd_per_million_tokens', 1, '$/M tokens')}",
             f"  vs dense: {v['speedup']:.3f}x end to end, {v['attention_speedup']:.3f}x attention",
             "  largest batch at this context: " + ", ".join(f"{m} {n}" for m, n in r["max_batch"].items())]
    return lines + [f"  note: {n}" for n in r["notes"]]
