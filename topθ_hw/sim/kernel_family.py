"""Kernel families as data: ``sims/kernels/<family>.toml``, the constants of one kernel build per
architecture (LLMCompass keeps the software model apart from the hardware description; so do we).

A device file says what the silicon is and names its ``architecture``; a family file holds, per
architecture, what a kernel build costs on it (per-tile compute, issue sharing, per-CTA work) with
a source for every number, in the device files' grammar (``ref:``, ``measured:``, ``derived:``,
``assumed:``). Every device of an architecture shares its table, so a new device needs no refit.
"""

from __future__ import annotations

import functools
import tomllib
from pathlib import Path

from topθ_hw.errors import UserError

GPU_FAMILY = "triton-splitkv"   # the split-KV decode kernels of sims/validation/kernels.py


def kernels_dir() -> Path:
    """Shipped family files: ``$TOPTHETA_KERNELS_DIR`` or the package's ``sims/kernels``."""
    from topθ_hw.shipped import shipped_dir
    return shipped_dir("TOPTHETA_KERNELS_DIR", "sims/kernels")


def known_families() -> list[str]:
    return sorted(p.stem for p in kernels_dir().glob("*.toml"))


@functools.lru_cache(maxsize=None)
def _family(name: str) -> tuple[Path, dict]:
    path = kernels_dir() / f"{name}.toml"
    if not path.exists():
        raise UserError(f"unknown kernel family {name!r}; known: {', '.join(known_families())} ({kernels_dir()})")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: invalid TOML ({exc})") from exc
    if not isinstance(raw.get("architectures"), dict) or not raw["architectures"]:
        raise UserError(f"{path}: section [architectures.<name>] missing (one table per architecture)")
    return path, raw


def load_build(family: str, architecture: str, where: str = ""):
    """(Build constants, their sources) of ``family`` on ``architecture``; validated."""
    from topθ_hw.sim.hardware import Build, _section
    path, raw = _family(family)
    tables = raw["architectures"]
    if not isinstance(architecture, str) or architecture not in tables:
        raise UserError(f"{where or path}: architecture {architecture!r} has no table in {path}; "
                        f"known architectures: {', '.join(sorted(tables))}")
    table = tables[architecture]
    if not isinstance(table, dict):
        raise UserError(f"{path}: [architectures.{architecture}] must be a table")
    sources: dict = {}
    build = _section(Build, table, f"architectures.{architecture}", path, raw.get("references", {}), sources)
    prefix = f"architectures.{architecture}."
    return build, {k.removeprefix(prefix): v for k, v in sources.items()}
