"""Honest statistics of ``percept evaluate``: nested cross-validation (5 outer x 5 inner folds, 3 repeats,
-k 10,20,30,40,50, 2,000 cluster resamples) on the 20,000-image x 1024-dim benchmark survey's image means,
beside ordinary cross-validation; and inter-rater reliability of its individual ratings (demo.csv)."""

from __future__ import annotations

import os
import time

from benchmarks.bench_evaluate import KS, PLAN, load
from benchmarks.common import benchmark_survey
from percept.data.ratings import load_ratings
from percept.study.crossval import cross_validate
from percept.study.nested import nested_cross_validate
from percept.study.reliability import survey_reliability


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def main() -> None:
    folder = benchmark_survey()
    dataset = load(folder)
    print(f"nested cross-validation, {len(dataset.names)} images x {dataset.vectors.shape[1]} dims, "
          f"{PLAN.folds} outer x {PLAN.folds} inner folds x {PLAN.repeats} repeats, -k {','.join(map(str, KS))}")
    _, plain = timed(cross_validate, dataset.vectors, dataset.samples, KS, PLAN, baselines=False)
    results, nested = timed(nested_cross_validate, dataset.vectors, dataset.samples, KS, PLAN)
    print(f"  ordinary CV (KNN only)   {plain:6.2f} s")
    print(f"  nested CV + intervals    {nested:6.2f} s  (load average {os.getloadavg()[0]:.2f})")
    for result in results:
        low, high = result.intervals["r2"]
        print(f"    {result.category:12s} R² {result.pooled['r2']:.3f} [{low:.3f}, {high:.3f}]  K chosen "
              f"{result.k_counts}")
    ratings = load_ratings(folder / "demo.csv")
    reliability, seconds = timed(survey_reliability, ratings)
    print(f"inter-rater reliability, {len(ratings)} ratings, 2,000 image resamples: {seconds:.2f} s")
    for result in reliability:
        print(f"    {result.category:12s} alpha {result.alpha.value:.3f}  ICC(2,k) {result.icc2k.value:.3f} "
              f"(k {result.harmonic_count:.2f})  ceiling R² {result.ceiling.value:.3f}")


if __name__ == "__main__":
    main()
