"""Replay each (trace, method, k) a study needs once, and turn it into kept fractions per context.

The replays are the expensive part of a study, so each one's result (fractions at every context
the study asks for) is cached as a small JSON file in the study's parts directory, keyed by a
hash of its inputs; a resumed study reuses them.
"""

from __future__ import annotations

import inspect
import sys
from functools import lru_cache
from pathlib import Path

from tqdm import tqdm

from topθ_hw.study import parts
from topθ_hw.errors import UserError
from topθ_hw.study.kept import kept_fractions, kept_masks
from topθ_hw.study.masks import load_mask_stats, measured_fractions
from topθ_hw.study.runner import run_tasks
from topθ_hw.study.spec import Study, point_hash

MEASURE_VERSION = 2  # bump when the measurement below changes; part of every point's hash


@lru_cache(maxsize=8)
def calibrated_table(trace_path: str, trace_id: str, k: int, placement: str, sigma: float,
                     sequences: tuple[str, ...]):
    """Top-θ thresholds for one k, calibrated on ``sequences`` (default: the trace's first).

    Memoised per process (``trace_id`` changes with the trace): a study with several Top-θ
    variants at the same k, or a notebook that calibrates before it runs a study, calibrates once.
    """
    from topθ_hw.engine.calibrate import calibrate
    from topθ_hw.store import open_trace

    trace = open_trace(trace_path)
    return calibrate(trace, list(sequences) or trace.sequences[:1], k=k, placement=placement, sigma=sigma)


def replay_stats(trace_path: str, trace_id: str, spec: dict, k: int, sparsity: dict, progress=None):
    """The engine's statistics for one method and k on the trace's evaluation sequences: by
    default every sequence but the first (which Top-θ calibrates on), for every method alike, so
    top-k and Top-θ are compared on the same text."""
    from topθ_hw.engine import TopK, TopTheta
    from topθ_hw.engine.run import replay_trace
    from topθ_hw.store import open_trace

    if spec["engine"] == "topk":
        method = TopK(k=k)
    else:
        placement = spec.get("placement", sparsity["placement"])
        table = calibrated_table(trace_path, trace_id, k, placement, float(spec.get("sigma", sparsity["sigma"])),
                                 tuple(sparsity["calibration_sequences"]))
        method = TopTheta(thresholds=table, placement=placement, capk=spec.get("capk", False),
                          sdc=spec.get("sdc", "none"), vmc=spec.get("vmc", False))
    trace = open_trace(trace_path)
    sequences = sparsity["evaluation_sequences"] or trace.sequences[1:] or trace.sequences
    options = {"sequences": sequences, "layers": sparsity["layers"] or None, "progress": progress}
    if "decode_only" in inspect.signature(replay_trace).parameters:
        options["decode_only"] = True  # a study reads decode statistics only; prefill is most of the work
    stats, _ = replay_trace(trace, method, **options)
    return stats


def measure_job(job: dict) -> dict:
    """All methods of one (trace, k): Top-θ variants share one calibration. Pure; runs anywhere.

    A measured mask file instead of a trace store is read, not replayed (topθ_hw.study.masks)."""
    results = {}
    if job["trace_path"].endswith(".safetensors"):
        stats = load_mask_stats(job["trace_path"])
        for name, spec in job["methods"].items():
            if spec.get("capk"):
                raise UserError(f"{job['trace']}: measured masks are plain Top-θ and top-k; method {name!r} "
                                "uses capk, which changes the masks: study it on a trace store")
            results[name] = measured_fractions(stats, spec["engine"], job["k"], job["contexts"][name])
        return {**job, "results": results}
    for name, spec in job["methods"].items():
        stats = replay_stats(job["trace_path"], job["trace_id"], spec, job["k"], job["sparsity"],
                             progress=tqdm if job["progress"] else None)
        masks = kept_masks(stats, source=f"replay of {job['trace']} with {name}, k = {job['k']}")
        results[name] = {"measured_range": list(masks.measured_range),
                         "fractions": {str(c): kept_fractions(masks, c) for c in job["contexts"][name]}}
    return {**job, "results": results}


def measure_all(study: Study, tasks: list[dict], cache_dir: Path, client=None, log=sys.stderr,
                progress: bool = False) -> dict[tuple, dict]:
    """(trace, method, k) → {"fractions": {context: {page: f}}, "measured_range": (lo, hi)}.

    One job per (trace, k) not cached yet, on the Dask ``client`` (or in this process)."""
    needed: dict[tuple, set] = {}
    first: dict[tuple, dict] = {}
    for t in tasks:
        if t["engine_method"] != "dense" and t["k"] < t["context"]:
            needed.setdefault((t["trace"], t["method"], t["k"]), set()).add(t["context"])
            first.setdefault((t["trace"], t["method"], t["k"]), t)
    cached, jobs = {}, {}
    for (trace, method, k), contexts in sorted(needed.items()):
        task = first[(trace, method, k)]
        key = point_hash({"trace": task["trace_id"], "method": study.methods[method], "k": k,
                          "sparsity": study.sparsity, "contexts": sorted(contexts),
                          "measure_version": MEASURE_VERSION})
        path = cache_dir / f"kept-{key}.json"
        cached[(trace, method, k)] = path
        if _decode(parts.read_json(path)) is not None:
            continue  # cached by an earlier run; a damaged cache file is recomputed
        job = jobs.setdefault((trace, k), {"trace": trace, "trace_path": task["trace_path"],
                                           "trace_id": task["trace_id"], "k": k, "sparsity": study.sparsity,
                                           "progress": progress and client is None, "methods": {},
                                           "contexts": {}, "cache": {}})
        job["methods"][method] = study.methods[method]
        job["contexts"][method] = sorted(contexts)
        job["cache"][method] = str(path)
    for job in jobs.values():
        print(f"replaying {job['trace']} at k = {job['k']} with {', '.join(job['methods'])} "
              "for kept fractions", file=log)

    def save(done: list[dict]) -> None:
        for job in done:
            for method, result in job["results"].items():
                parts.write_json_atomic(Path(job["cache"][method]), result)

    # In this process each replay shows its own bar; on a cluster, one bar counts finished jobs.
    run_tasks(list(jobs.values()), measure_job, save, client=client, progress=progress and client is not None,
              desc="replays", unit="k")
    return {key: _decode(parts.read_json(path)) for key, path in cached.items()}


def _decode(raw) -> dict | None:
    """JSON keys are strings; the fractions are looked up by int context and page size. None when
    the cached file is not what :func:`measure_job` writes."""
    try:
        return {"measured_range": tuple(raw["measured_range"]),
                "fractions": {int(c): {int(p): float(f) for p, f in fr.items()}
                              for c, fr in raw["fractions"].items()},
                "sources": {int(c): s for c, s in raw.get("sources", {}).items()}}
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
