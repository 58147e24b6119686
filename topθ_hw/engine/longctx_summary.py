"""One table across models from the long-context tables: ``python -m topθ_hw.engine.longctx_summary DIR``.

Reads every ``DIR/<model>.csv`` written by :mod:`topθ_hw.engine.longctx_run` and writes
``DIR/summary.md`` / ``summary.csv``: per model, k and context, Top-θ (calibrated on the longest
calibration prefix, ``logfit`` past it) beside top-k at the same k. Every number is a cell of the
model's own CSV; nothing is recomputed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

COLUMNS = {"decode_v_rows_kept": "decode V rows", "pages16_kept": "pages 16", "pages64_kept": "pages 64",
           "prefill_elements_kept": "prefill elements", "kept_per_row_p50": "kept per row p50",
           "kept_per_row_p99": "kept per row p99"}


def model_tables(root: Path) -> dict[str, pd.DataFrame]:
    """``<model>.csv`` files of ``root`` (not the ``-stretch`` comparisons, not the summary itself)."""
    paths = [p for p in sorted(root.glob("*.csv")) if not p.stem.endswith("-stretch") and p.stem != "summary"]
    if not paths:
        raise SystemExit(f"{root}: no long-context tables (<model>.csv from topθ_hw.engine.longctx_run)")
    return {p.stem: pd.read_csv(p) for p in paths}


def summary(tables: dict[str, pd.DataFrame], ks=(64, 128)) -> pd.DataFrame:
    rows = []
    for model, t in tables.items():
        theta = t[(t.method == "toptheta") & (t.n_cal == t.n_cal.max()) & (t.extrapolate == "logfit")]
        topk = t[t.method == "topk"].set_index(["k", "context"])
        for _, r in theta[theta.k.isin(ks)].sort_values(["k", "context"]).iterrows():
            row = {"model": model, "k": int(r.k), "context": int(r.context), "calibrated on": r.calibration}
            row.update({f"Top-θ {name}": r[col] for col, name in COLUMNS.items()})
            row["reduction vs dense"] = 1.0 / r.decode_v_rows_kept
            row["top-k decode V rows"] = topk.loc[(r.k, r.context), "decode_v_rows_kept"]
            row["top-k pages 16"] = topk.loc[(r.k, r.context), "pages16_kept"]
            rows.append(row)
    return pd.DataFrame(rows)


def markdown(s: pd.DataFrame) -> str:
    head = ["model", "k", "context", "Top-θ decode V rows (× fewer)", "top-k decode V rows", "Top-θ pages 16",
            "Top-θ pages 64", "Top-θ prefill elements", "kept per row p50 / p99"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in s.iterrows():
        lines.append(f"| {r.model} | {r.k} | {r.context:,} | {r['Top-θ decode V rows']:.3f} "
                     f"({r['reduction vs dense']:.1f}×) | {r['top-k decode V rows']:.3f} | {r['Top-θ pages 16']:.3f} | "
                     f"{r['Top-θ pages 64']:.3f} | {r['Top-θ prefill elements']:.3f} | "
                     f"{r['Top-θ kept per row p50']:.0f} / {r['Top-θ kept per row p99']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    root = Path((argv or sys.argv[1:] or ["sims/results/longctx"])[0])
    from topθ_hw.tables import write_csv_and_markdown

    s = summary(model_tables(root))
    write_csv_and_markdown(s, markdown(s), root, "summary")
    print(markdown(s))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
