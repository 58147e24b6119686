"""The README's main job from a built wheel: `python -m build`, install it into a throwaway virtual
environment (its dependencies reused from this one, read-only: no network, torch stays the pinned
CPU build), then `toptheta demo` in an empty folder finds its data through the package."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

from cli_helpers import REPO, tiny_study


def run(argv, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=400, **kw)
    assert done.returncode == 0, f"{argv}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def test_wheel_runs_the_demo_from_an_empty_folder(tmp_path):
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", dist, REPO], cwd=REPO)
    wheel, = dist.glob("toptheta_hw-*.whl")
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    purelib = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    # This environment's packages, appended after the venv's own: the wheel's topθ_hw comes first.
    reused = {sysconfig.get_paths()["purelib"], *site.getsitepackages()}
    (purelib / "reuse_test_environment.pth").write_text("\n".join(sorted(reused)) + "\n")
    run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", "--no-index",
         "--ignore-installed", wheel])
    empty = tmp_path / "anywhere"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = run([python, "-c", "import topθ_hw; print(topθ_hw.__file__)"], cwd=empty, env=env).stdout
    assert Path(where.strip()).is_relative_to(purelib), where
    # Three points on one layer keep the test short; the study names the trace as a study in the
    # repository does, and the wheel must resolve it to its own copy.
    study = tiny_study(tmp_path / "tiny.toml", "traces/smollm2-135m.zarr", name="wheel-demo")
    done = run([venv / "bin" / "toptheta", "demo", "--layers", "2", "--devices", "h100", "--study", study],
               cwd=empty, env=env)
    index = empty / "out" / "demo" / "report" / "index.html"
    assert f"open {Path('out/demo/report/index.html')}" in done.stdout and index.is_file()
    assert index.read_text().count("data:image/png;base64,") >= 4
    assert (empty / "out" / "demo" / "stats-toptheta.parquet").is_file()
