"""Uncertainty: the survey's domain threshold (one exact self-search, paid at export or on loading an
older model file) and the cost of sd, best similarity and leave-one-out beside plain scoring."""

from __future__ import annotations

import time

import numpy as np

from benchmarks.bench_rating import export_model
from benchmarks.common import SURVEY_DIM, benchmark_survey

QUERIES = 20_000
LEFT_OUT = 5_000


def seconds(function) -> tuple[float, object]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def main() -> None:
    from percept.model.estimates import Estimator
    from percept.model.io import load_model
    from percept.model.knn import l2_normalise
    from percept.model.scoring import MultiScorer
    from percept.model.uncertainty import domain_threshold

    model = load_model(export_model(benchmark_survey()))
    images = len({name for names in (model.images or {}).values() for name in names})
    took, threshold = seconds(lambda: domain_threshold(model.vectors, model.images))
    print(f"  domain threshold of the {images:,}-image survey x {SURVEY_DIM} dims: {took:.1f} s "
          f"(5th percentile nearest-other-image similarity {threshold:.4f})")
    rng = np.random.default_rng(3)
    queries = l2_normalise(rng.normal(size=(QUERIES, SURVEY_DIM)))
    scorer = MultiScorer(model)
    estimator = Estimator(model, scorer=scorer)
    plain, _ = seconds(lambda: scorer.predict(queries))
    full, _ = seconds(lambda: estimator.estimate(queries))
    print(f"  {QUERIES:,} queries (K={scorer.k}): scores alone {plain:.1f} s, with sd, best similarity and "
          f"out_of_domain {full:.1f} s ({QUERIES / full:,.0f} vectors/s)")
    names = model.images["walkability"][:LEFT_OUT]
    own = np.vstack([model.vectors["walkability"][i] for i in range(LEFT_OUT)])
    kept, _ = seconds(lambda: estimator.estimate(own, names, include_self=True))
    left, found = seconds(lambda: estimator.estimate(own, names))
    print(f"  {LEFT_OUT:,} survey images: with themselves {kept:.1f} s, leave-one-out {left:.1f} s "
          f"({found.out_of_domain.mean():.1%} out of domain)")


if __name__ == "__main__":
    main()
