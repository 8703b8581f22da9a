"""The repository stands alone: no code, test or script reads anything outside it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTSIDE = re.compile(r"\.\./shared|/work/|/home/[a-z]|/Users/[A-Za-z]")
CHECKED_SUFFIXES = {".py", ".sh", ".js", ".html", ".toml", ".cfg", ".ini", ""}


def tracked_files() -> list[Path]:
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [ROOT / name for name in listing.decode().split("\0") if name]


def test_no_code_reads_outside_the_repository():
    offenders = []
    for path in tracked_files():
        if path.suffix not in CHECKED_SUFFIXES or not path.is_file() or path == Path(__file__).resolve():
            continue
        if path.name != "Makefile" and path.suffix == "" and not path.read_bytes().startswith(b"#!"):
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "paths outside the repository:\n" + "\n".join(offenders)


def test_fixtures_live_in_tests():
    assert (ROOT / "tests" / "reference" / "tools" / "clip-retrieval").is_file()
    assert (ROOT / "tests" / "data" / "ams-20240227-walkability-map.geojson.gz").is_file()
