"""``toptheta capture``: run a causal LM on text files and store every layer's Q, K, V."""

from __future__ import annotations

import argparse

from topθ_hw.outputs import prepare_output

DEFAULT_MODEL = "smollm2-135m"
SHORT_NAMES = "smollm2-135m (default), gemma3-270m, qwen2.5-coder-1.5b, qwen2.5-coder-0.5b"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "capture", help="capture post-RoPE Q/K/V of a Hugging Face causal LM into a trace store",
        description="Run a causal language model on each text file (the first --max-prompt-tokens tokens as "
        "the prompt, then --max-new-tokens greedy decode steps) and store every attention layer's post-RoPE "
        "queries, keys and values, bit-exact in the compute dtype, one sequence per text. Works offline.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL, metavar="NAME_OR_PATH",
                   help=f"short name ({SHORT_NAMES}), a .gguf file, or a local Hugging Face model directory")
    p.add_argument("--text", nargs="+", required=True, metavar="FILE",
                   help="UTF-8 text files, one captured sequence each (e.g. traces/texts/*.txt)")
    p.add_argument("--out", required=True, metavar="PATH", help="trace store to create, e.g. traces/X.zarr")
    p.add_argument("--max-prompt-tokens", type=int, default=512, metavar="N",
                   help="prompt = the first N tokens of each text")
    p.add_argument("--max-new-tokens", type=int, default=64, metavar="N",
                   help="greedy decode steps after the prompt (one stored row each)")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"],
                   help="compute dtype of the model; the trace stores values in it, bit-exact")
    p.add_argument("--truncate", action="store_true",
                   help="cut a prompt that would exceed the model's context (with a warning) instead of failing")
    p.add_argument("--layers", metavar="SPEC",
                   help="store only these layers, e.g. '0,1,2-28:2,29' (ranges inclusive, ':step'); default all. "
                        "The model still runs every layer; a subset keeps shipped traces small")
    p.add_argument("--chunk-tokens", type=int, default=None, metavar="N",
                   help="run the prompt in passes of N tokens through the KV cache, storing each pass's rows as "
                        "they come (memory bounded by one chunk; e.g. 1024 for 8k-32k prompts); default one pass")
    p.add_argument("--decode-every", type=int, default=1, metavar="N",
                   help="keep the queries of every Nth decode step only (K/V of all steps are kept: later steps "
                        "attend to them); replay skips the others")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_capture)


def run_capture(args) -> int:
    import warnings

    from topθ_hw.capture.run import capture_texts

    prepare_output(args.out, [*args.text, args.model], overwrite=args.overwrite, directory=True)

    with warnings.catch_warnings():
        warnings.simplefilter("always")  # --truncate's warning must show even when repeated
        out = capture_texts(args.text, args.out, model=args.model, max_prompt_tokens=args.max_prompt_tokens,
                            max_new_tokens=args.max_new_tokens, dtype=args.dtype, truncate=args.truncate,
                            overwrite=args.overwrite, progress=not args.quiet,
                            layers=parse_layers(args.layers) if args.layers else None,
                            chunk_tokens=args.chunk_tokens, decode_every=args.decode_every)
    print(f"wrote {out}; inspect it with: toptheta traces info {out}")
    return 0


def parse_layers(spec: str) -> list[int]:
    """'0,1,2-28:2,29' -> [0, 1, 2, 4, ..., 28, 29]."""
    from topθ_hw.errors import UserError

    layers = []
    for part in spec.split(","):
        span, _, step = part.strip().partition(":")
        first, _, last = span.partition("-")
        try:
            a, b, s = int(first), int(last or first), int(step or 1)
        except ValueError:
            raise UserError(f"--layers: {part!r} is not N, A-B or A-B:STEP") from None
        if s < 1 or b < a:
            raise UserError(f"--layers: {part!r} is an empty range")
        layers += range(a, b + 1, s)
    return sorted(set(layers))
