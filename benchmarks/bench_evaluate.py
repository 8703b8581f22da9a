"""``percept evaluate`` core: 5-fold x 3-repeat cross-validation over -k 10,20,30,40,50 on the
20,000-image x 1024-dim benchmark survey, KNN alone and with the training-mean and ridge baselines."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager

from benchmarks.common import benchmark_survey
from percept.study import crossval
from percept.study.crossval import CVPlan, cross_validate

KS = [10, 20, 30, 40, 50]
PLAN = CVPlan(folds=5, repeats=3, seed=0)
TARGET_SECONDS = 15.0


def load(folder):
    """Vectors and per-category samples, as ``percept evaluate`` loads them."""
    from percept.encoders.options import EncodingOptions
    from percept.study.dataset import DataSelection, load_dataset

    encoding = EncodingOptions("synthetic", embeddings_dir=folder / "embeddings")
    return load_dataset(DataSelection(folder / "data.geojson", encoding), log=lambda message: None)


@contextmanager
def stage_timer(stages: dict[str, float]):
    """Adds the time spent in the neighbour lists, the KNN folds and ridge to ``stages``."""
    names = {"neighbour_lists": "neighbour lists", "_knn_fold": "KNN folds", "ridge_loo": "ridge",
             "_fold_grams": "ridge"}
    originals = {name: getattr(crossval, name) for name in names}

    def timed(name, function):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                stages[names[name]] = stages.get(names[name], 0.0) + time.perf_counter() - start
        return wrapper

    for name, function in originals.items():
        setattr(crossval, name, timed(name, function))
    try:
        yield
    finally:
        for name, function in originals.items():
            setattr(crossval, name, function)


def main() -> None:
    dataset = load(benchmark_survey())
    sizes = ", ".join(f"{c} {len(s)}" for c, s in dataset.samples.items())
    print(f"percept evaluate core, {len(dataset.names)} images x {dataset.vectors.shape[1]} dims ({sizes} samples), "
          f"{PLAN.folds}-fold x {PLAN.repeats} repeats, -k {','.join(map(str, KS))}")
    for label, baselines in (("KNN only", False), ("KNN + mean + ridge baselines", True)):
        stages: dict[str, float] = {}
        start = time.perf_counter()
        with stage_timer(stages):
            cross_validate(dataset.vectors, dataset.samples, KS, PLAN, baselines=baselines)
        seconds = time.perf_counter() - start
        split = ", ".join(f"{name} {value:.2f} s" for name, value in stages.items())
        print(f"  {label:30s} {seconds:6.2f} s  (target {TARGET_SECONDS:.0f} s; {split}; "
              f"load average {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
