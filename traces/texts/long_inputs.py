"""Write the long real inputs of the long-context traces (never committed: tens of thousands of tokens).

- ``austen-emma-full.txt``: the whole of Jane Austen's *Emma* (public domain), from Debian
  ``r-cran-janeaustenr`` (decoded by ``extract.py``'s R reader), ~210k tokens;
- ``austen-pride-and-prejudice-full.txt``: the whole of *Pride and Prejudice* (calibration text);
- ``python-stdlib.txt``: real Python source, the standard library modules in ``STDLIB_MODULES``
  of the running interpreter concatenated, each behind a ``# ==== Lib/NAME ====`` line, ~110k tokens;
- ``python-stdlib-calibration.txt``: other modules (``CALIBRATION_MODULES``), for calibration.

Usage (stdlib only)::

    mkdir -p /tmp/w && cd /tmp/w && apt-get download r-cran-janeaustenr && dpkg-deb -x r-cran-janeaustenr_*.deb ex
    python traces/texts/long_inputs.py /tmp/w /work/traces-long/texts
"""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from extract import r_character_vector, rdb_blobs  # noqa: E402  (the sibling script's R reader)

STDLIB_MODULES = ("typing.py", "argparse.py", "dataclasses.py", "functools.py", "inspect.py",
                  "enum.py", "pathlib.py", "subprocess.py", "tarfile.py", "zipfile.py")
# Other modules, for calibrating thresholds on different code than they are evaluated on.
CALIBRATION_MODULES = ("collections/__init__.py", "logging/__init__.py", "json/decoder.py", "shutil.py")


def austen(work: Path, title: str) -> str:
    rdb = work / "ex/usr/lib/R/site-library/janeaustenr/data/Rdata.rdb"
    novels = [v for b in rdb_blobs(rdb.read_bytes()) if (v := r_character_vector(b))]
    by_title = {lines[0].strip().upper(): "\n".join(lines) for lines in novels}
    return by_title[title].strip() + "\n"


def python_stdlib(modules=STDLIB_MODULES) -> str:
    lib = Path(sysconfig.get_paths()["stdlib"])
    parts = [f"# ==== Lib/{name} ====\n{(lib / name).read_text(encoding='utf-8')}" for name in modules]
    return "\n".join(parts)


def main(work: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    texts = {"austen-emma-full.txt": austen(work, "EMMA"),
             "austen-pride-and-prejudice-full.txt": austen(work, "PRIDE AND PREJUDICE"),
             "python-stdlib.txt": python_stdlib(),
             "python-stdlib-calibration.txt": python_stdlib(CALIBRATION_MODULES)}
    for name, text in texts.items():
        (out / name).write_text(text, encoding="utf-8")
        print(f"{out / name}: {len(text)} chars")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
