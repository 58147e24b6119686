"""Kernel families of DMA-pipelined accelerators: ``sims/kernels/<family>.toml``, execution "dma-blocks".

The software half of an accelerator's cost (LLMCompass's split): the device file says what the
silicon is (bandwidth, matrix tile, descriptor issue time, scratchpad); the kernel family says how
the kernel is built — KV block length and buffer depth (defaults, overridable per call) and the
per-architecture constants of the build (grid-step overhead, KV page size, scoped scratchpad limit),
each with a source in the device files' grammar (``ref:`` / ``measured:`` / ``derived:`` / ``assumed:``).
A family is found by the device's ``architecture`` key, so a new chip of a known architecture needs
no new family.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path

from topθ_hw.errors import UserError
from topθ_hw.sim.hardware import Device, _check_source, _check_value
from topθ_hw.sim.kernel_family import kernels_dir

EXECUTION = "dma-blocks"
DEFAULTS = {"block_keys": ("count", "key rows of one KV head per DMA block"),
            "buffers": ("count", "blocks resident in the scratchpad at once (2: double buffering)")}
CONSTANTS = {"grid_step_overhead_ns": ("positive", "fixed cost of one grid step (one block) on the core"),
             "page_tokens": ("count", "tokens per KV-cache page the kernel reads; one DMA descriptor per page"),
             "scratchpad_limit_KiB": ("positive", "scratchpad the kernel's buffers may use per unit (scoped limit)")}


@dataclass(frozen=True)
class DmaKernel:
    """One configured kernel of a family on one architecture."""
    family: str
    architecture: str
    block_keys: int
    buffers: int
    grid_step_overhead_ns: float
    page_tokens: int
    scratchpad_limit_KiB: float
    blocks_span_kv_heads: bool   # a block holds its tokens for every KV head (RPA's combined KV layout)
    validation: str
    path: str
    sources: dict

    @property
    def label(self) -> str:
        return f"{self.family} (block_keys={self.block_keys}, buffers={self.buffers})"

    def block_rows(self, kv_heads: int) -> int:
        """K rows of one KV head per block: the block's tokens, times the heads it spans."""
        return self.block_keys * (kv_heads if self.blocks_span_kv_heads else 1)


def dma_kernel_for(device: Device, block_keys: int | None = None, buffers: int | None = None) -> DmaKernel:
    """The DMA kernel family for ``device.architecture``, with its defaults or the given overrides."""
    families = [(path, raw) for path in sorted(kernels_dir().glob("*.toml"))
                for raw in [_read(path)] if raw.get("execution") == EXECUTION]
    for path, raw in families:
        if device.architecture in raw.get("architectures", {}):
            kernel = _family(raw, path, device.architecture)
            return dataclasses.replace(kernel, block_keys=_override("block_keys", block_keys, kernel.block_keys),
                                       buffers=_override("buffers", buffers, kernel.buffers))
    known = sorted(a for _, raw in families for a in raw.get("architectures", {}))
    raise UserError(f"{device.path}: field 'architecture' is {device.architecture!r}; no \"{EXECUTION}\" kernel "
                    f"family in {kernels_dir()} covers it (known: {', '.join(known) or 'none'})")


def _override(name: str, value, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < (2 if name == "buffers" else 1):
        least = "2 (one block computes while the next arrives)" if name == "buffers" else "1"
        raise UserError(f"kernel field '{name}' (--{name.replace('_', '-')}) must be a whole number ≥ {least}, "
                        f"got {value!r}")
    return value


def _read(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: invalid TOML ({exc})") from exc


def _family(raw: dict, path: Path, architecture: str) -> DmaKernel:
    for key in ("name", "description"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise UserError(f"{path}: field '{key}' missing or not a non-empty string")
    references, sources = raw.get("references", {}), {}
    defaults = _table(raw.get("defaults"), DEFAULTS, "defaults", path, references, sources)
    arch = raw["architectures"][architecture]
    where = f"architectures.{architecture}"
    flags = ("validation", "blocks_span_kv_heads")
    constants = _table({k: v for k, v in arch.items() if k not in flags}, CONSTANTS, where, path, references,
                       sources)
    if not isinstance(arch.get("blocks_span_kv_heads"), bool):
        raise UserError(f"{path}: field '{where}.blocks_span_kv_heads' must be true or false")
    span = f"{where}.blocks_span_kv_heads"
    sources[span] = _check_source(arch.get("sources", {}).get("blocks_span_kv_heads"), references, path,
                                  f"{path}: field '{span}'")
    if not isinstance(arch.get("validation"), str) or not arch["validation"].startswith("unvalidated"):
        raise UserError(f"{path}: field '{where}.validation' must say \"unvalidated: anchored to <reference>\"")
    if defaults["buffers"] < 2:
        raise UserError(f"{path}: field 'defaults.buffers' must be ≥ 2, got {defaults['buffers']}")
    return DmaKernel(family=raw["name"], architecture=architecture, validation=arch["validation"], path=str(path),
                     sources=sources, blocks_span_kv_heads=arch["blocks_span_kv_heads"], **defaults, **constants)


def _table(table, spec: dict, where: str, path: Path, references: dict, sources: dict) -> dict:
    if not isinstance(table, dict):
        raise UserError(f"{path}: table [{where}] missing")
    extra = set(table) - set(spec) - {"sources", "blocks_span_kv_heads"}
    if extra:
        raise UserError(f"{path}: unknown field(s) {sorted(f'{where}.{k}' for k in extra)}; expected {sorted(spec)}")
    values = {}
    for name, (kind, doc) in spec.items():
        field = f"{path}: field '{where}.{name}'"
        if name not in table:
            raise UserError(f"{field} missing ({doc})")
        values[name] = _check_value(table[name], kind, field)
        sources[f"{where}.{name}"] = _check_source(table.get("sources", {}).get(name), references, path, field)
    return values
