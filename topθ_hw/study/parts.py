"""Finished points on disk, so an interrupted study loses none and a restart continues.

Every batch of finished points is written as one small Parquet part file, atomically
(``write_table``: temp file + rename), into ``<results>.parts/``. A part's rows carry the
``point_hash`` of their point (the hash of everything the evaluation depends on), so a
restart skips exactly the points whose inputs have not changed. The final results file is
assembled from the parts; once it is written the parts are removed, and the results file
itself then serves as the record of finished points.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from topθ_hw.errors import UserError
from topθ_hw.outputs import write_text_atomic
from topθ_hw.tables import read_table, write_table

PART_KIND = "study-part"
RESULTS_KIND = "study-results"


def parts_dir(results_path) -> Path:
    results_path = Path(results_path)
    return results_path.with_name(results_path.name + ".parts")


def write_part(directory: Path, rows: list[dict]) -> Path:
    """Persist finished points; the file name is the first point's hash (unique per batch)."""
    name = f"part-{rows[0]['point_hash']}-{len(rows)}.parquet"
    return write_table(pd.DataFrame(rows), directory / name, {"kind": PART_KIND})


def finished_rows(results_path) -> pd.DataFrame:
    """All rows finished so far: the parts, plus an earlier results file at the same path."""
    frames = []
    results_path = Path(results_path)
    if results_path.exists():
        df, _ = read_table(results_path, kind=RESULTS_KIND)
        frames.append(df)
    directory = parts_dir(results_path)
    for part in sorted(directory.glob("part-*.parquet")) if directory.exists() else []:
        try:
            df, _ = read_table(part, kind=PART_KIND)
        except UserError:
            continue  # a part from another version of the format: recompute its points
        frames.append(df)
    if not frames:
        return pd.DataFrame({"point_hash": pd.Series([], dtype=str)})
    return pd.concat(frames, ignore_index=True).drop_duplicates("point_hash", keep="last")


def same_study(results_path, name: str) -> bool:
    """Whether ``results_path`` holds (partial) results of the study called ``name``: the state a
    re-run resumes from. Anything else at that path is another job's output."""
    try:
        _, meta = read_table(results_path, kind=RESULTS_KIND)
    except UserError:
        return False
    return (meta.get("study") or {}).get("study", {}).get("name") == name


def write_json_atomic(path: Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, sort_keys=True))


def read_json(path: Path):
    """A cached JSON file, or None when it is missing or damaged (then it is recomputed)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def remove_parts(results_path) -> None:
    shutil.rmtree(parts_dir(results_path), ignore_errors=True)
