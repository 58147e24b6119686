"""Plain-data hand-off between stages: a pandas frame plus a JSON metadata dict in one Parquet file.

Every stage writes its table with :func:`write_table` and the next stage reads it with
:func:`read_table`; neither reaches into the other's code. Writes are atomic (temp file +
rename) so an interrupted run never leaves a half-written table behind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from topθ_hw.errors import UserError
from topθ_hw.outputs import atomic_write, write_text_atomic

META_KEY = b"toptheta"


def write_table(df: pd.DataFrame, path: str | os.PathLike, meta: dict) -> Path:
    """Write ``df`` with ``meta`` (JSON-serialisable) to ``path`` atomically."""
    path = Path(path)
    table = pa.Table.from_pandas(df, preserve_index=False)
    schema_meta = dict(table.schema.metadata or {})
    schema_meta[META_KEY] = json.dumps(meta, sort_keys=True, default=str).encode()
    table = table.replace_schema_metadata(schema_meta)
    with atomic_write(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return path


def read_table(path: str | os.PathLike, kind: str | None = None) -> tuple[pd.DataFrame, dict]:
    """Read a table written by :func:`write_table`; ``kind`` checks ``meta["kind"]``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file" if not path.exists() else f"{path}: is a folder, expected a "
                        "Parquet file")
    try:
        table = pq.read_table(path)
        frame = table.to_pandas()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable Parquet file ({' '.join(str(exc).split())[:160]})") from exc
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise UserError(f"{path}: Parquet file has no '{META_KEY.decode()}' metadata; "
                        "was it written by toptheta?")
    try:
        meta = json.loads(raw)
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise UserError(f"{path}: metadata '{META_KEY.decode()}' is not a JSON object")
    if kind is not None and meta.get("kind") != kind:
        raise UserError(f"{path}: field 'kind' is {meta.get('kind')!r}, expected {kind!r}")
    check_columns(path, frame, meta.get("kind"))
    return frame, meta


# The columns the next stage reads, per table kind: a table relabelled as another kind is refused here.
KIND_COLUMNS = {
    "engine-stats": ("level", "phase", "layer", "kept_elements", "dense_elements", "kept_v_rows", "v_rows_total"),
    "sim-results": ("scope", "phase", "time_s"),
    "study-results": ("point_hash", "device", "method", "k", "context", "time_s"),
    "study-part": ("point_hash",),
}


def check_columns(path, frame: pd.DataFrame, kind) -> None:
    missing = [c for c in KIND_COLUMNS.get(kind, ()) if c not in frame.columns]
    if missing:
        raise UserError(f"{path}: a {kind!r} table lacks column(s) {missing}; is it another kind of table?")



def write_csv_and_markdown(frame: pd.DataFrame, markdown: str, folder: str | os.PathLike, stem: str,
                           float_format: str = "%.6g") -> None:
    """A results table as ``folder/stem.csv`` and ``folder/stem.md``, each written atomically."""
    write_text_atomic(Path(folder) / f"{stem}.csv", frame.to_csv(index=False, float_format=float_format))
    write_text_atomic(Path(folder) / f"{stem}.md", markdown)
