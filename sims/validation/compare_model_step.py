"""Compare GPU whole-step timings (model_step.py's CSV) with the simulator's predictions.

    python sims/validation/compare_model_step.py DIR [--hardware h200] [--out sims/validation/model_step_error.md]

DIR holds model_step.csv, model_step_micro.csv and model_step.provenance.json. Every row is
predicted by ``topθ_hw.cost.run.cost_of`` (attention simulated at the full batch) for the same
model shape, batch, context, attention (SDPA → dense, Top-θ → toptheta at the row's kept
fraction) and launch mode; prints the error table, the Top-θ end-to-end speedups measured and
predicted, and the microbenchmarks beside the device file's [step] figures.
"""
import argparse
import csv
import statistics
import sys
from pathlib import Path

from topθ_hw.cost.run import cost_of
from topθ_hw.sim import load_device


def predict(row: dict, device) -> dict:
    phase = row["phase"]
    method = "dense" if row["attention"] == "sdpa" else "toptheta"
    fraction = float(row["kept_v_fraction"]) if method != "dense" else None
    r = cost_of(row["model"], device, int(row["batch"]), int(row["context"]), method=method,
                kept_v_fraction=fraction, graphs=row["graphs"] == "True", phase=phase, exact_attention=True)
    return r


def table(rows: list[dict], device) -> list[dict]:
    out = []
    for row in rows:
        r = predict(row, device)
        predicted, measured = r["step_time_s"], float(row["time_s"])
        out.append({**{k: row[k] for k in ("model", "phase", "batch", "context", "attention", "graphs")},
                    "measured_ms": measured * 1e3, "predicted_ms": predicted * 1e3,
                    "error": predicted / measured - 1, "kernels_measured": row.get("kernels", ""),
                    "kernels_modelled": r["kernels"], "power_measured_W": row.get("power_W", ""),
                    "power_modelled_W": r.get("power_W_per_device")})
    return out


def speedup_rows(result: list[dict]) -> list[dict]:
    """Top-θ end-to-end speedup over SDPA dense at each decode point: measured and predicted."""
    by = {(r["model"], r["batch"], r["context"], r["graphs"], r["attention"] == "sdpa"): r
          for r in result if r["phase"] == "decode"}
    out = []
    for (m, b, n, g, dense), r in sorted(by.items()):
        if dense or (m, b, n, g, True) not in by:
            continue
        d = by[(m, b, n, g, True)]
        meas, pred = d["measured_ms"] / r["measured_ms"], d["predicted_ms"] / r["predicted_ms"]
        out.append({"model": m, "batch": b, "context": n, "graphs": g, "measured": meas, "predicted": pred,
                    "error": pred / meas - 1})
    return out


def groups(result: list[dict]) -> dict[str, list[dict]]:
    """The points by kind: decode eager, decode with CUDA graphs, prefill."""
    return {"decode eager": [r for r in result if r["phase"] == "decode" and r["graphs"] != "True"],
            "decode CUDA graphs": [r for r in result if r["phase"] == "decode" and r["graphs"] == "True"],
            "prefill": [r for r in result if r["phase"] == "prefill"]}


def summary(rows: list[dict]) -> str:
    errors = [abs(r["error"]) for r in rows]
    return f"{len(rows)} points: median |error| {statistics.median(errors):.1%}, max {max(errors):.1%}"


def report(result: list[dict], micro: list[dict], device) -> str:
    lines = ["| model | phase | B | N / prompt | attention | graphs | measured ms | predicted ms | error | kernels "
             "measured / modelled |", "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['phase']} | {r['batch']} | {r['context']} | {r['attention']} | {r['graphs']} | "
              f"{r['measured_ms']:.3f} | {r['predicted_ms']:.3f} | {r['error']:+.1%} | "
              f"{r['kernels_measured'] or '-'} / {r['kernels_modelled']} |" for r in result]
    lines += ["", f"All: {summary(result)}"] + [f"- {kind}: {summary(rows)}" for kind, rows in groups(result).items()]
    speed = speedup_rows(result)
    lines += ["", "| model | B | N | graphs | Top-θ speedup measured | predicted | error |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {s['model']} | {s['batch']} | {s['context']} | {s['graphs']} | {s['measured']:.3f} | "
              f"{s['predicted']:.3f} | {s['error']:+.1%} |" for s in speed]
    for graphs, label in (("True", "CUDA graphs"), ("False", "eager")):
        lines += ["", f"Top-θ speedup, {label}: {summary([s for s in speed if s['graphs'] == graphs])}"]
    powered = [r for r in result if r["power_measured_W"] not in ("", None)]
    if powered:
        lines += ["", "| model | B | N | attention | board power measured W | modelled W (idle + dynamic) |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['batch']} | {r['context']} | {r['attention']} | "
                  f"{float(r['power_measured_W']):.0f} | {r['power_modelled_W']:.0f} |" for r in powered]
    step = device.step
    lines += ["", "| microbenchmark | measured | device file |", "|---|---|---|"]
    lines += [f"| {m['bench']} | {float(m['value']):.4g} {m['unit']} | "
              + {"gemm_8192_bf16_tflops": f"{device.compute.matrix_TFLOPS * step.matrix_efficiency_fraction:.4g} "
                                          "(matrix_TFLOPS × step.matrix_efficiency_fraction)",
                 "eager_dispatch_us": f"{step.eager_dispatch_us:g} (step.eager_dispatch_us)",
                 "graph_kernel_us": f"{step.graph_launch_gap_us + device.memory.hbm_latency_ns / 1e3:.4g} "
                                    "(step.graph_launch_gap_us + memory.hbm_latency_ns)"}.get(
                  m["bench"], f"{device.memory.hbm_bandwidth_GBps * step.gemv_bandwidth_fraction:.0f} GB/s "
                              "(hbm_bandwidth_GBps × step.gemv_bandwidth_fraction)") + " |" for m in micro]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--hardware", default="h200")
    ap.add_argument("--out", type=Path, help="also write the table here (Markdown)")
    args = ap.parse_args()
    device = load_device(args.hardware)
    with open(args.dir / "model_step.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    micro_path = args.dir / "model_step_micro.csv"
    micro = list(csv.DictReader(open(micro_path, newline=""))) if micro_path.exists() else []
    text = report(table(rows, device), micro, device)
    print(text)
    if args.out:
        args.out.write_text(f"Simulator vs {args.dir} ({args.hardware}); `python sims/validation/"
                            f"compare_model_step.py {' '.join(sys.argv[1:])}`\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
