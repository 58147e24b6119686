"""The grid of live settings an evaluation sweeps: variants × k, each a method built from an artifact.

A variant is ``+``-joined tokens: ``topk``, ``dense``, or a placement ``pre``/``post`` followed by
modifiers ``sdc=exact|expthr|offline``, ``vmc``, ``capk``; e.g. ``pre+sdc=exact+vmc``. Top-θ
variants at k need an artifact whose (most layers') k and placement match; top-k at the same k
uses that artifact's per-layer k so both keep the same layers dense.
"""

from __future__ import annotations

from dataclasses import dataclass

from topθ_hw.errors import UserError

from .methods import Dense, LiveMethod, TopK, TopTheta
from .thresholds import LiveThresholds

DEFAULT_VARIANTS = ("pre", "pre+sdc=expthr", "pre+sdc=exact+vmc", "post", "post+vmc", "pre+capk", "topk")
DEFAULT_KS = (16, 32, 64, 128, 256, 512)


@dataclass(frozen=True)
class Variant:
    family: str                 # dense | topk | toptheta
    placement: str | None = None
    sdc: str | None = None
    vmc: bool = False
    capk: bool = False

    @property
    def name(self) -> str:
        if self.family != "toptheta":
            return self.family
        return "+".join([self.placement] + ([f"sdc={self.sdc}"] if self.sdc else [])
                        + (["vmc"] if self.vmc else []) + (["capk"] if self.capk else []))


@dataclass(frozen=True)
class Setting:
    variant: Variant
    k: int | None
    method: LiveMethod
    thresholds: LiveThresholds | None

    @property
    def label(self) -> str:
        return self.variant.name + ("" if self.k is None else f" k={self.k}")


def parse_variant(text: str) -> Variant:
    tokens = [t.strip() for t in text.split("+") if t.strip()]
    if tokens in (["dense"], ["topk"]):
        return Variant(tokens[0])
    if not tokens or tokens[0] not in ("pre", "post"):
        raise UserError(f"--variants: {text!r} must start with pre, post, topk or dense")
    fields = {"placement": tokens[0]}
    for token in tokens[1:]:
        if token in ("vmc", "capk"):
            fields[token] = True
        elif token.startswith("sdc=") and token[4:] in ("exact", "expthr", "offline"):
            fields["sdc"] = token[4:]
        else:
            raise UserError(f"--variants: {text!r}: unknown modifier {token!r} "
                            "(expected vmc, capk, sdc=exact, sdc=expthr or sdc=offline)")
    if fields.get("sdc") and tokens[0] != "pre":
        raise UserError(f"--variants: {text!r}: SDC is defined for pre-softmax thresholds only")
    return Variant("toptheta", **fields)


def build_settings(variants: list[Variant], ks: list[int], tables: list[LiveThresholds]) -> list[Setting]:
    """One setting per (variant, k); refuses (before any work) a combination without thresholds."""
    by_key = {(t.base_k, t.placement): t for t in tables}
    by_k = {t.base_k: t for t in tables}
    settings = []
    for variant in variants:
        for k in ks if variant.family != "dense" else [None]:
            settings.append(build_one(variant, k, by_key, by_k, tables))
    return settings


def build_one(variant: Variant, k, by_key, by_k, tables) -> Setting:
    if variant.family == "dense":
        return Setting(variant, None, Dense(), None)
    if variant.family == "topk":
        table = by_k.get(k)
        return Setting(variant, k, TopK(table.k if table else k), None)
    table = by_key.get((k, variant.placement))
    if table is None:
        have = ", ".join(f"k={t.base_k} {t.placement} ({t.source})" for t in tables) or "none"
        raise UserError(f"--thresholds: no artifact with k={k} and placement {variant.placement!r} for "
                        f"variant {variant.name!r}; given: {have}. Calibrate one with "
                        f"`toptheta calibrate --k {k} --placement {variant.placement} ...`")
    method = TopTheta(table, sdc=variant.sdc, vmc=variant.vmc, capk=variant.capk)
    return Setting(variant, k, method, table)
