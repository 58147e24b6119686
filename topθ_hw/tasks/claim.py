"""The claim table: where "accuracy within 1 % at ≥ 3× fewer decode V rows" holds, per criterion.

    python -m topθ_hw.tasks.claim DIR      # DIR holding ppl-*/quality.csv, humaneval/, passkey*/

Criteria: perplexity increase ≤ 1 %; next-token disagreement with dense ≤ 1 %; HumanEval pass@1 and
passkey retrieval within 1 point of dense. Reduction: 1 / kept decode V-row fraction per KV group,
from the same run. Writes DIR/claim.md and DIR/claim.csv.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

TOLERANCE, REDUCTION = 0.01, 3.0


def quality_rows(path: Path) -> list[dict]:
    q = pd.read_csv(path)
    q = q[q["family"] != "dense"]
    length = f"{int(q['window'].iloc[0])} (rows {int(q['decode_from'].iloc[0])}..)"
    rows = []
    for criterion, column, change in (("perplexity", "ppl_increase", lambda r: r["ppl_increase"]),
                                      ("next-token agreement", "disagreement", lambda r: -r["disagreement"])):
        for _, r in q.iterrows():
            rows.append(row(criterion, length, r["setting"], r[column], change(r), r["kept_v_row_fraction"],
                            int(r["tokens"])))
    return rows


def pooled_passkey(paths: list[Path]) -> pd.DataFrame:
    """Passkey summaries of several runs pooled per (setting, length): trials, correct answers and
    V rows are summed, so each length gets one row however many runs tried it."""
    # the Parquet beside each CSV holds the V-row counts at full precision
    s = pd.concat([pd.read_parquet(p.with_suffix(".parquet")) if p.with_suffix(".parquet").is_file()
                   else pd.read_csv(p) for p in paths], ignore_index=True)
    pooled = s.groupby(["setting", "family", "length"], sort=False, as_index=False)[
        ["n", "correct", "kept_v_rows", "v_rows"]].sum()
    pooled["accuracy"] = pooled["correct"] / pooled["n"]
    dense = pooled[pooled["family"] == "dense"].set_index("length")["accuracy"]
    pooled["accuracy_change"] = pooled["accuracy"] - pooled["length"].map(dense)
    pooled["kept_v_row_fraction"] = pooled["kept_v_rows"] / pooled["v_rows"].where(pooled["v_rows"] > 0)
    return pooled


def task_rows(summary: pd.DataFrame, criterion: str) -> list[dict]:
    s = summary[summary["family"] != "dense"]
    return [row(criterion, str(r.get("length", "HumanEval prompts")), r["setting"], r["accuracy"],
                r["accuracy_change"], r["kept_v_row_fraction"], int(r["n"])) for _, r in s.iterrows()]


def row(criterion, length, setting, value, change, fraction, n) -> dict:
    """``change``: signed quality change, negative = worse (−perplexity increase for perplexity)."""
    loss = 0.0 - change if criterion != "perplexity" else change  # 0.0 - x: never a minus zero
    reduction = 1.0 / max(fraction, 1e-12)
    return {"criterion": criterion, "length": length, "setting": setting, "value": value, "loss": loss,
            "kept_v_row_fraction": fraction, "v_row_reduction": reduction, "n": n,
            "within_1pct": loss <= TOLERANCE, "at_3x": reduction >= REDUCTION,
            "claim_holds": loss <= TOLERANCE and reduction >= REDUCTION}


def claim_table(root: Path) -> pd.DataFrame:
    rows = []
    for q in sorted(root.glob("ppl-*/quality.csv")):
        rows += quality_rows(q)
    if (root / "humaneval/humaneval_summary.csv").is_file():
        rows += task_rows(pd.read_csv(root / "humaneval/humaneval_summary.csv"), "HumanEval pass@1")
    passkey = sorted(root.glob("passkey*/passkey_summary.csv"))
    if passkey:
        rows += task_rows(pooled_passkey(passkey), "passkey retrieval")
    t = pd.DataFrame(rows)
    if t.empty:
        raise SystemExit(f"{root}: no ppl-*/quality.csv, humaneval/humaneval_summary.csv or passkey*/passkey_summary.csv")
    # criteria in the order found, contexts ascending within each (a directory name sorts 16k before 8k)
    tokens = pd.to_numeric(t["length"].str.extract(r"^(\d+)", expand=False), errors="coerce").fillna(0)
    order = {c: i for i, c in enumerate(dict.fromkeys(t["criterion"]))}
    return (t.assign(_c=t["criterion"].map(order), _n=tokens).sort_values(["_c", "_n"], kind="stable")
            .drop(columns=["_c", "_n"]).reset_index(drop=True))


def markdown(t: pd.DataFrame) -> str:
    lines = ["| criterion | context (tokens) | setting | loss vs dense | decode V rows kept | n | within 1 % | ≥ 3× | claim |",
             "|---|---|---|---|---|---|---|---|---|"]
    for _, r in t.iterrows():
        value = 100 * r["loss"] + 0.0  # + 0.0: no "-0.00" for a loss of minus zero
        loss = f"{value:+.2f} %" if r["criterion"] == "perplexity" else f"{value:+.2f} pt"
        yes = {True: "yes", False: "no"}
        lines.append(f"| {r['criterion']} | {r['length']} | {r['setting']} | {loss} | {r['kept_v_row_fraction']:.3f} "
                     f"({r['v_row_reduction']:.1f}×) | {r['n']} | {yes[r['within_1pct']]} | {yes[r['at_3x']]} | "
                     f"**{yes[r['claim_holds']]}** |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    root = Path((argv or sys.argv[1:] or ["sims/results/quality-scale"])[0])
    from topθ_hw.tables import write_csv_and_markdown

    t = claim_table(root)
    write_csv_and_markdown(t, markdown(t), root, "claim")
    print(markdown(t))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
