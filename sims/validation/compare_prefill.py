"""Predict measured prefill timings with the simulator's prefill model and write the comparison.

    PYTHONPATH=. .venv/bin/python sims/validation/compare_prefill.py --measured DIR [--hardware h200]
    PYTHONPATH=. .venv/bin/python sims/validation/compare_prefill.py --blind FILE   # before any timing
    PYTHONPATH=. .venv/bin/python sims/validation/compare_prefill.py --measured DIR --fit   # fit, then predict

DIR holds prefill_bench.py's prefill_attention.csv and prefill_occupancy.npz. Every row is
predicted from the tile occupancy the kernel itself counted (topθ_hw/sim/prefill.py): the dense
and SDPA rows as the dense tiled kernel, the threshold rows as the tile-skipping Top-θ kernel.
Writes DIR/prefill_comparison.csv and prints it as a markdown table. The speedups compare each
threshold row with the dense Triton kernel at the same BLOCK_M, measured and predicted.

--fit fits the two prefill constants of the kernel build (sims/kernels/triton-splitkv.toml) by
golden-section search: the matrix efficiency on the dense Triton rows only, then the threshold
kernel's tile ratio on the θ = −inf threshold rows only (pattern 'dense'); the clustered and
scattered rows are held out. Writes DIR/prefill_comparison_fitted.csv.

--blind predicts prefill_bench.py's default grid from occupancy known without a GPU: the planted
clustered patterns (prefill_inputs.clustered_patterns, same seed) and, for scattered masks, every
causal tile non-empty (a 64 × 64 tile keeps nothing with probability (1 - f)^2080 or less).
"""
import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from topθ_hw.errors import UserError
from topθ_hw.sim.hardware import load_device
from topθ_hw.sim.prefill import simulate_prefill
from topθ_hw.sim.workload import Shape

REQUIRED = ["kernel", "block_m", "batch", "context", "q_heads", "kv_heads", "head_dim", "dtype", "pattern",
            "target_fraction", "kept_fraction", "nonempty_tile_fraction", "time_s"]


def occupancy_key(row) -> str:
    return f"B{int(row.batch)}_T{int(row.context)}_{row.pattern}_f{float(row.target_fraction)}"


def predict_time(device, shape: Shape, context: int, batch: int, kv_tiles_nonempty=None, kept_v_rows=None) -> float:
    """Predicted seconds of one layer's causal prefill: dense when ``kv_tiles_nonempty`` is None."""
    return simulate_prefill(device, shape, context, kv_tiles_nonempty, kept_v_rows, batch)["time_s"]


def predict_rows(measured: pd.DataFrame, occupancy, device) -> pd.Series:
    """One prediction per measured row; threshold rows take their configuration's occupancy."""
    cache, out = {}, []
    for row in measured.itertuples():
        shape = Shape(int(row.q_heads), int(row.kv_heads), int(row.head_dim), str(row.dtype))
        dense = row.kernel == "dense" or row.kernel.startswith("sdpa")
        key = "dense" if dense else occupancy_key(row)
        if (key, row.batch, row.context) not in cache:
            if not dense and f"{key}/kv_tiles_nonempty" not in occupancy:
                raise UserError(f"occupancy file has no arrays for {key} (measured row {row.Index})")
            occ = (None, None) if dense else (occupancy[f"{key}/kv_tiles_nonempty"], occupancy[f"{key}/kept_v_rows"])
            cache[key, row.batch, row.context] = predict_time(device, shape, int(row.context), int(row.batch), *occ)
        out.append(cache[key, row.batch, row.context])
    return pd.Series(out, index=measured.index)


def compare(measured: pd.DataFrame, occupancy, device) -> pd.DataFrame:
    """measured + predicted_s, error (predicted / measured - 1) and the speedups over dense Triton."""
    missing = [c for c in REQUIRED if c not in measured.columns]
    if missing:
        raise UserError(f"measured CSV lacks column(s) {missing}; expected prefill_bench.py's prefill_attention.csv")
    table = measured.copy()
    table["predicted_s"] = predict_rows(table, occupancy, device)
    table["error"] = table.predicted_s / table.time_s - 1.0
    dense = table[table.kernel == "dense"].set_index(["batch", "context", "block_m"])
    ref = table.set_index(["batch", "context", "block_m"]).index
    table["speedup_measured"] = dense.time_s.reindex(ref).to_numpy() / table.time_s.to_numpy()
    table["speedup_predicted"] = dense.predicted_s.reindex(ref).to_numpy() / table.predicted_s.to_numpy()
    table.loc[table.kernel.str.startswith("sdpa"), ["speedup_measured", "speedup_predicted"]] = np.nan
    return table


def blind_predictions(device, batches=(1, 2, 4), contexts=(4096, 8192, 16384), fractions=(0.5, 0.2, 0.1, 0.05),
                      seed=2026, shape=Shape(32, 8, 128, "bf16")) -> pd.DataFrame:
    """Predicted dense and tile-skipping times for the benchmark grid, before anything is timed."""
    from prefill_inputs import TILE, clustered_codes, clustered_patterns
    rows = []
    for T in contexts:
        n = T // TILE
        for B in batches:
            dense = predict_time(device, shape, T, B)
            full = np.broadcast_to(np.arange(1, n + 1), (B, shape.kv_heads, n))
            points = [("dense", 1.0, full)] + [("scattered", f, full) for f in fractions] + [
                ("clustered", f, clustered_patterns(B, shape.kv_heads, n, f, clustered_codes(shape.head_dim), seed)[0]
                 .sum(axis=-1)) for f in fractions]
            rows.append({"kernel": "dense", "batch": B, "context": T, "pattern": "dense", "target_fraction": 1.0,
                         "nonempty_tile_fraction": 1.0, "predicted_s": dense, "speedup_predicted": 1.0})
            for pattern, f, occ in points:
                t = predict_time(device, shape, T, B, occ)
                rows.append({"kernel": "threshold", "batch": B, "context": T, "pattern": pattern, "target_fraction": f,
                             "nonempty_tile_fraction": occ.sum() / full.sum(), "predicted_s": t,
                             "speedup_predicted": dense / t})
    return pd.DataFrame(rows)


FIT_RANGES = {"build.prefill_matrix_efficiency": (0.1, 1.0), "build.prefill_threshold_tile_ratio": (1.0, 3.0)}


def fit_rows(measured: pd.DataFrame) -> dict:
    """The rows that decide each prefill build constant: the dense Triton kernel for the matrix
    efficiency, the threshold kernel at θ = −inf (every tile kept) for its ratio; the rest is held out."""
    return {"build.prefill_matrix_efficiency": measured[measured.kernel == "dense"],
            "build.prefill_threshold_tile_ratio": measured[(measured.kernel == "threshold")
                                                            & (measured.pattern == "dense")]}


def fit_build(measured: pd.DataFrame, occupancy, device) -> dict:
    """Golden-section search per constant, in order, on the mean squared log error of its rows."""
    from topθ_hw.sim.calibrate import with_values
    from topθ_hw.sim.crossval import golden_section
    values = {}
    for key, rows in fit_rows(measured).items():
        def loss(x, key=key, rows=rows):
            predicted = predict_rows(rows, occupancy, with_values(device, {**values, key: x}))
            return float(np.mean(np.log(predicted / rows.time_s) ** 2))
        values[key] = golden_section(loss, *FIT_RANGES[key], tolerance=0.002)
    return values


def fit_summary(table: pd.DataFrame) -> pd.DataFrame:
    """|error| per (kernel, pattern, BLOCK_M), with whether the rows were fitted or held out."""
    fitted = table.kernel.eq("dense") | (table.kernel.eq("threshold") & table.pattern.eq("dense"))
    groups = table.assign(abs_error=table.error.abs(), rows=np.where(fitted, "fitted", "held out"))
    return groups.groupby(["rows", "kernel", "pattern", "block_m"]).abs_error.agg(["count", "median", "max"]).reset_index()


def markdown(table: pd.DataFrame) -> str:
    cols = ["kernel", "block_m", "batch", "context", "pattern", "target_fraction", "kept_fraction",
            "nonempty_tile_fraction", "time_s", "predicted_s", "error", "speedup_measured", "speedup_predicted"]
    lines = ["| " + " | ".join(c.replace("_", " ") for c in cols) + " |", "|" + "---|" * len(cols)]
    for r in table[cols].itertuples(index=False):
        cells = [f"{v * 1e3:.3f} ms" if c in ("time_s", "predicted_s") else f"{v:+.1%}" if c == "error"
                 else f"{v:.3f}" if isinstance(v, float) else str(v) for c, v in zip(cols, r)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--measured", type=Path, help="folder with prefill_attention.csv and prefill_occupancy.npz")
    p.add_argument("--blind", type=Path, help="write predictions for prefill_bench.py's default grid to this CSV")
    p.add_argument("--hardware", default="h200", help="device name or TOML path (default h200)")
    p.add_argument("--out", type=Path, help="comparison CSV (default MEASURED/prefill_comparison.csv, "
                   "with --fit MEASURED/prefill_comparison_fitted.csv)")
    p.add_argument("--fit", action="store_true", help="fit the prefill build constants (matrix efficiency on the "
                   "dense Triton rows, threshold ratio on the θ = −inf rows), print them, predict every row with them")
    args = p.parse_args(argv)
    if args.blind:
        table = blind_predictions(load_device(args.hardware))
        tmp = args.blind.with_suffix(".tmp")
        table.to_csv(tmp, index=False)
        tmp.replace(args.blind)
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        return 0
    if args.measured is None:
        p.error("--measured or --blind is required")
    try:
        csv_path, npz_path = args.measured / "prefill_attention.csv", args.measured / "prefill_occupancy.npz"
        for path in (csv_path, npz_path):
            if not path.is_file():
                raise UserError(f"--measured: {path} does not exist (run prefill_bench.py --out {args.measured})")
        with np.load(npz_path) as data:
            occupancy = {k: data[k] for k in data.files}
        measured, device = pd.read_csv(csv_path), load_device(args.hardware)
        if args.fit:
            from topθ_hw.sim.calibrate import with_values
            fitted = fit_build(measured, occupancy, device)
            device = with_values(device, fitted)
        table = compare(measured, occupancy, device)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.out or args.measured / ("prefill_comparison_fitted.csv" if args.fit else "prefill_comparison.csv")
    tmp = out.with_suffix(".tmp")
    table.to_csv(tmp, index=False)
    tmp.replace(out)
    print(markdown(table))
    if args.fit:
        print("\n".join(f"{key} = {value:.4g}" for key, value in fitted.items()))
        print(fit_summary(table).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
