"""The hardware side of the comparison: replay every setting on a trace, simulate its decode steps.

Each setting is replayed by the engine on the trace's evaluation sequences (Top-θ calibrated on
the others, pre-softmax, at the setting's k), decode rows only except H2O, whose cache evolves
from row 0. Every ``step_every``-th decode step is simulated on each device from its real
per-step masks; the table holds the mean whole-step (all replayed layers) bytes and time.
"""

from __future__ import annotations

import pandas as pd

from topθ_hw.compare.methods import Entry, Options, engine_for
from topθ_hw.errors import UserError

COST_COLUMNS = ["time_s", "bytes_k", "bytes_v", "bytes_scores", "bytes_other", "bytes_total", "energy_j"]


def split_sequences(trace, calibrate_on: list[str] | None, evaluate_on: list[str] | None) -> tuple[list, list]:
    calib = calibrate_on or trace.sequences[:1]
    evaluate = evaluate_on or [s for s in trace.sequences if s not in calib]
    missing = [s for s in calib + evaluate if s not in trace.sequences]
    if missing:
        raise UserError(f"{trace.path}: sequences {missing} not in {trace.sequences}")
    if not evaluate:
        raise UserError(f"{trace.path}: no sequence left to evaluate on after calibrating on {calib}")
    return calib, evaluate


def trace_costs(trace, entries: list[Entry], opts: Options, devices: list, layers=None, calibrate_on=None,
                evaluate_on=None, step_every: int = 8, sigma: float = 0.1, progress=None) -> pd.DataFrame:
    """One row per (setting, device): measured decode kept fractions and simulated per-step costs."""
    from topθ_hw.engine.calibrate import calibrate
    from topθ_hw.engine.run import replay_trace

    calib, evaluate = split_sequences(trace, calibrate_on, evaluate_on)
    ks = sorted({e.k for e in entries if e.family.startswith("toptheta")})
    thresholds = {k: calibrate(trace, calib, k, None, "pre", sigma) for k in ks}
    rows = []
    for entry in progress(entries, desc=f"replay + simulate {trace.path.name}", unit="setting") \
            if progress else entries:
        method = engine_for(entry, opts, thresholds)
        frame, meta = replay_trace(trace, method, evaluate, layers, decode_only=entry.family != "h2o")
        rows += setting_rows(entry, frame, meta, devices, step_every, str(trace.path))
    return pd.DataFrame(rows)


def setting_rows(entry: Entry, frame: pd.DataFrame, meta: dict, devices, step_every: int, trace: str) -> list[dict]:
    from topθ_hw.sim.stats import simulate_stats

    decode = frame[frame["phase"] == "decode"]
    heads, groups = decode[decode["level"] == "head"], decode[decode["level"] == "group"]
    steps = sorted(decode["step"].unique())[::step_every]
    sampled = decode[decode["step"].isin(steps)]
    base = {"setting": entry.label, "family": entry.family, "k": entry.k or -1, "p": entry.p or float("nan"),
            "trace": trace, "sequences": ",".join(meta["sequences"]), "layers": int(decode["layer"].nunique()),
            "context_mean": float(groups["context_len"].mean()), "steps_simulated": len(steps),
            "trace_kept_v_fraction": groups["kept_v_rows"].sum() / groups["v_rows_total"].sum(),
            "trace_kept_element_fraction": heads["kept_elements"].sum() / heads["dense_elements"].sum(),
            "trace_rel_l2_error": float(heads["rel_l2_error"].mean())}
    out = []
    for device in devices:
        sim = simulate_stats(sampled, meta, device)
        step = sim[sim["scope"] == "step"]
        out.append({**base, "device": device.name, "fetch": step["fetch"].iloc[0],
                    **{c: float(step[c].mean()) for c in COST_COLUMNS}})
    return out
