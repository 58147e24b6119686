"""Cut text files into token windows saved as text files, so ``toptheta capture`` (which takes the
first N tokens of each file) records one calibration sequence per window.

    python -m topθ_hw.quality.split_text --model smollm2-135m --tokens 1024 --out DIR FILE...

Each window is decoded back to text with a few tokens of slack, so that re-tokenising it yields at
least ``--tokens`` tokens; windows do not overlap, and a last window shorter than half is dropped.
"""

from __future__ import annotations

import argparse
from pathlib import Path

SLACK = 16


def split(tokenizer, text: str, tokens: int) -> list[str]:
    ids = tokenizer(text).input_ids
    return [tokenizer.decode(ids[s:s + tokens + SLACK]) for s in range(0, len(ids), tokens)
            if len(ids[s:s + tokens]) >= tokens // 2]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m topθ_hw.quality.split_text", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--tokens", type=int, default=1024)
    p.add_argument("--out", required=True)
    p.add_argument("files", nargs="+")
    args = p.parse_args(argv)
    from topθ_hw.capture.models import load_model

    tokenizer = load_model(args.model, dtype="float32").tokenizer
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for f in map(Path, args.files):
        for i, window in enumerate(split(tokenizer, f.read_text(encoding="utf-8"), args.tokens)):
            (out / f"{f.stem}.w{i}.txt").write_text(window, encoding="utf-8")
            print(out / f"{f.stem}.w{i}.txt")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
