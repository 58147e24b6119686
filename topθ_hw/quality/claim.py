"""The claim under test: the sparsest setting whose quality loss stays within tolerance."""

from __future__ import annotations

import pandas as pd


def sparsest_within(summary: pd.DataFrame, ppl_tol: float = 0.01, disagree_tol: float = 0.01,
                    fraction: str = "kept_v_row_fraction") -> pd.Series | None:
    """The row with the smallest ``fraction`` among sparse settings with perplexity increase ≤ ppl_tol
    and next-token disagreement with dense ≤ disagree_tol; None if no setting qualifies."""
    ok = summary[(summary["family"] != "dense") & (summary["ppl_increase"] <= ppl_tol)
                 & (summary["disagreement"] <= disagree_tol)]
    return None if ok.empty else ok.loc[ok[fraction].idxmin()]
