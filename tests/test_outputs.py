"""The one output rule (topθ_hw/outputs.py) on real files: inputs are never outputs, existing outputs
are kept unless --overwrite or resumable, unwritable places are refused before any work."""

from __future__ import annotations

import os

import pytest

from topθ_hw.errors import UserError
from topθ_hw.outputs import check_output, prepare_output, write_text_atomic


def test_output_may_not_be_or_hold_or_sit_inside_an_input(tmp_path):
    store = tmp_path / "t.zarr"
    (store / "seq").mkdir(parents=True)
    text = tmp_path / "a.txt"
    text.write_text("x")
    link = tmp_path / "link.txt"
    link.symlink_to(text)
    for out, directory in ((text, False), (link, False), (store / "zarr.json", False), (store / "seq" / "o", True),
                           (tmp_path, True)):
        with pytest.raises(UserError, match="input"):
            check_output(out, [store, text], directory=directory)
    assert check_output(tmp_path / "new" / "o.parquet", [store, text]) == tmp_path / "new" / "o.parquet"


def test_existing_output_needs_overwrite_or_resumable_state(tmp_path):
    out = tmp_path / "o.parquet"
    out.write_text("old")
    with pytest.raises(UserError, match="--overwrite"):
        check_output(out)
    check_output(out, overwrite=True)
    check_output(out, resumable=lambda path: path.read_text() == "old")
    with pytest.raises(UserError, match="--overwrite"):
        check_output(out, resumable=lambda path: False)
    assert out.read_text() == "old"  # checking never touches it


def test_folders_and_files_are_not_confused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        check_output(tmp_path / "f", directory=True)
    with pytest.raises(UserError, match="is a folder"):
        check_output(tmp_path, directory=False)
    with pytest.raises(UserError, match="is a file"):
        check_output(tmp_path / "f" / "below.parquet")
    (tmp_path / "empty").mkdir()
    check_output(tmp_path / "empty", directory=True)  # nothing to lose


def test_unwritable_place_is_refused_before_work():
    with pytest.raises(UserError, match="not writable"):
        check_output("/proc/toptheta/out.parquet")


def test_overwrite_empties_a_folder_and_files_get_ordinary_modes(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "stale.png").write_bytes(b"old")
    prepare_output(out, directory=True, overwrite=True)
    assert not out.exists() or not any(out.iterdir())
    path = write_text_atomic(out / "index.html", "<html>")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in out.iterdir()] == ["index.html"]  # no temporary file left behind
