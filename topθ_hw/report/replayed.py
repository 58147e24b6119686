"""Figures from ``toptheta simulate`` results: whole-model steps simulated on a trace's real masks."""

from __future__ import annotations

import pandas as pd

from topθ_hw.report.figure import Figure, files_named, legend_below, png_bytes, subplots
from topθ_hw.report.measured import method_label


def _frame(sources) -> pd.DataFrame:
    frames = []
    for s in sources:
        df = s.frame.copy()
        df["method"] = method_label(s.meta) + f" ({s.meta.get('fetch', 'row')})"
        df["device_file"] = s.meta.get("device_file", "?")
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def decode_steps(sources) -> Figure | None:
    """Mean whole-model decode step per device and method, and its split over layers."""
    df = _frame(sources)
    decode = df[df["phase"] == "decode"]
    if decode.empty:
        return None
    steps = decode[decode["scope"] == "step"].groupby(["device", "method"], as_index=False)[
        ["time_s", "bytes_total", "energy_j"]].mean()
    layers = decode[decode["scope"] == "layer"].groupby(["device", "method", "layer"], as_index=False)[
        "time_s"].mean()
    fig, (ax_step, ax_layer) = subplots(2, width=5.5)
    (steps.pivot_table(index="device", columns="method", values="time_s") * 1e6).plot.bar(ax=ax_step, rot=0)
    ax_step.set(title="whole-model decode step", ylabel="latency (µs)", xlabel="")
    for (device, method), t in layers.groupby(["device", "method"]):
        ax_layer.plot(t["layer"], t["time_s"] * 1e6, marker=".", label=f"{device} {method}")
    ax_layer.set(title="per layer, mean over steps", xlabel="layer", ylabel="latency (µs)")
    legend_below(fig, (ax_step, ax_layer))
    devices = sorted(set(df["device_file"]))
    return Figure("decode_step_on_real_masks", "Decode steps simulated on the trace's real masks",
                  "Each decode step of the replayed trace, every layer and KV group with its actual V-row set "
                  "(not an average), simulated on the device; bars: the mean whole-model step.", "simulated",
                  f"topθ_hw.sim on device files {', '.join(devices)}; masks from the engine statistics named in "
                  f"each file's metadata; results {files_named(sources)}", png_bytes(fig), steps)
