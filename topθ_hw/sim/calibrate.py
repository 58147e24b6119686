"""The H100 validation harness: measured points, the simulator's predictions, and the fit of the
few global per-SM parameters no datasheet gives.

    .venv/bin/python -m topθ_hw.sim.calibrate              # errors of the shipped h100.toml
    .venv/bin/python -m topθ_hw.sim.calibrate --fit half   # refit on microbenchmarks + N in {4096, 16384}

Points come from ``sims/validation/`` (GPU helper and microbench_sm.py): every decode-attention
timing with its own launch configuration (split size, tile, warps, stages) from the provenance
log, resident CTAs per SM from the compiled kernels' registers and shared memory, and the merge
kernel's measured bodies. Torch SDPA is FlashAttention-2: its own split heuristic, 128-key tiles,
2 CTAs per SM (its 246 registers and 80 KiB of shared memory, torch profiler), and a combine
that walks the splits one L2 round trip at a time.

The fit (``--fit``) adjusts ``FITTED`` (per-tile compute of the kernel variants, issue sharing,
per-CTA overhead, one CTA's transfer rate) by Nelder–Mead on the squared log error of the lone-
and multi-CTA scans of the partial kernel (h100_microbench_sm.csv) plus, with ``half``, the
decode points at contexts 4096 and 16384; the others stay held out.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from topθ_hw.sim.hardware import Device, load_device
from topθ_hw.sim.simulate import fa2_split_tokens, simulate_call
from topθ_hw.sim.tiles import KernelOptions
from topθ_hw.sim.workload import AttentionCall, kernel_workload

VALIDATION = Path(__file__).resolve().parents[2] / "sims" / "validation"
FRACTIONS = (1.0, 0.5, 0.3, 0.2, 0.1, 0.05)  # the sweep's nominal kept fractions (provenance keys)
FA2 = KernelOptions(style="fa2", block_keys=128, warps=4, stages=2, ctas_per_unit=2)
FITTED = ("build.issue_fraction", "build.tile_compute_ns", "build.wide_tile_compute_ns",
          "build.masked_tile_compute_ns", "build.row_mask_latency_ns", "build.wide_masked_tile_compute_ns",
          "build.wide_row_mask_latency_ns", "memory.unit_bandwidth_GBps", "build.issue_contention",
          "build.cta_overhead_ns")


@dataclasses.dataclass
class Point:
    """One measured time and how to predict it."""
    label: str
    kernel: str          # dense, vrow, page16, page64, sdpa, or scan-<kind>
    batch: int
    context: int
    fraction: float
    measured_s: float
    options: KernelOptions
    split_tokens: int
    q_heads: int = 32
    kv_heads: int = 8
    partial_only: bool = False
    call: AttentionCall | None = None

    @property
    def fetch(self) -> str:
        return {"vrow": "row", "page16": "page16", "page64": "page64"}.get(self.kernel.removeprefix("scan-"), "row")

    @property
    def method(self) -> str:
        return "dense" if self.kernel.removeprefix("scan-") in ("dense", "sdpa") else "toptheta"


def structure(valdir: Path = VALIDATION) -> dict:
    return json.loads((valdir / "h100_microbench_sm.provenance.json").read_text())["partial_kernel_structure"]


def occupancy(struct: dict, masked: bool, cfg: dict) -> int:
    key = (f"masked={int(masked)} block_n={cfg['block_n']} warps={cfg['num_warps']} "
           f"stages={cfg['num_stages']} chunk=2048")
    return int(struct[key]["ctas_per_sm"])


def merge_table(valdir: Path = VALIDATION) -> tuple:
    """Measured merge bodies: (rows, s_pad, ns) = merge_hot time less an empty launch, same session."""
    rows = list(csv.DictReader(open(valdir / "h100_microbench_sm.csv", newline="")))
    empty = next(float(r["time_s"]) for r in rows if r["bench"] == "empty_launch_hot")
    out = []
    for r in rows:
        if r["bench"] == "merge_hot":
            p = dict(kv.split("=") for kv in r["params"].split(";"))
            out.append((int(p["rows"]), max(16, 2 ** math.ceil(math.log2(int(p["splits"])))),
                        (float(r["time_s"]) - empty) * 1e9))
    return tuple(out)


def options(cfg: dict, masked: bool, struct: dict, merges: tuple) -> KernelOptions:
    return KernelOptions(block_keys=cfg["block_n"], warps=cfg["num_warps"], stages=cfg["num_stages"],
                         ctas_per_unit=occupancy(struct, masked, cfg), reduce_ns=merges, mask="precomputed")


def decode_points(valdir: Path = VALIDATION) -> list[Point]:
    """The 160 decode-attention timings with their launch configurations."""
    log = json.loads((valdir / "h100_decode_attention.provenance.json").read_text())["checks_and_configs"]
    struct, merges = structure(valdir), merge_table(valdir)
    points = []
    for r in csv.DictReader(open(valdir / "h100_decode_attention.csv", newline="")):
        B, N, f = int(r["batch"]), int(r["context"]), float(r["kept_v_fraction"])
        kind = r["kernel"] + (r["page_size"] if r["kernel"] == "page" else "")
        label = f"{kind} B={B} N={N} f={f:.3g}"
        if kind == "sdpa":
            points.append(Point(label, kind, B, N, 1.0, float(r["time_s"]), FA2,
                                fa2_split_tokens(B, int(r["kv_heads"]), N, 132)))
            continue
        nominal = min(FRACTIONS, key=lambda x: abs(x - f))
        key = f"dense B={B} N={N}" if kind == "dense" else f"{kind} B={B} N={N} f={nominal}"
        cfg = log[key]["config"]
        points.append(Point(label, kind, B, N, f, float(r["time_s"]), options(cfg, kind != "dense", struct, merges),
                            cfg["chunk"]))
    return points


def scan_points(valdir: Path = VALIDATION) -> list[Point]:
    """microbench_sm.py's partial-kernel scans: one KV stream split over 1..528 CTAs, no merge."""
    struct = structure(valdir)
    points = []
    for r in csv.DictReader(open(valdir / "h100_microbench_sm.csv", newline="")):
        if r["bench"] != "partial_scan":
            continue
        p = dict(kv.split("=") for kv in r["params"].split(";"))
        kind = p["kernel"] + (p["page"] if p["kernel"] == "page" else "")
        cfg = {"block_n": int(p["block_n"]), "num_warps": int(p["warps"]), "num_stages": int(p["stages"])}
        ctas, chunk = int(p["ctas"]), int(p["chunk"])
        points.append(Point(f"scan {kind} f={float(p['kept']):.3g} ctas={ctas} chunk={chunk} {cfg}", f"scan-{kind}", 1,
                            ctas * chunk, float(p["kept"]), float(r["time_s"]),
                            options(cfg, kind != "dense", struct, ()), chunk, 4, 1, partial_only=True))
    return points


def predict_s(point: Point, device: Device) -> float:
    """Simulated time of one point (SimPy). Workloads are built once and kept on the point."""
    if point.call is None:
        point.call = kernel_workload(point.batch, point.context, point.q_heads, point.kv_heads, 128, "bf16",
                                     point.fraction, point.fetch, point.method, split_tokens=point.split_tokens,
                                     granule_bytes=device.memory.sector_bytes)
        if point.partial_only:
            point.call.passes = point.call.passes[:1]
    return simulate_call(point.call, device, point.options)["time_s"]


def errors(points: list[Point], device: Device) -> np.ndarray:
    return np.array([predict_s(p, device) / p.measured_s - 1 for p in points])


def with_values(device: Device, values: dict) -> Device:
    sections = {}
    for key, value in values.items():
        section, name = key.split(".")
        sections.setdefault(section, {})[name] = value
    return dataclasses.replace(device, **{s: dataclasses.replace(getattr(device, s), **v) for s, v in sections.items()})


def nelder_mead(f, x0: np.ndarray, iterations: int) -> np.ndarray:
    """Plain Nelder–Mead (no SciPy in the environment), relative initial steps of 20 %."""
    pts = [x0] + [x0 + np.eye(len(x0))[i] * (0.2 * abs(x0[i]) + 1e-3) for i in range(len(x0))]
    vals = [f(p) for p in pts]
    for _ in range(iterations):
        order = np.argsort(vals)
        pts, vals = [pts[i] for i in order], [vals[i] for i in order]
        centre = np.mean(pts[:-1], axis=0)
        reflected = centre + (centre - pts[-1])
        fr = f(reflected)
        if fr < vals[0]:
            expanded = centre + 2 * (centre - pts[-1])
            fe = f(expanded)
            pts[-1], vals[-1] = (expanded, fe) if fe < fr else (reflected, fr)
        elif fr < vals[-2]:
            pts[-1], vals[-1] = reflected, fr
        else:
            contracted = centre + 0.5 * (pts[-1] - centre)
            fc = f(contracted)
            if fc < vals[-1]:
                pts[-1], vals[-1] = contracted, fc
            else:
                pts = [pts[0] + 0.5 * (p - pts[0]) for p in pts]
                vals = [f(p) for p in pts]
    return pts[int(np.argmin(vals))]


def fit(device: Device, train: list[Point], scans: list[Point], iterations: int) -> dict:
    x0 = np.array([getattr(getattr(device, k.split(".")[0]), k.split(".")[1]) for k in FITTED], dtype=float)

    def loss(x):
        if x[0] <= 0 or x[0] > 1 or np.any(x < 0):
            return 1e9
        d = with_values(device, dict(zip(FITTED, x)))
        e_train = np.log1p(errors(train, d)) if train else np.zeros(1)
        return float(np.mean(e_train ** 2) + 0.3 * np.mean(np.log1p(errors(scans, d)) ** 2))
    return dict(zip(FITTED, nelder_mead(loss, x0, iterations)))


def summary(points: list[Point], err: np.ndarray) -> list[str]:
    """Median and max |error| by kernel and batch."""
    lines = []
    groups: dict = {}
    for p, e in zip(points, err):
        groups.setdefault((p.kernel, p.batch), []).append(abs(e))
    for (kernel, batch), e in sorted(groups.items()):
        lines.append(f"{kernel:7s} B={batch:2d}: n={len(e):2d} median {np.median(e):6.1%} max {max(e):6.1%}")
    a = np.abs(err)
    lines.append(f"all: n={len(a)} median {np.median(a):.1%} max {a.max():.1%} within 10 %: {np.mean(a <= 0.10):.0%}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hardware", default="h100")
    ap.add_argument("--fit", choices=["micro", "half", "all"], help="refit FITTED on microbenchmarks (+ kernel points)")
    ap.add_argument("--iterations", type=int, default=300)
    args = ap.parse_args(argv)
    device = load_device(args.hardware)
    points, scans = decode_points(), scan_points()
    if args.fit:
        train = {"micro": [], "half": [p for p in points if p.context in (4096, 16384) and p.kernel != "sdpa"],
                 "all": [p for p in points if p.kernel != "sdpa"]}[args.fit]
        values = fit(device, train, scans, args.iterations)
        device = with_values(device, values)
        for k, v in values.items():
            print(f"{k} = {v:.4g}")
    err = errors(points, device)
    print("\n".join(summary(points, err)))
    held = [i for i, p in enumerate(points) if p.context not in (4096, 16384) or p.kernel == "sdpa"]
    print("held out (N = 8192, 32768, and SDPA):", summary([points[i] for i in held], err[held])[-1])
    print("scans:", summary(scans, errors(scans, device))[-1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
