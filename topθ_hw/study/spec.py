"""A study file (TOML) and the point set it declares.

A study names axes; the cartesian product of the axes is the point set. Everything is
validated before any work starts: an unknown key, an empty axis, a wrong type or an unknown
device is a :class:`UserError` naming the file and the key.

```toml
[study]
name = "toptheta_vs_topk"
description = "..."

[kernel]                 # the simulated decode-attention call (default: 32 q / 8 KV heads, d=128, bf16)
q_heads = 32

[sparsity]               # how kept fractions are measured on the trace by the replay engine
sigma = 0.1

[methods.toptheta_capk]  # a Top-θ variant, used by name in axes.method
engine = "toptheta"
capk = true

[axes]
device = ["h100", "a100"]
method = ["dense", "topk", "toptheta", "toptheta_capk"]
k = [32, 64]
context = [4096, 32768]
```
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from topθ_hw.errors import UserError

# axis name -> (element type, default values when the study omits the axis)
AXES = {
    "device": (str, None),
    "method": (str, ["dense", "topk", "toptheta"]),
    "k": (int, [64]),
    "context": (int, None),
    "batch": (int, [1]),
    "page_size": (int, [1]),
    "bandwidth_scale": (float, [1.0]),
    "sram_scale": (float, [1.0]),
    "trace": (str, ["traces/smollm2-135m.zarr"]),
    # how the simulated decode kernel is built (topθ_hw.sim.tiles.KernelOptions; stages 0 = auto)
    "mask": (str, ["threshold"]),
    "block_keys": (int, [64]),
    "warps": (int, [4]),
    "stages": (int, [0]),
    "split_tokens": (int, [512]),
    # whole-model cost per token (topθ_hw/cost): "" = an attention-only point
    "model": (str, [""]),
    "tp": (int, [1]),
    "graphs": (bool, [False]),
    "phase": (str, ["decode"]),
}
PHASES = ("decode", "prefill")
KERNEL_DEFAULTS = {"q_heads": 32, "kv_heads": 8, "head_dim": 128, "dtype": "bf16"}
# Empty lists mean: the engine's defaults (calibrate on the first sequence, evaluate on the others;
# every layer). ``layers`` restricts the replay, e.g. for a quick look.
SPARSITY_DEFAULTS = {"placement": "pre", "sigma": 0.1, "calibration_sequences": [],
                     "evaluation_sequences": [], "layers": []}
STUDY_KEYS = {"name": str, "description": str}
ENGINE_METHODS = ("dense", "topk", "toptheta")
# A method variant: which engine method it replays, and the options passed to that method.
METHOD_KEYS = {"engine": str, "placement": str, "sigma": float, "capk": bool,
               "sdc": str, "vmc": bool, "description": str}
BUILTIN_METHODS = {"dense": {"engine": "dense"}, "topk": {"engine": "topk"},
                   "toptheta": {"engine": "toptheta"}}
PAGE_SIZES = (1, 8, 16, 32, 64, 128)  # the page sizes the engine counts occupancy for


@dataclass(frozen=True)
class Study:
    """A validated study: its axes, kernel shape, sparsity settings and method variants."""

    path: Path
    name: str
    description: str
    axes: dict[str, list]
    kernel: dict
    sparsity: dict
    methods: dict[str, dict] = field(default_factory=dict)

    def points(self) -> list[dict]:
        """The cartesian product of the axes, in a fixed order (axis order of ``AXES``)."""
        names = list(AXES)
        return [dict(zip(names, values)) for values in itertools.product(*(self.axes[n] for n in names))]

    def as_dict(self) -> dict:
        return {"study": {"name": self.name, "description": self.description}, "axes": self.axes,
                "kernel": self.kernel, "sparsity": self.sparsity, "methods": self.methods}


def load_study(path, known_device=None) -> Study:
    """Read and validate a study file. ``known_device(name) -> bool`` checks device names."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such study file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, expected a study .toml file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: invalid TOML ({exc})") from None
    _check_keys(path, "", raw, {"study", "kernel", "sparsity", "methods", "axes"})
    if "axes" not in raw:
        raise UserError(f"{path}: missing table [axes]")
    study = raw.get("study", {})
    _check_table(path, "study", study, STUDY_KEYS)
    kernel = _with_defaults(path, "kernel", raw.get("kernel", {}), KERNEL_DEFAULTS)
    sparsity = _with_defaults(path, "sparsity", raw.get("sparsity", {}), SPARSITY_DEFAULTS)
    methods = _methods(path, raw.get("methods", {}))
    axes = _axes(path, raw["axes"], methods, known_device)
    return Study(path=path, name=study.get("name", path.stem), description=study.get("description", ""),
                 axes=axes, kernel=kernel, sparsity=sparsity, methods=methods)


def _check_keys(path, table, raw, allowed) -> None:
    if not isinstance(raw, dict):
        raise UserError(f"{path}: '{table}' must be a table")
    for key in raw:
        if key not in allowed:
            where = f"{table}.{key}" if table else key
            raise UserError(f"{path}: unknown key '{where}'; expected one of {sorted(allowed)}")


def _check_table(path, table, raw, types) -> None:
    _check_keys(path, table, raw, set(types))
    for key, value in raw.items():
        _check_type(path, f"{table}.{key}", value, types[key])


def _check_type(path, where, value, expected) -> None:
    ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
    if expected is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if expected is list:
        element = int if where.endswith(".layers") else str
        ok = isinstance(value, list) and all(isinstance(v, element) for v in value)
    if not ok:
        raise UserError(f"{path}: '{where}' is {value!r}, expected {getattr(expected, '__name__', expected)}")


def _with_defaults(path, table, raw, defaults) -> dict:
    _check_table(path, table, raw, {k: type(v) for k, v in defaults.items()})
    return {**defaults, **raw}


def _methods(path, raw) -> dict[str, dict]:
    if not isinstance(raw, dict):
        raise UserError(f"{path}: 'methods' must be a table of [methods.NAME] tables")
    methods = dict(BUILTIN_METHODS)
    for name, table in raw.items():
        _check_table(path, f"methods.{name}", table, METHOD_KEYS)
        if table.get("engine") not in ENGINE_METHODS:
            raise UserError(f"{path}: 'methods.{name}.engine' is {table.get('engine')!r}, "
                            f"expected one of {list(ENGINE_METHODS)}")
        methods[name] = dict(table)
    return methods


def _axes(path, raw, methods, known_device) -> dict[str, list]:
    _check_keys(path, "axes", raw, set(AXES))
    axes = {}
    for name, (kind, default) in AXES.items():
        values = raw.get(name, default)
        if values is None:
            raise UserError(f"{path}: missing axis 'axes.{name}'")
        if not isinstance(values, list) or not values:
            raise UserError(f"{path}: axis 'axes.{name}' is empty or not a list; expected a non-empty list")
        for value in values:
            _check_type(path, f"axes.{name}", value, kind)
        if len(set(values)) != len(values):
            raise UserError(f"{path}: axis 'axes.{name}' repeats a value: {values}")
        axes[name] = [kind(v) for v in values]
    _check_values(path, axes, methods, known_device)
    return axes


def _check_values(path, axes, methods, known_device) -> None:
    bad = [v for v in axes["phase"] if v not in PHASES]
    if bad:
        raise UserError(f"{path}: 'axes.phase' has {bad}, expected values from {list(PHASES)}")
    if axes["phase"] != ["decode"] and "" in axes["model"]:
        raise UserError(f"{path}: 'axes.phase' prefill needs 'axes.model' (whole-model points) without \"\"")
    for name in ("k", "context", "batch", "tp"):
        bad = [v for v in axes[name] if v < 1]
        if bad:
            raise UserError(f"{path}: 'axes.{name}' has {bad}, expected integers >= 1")
    for name in ("bandwidth_scale", "sram_scale"):
        bad = [v for v in axes[name] if v <= 0]
        if bad:
            raise UserError(f"{path}: 'axes.{name}' has {bad}, expected positive scale factors")
    _check_kernel_axes(path, axes)
    bad = [v for v in axes["page_size"] if v not in PAGE_SIZES]
    if bad:
        raise UserError(f"{path}: 'axes.page_size' has {bad}, expected values from {list(PAGE_SIZES)}")
    bad = [m for m in axes["method"] if m not in methods]
    if bad:
        raise UserError(f"{path}: 'axes.method' names unknown methods {bad}; known: {sorted(methods)} "
                        "(define variants in [methods.NAME])")
    if known_device is not None:
        bad = [d for d in axes["device"] if not known_device(d)]
        if bad:
            raise UserError(f"{path}: 'axes.device' names unknown devices {bad}")


def _check_kernel_axes(path, axes) -> None:
    """Every combination of the kernel-build axes must be a kernel the simulator can be told."""
    from topθ_hw.sim.tiles import KernelOptions
    for mask in axes["mask"]:
        for block in axes["block_keys"]:
            for warps in axes["warps"]:
                for stages in axes["stages"]:
                    try:
                        KernelOptions(block_keys=block, warps=warps, stages=stages, mask=mask)
                    except UserError as exc:
                        raise UserError(f"{path}: axes mask/block_keys/warps/stages: {exc}") from None
            bad = [v for v in axes["split_tokens"] if v < block or v % block]
            if bad:
                raise UserError(f"{path}: 'axes.split_tokens' has {bad}, expected multiples of every "
                                f"'axes.block_keys' value ({block})")


def point_hash(inputs: dict) -> str:
    """A stable key for one point: the hash of everything its evaluation depends on."""
    blob = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]
