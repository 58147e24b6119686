"""Driving the ``toptheta`` command as a user does, and checking how it ends."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from topθ_hw.cli import main

REPO = Path(__file__).resolve().parents[1]
TRACE = REPO / "traces" / "smollm2-135m.zarr"


def digest(path) -> str:
    """One hash of a file or of every file under a folder (names and bytes)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(f.relative_to(path).as_posix().encode() if path.is_dir() else b"")
        h.update(f.read_bytes())
    return h.hexdigest()


def refused(capsys, argv: list, inputs=(), expect: str = "") -> str:
    """Run ``toptheta argv``: it must exit 2 with one error line (containing ``expect``), no
    traceback, and leave every path in ``inputs`` byte-identical. Returns the line."""
    argv = [str(a) for a in argv]
    before = {str(p): digest(p) for p in inputs if Path(p).exists()}
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line]
    assert code == 2, f"{argv}: exit {code}, stderr {err[-600:]}"
    assert "Traceback" not in err and len(errors) == 1, err[-1200:]
    assert errors[0].startswith(f"toptheta {argv[0]}") and expect in errors[0], errors[0]
    assert {str(p): digest(p) for p in inputs if Path(p).exists()} == before, f"{argv} modified an input"
    return errors[0]


def subset_trace(source: Path, out: Path, layers: list[int]) -> Path:
    """A real trace cut to ``layers``: the shipped store's arrays, CRC32s and tokens, fewer layers."""
    keep = {f"layer_{layer:02d}" for layer in layers}
    shutil.copytree(source, out, ignore=lambda d, names: [n for n in names if n.startswith("layer_")
                                                           and n not in keep])
    root = json.loads((out / "zarr.json").read_text())
    root["attributes"]["model"]["layers"] = sorted(layers)
    (out / "zarr.json").write_text(json.dumps(root))
    return out


def tiny_study(path: Path, trace, name: str = "tiny", methods=("dense", "topk", "toptheta"), layers=(2,),
               more_axes: str = "") -> Path:
    """A study of one device, k = 64 and context 4096 on ``trace``'s ``layers``: a few points."""
    path.write_text(f"""[study]
name = "{name}"
[sparsity]
layers = {list(layers)}
[axes]
device = ["h100"]
method = {list(methods)}
k = [64]
context = [4096]
trace = ["{trace}"]
{more_axes}
""".replace("'", '"'))
    return path
