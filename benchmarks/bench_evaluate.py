"""``percept evaluate`` core: 5-fold x 3-repeat cross-validation over -k 10,20,30,40,50 on the
20,000-image x 1024-dim benchmark survey, KNN alone and with the training-mean and ridge baselines."""

from __future__ import annotations

import time

from benchmarks.common import benchmark_survey
from percept.crossval import CVPlan, cross_validate

KS = [10, 20, 30, 40, 50]
PLAN = CVPlan(folds=5, repeats=3, seed=0)
TARGET_SECONDS = 15.0


def load(folder):
    """Vectors and per-category samples, as ``percept evaluate`` loads them."""
    from percept.cli.common import ArgumentParser
    from percept.dataset import add_data_arguments, load_dataset

    parser = ArgumentParser()
    add_data_arguments(parser)
    args = parser.parse_args(["-g", str(folder / "data.geojson"), "-e", str(folder / "embeddings"), "-M", "synthetic"])
    return load_dataset(args, log=lambda message: None)


def main() -> None:
    dataset = load(benchmark_survey())
    sizes = ", ".join(f"{c} {len(s)}" for c, s in dataset.samples.items())
    print(f"percept evaluate core, {len(dataset.names)} images x {dataset.vectors.shape[1]} dims ({sizes} samples), "
          f"{PLAN.folds}-fold x {PLAN.repeats} repeats, -k {','.join(map(str, KS))}")
    for label, baselines in (("KNN only", False), ("KNN + mean + ridge baselines", True)):
        start = time.perf_counter()
        cross_validate(dataset.vectors, dataset.samples, KS, PLAN, baselines=baselines)
        seconds = time.perf_counter() - start
        print(f"  {label:30s} {seconds:6.2f} s  (target {TARGET_SECONDS:.0f} s)")


if __name__ == "__main__":
    main()
