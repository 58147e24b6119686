"""The one exception type for bad input, shared by every stage, and the one way a command ends.

:func:`run_command` is the CLI's only error path: a :class:`UserError` (or an operating-system
error on a path the user named) is one line and exit 2; Ctrl-C is one line and exit 130; any
other exception is an internal error: one line naming it and the log file that holds the
traceback, exit 3.
"""

from __future__ import annotations

import errno
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

USER_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOENT, errno.EISDIR, errno.ENOTDIR, errno.EROFS,
               errno.ENOSPC, errno.EEXIST, errno.ENAMETOOLONG, errno.EDQUOT}
EXIT_USER, EXIT_INTERNAL, EXIT_INTERRUPTED = 2, 3, 130


class UserError(Exception):
    """Bad input (file, field, expected value): the CLI prints it as one line, no traceback."""


class TraceError(UserError):
    """A trace store that is missing, corrupt, incomplete or of the wrong shape."""


def log_dir() -> Path:
    """Where internal-error tracebacks go: ``$TOPTHETA_LOG_DIR`` or the system temp folder."""
    return Path(os.environ.get("TOPTHETA_LOG_DIR") or Path(tempfile.gettempdir()) / "toptheta-logs")


def write_log(command: str, argv: list[str] | None) -> Path:
    """The current exception's traceback, with the command line, in a new log file."""
    directory = log_dir()
    directory.mkdir(parents=True, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix=f"{time.strftime('%Y%m%d-%H%M%S')}-{command}-", suffix=".log",
                                dir=directory)
    with os.fdopen(fd, "w") as f:
        f.write(f"toptheta {' '.join(argv if argv is not None else sys.argv[1:])}\n\n")
        f.write(traceback.format_exc())
    return Path(path)


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def close_progress_bars() -> None:
    """End any progress bar an exception left open, so the message starts on its own line."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", None) or []):
        bar.close()


def run_command(command: str, func, args, argv: list[str] | None = None, err=None) -> int:
    """Run a command handler; every way it can end is one line on ``err`` and an exit code."""
    err = err or sys.stderr
    try:
        return int(func(args) or 0)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 — the one place that catches everything
        close_progress_bars()
        return _one_line_for(exc, command, argv, err)


def _one_line_for(exc: BaseException, command: str, argv, err) -> int:
    """Called while ``exc`` is being handled (the log takes its traceback)."""
    prefix = f"toptheta {command}: "
    if isinstance(exc, UserError):
        print(f"{prefix}error: {one_line(exc)}", file=err)
        return EXIT_USER
    if isinstance(exc, OSError) and exc.errno in USER_ERRNOS and exc.filename:
        print(f"{prefix}error: {exc.filename}: {exc.strerror}", file=err)
        return EXIT_USER
    if isinstance(exc, KeyboardInterrupt):
        print(f"{prefix}interrupted; finished results were kept.", file=err)
        return EXIT_INTERRUPTED
    return _internal(prefix, command, argv, exc, err)


def _internal(prefix: str, command: str, argv, exc: BaseException, err) -> int:
    try:
        where = f"traceback in {write_log(command, argv)}"
    except OSError as log_exc:
        where = f"no log written ({log_exc.strerror}); rerun with TOPTHETA_LOG_DIR set to a writable folder"
    print(f"{prefix}internal error ({type(exc).__name__}: {one_line(exc)[:200]}); this is a bug, "
          f"please report it; {where}", file=err)
    return EXIT_INTERNAL
