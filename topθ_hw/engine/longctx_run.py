"""Make the long-context tables: ``python -m topθ_hw.engine.longctx_run --help``.

For one long evaluation sequence and a calibration sequence of the same model: Top-θ calibrated
on the calibration text's first ``n_cal`` rows (short and long), applied with ``hold`` and
``logfit`` extrapolation, and top-k for reference, at every k and context cut (see
:mod:`topθ_hw.engine.longctx`). Writes ``<name>.csv`` / ``.md`` (one row per variant, k and
context) and, with ``--raw``, the decode KV-group frames with their V-row masks (Parquet).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import pandas as pd

from topθ_hw.engine.calibrate import calibrate
from topθ_hw.engine.headline import to_markdown
from topθ_hw.engine.longctx import CONTEXTS, KS, PrefixTrace, layer_tables, summarise
from topθ_hw.engine.methods import TopK, TopTheta
from topθ_hw.store import open_trace
from topθ_hw.tables import write_csv_and_markdown, write_table


def layer_subset(trace, layers):
    """``trace`` whose metadata lists only ``layers`` (calibration then visits only those)."""
    trace.meta = dataclasses.replace(trace.meta, layers=sorted(layers))
    return trace


def threshold_tables(cal_path, cal_seq, ks, cal_rows, layers, sigma, log):
    tables = {}
    for n_cal in cal_rows:
        cal = layer_subset(PrefixTrace(open_trace(cal_path), n_cal), layers)
        for k in ks:
            t = time.time()
            tables[(n_cal, k)] = calibrate(cal, [cal_seq], k=k, placement="pre", sigma=sigma)
            print(f"calibrated k={k} on {cal.path} {cal_seq} ({time.time() - t:.0f} s)", file=log, flush=True)
    return tables


def variants(tables, ks, extrapolations, cal_source):
    """(label dict, method) for every Top-θ variant and top-k."""
    for (n_cal, k), table in tables.items():
        for extrap in extrapolations:
            yield {"method": "toptheta", "calibration": f"{cal_source}[:{n_cal}]", "n_cal": n_cal,
                   "extrapolate": extrap, "k": k}, TopTheta(thresholds=table, extrapolate=extrap)
    for k in ks:
        yield {"method": "topk", "calibration": "", "n_cal": 0, "extrapolate": "", "k": k}, TopK(k=k)


def run(args, log=sys.stderr) -> pd.DataFrame:
    trace = open_trace(args.traces)
    seq = trace.sequence(args.sequence)
    layers = args.layers or trace.meta.captured_layers
    cal_trace = open_trace(args.calibration_traces)
    cal_source = cal_trace.sequence(args.calibration_sequence).source
    tables = threshold_tables(args.calibration_traces, args.calibration_sequence, args.ks, args.cal_rows, layers,
                              args.sigma, log)
    parts = {}
    for layer in layers:
        qkv, t = seq.layer(layer), time.time()
        for label, method in variants(tables, args.ks, args.extrapolate, cal_source):
            method.check(trace.meta, str(trace.path))
            pre, dec = layer_tables(qkv, layer, method, seq.prompt_len, trace.meta.group_size, args.prefill_stride,
                                    args.contexts)
            key = tuple(label.values())
            parts.setdefault(key, (label, [], []))
            parts[key][1].append(pre)
            parts[key][2].append(dec)
        print(f"layer {layer}: {time.time() - t:.0f} s", file=log, flush=True)
    rows, raw = [], []
    for label, pres, decs in parts.values():
        dec = pd.concat(decs, ignore_index=True)
        rows.append(summarise(pd.concat(pres, ignore_index=True), dec, args.contexts, args.prefill_stride)
                    .assign(**label))
        if args.raw or args.masks or args.stretch_from:
            raw.append(dec[dec.level == "group"].assign(**label))
    table = pd.concat(rows, ignore_index=True)
    front = ["method", "calibration", "extrapolate", "k", "context"]
    table = table[front + [c for c in table.columns if c not in front]]
    meta = {"kind": "longctx-table", "trace": str(trace.path), "sequence": args.sequence, "source": seq.source,
            "model_id": trace.meta.model_id, "layers": layers, "prefill_stride": args.prefill_stride,
            "calibration_trace": str(args.calibration_traces), "calibration_sequence": args.calibration_sequence,
            "sigma": args.sigma, "placement": "pre", "command": " ".join(sys.argv),
            "n_q_heads": trace.meta.n_q_heads, "n_kv_heads": trace.meta.n_kv_heads,
            "model_file_sha256": trace.meta.model_file_sha256}
    out = Path(args.out)
    write_csv_and_markdown(table, to_markdown(table) + "\n", out.parent, out.name, float_format="%.5g")
    if args.raw:
        write_table(pd.concat(raw, ignore_index=True), args.raw, meta)
    if args.masks:
        write_masks(pd.concat(raw, ignore_index=True), args, meta)
    if args.stretch_from:
        stretch = stretch_vs_measured(pd.concat(raw, ignore_index=True), args)
        write_csv_and_markdown(stretch, to_markdown(stretch) + "\n", out.parent, f"{out.name}-stretch",
                               float_format="%.5g")
    return table


def chosen_variant(raw: pd.DataFrame, args) -> pd.Series:
    """Top-θ calibrated on the longest calibration prefix with ``--mask-extrapolate``, and top-k."""
    theta = (raw.method == "toptheta") & (raw.n_cal == max(args.cal_rows)) & (raw.extrapolate == args.mask_extrapolate)
    return theta | (raw.method == "topk")


def stretch_vs_measured(raw: pd.DataFrame, args) -> pd.DataFrame:
    """kept.py's rule (masks at ``--stretch-from`` stretched, count held) against the masks measured
    at each longer context, for every layer of the table, per method and k."""
    from topθ_hw.study.kept import kept_masks, kept_fractions

    raw = raw[chosen_variant(raw, args)]
    rows = []
    for (method, k), part in raw.groupby(["method", "k"]):
        by_cut = {c: kept_masks(g.assign(level="group", phase="decode")) for c, g in part.groupby("context")}
        short = by_cut.get(args.stretch_from)
        for cut, masks in by_cut.items():
            if short is None or cut <= args.stretch_from:
                continue
            measured, stretched = kept_fractions(masks, cut), kept_fractions(short, cut)
            for page in (1, 16, 64):
                rows.append({"method": method, "k": k, "context": cut, "page": page, "measured": measured[page],
                             f"stretched_from_{args.stretch_from}": stretched[page],
                             "stretched_over_measured": stretched[page] / measured[page]})
    return pd.DataFrame(rows)


def write_masks(raw: pd.DataFrame, args, meta: dict) -> None:
    """The compact measured-mask file: Top-θ (longest calibration, ``--mask-extrapolate``) and top-k
    at ``--mask-ks``, layers ``--mask-layers``, the first ``--mask-steps`` steps of each context."""
    from topθ_hw.study.masks import write_mask_stats

    pick = chosen_variant(raw, args) & raw.k.isin(args.mask_ks) & raw.layer.isin(args.mask_layers) & \
        (raw.step < args.mask_steps) & (raw.context >= min(args.mask_contexts))
    chosen = raw[pick]
    info = {**meta, "mask_layers": args.mask_layers, "mask_ks": args.mask_ks, "mask_steps": args.mask_steps,
            "toptheta_calibration": f"{chosen[chosen.method == 'toptheta'].calibration.iloc[0]}",
            "toptheta_extrapolate": args.mask_extrapolate, "n_kv_heads": meta["n_kv_heads"]}
    sums = chosen.groupby(["method", "k", "context"])[["kept_v_rows", "v_rows_total"]].sum()
    info["kept_v_rows"] = [[m, int(k), int(c), int(r.kept_v_rows), int(r.v_rows_total)] for (m, k, c), r in sums.iterrows()]
    path = write_mask_stats(chosen, args.masks, info)
    print(f"wrote {path}: {len(chosen)} masks, {path.stat().st_size / 1e6:.2f} MB", file=sys.stderr)


def parse(argv=None):
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    p = argparse.ArgumentParser(prog="python -m topθ_hw.engine.longctx_run", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--traces", required=True, help="long evaluation trace store")
    p.add_argument("--sequence", default="seq_0000")
    p.add_argument("--calibration-traces", required=True, help="trace store of the calibration text (same model)")
    p.add_argument("--calibration-sequence", default="seq_0000")
    p.add_argument("--cal-rows", type=ints, default=[2048, 8192],
                   help="calibrate on the first N rows of the calibration text, for each N (short and long)")
    p.add_argument("--extrapolate", type=lambda s: s.split(","), default=["hold", "logfit"])
    p.add_argument("--ks", type=ints, default=list(KS))
    p.add_argument("--contexts", type=ints, default=list(CONTEXTS))
    p.add_argument("--layers", type=ints, default=None, help="layers (default all captured)")
    p.add_argument("--prefill-stride", type=int, default=16, help="replay every S-th prefill tile (decode exact)")
    p.add_argument("--sigma", type=float, default=0.1)
    p.add_argument("--out", required=True, help="table path without suffix (.csv and .md are written)")
    p.add_argument("--raw", default=None, help="Parquet file for the decode V-row masks (not committed)")
    p.add_argument("--masks", default=None, help="compact measured-mask file to write (.safetensors)")
    p.add_argument("--mask-layers", type=ints, default=[])
    p.add_argument("--mask-ks", type=ints, default=[32, 64, 128])
    p.add_argument("--mask-steps", type=int, default=16, help="decode steps kept per context")
    p.add_argument("--mask-contexts", type=ints, default=[4096], help="smallest context cut kept")
    p.add_argument("--mask-extrapolate", default="hold")
    p.add_argument("--stretch-from", type=int, default=None,
                   help="also compare kept.py's stretching of the masks at this context cut with the measured ones")
    return p.parse_args(argv)


if __name__ == "__main__":
    run(parse())
