"""Data shipped with the package, found through the package, never through the working folder.

``topθ_hw/_shipped/`` links to the repository's ``traces/`` and ``sims/`` folders; a built wheel
holds copies of the files the package needs (``[tool.setuptools.package-data]``): the demo trace,
the texts, the device files with the measurements they cite, and the studies. So ``toptheta
demo`` runs from any folder, from a source checkout, an editable install or a wheel.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path


def shipped(relative: str) -> Path:
    """The shipped file or folder at ``relative`` (e.g. ``traces/smollm2-135m.zarr``)."""
    return Path(str(files("topθ_hw"))) / "_shipped" / relative


def shipped_dir(env_var: str, relative: str) -> Path:
    """A folder of shipped data files, or the one ``$env_var`` names instead."""
    env = os.environ.get(env_var)
    return Path(env) if env else shipped(relative)
