"""``run_study``: validate a study, measure kept fractions once per (trace, method, k), evaluate
the remaining points on Dask and assemble the results table."""

from __future__ import annotations

import hashlib
import itertools
import math
import sys
from pathlib import Path

import pandas as pd

from topθ_hw.errors import TraceError, UserError
from topθ_hw.outputs import clear_output, prepare_output
from topθ_hw.store import open_trace
from topθ_hw.study import parts
from topθ_hw.study.evaluate import device_fingerprint, device_for, evaluate_point
from topθ_hw.study.kept import kept_fraction
from topθ_hw.study.masks import load_mask_stats
from topθ_hw.study.measure import MEASURE_VERSION, measure_all
from topθ_hw.study.runner import dask_client, run_tasks
from topθ_hw.study.spec import Study, load_study, point_hash
from topθ_hw.tables import write_table

SIM_METHOD = {"dense": "dense", "topk": "topk", "toptheta": "toptheta"}


def validate(study_path) -> Study:
    """Everything checked before any work starts: keys, axes, devices and traces."""
    from topθ_hw.sim.hardware import load_device
    from topθ_hw.sim.workload import Shape

    def known_device(name: str) -> bool:
        try:
            load_device(name)
        except UserError:
            return False
        return True

    study = load_study(study_path, known_device=known_device)
    try:
        Shape(**study.kernel)
    except UserError as exc:
        raise UserError(f"{study.path}: table [kernel]: {exc}") from None
    for trace in study.axes["trace"]:
        try:
            path = resolve_trace(study, trace)
            load_mask_stats(path) if is_mask_file(path) else open_trace(path)
        except TraceError as exc:
            raise UserError(f"{study.path}: 'axes.trace' names {trace!r}: {exc}") from None
    preflight(study)
    from topθ_hw.cost.models import load_model

    for model in filter(None, study.axes["model"]):
        try:
            load_model(model)
        except UserError as exc:
            raise UserError(f"{study.path}: 'axes.model' names {model!r}: {exc}") from None
    return study


def preflight(study: Study) -> None:
    """Every (device, SRAM scale) must hold the kernel's tiles and the largest KV cache studied:
    refused now, naming the axes, rather than after hours of points."""
    from topθ_hw.sim.simulate import check_fits
    from topθ_hw.sim.workload import kernel_workload

    rows = max(study.axes["context"]) * max(study.axes["batch"])
    # A small real call of the kernel's shape; the fit check reads its shape, the rows are given.
    call = kernel_workload(1, 64, study.kernel["q_heads"], study.kernel["kv_heads"], study.kernel["head_dim"],
                           study.kernel["dtype"], 1.0, "row", "dense")
    for device, sram in itertools.product(study.axes["device"], study.axes["sram_scale"]):
        try:
            check_fits(call, device_for({"device": device, "bandwidth_scale": 1.0, "sram_scale": sram}), rows)
        except UserError as exc:
            raise UserError(f"{study.path}: 'axes.device' {device!r} with 'axes.sram_scale' {sram} and the "
                            f"largest 'axes.context' × 'axes.batch' ({rows} rows): {exc}") from None


CONFIRM_POINTS = 50_000  # a larger study plans for minutes: it runs only when the user says --yes


def confirm_size(study: Study, yes: bool, log) -> None:
    n = math.prod(len(v) for v in study.axes.values())
    print(f"study {study.name}: {n} points ({' × '.join(f'{len(v)} {k}' for k, v in study.axes.items())})",
          file=log, flush=True)
    if n > CONFIRM_POINTS and not yes:
        raise UserError(f"{study.path}: {n} points is more than {CONFIRM_POINTS}; planning alone takes minutes. "
                        "Pass --yes to run it, or shorten an axis")


def resolve_trace(study: Study, trace: str) -> Path:
    """A trace path as given, else relative to the repository that holds the study file."""
    from topθ_hw.shipped import shipped

    candidates = [Path(trace)] + [parent / trace for parent in study.path.resolve().parents] + [shipped(trace)]
    for path in candidates:
        if (path / "zarr.json").exists() or (is_mask_file(path) and path.is_file()):
            return path.resolve()
    raise UserError(f"{study.path}: 'axes.trace' names {trace!r}, which is not a trace store (no zarr.json) "
                    "or a measured mask file (*.safetensors) there, in the study file's parent directories or "
                    "among the shipped traces")


def is_mask_file(path: Path) -> bool:
    """A measured mask-statistics file (topθ_hw.study.masks) rather than a trace store."""
    return Path(path).suffix == ".safetensors"


def trace_identity(path: Path) -> str:
    """Changes when the trace's contents do (per-array CRC32s, tokens, positions; a mask file's bytes),
    not only its path."""
    if is_mask_file(path):
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return open_trace(path).content_id()


def build_tasks(study: Study) -> list[dict]:
    """One task per point: the point's values plus every input its result depends on."""
    traces = {t: resolve_trace(study, t) for t in study.axes["trace"]}
    identities = {t: trace_identity(p) for t, p in traces.items()}
    tasks = []
    for index, point in enumerate(study.points()):
        spec = study.methods[point["method"]]
        task = {**point, "point_index": index, "engine_method": spec["engine"],
                "sim_method": SIM_METHOD[spec["engine"]], "trace_path": str(traces[point["trace"]]),
                "trace_id": identities[point["trace"]],
                "kernel": study.kernel, "method_spec": spec}
        task["device_numbers"] = device_fingerprint(device_for(task))
        task["point_hash"] = point_hash({**task, "point_index": None, "trace_path": None,
                                         "sparsity": study.sparsity, "measure_version": MEASURE_VERSION})
        tasks.append(task)
    return tasks


def kept_key(task: dict) -> tuple:
    return task["trace"], task["method"], task["k"]


def attach_kept(tasks: list[dict], measured: dict[tuple, dict]) -> None:
    for task in tasks:
        m = measured.get(kept_key(task)) or {"fractions": {}, "measured_range": None}
        fractions = m["fractions"].get(task["context"])
        fraction, source = kept_fraction(fractions, m["measured_range"], task["context"], task["page_size"],
                                         task["k"], task["engine_method"])
        source = m.get("sources", {}).get(task["context"], source) if source != "dense" else source
        task.update(kept_v_fraction=fraction, kept_source=source,
                    kept_rows_fraction=fractions[1] if source != "dense" else 1.0)


def run_study(study_path, out, scheduler: str | None = None, workers: int = 2,
              progress: bool = True, log=sys.stderr, overwrite: bool = False, yes: bool = True) -> pd.DataFrame:
    """Run (or resume) a study; returns and writes the results table to ``out``. An existing ``out``
    must be this study's earlier (partial) results, unless ``overwrite``; a study of more than
    ``CONFIRM_POINTS`` points runs only with ``yes``."""
    out = Path(out)
    study = validate(study_path)
    prepare_output(out, [study.path, *(resolve_trace(study, t) for t in study.axes["trace"])],
                   overwrite=overwrite, resumable=lambda path: parts.same_study(path, study.name))
    if overwrite and not parts.same_study(out, study.name):
        clear_output(out)
        parts.remove_parts(out)
    confirm_size(study, yes, log)
    tasks = build_tasks(study)
    done = parts.finished_rows(out)
    done = done[done["point_hash"].isin({t["point_hash"] for t in tasks})]
    todo = [t for t in tasks if t["point_hash"] not in set(done["point_hash"])]
    print(f"study {study.name}: {len(tasks)} points, {len(done)} already done, {len(todo)} to run",
          file=log)
    if todo:
        part_dir = parts.parts_dir(out)
        with dask_client(scheduler, workers) as client:
            attach_kept(todo, measure_all(study, todo, part_dir, client=client, log=log, progress=progress))
            run_tasks(todo, evaluate_point, lambda rows: parts.write_part(part_dir, rows), client=client,
                      progress=progress)
    results = assemble(tasks, parts.finished_rows(out))
    write_table(results, out, {"kind": parts.RESULTS_KIND, "study": study.as_dict(),
                               "study_file": str(study.path), "points": len(results)})
    parts.remove_parts(out)
    return results


def assemble(tasks: list[dict], rows: pd.DataFrame) -> pd.DataFrame:
    """The results in point order, whatever order they finished in."""
    order = {t["point_hash"]: i for i, t in enumerate(tasks)}
    rows = rows[rows["point_hash"].isin(order)].copy()
    if len(rows) != len(tasks):
        raise RuntimeError(f"{len(tasks) - len(rows)} study points have no result")
    rows["point_index"] = rows["point_hash"].map(order)
    return rows.sort_values("point_index").reset_index(drop=True)
