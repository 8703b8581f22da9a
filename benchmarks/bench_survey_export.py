"""``percept survey export`` of a 50,000-rating survey database: time and peak memory (target < 10 s).

The database runs in a temporary PostgreSQL + PostGIS server (the tests' ``postgres_fixtures``),
loaded with a synthetic sample survey of about 50,000 ratings.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from benchmarks.common import BENCH_DIR, console_script, measure

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from postgres_fixtures import TemporaryPostgres, load_sample_survey, missing_reason  # noqa: E402

IMAGES = 16_700  # about three ratings each: ~50,000 ratings
RUNS = 3
TARGET_S = 10.0


def survey_folder() -> Path:
    from percept.synthetic.vectors import generate_synthetic_survey

    folder = BENCH_DIR / f"survey-db-{IMAGES}"
    if not (folder / "demo.csv").exists():
        generate_synthetic_survey(folder, n_images=IMAGES, dim=8, ratings_per_image=3.0, seed=0)
    return folder


def main() -> None:
    reason = missing_reason()
    if reason:
        print(f"  skipped: {reason}")
        return
    survey = survey_folder()
    with TemporaryPostgres() as server:
        load_sample_survey(server.admin_conninfo(server.new_database("bench")), survey)
        out = BENCH_DIR / "survey-export"
        command = [console_script("percept"), "survey", "export", "--db", server.url("bench"), "-o", str(out), "-q"]
        runs = [measure(command, BENCH_DIR)[:2] for _ in range(RUNS)]
        library = statistics.median(_library_seconds(server.url("bench"), out) for _ in range(RUNS))
    ratings = sum(1 for _ in open(out / "demographics.csv", encoding="utf-8")) - 1
    seconds = statistics.median(s for s, _ in runs)
    peak = max(mb for _, mb in runs)
    print(f"percept survey export of {ratings:,} ratings ({IMAGES:,} images), median of {RUNS} runs")
    print(f"  command {seconds:6.2f} s  peak {peak:5.0f} MB  (target < {TARGET_S:.0f} s: "
          f"{'met' if seconds < TARGET_S else 'MISSED'})")
    print(f"  export_survey() alone {library:6.2f} s  ({ratings / library:,.0f} ratings/s; the rest is start-up)")


def _library_seconds(url: str, out: Path) -> float:
    """One export in this process: the queries, shaping and writing without the command's start-up."""
    from percept.city.survey_export import export_survey

    start = time.perf_counter()
    export_survey(url, out)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
