"""The simulation of ``benchmarks/bench_suggest.py`` at a small size: a survey of the western half of a city
whose scores vary in space; adding the images ``percept suggest`` picks lowers the error on the unsurveyed
part at least 7 % more than adding as many random candidates (the mean of 5 draws), and leaves fewer of its
images outside the survey's domain. The figures are checked against a brute-force KNN."""

from __future__ import annotations

import brute_force
import numpy as np
import pytest

from benchmarks.bench_suggest import K, SimulationSize, measure, simulate
from percept.model.weighting import DEFAULT_WEIGHTING


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    return simulate(tmp_path_factory.mktemp("simulation") / "city", seed=0,
                    size=SimulationSize(panoramas=1200, added=100, random_draws=5))


def test_suggested_images_beat_random_ones_on_the_part_the_survey_missed(result):
    assert len(result.random) == 5
    assert len(result.suggested_rows) == 100
    assert result.suggested.mse < result.before.mse
    assert result.suggested.mse <= (1 - 0.07) * result.random_mse
    fall_suggested = result.before.out_of_domain - result.suggested.out_of_domain
    fall_random = result.before.out_of_domain - result.random_out_of_domain
    assert fall_suggested > fall_random > 0


def test_the_suggestions_are_new_images_mostly_where_the_survey_is_not(result):
    rows = result.suggested_rows
    assert len(set(rows.tolist())) == len(rows)
    assert not result.surveyed[rows].any() and not result.held_out[rows].any()
    assert np.isin(rows, result.candidates).all()
    assert result.suggested_uncovered > 0.8


def test_the_figures_equal_a_brute_force_knn(result):
    city = result.city
    rated = result.surveyed.copy()
    rated[result.suggested_rows] = True
    test_rows = np.flatnonzero(result.held_out)
    vectors = np.asarray(city.vectors[np.arange(len(city.names))], dtype=np.float64)
    errors, best = [], np.full(len(test_rows), -np.inf)
    for samples in city.samples.values():
        train = rated[samples.rows]
        train_vectors, train_scores = vectors[samples.rows[train]], samples.scores[train]
        truth = dict(zip(samples.rows.tolist(), samples.scores))
        squared = []
        for position, row in enumerate(test_rows):
            mean, _, nearest = brute_force.estimate(train_vectors, train_scores, vectors[row], K, DEFAULT_WEIGHTING)
            best[position] = max(best[position], nearest)
            if row in truth:
                squared.append((mean - truth[row]) ** 2)
        errors.append(np.mean(squared))
    assert result.suggested.mse == pytest.approx(np.mean(errors), rel=1e-9)
    assert result.suggested.out_of_domain == pytest.approx(np.mean(best < result.threshold))
    again = measure(city, result.surveyed, result.suggested_rows, result.held_out, result.threshold)
    assert again == result.suggested
