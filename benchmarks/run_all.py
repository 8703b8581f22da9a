"""``make bench``: run every benchmark (each ``benchmarks/bench_*.py``) and print its figures.

``python -m benchmarks.run_all NAME ...`` runs only the named ones (e.g. ``bench_dropin``).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

FIRST = ("bench_dropin", "bench_rating")  # the headline figures come first


def all_benchmarks() -> list[str]:
    found = sorted(path.stem for path in Path(__file__).parent.glob("bench_*.py"))
    return [name for name in FIRST if name in found] + [name for name in found if name not in FIRST]


def main(names: list[str]) -> None:
    for name in names or all_benchmarks():
        print(f"== {name}", flush=True)
        importlib.import_module(f"benchmarks.{name}").main()
        sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
