"""One rule for everything a command writes, checked before any work starts.

:func:`check_output` refuses an output that is one of the command's inputs or lies inside one
(or would swallow one), an output whose folder cannot be written, a file output that is a
directory (and the reverse), and an existing output, unless ``--overwrite`` is given or it is
this same job's resumable state (``resumable(path) -> bool``). :func:`atomic_write` and
friends write through a temporary file in the same folder, renamed into place, with the
permissions an ordinary file gets (0666 less the umask), not ``mkstemp``'s 0600.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path

from topθ_hw.errors import UserError


def check_output(out, inputs: Iterable = (), *, overwrite: bool = False, directory: bool = False,
                 resumable: Callable[[Path], bool] | None = None, flag: str = "--out") -> Path:
    """Validate ``out`` (a file, or a folder when ``directory``) against the command's ``inputs``."""
    out = Path(out)
    target = out.resolve()
    for given in inputs:
        if given is None:
            continue
        source = Path(given).resolve()
        if target == source or source in target.parents:
            raise UserError(f"{flag} {out} is the input {given} or lies inside it; "
                            "choose an output path outside every input")
        if directory and target in source.parents:
            raise UserError(f"{flag} {out} would hold the input {given}; choose a folder that holds no input")
    if out.exists() or out.is_symlink():
        _check_existing(out, directory, overwrite, resumable, flag)
    _check_writable_parent(out, flag)
    return out


def _check_existing(out: Path, directory: bool, overwrite: bool, resumable, flag: str) -> None:
    if directory and not out.is_dir():
        raise UserError(f"{flag} {out} is a file, expected a folder (or a path that does not exist)")
    if not directory and out.is_dir():
        raise UserError(f"{flag} {out} is a folder, expected a file path")
    if directory and not any(out.iterdir()):
        return  # an empty folder holds nothing to lose
    if overwrite or (resumable is not None and resumable(out)):
        return
    raise UserError(f"{flag} {out} already exists; pass --overwrite to replace it, or choose another path")


def _check_writable_parent(out: Path, flag: str) -> None:
    """The nearest existing folder on the way to ``out`` must be a writable folder."""
    probe = out if out.is_dir() else out.parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"{flag} {out}: {probe} is a file, so no folder can be made there")
    try:  # a real write, not os.access: root passes every permission check but not a read-only mount
        fd, tmp = tempfile.mkstemp(prefix=".toptheta-probe-", dir=probe)
    except OSError as exc:
        raise UserError(f"{flag} {out}: folder {probe} is not writable ({exc.strerror})") from None
    os.close(fd)
    os.unlink(tmp)


def clear_output(out: Path) -> None:
    """Remove an existing output (the user passed ``--overwrite``)."""
    if out.is_dir() and not out.is_symlink():
        shutil.rmtree(out)
    elif out.exists() or out.is_symlink():
        out.unlink()


def file_mode() -> int:
    """The mode ``open()`` would give a new file: 0666 less the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_write(path) -> Path:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes_atomic(path, data: bytes) -> Path:
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def add_overwrite(parser) -> None:
    """The one ``--overwrite`` flag every writing command takes."""
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out if it exists (by default an existing output is refused)")


def prepare_output(out, inputs: Iterable = (), *, overwrite: bool = False, directory: bool = False,
                   resumable: Callable[[Path], bool] | None = None, flag: str = "--out") -> Path:
    """:func:`check_output`; with ``overwrite``, an existing output folder is emptied now, so no stale
    file of an earlier run survives beside the new ones (a file is replaced atomically when written)."""
    out = check_output(out, inputs, overwrite=overwrite, directory=directory, resumable=resumable, flag=flag)
    if overwrite and directory and out.is_dir() and not (resumable is not None and resumable(out)):
        clear_output(out)
    return out
