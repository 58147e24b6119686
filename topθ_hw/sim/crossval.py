"""Cross-device validation of the decode-attention model: predict a fixed grid blind, then score it.

    python -m topθ_hw.sim.crossval predict --hardware h200 --out sims/validation/h200_blind_predictions.csv
    python -m topθ_hw.sim.crossval score --predictions sims/validation/h200_blind_predictions.csv \\
        --measured sims/validation/h200_decode_grid.csv [--hardware h200]

The grid is the one ``sims/validation/decode_grid.py`` times: batch 1/4/16/64, context 4k–128k,
kept fraction 1.0–0.03, V fetched as rows or 16/64-token pages, two kernel families (the fused
threshold kernel Top-θ runs, and the precomputed-mask kernel), each with its dense kernel, and torch
SDPA; the 64-key / 4-warp / 3-stage build with 512-key splits, plus a 128-key / 8-warp / 2-stage
build with 1024-key splits at batch 16. ``predict`` writes the model's times before anything is
timed; ``score`` reads them back, interpolates each prediction in kept fraction to the fraction
the GPU run really kept (log-log between grid fractions) or, with ``--hardware``, re-predicts at
it with the current device file, and reports the error per kernel family and kernel, and the
error of the predicted speedup over the same family's dense kernel.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from topθ_hw.sim.hardware import Device, load_device
from topθ_hw.sim.simulate import fa2_split_tokens, simulate_kernel
from topθ_hw.sim.tiles import KernelOptions

BATCHES = (1, 4, 16, 64)
CONTEXTS = (4096, 8192, 16384, 32768, 65536, 131072)
FRACTIONS = (1.0, 0.5, 0.3, 0.1, 0.03)
FETCHES = {1: "row", 16: "page16", 64: "page64"}
BUILDS = {"b64w4s3": (KernelOptions(block_keys=64, warps=4, stages=3), 512),
          "b128w8s2": (KernelOptions(block_keys=128, warps=8, stages=2), 1024)}
# resident CTAs per SM of the _split_kv_partial builds (dense and precomputed), from the H100's compiled
# kernels (h100_microbench_sm.provenance.json); the threshold kernel's are derived from shared memory
MEASURED_CTAS = {"b64w4s3": 3, "b128w8s2": 3}
FA2 = KernelOptions(style="fa2", block_keys=128, warps=4, stages=2, ctas_per_unit=2)
KEY = ["family", "kernel", "build", "batch", "context"]


@dataclass(frozen=True)
class GridPoint:
    family: str       # threshold, precomputed, sdpa
    kernel: str       # dense, row, page16, page64
    build: str
    batch: int
    context: int
    fraction: float   # kept fraction of V units (rows or pages)


def grid() -> list[GridPoint]:
    points = []
    for batch in BATCHES:
        for context in CONTEXTS:
            for build in ["b64w4s3"] + (["b128w8s2"] if batch == 16 else []):
                points += [GridPoint(f, "dense", build, batch, context, 1.0) for f in ("threshold", "precomputed")]
                if build == "b64w4s3":
                    points.append(GridPoint("sdpa", "dense", build, batch, context, 1.0))
                points += [GridPoint(family, FETCHES[page], build, batch, context, f)
                           for page in FETCHES for f in FRACTIONS for family in ("threshold", "precomputed")]
    return points


def options(p: GridPoint) -> tuple[KernelOptions, int]:
    """The kernel build of a grid point, as the simulator is told it."""
    if p.family == "sdpa":
        return FA2, fa2_split_tokens(p.batch, 8, p.context, 132)
    kernel, split = BUILDS[p.build]
    mask = "threshold" if p.family == "threshold" else "precomputed"
    ctas = MEASURED_CTAS[p.build] if p.family == "precomputed" or p.kernel == "dense" else 0
    return KernelOptions(block_keys=kernel.block_keys, warps=kernel.warps, stages=kernel.stages, mask=mask,
                         ctas_per_unit=ctas), split


def predict(p: GridPoint, device: Device) -> float:
    kernel, split = options(p)
    method = "dense" if p.kernel == "dense" else "toptheta"
    fetch = "row" if p.kernel == "dense" else p.kernel
    return simulate_kernel(device, p.batch, p.context, 32, 8, 128, "bf16", p.fraction, fetch, method,
                           split_tokens=split, kernel=kernel)["time_s"]


def predict_grid(device: Device, out: str, progress: bool = True) -> pd.DataFrame:
    from tqdm import tqdm
    rows = []
    for p in tqdm(grid(), desc=f"predicting on {device.name}", disable=not progress):
        rows.append({**p.__dict__, "predicted_s": predict(p, device)})
    frame = pd.DataFrame(rows)
    tmp = f"{out}.tmp"
    frame.to_csv(tmp, index=False)
    os.replace(tmp, out)
    return frame


def interpolate(pred: pd.DataFrame, p: pd.Series) -> float:
    """Blind prediction at the measured kept fraction: log-log interpolation between grid fractions."""
    same = pred[(pred[KEY] == p[KEY]).all(axis=1)].sort_values("fraction")
    if len(same) == 1:
        return float(same["predicted_s"].iloc[0])
    x, y = np.log(same["fraction"].to_numpy()), np.log(same["predicted_s"].to_numpy())
    return float(np.exp(np.interp(math.log(max(p["kept_v_fraction"], 1e-9)), x, y)))


def measured_frame(path: str) -> pd.DataFrame:
    m = pd.read_csv(path)
    m["family"] = m["family"].where(~m["family"].str.startswith("sdpa"), "sdpa")
    return m


def score(measured: pd.DataFrame, predictions: pd.DataFrame | None, device: Device | None) -> pd.DataFrame:
    """Per measured point: predicted time (blind, interpolated; or re-predicted on ``device``),
    error, and for sparse points the measured and predicted speedup over the family's dense kernel."""
    out = measured.copy()
    if device is not None:
        out["predicted_s"] = [predict(GridPoint(r.family, r.kernel, r.build, int(r.batch), int(r.context),
                                                float(r.kept_v_fraction) if r.kernel != "dense" else 1.0), device)
                              for r in out.itertuples()]
    else:
        out["predicted_s"] = [interpolate(predictions, r) for _, r in out.iterrows()]
    out["error"] = out["predicted_s"] / out["time_s"] - 1
    dense = out[out["kernel"] == "dense"].set_index(["family", "build", "batch", "context"])
    idx = list(zip(out["family"], out["build"], out["batch"], out["context"]))
    out["measured_speedup"] = [dense["time_s"].get(i, np.nan) for i in idx] / out["time_s"]
    out["predicted_speedup"] = [dense["predicted_s"].get(i, np.nan) for i in idx] / out["predicted_s"]
    out["speedup_error"] = out["predicted_speedup"] / out["measured_speedup"] - 1
    return out


def summary(scored: pd.DataFrame) -> pd.DataFrame:
    """|error| median / max per family and kernel, and of the speedup where kept fraction ≤ 0.3."""
    def stats(g):
        sparse = g[(g["kernel"] != "dense") & (g["kept_v_fraction"] <= 0.3)]
        return pd.Series({"points": len(g), "median_abs_error": g["error"].abs().median(),
                          "max_abs_error": g["error"].abs().max(),
                          "within_10pct": (g["error"].abs() <= 0.10).mean(),
                          "speedup_points": len(sparse),
                          "speedup_max_abs_error": sparse["speedup_error"].abs().max() if len(sparse) else np.nan})
    rows = [{"family": f, "kernel": k, **stats(g)} for (f, k), g in scored.groupby(["family", "kernel"])]
    return pd.DataFrame(rows + [{"family": "all", "kernel": "all", **stats(scored)}])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    pr = sub.add_parser("predict", help="predict the grid (before timing it)")
    pr.add_argument("--hardware", required=True)
    pr.add_argument("--out", required=True)
    sc = sub.add_parser("score", help="score predictions against a measured grid")
    sc.add_argument("--measured", required=True)
    sc.add_argument("--predictions", help="blind predictions CSV (interpolated to the measured fractions)")
    sc.add_argument("--hardware", help="re-predict with this device file instead")
    sc.add_argument("--out", help="write the scored points (CSV) and the summary (.summary.csv)")
    ft = sub.add_parser("fit-threshold", help="fit the threshold family's build constants on a GPU grid")
    ft.add_argument("--measured", required=True)
    ft.add_argument("--hardware", required=True)
    ft.add_argument("--rounds", type=int, default=2, help="coordinate-descent rounds over the three constants")
    args = ap.parse_args(argv)
    if args.command == "fit-threshold":
        for key, value in fit_threshold_build(measured_frame(args.measured), load_device(args.hardware),
                                              args.rounds).items():
            print(f"{key} = {value:.4g}")
        return 0
    if args.command == "predict":
        predict_grid(load_device(args.hardware), args.out)
        return 0
    if not (args.predictions or args.hardware):
        ap.error("score needs --predictions or --hardware")
    scored = score(measured_frame(args.measured), pd.read_csv(args.predictions) if args.predictions else None,
                   load_device(args.hardware) if args.hardware else None)
    table = summary(scored)
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    if args.out:
        scored.to_csv(args.out, index=False, quoting=csv.QUOTE_MINIMAL)
        table.to_csv(args.out.removesuffix(".csv") + ".summary.csv", index=False)
    return 0



THRESHOLD_BUILD = {  # constant -> (the grid points that decide it: build, fetches; search range)
    "build.threshold_tile_compute_ns": ("b64w4s3", ("row",), (600.0, 2400.0)),
    "build.threshold_page_union_ns": ("b64w4s3", ("page16", "page64"), (0.0, 600.0)),
    "build.skipped_tile_fraction": ("b64w4s3", ("page16", "page64"), (0.2, 1.0)),
    "build.wide_threshold_tile_compute_ns": ("b128w8s2", ("row", "page16", "page64"), (1000.0, 4500.0)),
}


def fit_threshold_build(measured: pd.DataFrame, device: Device, rounds: int = 2) -> dict:
    """Fit the threshold family's four build constants on the grid's 4k and 16k contexts (batch
    16 and 64; kept fractions 1.0, 0.3, 0.03): the kernel was never timed before this GPU run, so
    they can only come from it. Coordinate descent, a golden-section search per constant on the
    squared log error of the points of its tile length; the other contexts stay held out."""
    from topθ_hw.sim.calibrate import with_values
    train = measured[(measured["family"] == "threshold") & (measured["kernel"] != "dense")
                     & measured["context"].isin([4096, 16384]) & measured["batch"].isin([16, 64])
                     & measured["target_fraction"].isin([1.0, 0.3, 0.03])]
    values = {k: getattr(device.build, k.split(".")[1]) for k in THRESHOLD_BUILD}
    for _ in range(rounds):
        for key, (build, fetches, (lo, hi)) in THRESHOLD_BUILD.items():
            rows = train[(train["build"] == build) & train["kernel"].isin(fetches)]
            points = [(GridPoint("threshold", r.kernel, r.build, int(r.batch), int(r.context),
                                 float(r.kept_v_fraction)), float(r.time_s)) for r in rows.itertuples()]

            def loss(x, key=key, points=points):
                d = with_values(device, {**values, key: x})
                return float(np.mean([np.log(predict(p, d) / t) ** 2 for p, t in points]))
            values[key] = golden_section(loss, lo, hi)
    return values


def golden_section(f, lo: float, hi: float, tolerance: float = 0.01) -> float:
    """Minimum of a unimodal f on [lo, hi], to ``tolerance`` of the interval."""
    ratio = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tolerance * (hi - lo):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = f(d)
    return (a + b) / 2

if __name__ == "__main__":
    raise SystemExit(main())
