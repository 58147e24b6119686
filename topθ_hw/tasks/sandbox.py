"""Run an untrusted Python program in a child process with a wall-clock timeout and resource limits.

The child runs ``python -I -B`` (isolated: no user site, no environment variables, no cwd on
``sys.path``) in a fresh temporary directory, in its own session so the whole process group is killed
on timeout, with RLIMIT_CPU (CPU seconds), RLIMIT_AS (address space), RLIMIT_FSIZE (bytes written per
file) and RLIMIT_CORE = 0 set before exec. Network access is not blocked. Never ``exec`` generated code
in this process.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Limits:
    wall_seconds: float = 20.0   # the machine may be shared: wall > CPU
    cpu_seconds: int = 10
    memory_bytes: int = 1 << 30
    file_bytes: int = 1 << 20


@dataclass(frozen=True)
class Outcome:
    status: str          # passed | failed | timeout (wall clock or CPU time)
    returncode: int | None
    stderr_tail: str

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def _limit(limits: Limits):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


def run_program(source: str, limits: Limits = Limits()) -> Outcome:
    """Exit status 0 within the limits: passed; any other exit or signal: failed; past the wall clock: timeout."""
    with tempfile.TemporaryDirectory(prefix="toptheta-sandbox-") as tmp:
        program = Path(tmp) / "program.py"
        program.write_text(source, encoding="utf-8")
        child = subprocess.Popen([sys.executable, "-I", "-B", str(program)], cwd=tmp, env={"PATH": "/usr/bin:/bin"},
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 start_new_session=True, preexec_fn=_limit(limits))
        try:
            _, err = child.communicate(timeout=limits.wall_seconds)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.communicate()
            return Outcome("timeout", None, "")
    tail = err.decode("utf-8", "replace")[-400:]
    if child.returncode in (-signal.SIGXCPU, -signal.SIGKILL):   # past RLIMIT_CPU (soft, then hard)
        return Outcome("timeout", child.returncode, tail)
    return Outcome("passed" if child.returncode == 0 else "failed", child.returncode, tail)
