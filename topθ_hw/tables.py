"""Plain-data hand-off between stages: a pandas frame plus a JSON metadata dict in one Parquet file.

Every stage writes its table with :func:`write_table` and the next stage reads it with
:func:`read_table`; neither reaches into the other's code. Writes are atomic (temp file +
rename) so an interrupted run never leaves a half-written table behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from topθ_hw.errors import UserError

META_KEY = b"toptheta"


def write_table(df: pd.DataFrame, path: str | os.PathLike, meta: dict) -> Path:
    """Write ``df`` with ``meta`` (JSON-serialisable) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(df, preserve_index=False)
    schema_meta = dict(table.schema.metadata or {})
    schema_meta[META_KEY] = json.dumps(meta, sort_keys=True, default=str).encode()
    table = table.replace_schema_metadata(schema_meta)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_table(path: str | os.PathLike, kind: str | None = None) -> tuple[pd.DataFrame, dict]:
    """Read a table written by :func:`write_table`; ``kind`` checks ``meta["kind"]``."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserError(f"{path}: not a readable Parquet file ({exc})") from exc
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise UserError(f"{path}: Parquet file has no '{META_KEY.decode()}' metadata; "
                        "was it written by toptheta?")
    meta = json.loads(raw)
    if kind is not None and meta.get("kind") != kind:
        raise UserError(f"{path}: field 'kind' is {meta.get('kind')!r}, expected {kind!r}")
    return table.to_pandas(), meta
