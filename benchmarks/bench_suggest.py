"""Which images to rate next: a simulation of the gain from ``percept suggest`` over random picks.

A spatial synthetic city (:func:`percept.synthetic.spatial.generate_spatial_survey`: scores vary
smoothly in space, vectors carry location) is surveyed only in its western part. The calibrated
model of that survey (as ``percept evaluate --export`` makes it) suggests images from the city's
other imagery; adding them with their simulated ratings is compared with adding the same number of
random candidates (several draws). A held-out set of the eastern, unsurveyed part measures the
error (mean squared error against its simulated ratings, averaged over the categories) and the
share of its images outside the original survey's domain (best similarity below the survey's
domain threshold), before and after. ``tests/test_suggest_simulation.py`` runs it at a small size.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: The share of the city's width (from the west) the survey covers.
COVERED_SHARE = 0.5
#: The share of the covered part's panoramas the survey rated.
SURVEYED_SHARE = 0.6
#: The share of the uncovered part's panoramas held out to measure the error (never candidates).
HELD_OUT_SHARE = 0.3
K = 10
#: The city the command is timed on.
CITY_IMAGES, CITY_DIM, SURVEY_IMAGES, TIMED_PICKS = 50_000, 768, 10_000, 500


@dataclass(frozen=True)
class SimulationSize:
    panoramas: int = 2400
    dim: int = 64
    ratings_per_image: float = 6.0
    added: int = 200
    random_draws: int = 5
    strategy: str = "mixed"


@dataclass(frozen=True)
class Outcome:
    """Error (MSE over the categories) on the held-out unsurveyed images and their out-of-domain share."""

    mse: float
    out_of_domain: float


@dataclass(frozen=True)
class SimulationResult:
    """The outcomes, and the city with the rows of each part (to check the figures against)."""

    before: Outcome
    suggested: Outcome
    random: list[Outcome]  # one per draw, from all candidates
    random_unsurveyed: list[Outcome]  # one per draw, from the candidates in the unsurveyed part only
    city: object  # the whole city's Dataset
    surveyed: np.ndarray  # bool per image
    held_out: np.ndarray  # bool per image
    candidates: np.ndarray  # rows
    suggested_rows: np.ndarray
    covered: np.ndarray  # bool per image: in the surveyed part of the city
    threshold: float  # the survey's domain threshold

    @property
    def suggested_uncovered(self) -> float:
        """The share of the suggestions in the unsurveyed part."""
        return float(np.mean(~self.covered[self.suggested_rows]))

    @property
    def random_mse(self) -> float:
        return float(np.mean([o.mse for o in self.random]))

    @property
    def random_out_of_domain(self) -> float:
        return float(np.mean([o.out_of_domain for o in self.random]))

    @property
    def gain(self) -> float:
        """How much lower the error is with suggested images than with random ones (a share)."""
        return 1.0 - self.suggested.mse / self.random_mse


def simulate(folder: Path, seed: int, size: SimulationSize = SimulationSize()) -> SimulationResult:
    """One simulated city (from ``seed``) under ``folder``: the survey, the suggestions and the random draws."""
    from percept import api
    from percept.city.suggest import SuggestOptions, pick
    from percept.city.suggest_io import assess, survey_panoramas
    from percept.data.locations import panorama_id
    from percept.data.survey import image_name
    from percept.model.estimates import Estimator
    from percept.study.crossval import CVPlan
    from percept.study.folds import GroupBy
    from percept.study.publish import ModelRecipe, assemble_model
    from percept.synthetic.simulation import LON_RANGE
    from percept.synthetic.spatial import generate_spatial_survey

    generate_spatial_survey(folder, n_panoramas=size.panoramas, dim=size.dim,
                            ratings_per_image=size.ratings_per_image, seed=seed, force=True)
    city = api.load_survey(folder / "data.geojson", folder / "embeddings", clip_model="synthetic")
    names = [image_name(n) for n in city.names]
    panorama = np.unique([panorama_id(n) for n in names], return_inverse=True)[1].ravel()
    rng = np.random.default_rng(seed + 1)
    draw = rng.random(panorama.max() + 1)[panorama]  # one draw per panorama: its crops go together
    covered = city.lonlat[:, 0] < LON_RANGE[0] + COVERED_SHARE * (LON_RANGE[1] - LON_RANGE[0])
    surveyed = covered & (draw < SURVEYED_SHARE)
    held_out = ~covered & (draw < HELD_OUT_SHARE)
    candidate_rows = np.flatnonzero(~surveyed & ~held_out)

    survey = dataclasses.replace(city, samples={c: _subset(s, surveyed) for c, s in city.samples.items()},
                                 selection=None)
    recipe = ModelRecipe("synthetic", K, "softmax10**", CVPlan(group_by=GroupBy("image"), seed=seed))
    model = assemble_model(survey, recipe).model
    estimator = Estimator(model, interval=None)
    vectors = np.asarray(city.vectors[candidate_rows])
    estimates = estimator.estimate(vectors, include_self=True)
    candidates = assess([names[r] for r in candidate_rows], estimates, vectors, survey_panoramas(model), None, 0.95)
    picks = pick(candidates, SuggestOptions(size.added, strategy=size.strategy, seed=seed))
    suggested_rows = candidate_rows[picks.index]

    def outcome(added: np.ndarray) -> Outcome:
        return measure(city, surveyed, added, held_out, model.domain_threshold)

    def random_outcomes(rows: np.ndarray) -> list[Outcome]:
        return [outcome(np.random.default_rng([seed, draw]).choice(rows, len(suggested_rows), replace=False))
                for draw in range(size.random_draws)]

    return SimulationResult(outcome(np.zeros(0, dtype=np.int64)), outcome(suggested_rows),
                            random_outcomes(candidate_rows), random_outcomes(candidate_rows[~covered[candidate_rows]]),
                            city, surveyed, held_out, candidate_rows, suggested_rows, covered,
                            model.domain_threshold)


def _subset(samples, keep: np.ndarray):
    from percept.data.survey import Samples

    mask = keep[samples.rows]
    return Samples(samples.rows[mask], samples.scores[mask])


def measure(city, surveyed: np.ndarray, added: np.ndarray, held_out: np.ndarray, threshold: float) -> Outcome:
    """The survey plus the ``added`` rows (with their simulated ratings) as a KNN model per category: its MSE on
    the held-out rows and their share below the original survey's domain ``threshold``."""
    from percept.model.knn import KNNRegressor

    rated = surveyed.copy()
    rated[added] = True
    test_rows = np.flatnonzero(held_out)
    queries = np.asarray(city.vectors[test_rows])
    errors, best = [], np.full(len(test_rows), -np.inf)
    for samples in city.samples.values():
        train = rated[samples.rows]
        model = KNNRegressor(K).fit(city.vectors, samples.scores[train], samples.rows[train])
        found = model.kneighbors(queries)
        best = np.maximum(best, found.similarity[:, 0])
        observed = np.full(len(city.names), np.nan)
        observed[samples.rows] = samples.scores
        truth = observed[test_rows]
        known = np.isfinite(truth)
        predicted = model.predict_from(found, K)
        errors.append(float(np.mean((predicted[known] - truth[known]) ** 2)))
    return Outcome(float(np.mean(errors)), float(np.mean(best < threshold)))


def timing_city() -> Path:
    """A city of :data:`CITY_IMAGES` images x :data:`CITY_DIM` dims (positional vectors, as the spatial survey's)
    and a model of :data:`SURVEY_IMAGES` of them in its western part, written once under the benchmark folder."""
    import pandas as pd

    from benchmarks.common import BENCH_DIR
    from percept.categories import CATEGORIES
    from percept.data.embeddings import write_part
    from percept.model.domain import survey_domain
    from percept.model.io import ModelSettings, save_model
    from percept.synthetic.spatial import location_vectors

    folder = BENCH_DIR / f"suggest-{CITY_IMAGES}x{CITY_DIM}"
    if (folder / "model.npz").exists():
        return folder
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 8000, CITY_IMAGES), rng.uniform(0, 6000, CITY_IMAGES)
    vectors = location_vectors(x, y, np.arange(CITY_IMAGES), CITY_DIM, rng)
    names = [f"{3_000_000 + i}.jpg" for i in range(CITY_IMAGES)]
    write_part(folder / "embeddings", "img", 0, vectors, pd.DataFrame({"image_path": names}))
    survey = np.flatnonzero(x < 4000)[:SURVEY_IMAGES]
    scores = 3 + np.tanh((y[survey] - 3000) / 2000)
    samples = {c: vectors[survey].astype(np.float64) for c in CATEGORIES}
    images = {c: [names[i] for i in survey] for c in CATEGORIES}
    domain = survey_domain(samples, images)  # recorded at export, as percept's exports do
    save_model(folder / "model.npz", samples, {c: scores for c in CATEGORIES},
               ModelSettings(clip_model="synthetic", k=K, domain_threshold=domain.threshold,
                             mean_distance=domain.mean_distance), images)
    return folder


def time_command() -> None:
    """Seconds and peak memory of ``percept suggest`` on the timing city (the default pool of 20,000)."""
    from benchmarks.common import console_script
    from benchmarks.common import measure as measure_command

    folder = timing_city()
    seconds, peak, _ = measure_command([console_script("percept"), "suggest", "--model", "model.npz", "-e",
                                        "embeddings", "-n", str(TIMED_PICKS), "-o", "suggestions.csv", "-q"], folder)
    print(f"  percept suggest -n {TIMED_PICKS} on {CITY_IMAGES:,} images x {CITY_DIM} dims (a pool of 20,000) "
          f"against a {SURVEY_IMAGES:,}-image model: {seconds:.1f} s, peak {peak:.0f} MB")


def main() -> None:
    time_command()
    size = SimulationSize()
    results = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="percept-suggest-bench-") as folder:
        for seed in range(3):
            result = simulate(Path(folder) / f"city-{seed}", seed, size)
            results.append(result)
            east = result.random_unsurveyed
            print(f"  city {seed}: {int(result.surveyed.sum())} surveyed images, {len(result.candidates)} candidates, "
                  f"{int(result.held_out.sum())} held out in the unsurveyed part; adding {size.added} images "
                  f"({size.strategy}, {result.suggested_uncovered:.0%} of the suggestions in the unsurveyed part)")
            print(f"    MSE on the unsurveyed part: before {result.before.mse:.3f}, suggested "
                  f"{result.suggested.mse:.3f}, random {result.random_mse:.3f} (mean of {size.random_draws} draws): "
                  f"{result.gain:.1%} lower with the suggestions; random from the unsurveyed part alone "
                  f"{np.mean([o.mse for o in east]):.3f}")
            print(f"    out of domain: before {result.before.out_of_domain:.1%}, suggested "
                  f"{result.suggested.out_of_domain:.1%}, random {result.random_out_of_domain:.1%}, random from "
                  f"the unsurveyed part alone {np.mean([o.out_of_domain for o in east]):.1%}")
    gains = [r.gain for r in results]
    print(f"  error {np.mean(gains):.1%} lower with suggested than random images on average "
          f"(cities: {', '.join(f'{g:.1%}' for g in gains)}); {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
