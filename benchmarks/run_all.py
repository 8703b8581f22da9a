"""``make bench``: run every benchmark and print its figures."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = ("bench_dropin", "bench_prompts", "bench_encoding", "bench_rating", "bench_evaluate",
              "bench_survey_export")


def main(names: list[str]) -> None:
    for name in names or BENCHMARKS:
        print(f"== {name}", flush=True)
        importlib.import_module(f"benchmarks.{name}").main()
        sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
