"""Figures from measured data: thresholds θ(n) and the replay engine's statistics on a trace."""

from __future__ import annotations

import numpy as np
import pandas as pd

from topθ_hw.report.figure import Figure, files_named, legend_below, png_bytes, readable_log, subplots, ticks_at

PAGE_SIZES = (1, 8, 16, 32, 64, 128)


def method_label(meta: dict) -> str:
    params = meta.get("params") or {}
    k = params.get("k")
    if k is None and isinstance(params.get("layer_k"), list):  # Top-θ: k per layer; name the common one
        k = max(set(params["layer_k"]), key=params["layer_k"].count)
    return f"{meta.get('method', '?')}" + (f" k={k}" if k is not None else "")


def _provenance(sources) -> str:
    traces = sorted({str(s.meta.get("trace", "?")) for s in sources})
    return f"replay engine on trace {', '.join(traces)}; statistics files {files_named(sources)}"


def _per_source(sources, level: str) -> pd.DataFrame:
    frames = []
    for s in sources:
        df = s.frame[s.frame["level"] == level].copy()
        df["method"] = method_label(s.meta)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def _ratio(df: pd.DataFrame, by: list[str], num: str, den: str, name: str) -> pd.DataFrame:
    g = df.groupby(by, as_index=False)[[num, den]].sum()
    g[name] = g[num] / g[den]
    return g


def _phase_panels(table: pd.DataFrame, x: str, xlabel: str, xscale: str = "linear"):
    """One panel per phase, one line per method, kept fraction on a log axis."""
    phases = sorted(table["phase"].unique())
    fig, axes = subplots(len(phases))
    for ax, phase in zip(axes, phases):
        for method, t in table[table["phase"] == phase].groupby("method"):
            ax.plot(t[x], t["kept_fraction"], marker=".", label=method)
        ax.set(title=phase, xlabel=xlabel, ylabel="kept / dense attention elements", xscale=xscale,
               yscale="log")
        readable_log(ax)
        if xscale == "log":
            ticks_at(ax, table[x].unique())
    legend_below(fig, axes)
    return fig


def kept_by_layer(sources) -> Figure:
    heads = _per_source(sources, "head")
    table = _ratio(heads, ["method", "phase", "layer"], "kept_elements", "dense_elements", "kept_fraction")
    return Figure("kept_fraction_by_layer", "Kept attention elements per layer and phase",
                  "Sum over heads, sequences and rows of kept elements divided by the dense causal count. "
                  "Rows with n ≤ k are dense and included, as in the paper's ratios.",
                  "measured", _provenance(sources), png_bytes(_phase_panels(table, "layer", "layer")), table)


def kept_by_length(sources) -> Figure:
    heads = _per_source(sources, "head")
    heads["length_bin"] = 2 ** np.ceil(np.log2(heads["context_len"].clip(lower=1))).astype(int)
    table = _ratio(heads, ["method", "phase", "length_bin"], "kept_elements", "dense_elements",
                   "kept_fraction")
    fig = _phase_panels(table, "length_bin", "causal length n (bin upper edge)", xscale="log")
    return Figure("kept_fraction_by_length", "Kept attention elements against sequence length",
                  "Prefill rows binned by the tile's last row (power-of-two bins); decode rows by context "
                  "length N. Longer rows keep a smaller fraction because Top-θ and top-k keep about k.",
                  "measured", _provenance(sources), png_bytes(fig), table)


def occupancy(sources) -> Figure:
    groups = _per_source(sources, "group")
    decode = groups[groups["phase"] == "decode"]
    rows = _ratio(decode, ["method", "layer"], "kept_v_rows", "v_rows_total", "v_row_occupancy")
    pages = []
    for p in PAGE_SIZES:
        t = _ratio(decode, ["method"], f"pages_needed_{p}", f"pages_total_{p}", "page_occupancy")
        pages.append(t[["method", "page_occupancy"]].assign(page_size=p))
    pages = pd.concat(pages, ignore_index=True)
    fig, (ax_rows, ax_pages) = subplots(2, width=5.0)
    for method, t in rows.groupby("method"):
        ax_rows.plot(t["layer"], t["v_row_occupancy"], marker=".", label=method)
    ax_rows.set(title="decode: V rows read per KV group", xlabel="layer", ylabel="fraction of V rows")
    for method, t in pages.groupby("method"):
        ax_pages.plot(t["page_size"], t["page_occupancy"], marker="o", label=method)
    ax_pages.set(title="decode: KV pages holding a needed row", xlabel="page size (tokens)",
                 ylabel="fraction of pages", xscale="log")
    ticks_at(ax_pages, pages["page_size"].unique())
    legend_below(fig, (ax_rows, ax_pages))
    table = pd.concat([rows.assign(page_size=1), pages], ignore_index=True)
    return Figure("v_row_and_page_occupancy", "V-row and page occupancy in decode",
                  "Left: V rows needed per KV group (union over its query heads) over rows stored. Right: "
                  "pages of each size holding at least one needed row; a page-granular kernel reads these.",
                  "measured", _provenance(sources), png_bytes(fig), table)


def theta_curves(source) -> Figure | None:
    """θ(n) per layer (one panel each) and head (one line each) from a threshold artifact."""
    theta, lengths = source.arrays["theta"], source.arrays["lengths"]
    # At most ~100 lengths per curve, log-spaced: the curves are smooth and 30 × H lines add up.
    pick = np.unique(np.geomspace(1, len(lengths), 100).astype(int) - 1)
    theta, lengths = theta[:, :, pick], lengths[pick]
    n_heads = theta.shape[1]
    # Only layers that were calibrated: a trace may hold a subset of the model's layers.
    layers = [layer for layer in range(theta.shape[0]) if np.isfinite(theta[layer]).any()]
    fig, axes = subplots(len(layers), width=2.6, height=2.0, cols=6)
    records = []
    for layer, ax in zip(layers, axes):
        for head in range(n_heads):
            ok = np.isfinite(theta[layer, head])
            ax.plot(lengths[ok], theta[layer, head][ok], lw=0.8)
            records += [(layer, head, int(n), float(t)) for n, t in zip(lengths[ok], theta[layer, head][ok])]
        ax.set_title(f"layer {layer}", fontsize=8)
        ax.tick_params(labelsize=6)
    meta = source.meta
    return Figure("theta_curves", "Calibrated thresholds θ(n) per layer and head",
                  f"One panel per layer, one line per query head; x: causal length n, y: θ "
                  f"({meta.get('placement', '?')}-softmax units). Lengths with n ≤ k have no threshold.",
                  "measured", f"calibration artifact {source.path} "
                  f"(model {meta.get('model_id', '?')}, σ = {meta.get('sigma', '?')})",
                  png_bytes(fig), pd.DataFrame(records, columns=["layer", "head", "n", "theta"]))
