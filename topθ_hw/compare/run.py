"""``toptheta compare``: every check first, then the hardware side, the quality side and the outputs."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from topθ_hw.compare.methods import Options, check_entries, entries
from topθ_hw.errors import UserError

SIM_PAGE_SIZES = (8, 16, 32, 64, 128)   # the KV page sizes the simulator (and the engine's counts) know


def checked_inputs(args):
    """Settings, devices, traces and texts, all validated before any replay or model load."""
    from topθ_hw.engine.methods.quest import check_page_size
    from topθ_hw.quality.run import read_texts
    from topθ_hw.sim.hardware import load_device
    from topθ_hw.store import open_trace

    if any(k < 1 for k in args.k) or not args.k:
        raise UserError(f"--k: budgets must be integers ≥ 1, got {args.k}")
    if args.step_every < 1 or args.window < 2:
        raise UserError(f"--step-every must be ≥ 1 and --window ≥ 2, got {args.step_every} and {args.window}")
    check_page_size(args.page_size)
    if "quest" in args.methods and args.page_size not in SIM_PAGE_SIZES:
        raise UserError(f"--page-size {args.page_size}: the simulator models Quest pages of {SIM_PAGE_SIZES} tokens")
    opts = Options(page_size=args.page_size, sinks=args.sinks, recent=args.recent, compensation=args.compensation)
    settings = entries(args.methods, args.k, args.p)
    check_entries(settings, opts)
    if "dense" not in args.methods:
        raise UserError("--methods must include dense: every reduction is measured against it")
    devices = [load_device(name) for name in args.hardware]
    traces = [open_trace(path) for path in args.traces]
    texts = (read_texts(args.text), {Path(p).name: read_texts([p]) for p in args.calibration_text}) if args.text \
        else (None, None)
    return opts, settings, devices, traces, texts


def compare_command(args) -> int:
    import pandas as pd
    from tqdm import tqdm

    from topθ_hw.compare.hardware import trace_costs
    from topθ_hw.compare.table import KIND, comparison, markdown, plot
    from topθ_hw.report.figure import png_bytes
    from topθ_hw.report.render import write_bytes_atomic, write_text_atomic
    from topθ_hw.tables import write_table

    opts, settings, devices, traces, (text, calibration) = checked_inputs(args)
    costs = pd.concat([trace_costs(t, settings, opts, devices, args.layers, args.calibrate_on,
                                   step_every=args.step_every, sigma=args.sigma, progress=tqdm) for t in traces],
                      ignore_index=True)
    quality, tokens = None, 0
    if text is not None:
        from topθ_hw.capture.models import load_model
        from topθ_hw.compare.quality import live_quality

        loaded = load_model(args.model, dtype="float32")
        ids = loaded.tokenizer(text, return_tensors="pt").input_ids[0]
        ids = ids[:args.max_tokens] if args.max_tokens else ids
        tokens = len(ids)
        quality = live_quality(loaded, calibration, ids, settings, opts, args.window, args.decode_from, args.sigma)
    df = comparison(costs, quality)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["toptheta"] + sys.argv[1:]) if sys.argv[1:2] == ["compare"] else "toptheta compare (API)"
    meta = {"kind": KIND, "traces": [str(t.path) for t in traces], "devices": [d.name for d in devices],
            "device_files": [d.path for d in devices], "texts": args.text, "calibration_texts": args.calibration_text,
            "model": args.model, "tokens": tokens, "window": args.window, "page_size": args.page_size,
            "sinks": args.sinks, "recent": args.recent, "compensation": args.compensation,
            "step_every": args.step_every, "command": command}
    write_table(df, out / "alternatives.parquet", meta)
    write_text_atomic(out / "alternatives.csv", df.to_csv(index=False, float_format="%.6g"))
    title = (f"{', '.join(Path(t.path).name for t in traces)}; quality: {args.model} on "
             f"{', '.join(Path(p).name for p in args.text) or 'none'} ({tokens} tokens)")
    write_text_atomic(out / "alternatives.md", f"# Sparse-attention alternatives in hardware units\n\n{title}\n\n"
                      f"Command: `{command}`\n\n" + markdown(df))
    write_bytes_atomic(out / "alternatives.png", png_bytes(plot(df, title)))
    write_text_atomic(out / "command.txt", command + "\n")
    print(markdown(df))
    print(f"wrote {out}/alternatives.parquet, .csv, .md, .png")
    return 0
