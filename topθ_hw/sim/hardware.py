"""Devices as data: ``sims/hardware/<name>.toml`` loaded into frozen, validated dataclasses.

This module is the only door to device numbers; the simulator takes a :class:`Device` as an
argument and never names one. Every key carries its unit in its name (``clock_Hz``,
``hbm_bandwidth_GBps``, ``sram_per_unit_KiB``) and every number has a source beside it, in the
section's ``sources`` table under the same key. A source is checked, not just present: it must
start with one of

- ``ref:<key>``      a document listed in the file's ``[references]`` table,
- ``measured:<path>`` a measurement file, path relative to the TOML file, that must exist,
- ``derived:``       arithmetic from other sourced numbers (say which),
- ``assumed:``       a modelling assumption (say why), for figures no vendor publishes.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from topθ_hw.errors import UserError

SOURCE_KINDS = ("ref:", "measured:", "derived:", "assumed:")


def _spec(kind: str, doc: str):
    """A device field: ``kind`` is 'count' (int ≥ 1), 'positive', 'nonnegative' or 'fraction' (0, 1]."""
    return field(metadata={"kind": kind, "doc": doc})


@dataclass(frozen=True)
class Compute:
    units: int = _spec("count", "compute units (SMs, CUs, cores) that run work items in parallel")
    clock_Hz: float = _spec("positive", "clock the matrix throughput figure is quoted at")
    matrix_TFLOPS: float = _spec("positive", "dense bf16/fp16 matrix throughput, whole device")
    matrix_min_rows: int = _spec("count", "smallest M of one matrix instruction; fewer query rows are padded")
    vector_TFLOPS: float = _spec("positive", "fp32 vector (non-matrix) throughput, whole device")
    sram_per_unit_KiB: float = _spec("positive", "software-managed SRAM per unit (shared memory, LDS, VMEM)")
    registers_per_unit_KiB: float = _spec("positive", "register file per unit")


@dataclass(frozen=True)
class Memory:
    hbm_bandwidth_GBps: float = _spec("positive", "peak DRAM bandwidth (datasheet)")
    hbm_capacity_GB: float = _spec("positive", "DRAM capacity")
    hbm_channels: int = _spec("count", "independent DRAM channels the address space is interleaved over")
    hbm_latency_ns: float = _spec("positive", "load-to-use DRAM latency of one request, unloaded")
    l2_latency_ns: float = _spec("positive", "load-to-use latency of an L2 hit")
    l2_bandwidth_GBps: float = _spec("positive", "L2 read bandwidth, whole device")
    stream_efficiency_fraction: float = _spec("fraction", "achievable / peak bandwidth for long streaming reads")
    gather_efficiency_fraction: float = _spec("fraction", "achievable / peak bandwidth gathering single KV rows")
    gather_row_bytes: int = _spec("count", "row size the gather efficiency was measured at")
    unit_bandwidth_GBps: float = _spec("positive", "rate at which one CTA's tile copies arrive, alone on its unit")
    l2_MiB: float = _spec("nonnegative", "last-level on-chip cache (0: none)")
    sector_bytes: int = _spec("count", "smallest DRAM transaction")
    line_bytes: int = _spec("count", "cache line")


@dataclass(frozen=True)
class Kernel:
    """What the device's runtime and block scheduler cost any kernel (measured by microbenchmarks)."""
    launch_overhead_us: float = _spec("positive", "time of one empty kernel launch between two events")
    launch_gap_us: float = _spec("positive", "extra time per further kernel launched right behind it")
    kv_page_tokens: int = _spec("count", "tokens per KV-cache page of the serving engine")
    reduce_base_ns: float = _spec("positive", "body of a small merge kernel (one L2 round trip and a store)")
    cta_dispatch_ns: float = _spec("nonnegative", "block-scheduler time per CTA of a short kernel")
    combine_step_ns: float = _spec("nonnegative", "per split of a serial combine, besides its L2 round trip")


@dataclass(frozen=True)
class Build:
    """Constants of a kernel family's build on one architecture (``sims/kernels/<family>.toml``):
    software, not silicon, so every device of the architecture shares them."""
    tile_compute_ns: float = _spec("positive", "split-KV decode CTA, 64-key tile, 4 warps: compute per tile, alone")
    masked_tile_compute_ns: float = _spec("positive", "the same with a precomputed kept-V mask (keep loads, masking)")
    row_mask_latency_ns: float = _spec("nonnegative", "further latency per tile of a one-byte-per-row mask")
    wide_tile_compute_ns: float = _spec("positive", "128-key tile, 8 warps: compute per tile, alone")
    wide_masked_tile_compute_ns: float = _spec("positive", "128-key tile, 8 warps, precomputed mask")
    wide_row_mask_latency_ns: float = _spec("nonnegative", "128-key tile: further latency of a row mask")
    issue_fraction: float = _spec("fraction", "share of a tile's compute that is issue work co-resident CTAs share")
    issue_contention: float = _spec("nonnegative", "stretch of that issue work per further CTA in its loop")
    cta_overhead_ns: float = _spec("nonnegative", "per-CTA cost on its unit that co-resident CTAs do not hide")
    threshold_tile_compute_ns: float = _spec("positive", "fused threshold kernel, 64-key tile: compute of a tile "
                                                         "that reads V (scores, θ compare, group union, P·V)")
    wide_threshold_tile_compute_ns: float = _spec("positive", "the same at 128-key tiles, 8 warps")
    skipped_tile_fraction: float = _spec("fraction", "compute of a threshold tile with no needed V row, "
                                                     "as a fraction of one that reads V")
    threshold_page_union_ns: float = _spec("nonnegative", "threshold kernel fetching whole pages: further compute "
                                                          "per 64 keys of the any-over-the-page reduction")
    prefill_matrix_efficiency: float = _spec("fraction", "causal prefill kernel: achieved / peak tensor-core "
                                                         "throughput of its per-tile matrix work")
    prefill_threshold_tile_ratio: float = _spec("positive", "threshold prefill kernel: compute of a tile that reads "
                                                            "V, as a multiple of the dense prefill kernel's")


@dataclass(frozen=True)
class Energy:
    hbm_pJ_per_byte: float = _spec("positive", "DRAM read energy")
    sram_pJ_per_byte: float = _spec("positive", "on-chip SRAM access energy")
    matrix_pJ_per_flop: float = _spec("positive", "matrix-unit energy per FLOP")
    vector_pJ_per_flop: float = _spec("positive", "vector-unit energy per FLOP")


@dataclass(frozen=True)
class Dma:
    """Optional: a device whose kernels stream DMA blocks into a scratchpad (TPU, NPU) runs the
    DMA-pipelined model (dma.py) instead of the GPU tile loop."""
    descriptor_issue_ns: float = _spec("positive", "time one DMA descriptor (one contiguous run) takes to issue")
    queues_per_unit: int = _spec("count", "descriptor queues a unit issues into in parallel")
    vector_tile_rows: int = _spec("count", "rows (sublanes) of the vector unit's register tile; fewer rows are padded")


SECTIONS = {"compute": Compute, "memory": Memory, "kernel": Kernel, "energy": Energy}


@dataclass(frozen=True)
class Cost:
    """Optional: what one device-hour costs (whole-model cost per token, topθ_hw/cost)."""
    price_usd_per_hour: float = _spec("positive", "price of one device-hour (a cited public list price)")


@dataclass(frozen=True)
class Power:
    """Optional: board power, the static part of the energy per token (topθ_hw/cost)."""
    board_power_W: float = _spec("positive", "maximum board power (TDP)")
    idle_power_W: float = _spec("positive", "board power while powered and idle")


@dataclass(frozen=True)
class Interconnect:
    """Optional: device-to-device links of one node, for tensor-parallel all-reduce."""
    allreduce_bus_GBps: float = _spec("positive", "all-reduce bus bandwidth per device (NCCL busbw convention)")
    allreduce_latency_us: float = _spec("positive", "time of a small (latency-bound) all-reduce")
    devices_per_node: int = _spec("count", "devices one node links directly")


@dataclass(frozen=True)
class Step:
    """Optional: whole-model step figures besides attention (GEMMs, launches; topθ_hw/cost)."""
    matrix_efficiency_fraction: float = _spec("fraction", "achieved / peak matrix throughput of large GEMMs")
    eager_dispatch_us: float = _spec("positive", "host time to dispatch one eager framework op (one kernel)")
    graph_launch_gap_us: float = _spec("positive", "device time between two kernels replayed from a CUDA graph")
    gemv_bandwidth_fraction: float = _spec("fraction", "achieved / peak HBM bandwidth of weight-streaming GEMMs "
                                                       "(decode-shaped: a few rows times a large weight)")


OPTIONAL_SECTIONS = {"dma": Dma, "cost": Cost, "power": Power, "interconnect": Interconnect, "step": Step}


@dataclass(frozen=True)
class Device:
    name: str
    description: str
    path: str
    architecture: str  # keys the kernel-family tables (sims/kernels/*.toml)
    compute: Compute
    memory: Memory
    kernel: Kernel
    energy: Energy
    build: Build | None  # GPUs: the split-KV kernel family's constants for this architecture
    sources: dict      # "section.key" -> source text ("build.key": the family file's)
    dma: "Dma | None" = None  # present: DMA-pipelined execution (dma.py)
    cost: Cost | None = None                  # optional sections: None when the file has none
    power: Power | None = None
    interconnect: Interconnect | None = None
    step: Step | None = None

    @property
    def stream_bandwidth_Bps(self) -> float:
        """Achievable streaming-read bandwidth in bytes per second."""
        return self.memory.hbm_bandwidth_GBps * 1e9 * self.memory.stream_efficiency_fraction

    @property
    def gather_overhead_bytes(self) -> float:
        """Extra channel time per separate run of bytes, in byte-equivalents.

        One parameter turns the two measured efficiencies into a curve over run length:
        eff(run) = stream_eff · run / (run + overhead), which equals the measured gather
        efficiency at ``gather_row_bytes`` and tends to the streaming one for long runs.
        """
        m = self.memory
        return m.gather_row_bytes * (m.stream_efficiency_fraction / m.gather_efficiency_fraction - 1.0)


def hardware_dir() -> Path:
    """Shipped device files: ``$TOPTHETA_HARDWARE_DIR`` or the package's ``sims/hardware``."""
    from topθ_hw.shipped import shipped_dir
    return shipped_dir("TOPTHETA_HARDWARE_DIR", "sims/hardware")


def known_devices() -> list[str]:
    return sorted(p.stem for p in hardware_dir().glob("*.toml"))


def load_device(name_or_path: str | os.PathLike) -> Device:
    """Load a shipped device by name (``"h100"``) or any TOML file by path; validated."""
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith(".toml") or os.sep in text or path.exists()):
        path = hardware_dir() / f"{text}.toml"
        if not path.exists():
            raise UserError(f"unknown device {text!r}; known devices: {', '.join(known_devices())} "
                            "(or give a path to a .toml file)")
    if not path.exists():
        raise UserError(f"{path}: no such device file")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: invalid TOML ({exc})") from exc
    return _device_from_dict(raw, path)


def _device_from_dict(raw: dict, path: Path) -> Device:
    for key in ("name", "description", "architecture"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise UserError(f"{path}: field '{key}' missing or not a non-empty string")
    references = raw.get("references", {})
    if not isinstance(references, dict):
        raise UserError(f"{path}: field 'references' must be a table of name = \"citation\"")
    unknown = set(raw) - {"name", "description", "references", "architecture", *SECTIONS, *OPTIONAL_SECTIONS}
    if unknown:
        raise UserError(f"{path}: unknown top-level field(s) {sorted(unknown)}; expected name, description, "
                        f"architecture, references, {', '.join([*SECTIONS, *OPTIONAL_SECTIONS])}")
    architecture = raw["architecture"]
    sections, sources = {}, {}
    bad = [s for s in OPTIONAL_SECTIONS if s in raw and not isinstance(raw[s], dict)]
    if bad:
        raise UserError(f"{path}: field '{bad[0]}' must be a table [{bad[0]}]")
    for section, cls in SECTIONS.items():
        table = raw.get(section)
        if not isinstance(table, dict):
            raise UserError(f"{path}: section [{section}] missing")
        sections[section] = _section(cls, table, section, path, references, sources)
    for section, cls in OPTIONAL_SECTIONS.items():
        if section in raw:
            if not isinstance(raw[section], dict):
                raise UserError(f"{path}: [{section}] must be a table")
            sections[section] = _section(cls, raw[section], section, path, references, sources)
    build = None
    if "dma" not in sections:  # GPUs: the split-KV tile family's constants for this architecture
        from topθ_hw.sim.kernel_family import GPU_FAMILY, load_build
        build, build_sources = load_build(GPU_FAMILY, architecture, where=f"{path}: field 'architecture'")
        sources.update({f"build.{k}": v for k, v in build_sources.items()})
    device = Device(name=raw["name"], description=raw["description"], path=str(path),
                    architecture=architecture, build=build, sources=sources, **sections)
    _check_consistency(device, path)
    return device


def _section(cls, table: dict, section: str, path: Path, references: dict, sources: dict):
    names = {f.name: f for f in dataclasses.fields(cls)}
    src = table.get("sources", {})
    extra = set(table) - set(names) - {"sources"}
    if extra:
        raise UserError(f"{path}: unknown field(s) {sorted(f'{section}.{k}' for k in extra)}; "
                        f"expected {sorted(names)}")
    stray = set(src) - set(names)
    if stray:
        raise UserError(f"{path}: sources for unknown field(s) {sorted(f'{section}.{k}' for k in stray)}")
    values = {}
    for name, f in names.items():
        where = f"{path}: field '{section}.{name}'"
        if name not in table:
            raise UserError(f"{where} missing ({f.metadata['doc']})")
        values[name] = _check_value(table[name], f.metadata["kind"], where)
        sources[f"{section}.{name}"] = _check_source(src.get(name), references, path, where)
    return cls(**values)


def _check_value(value, kind: str, where: str):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{where} must be a finite number, got {value!r}")
    if kind == "count":
        if value != int(value) or value < 1:
            raise UserError(f"{where} must be a whole number ≥ 1, got {value!r}")
        return int(value)
    if value < 0 or (value == 0 and kind != "nonnegative"):
        raise UserError(f"{where} must be {'≥' if kind == 'nonnegative' else '>'} 0, got {value!r}")
    if kind == "fraction" and value > 1:
        raise UserError(f"{where} is a fraction and must be in (0, 1], got {value!r}")
    return float(value)


def _check_source(source, references: dict, path: Path, where: str) -> str:
    if not isinstance(source, str) or not source.strip():
        raise UserError(f"{where} has no source: add it under the section's [sources] table")
    if not source.startswith(SOURCE_KINDS):
        raise UserError(f"{where}: source {source!r} must start with one of {', '.join(SOURCE_KINDS)}")
    if source.startswith("ref:"):
        ref = source[4:].split()[0].rstrip(",;:")
        if ref not in references:
            raise UserError(f"{where}: source cites ref:{ref}, which [references] does not list")
    if source.startswith("measured:"):
        cited = source[9:].split()[0].rstrip(",;:")
        # A shipped device copied elsewhere keeps citing the shipped measurements.
        if not any((folder / cited).exists() for folder in (path.parent, hardware_dir())):
            raise UserError(f"{where}: source cites measurement file {cited}, which does not exist beside "
                            f"{path} nor in the shipped device folder {hardware_dir()}")
    return source


def _check_consistency(d: Device, path: Path) -> None:
    m, c = d.memory, d.compute
    checks = [
        (m.line_bytes % m.sector_bytes == 0, "memory.line_bytes", "a multiple of memory.sector_bytes"),
        (m.gather_efficiency_fraction <= m.stream_efficiency_fraction, "memory.gather_efficiency_fraction",
         "≤ memory.stream_efficiency_fraction (gathers cannot beat streams)"),
        (m.unit_bandwidth_GBps <= m.hbm_bandwidth_GBps, "memory.unit_bandwidth_GBps",
         "≤ memory.hbm_bandwidth_GBps"),
        (m.l2_latency_ns < m.hbm_latency_ns, "memory.l2_latency_ns", "< memory.hbm_latency_ns"),
        (c.vector_TFLOPS <= c.matrix_TFLOPS, "compute.vector_TFLOPS", "≤ compute.matrix_TFLOPS"),
        (c.matrix_TFLOPS * 1e12 / (c.units * c.clock_Hz) >= 1, "compute.matrix_TFLOPS",
         "≥ 1 FLOP per clock per unit at compute.clock_Hz"),
    ]
    for ok, field_name, expected in checks:
        if not ok:
            raise UserError(f"{path}: field '{field_name}' inconsistent: must be {expected}")
