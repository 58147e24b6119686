"""The quality side of the comparison: every setting live inside the model on held-out text.

Uses the quality package's teacher-forced evaluation (perplexity, next-token agreement and
KL(dense ‖ setting) against the dense model). Top-θ is calibrated live on the calibration texts
(pre-softmax, the same k), the others need no calibration.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from topθ_hw.compare.methods import Entry, Options, live_for
from topθ_hw.quality.settings import Setting, Variant, parse_variant


@dataclass(frozen=True)
class LabelledSetting(Setting):
    """A quality Setting whose label is the comparison's (top-p settings differ by p, not k)."""

    tag: str = ""

    @property
    def label(self) -> str:
        return self.tag


def variant_of(entry: Entry, opts: Options) -> Variant:
    if entry.family == "toptheta":
        return Variant("toptheta", placement="pre")
    if entry.family == "toptheta+comp":
        return parse_variant("pre+" + opts.compensation)
    return Variant(entry.family)


def live_quality(loaded, calibration_text: dict[str, str], ids, entries: list[Entry], opts: Options,
                 window: int, decode_from: int | None, sigma: float = 0.1) -> pd.DataFrame:
    """The quality summary, one row per setting (column ``setting`` = the entry's label)."""
    from topθ_hw.quality.calibrate import calibrate_live
    from topθ_hw.quality.evaluate import evaluate
    from topθ_hw.quality.thresholds import LiveThresholds

    ks = sorted({e.k for e in entries if e.family.startswith("toptheta")})
    tables = calibrate_live(loaded, calibration_text, ks, None, ("pre",), sigma, window) if ks else {}
    live_tables = {k: LiveThresholds(tables[(k, "pre")]) for k in ks}
    settings = [LabelledSetting(variant_of(e, opts), e.k, live_for(e, opts, live_tables),
                                live_tables.get(e.k) if e.family.startswith("toptheta") else None, tag=e.label)
                for e in entries]
    summary, _ = evaluate(loaded.model, ids, settings, window, decode_from)
    return summary
