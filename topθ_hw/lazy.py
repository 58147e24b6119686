"""Package attributes imported on first use (PEP 562), so that ``toptheta --help`` loads no
numpy, zarr, SimPy or matplotlib."""

from __future__ import annotations

import importlib


def lazy_attributes(package: str, names: dict[str, str]):
    """A module ``__getattr__`` that imports ``names[attr]`` (a module path) when ``attr`` is first used."""
    def __getattr__(name: str):
        if name in names:
            return getattr(importlib.import_module(names[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    return __getattr__
