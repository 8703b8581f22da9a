"""Do groups of raters perceive streets differently? Train on one group, test on another.

Repeated K-fold cross-validation on the folds of ``percept evaluate`` (the same
``--group-by`` grouping, so no sample, image or block is on both sides): in every
fold a KNN model fitted on each group's training part predicts each group's test
part, giving matrices of MSE and R² (mean ± sd over folds) with the training and
test sizes behind every cell. Optionally every group's training part is
subsampled to the smallest group's, so group size does not confound the result.

Free-text answers (gender, education) can have many levels; more than ``MAX_LEVELS``
are refused unless the rare ones are merged into ``other`` (``min_group``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from percept.data.filters import in_netherlands
from percept.data.ratings import REGION_COLUMN, age_bounds
from percept.data.survey import Samples
from percept.errors import PerceptError
from percept.model.knn import KNNRegressor
from percept.model.weighting import DEFAULT_WEIGHTING
from percept.study.crossval import CVPlan, repeat_folds
from percept.study.holdout import regression_metrics

COLUMNS = ("gender", "education", "region", "age")
#: Columns whose groups are the raters' own (free-text) answers.
FREE_TEXT = ("gender", "education")
DEFAULT_AGE_BINS = ((18, 29), (30, 49), (50, 120))
#: The home country of ``region`` when none is given: the drop-in ``--region`` rule's.
DEFAULT_HOME_COUNTRY = "NL"
#: At most this many groups are compared.
MAX_LEVELS = 12
#: The group that ``min_group`` merges rare answers into.
OTHER = "other"
#: Random stream (beside seed, repeat and fold) of the --equalise subsampling.
EQUALISE_STREAM = 7


@dataclass(frozen=True)
class GroupSpec:
    """Which demographic splits the raters: a column, and age bins for ``age``.

    ``home_country`` (``region``): the home group's code, then other spellings of the country;
    ``min_group`` (free-text columns): answers with fewer ratings are merged into ``other``.
    """

    column: str
    age_bins: tuple[tuple[int, int], ...] = ()
    home_country: tuple[str, ...] = ()
    min_group: int | None = None


def parse_group_spec(text: str, home_country: str | None = None, min_group: int | None = None) -> GroupSpec:
    """``gender``, ``education``, ``region`` or ``age[:18-29,30-49,50-120]``.

    ``home_country`` (``CODE[,NAME...]``, only with ``region``; default NL) and ``min_group``
    (only with a free-text column) as :class:`GroupSpec` describes.
    """
    column, _, bins = text.partition(":")
    if column not in COLUMNS:
        raise PerceptError(f"--compare-groups takes one of {', '.join(COLUMNS)} (age may add bins, "
                           f"e.g. age:18-29,30-49,50-120), got {text!r}")
    if home_country is not None and column != "region":
        raise PerceptError(f"--home-country names the home group of --compare-groups region, not of {column}: "
                           "drop --home-country or compare by region")
    if min_group is not None and column not in FREE_TEXT:
        raise PerceptError(f"--min-group merges rare answers of {' or '.join(FREE_TEXT)}, but --compare-groups "
                           f"{column} has fixed groups: drop --min-group")
    if column != "age":
        if bins:
            raise PerceptError(f"--compare-groups {column} takes no ':' part, got {text!r}")
        if column == "region":
            return GroupSpec(column, home_country=parse_home_country(home_country or DEFAULT_HOME_COUNTRY))
        return GroupSpec(column, min_group=min_group)
    if not bins:
        return GroupSpec("age", DEFAULT_AGE_BINS)
    parsed = []
    for part in bins.split(","):
        low, dash, high = part.partition("-")
        if not (dash and low.strip().isdigit() and high.strip().isdigit()) or int(low) > int(high):
            raise PerceptError(f"--compare-groups age bins look like 18-29,30-49,50-120, got {part!r}")
        parsed.append((int(low), int(high)))
    ordered = sorted(parsed)
    if any(a[1] >= b[0] for a, b in zip(ordered, ordered[1:])):
        raise PerceptError(f"--compare-groups age bins overlap: {bins!r}")
    return GroupSpec("age", tuple(parsed))


def parse_home_country(text: str) -> tuple[str, ...]:
    """``CODE[,NAME...]`` (e.g. ``DE,Germany,Deutschland``): the code, then other spellings of the country."""
    names = tuple(part.strip() for part in str(text).split(","))
    if not all(names):
        raise PerceptError(f"--home-country takes a country code and optionally other spellings of the country, "
                           f"comma-separated (e.g. DE,Germany,Deutschland), got {text!r}")
    return (names[0].upper(), *names[1:])


def home_country_rule(names: tuple[str, ...]):
    """Whether a rating's (country, postal code) is from the home country ``names`` (code first).

    The country field is free text: it matches any of the names, ignoring case and surrounding
    spaces. For NL the drop-in ``--region`` rule also applies (Dutch spellings, cities, postcodes).
    """
    folded = {name.casefold() for name in names}
    dutch = names[0] == DEFAULT_HOME_COUNTRY

    def at_home(country, postcode) -> bool:
        return ((isinstance(country, str) and country.strip().casefold() in folded)
                or (dutch and in_netherlands(country, postcode)))

    return at_home


def group_labels(ratings: pd.DataFrame, spec: GroupSpec) -> np.ndarray:
    """Group name of each rating row (object array; None when the row belongs to no group).

    ``region``: the home country's code when the rating is from there
    (:func:`home_country_rule`), else ``non-`` and the code. ``age``: a rating joins a bin when its age, or
    the whole of its age band (coarsened exports), lies in the bin.
    """
    if spec.column == "region":
        return _region_labels(ratings, spec.home_country or (DEFAULT_HOME_COUNTRY,))
    _require(ratings, (spec.column,), spec.column)
    if spec.column == "age":
        youngest, oldest = age_bounds(ratings["age"])  # exact ages, or the bands of a coarsened export
        labels = np.full(len(youngest), None, dtype=object)
        for low, high in spec.age_bins:
            labels[(youngest >= low) & (oldest <= high)] = f"{low}-{high}"
        return labels
    values = ratings[spec.column]
    return np.array([v if isinstance(v, str) and v else None for v in values], dtype=object)


def _region_labels(ratings: pd.DataFrame, names: tuple[str, ...]) -> np.ndarray:
    """``CODE`` or ``non-CODE`` per rating; a coarsened export's ``region`` column (NL or non-NL) gives NL's."""
    code = names[0]
    coarsened = REGION_COLUMN in ratings.columns
    if code == DEFAULT_HOME_COUNTRY and coarsened:
        return np.array([v if isinstance(v, str) and v else None for v in ratings[REGION_COLUMN]], dtype=object)
    hint = (f" (this file records only its '{REGION_COLUMN}' column, NL or non-NL: compare those by leaving "
            "out --home-country)") if coarsened else ""
    _require(ratings, ("country", "postalcode") if code == DEFAULT_HOME_COUNTRY else ("country",), "region", hint)
    at_home = home_country_rule(names)
    postcodes = ratings["postalcode"] if "postalcode" in ratings.columns else [None] * len(ratings)
    return np.array([code if at_home(c, p) else f"non-{code}" for c, p in zip(ratings["country"], postcodes)],
                    dtype=object)


def _require(ratings: pd.DataFrame, columns: tuple[str, ...], column: str, hint: str = "") -> None:
    missing = [c for c in columns if c not in ratings.columns]
    if missing:
        raise PerceptError(f"--compare-groups {column} needs the demographics column(s) {', '.join(missing)}{hint}")


def rater_groups(frames: dict[str, pd.DataFrame], spec: GroupSpec) -> dict[str, np.ndarray]:
    """:func:`group_labels` of each category's rating rows; for a free-text column, answers with fewer than
    ``spec.min_group`` ratings (over all categories) merged into ``other``, and more than ``MAX_LEVELS``
    groups refused with the ``--min-group`` that would leave few enough."""
    labels = {category: group_labels(frame, spec) for category, frame in frames.items()}
    if spec.column not in FREE_TEXT:
        return labels
    counts = _level_counts(labels.values())
    if spec.min_group is not None:
        rare = {level for level, count in counts.items() if count < spec.min_group}
        labels = {c: np.array([OTHER if v in rare else v for v in values], dtype=object)
                  for c, values in labels.items()}
        counts = _level_counts(labels.values())
    if len(counts) > MAX_LEVELS:
        ordered = sorted(counts.values(), reverse=True)
        enough = ordered[MAX_LEVELS - 1] + 1  # keeps at most MAX_LEVELS - 1 answers beside "other"
        merged = f" after merging answers with fewer than {spec.min_group} ratings" if spec.min_group else ""
        raise PerceptError(f"--compare-groups {spec.column} finds {len(counts)} different answers{merged}, more than "
                           f"the {MAX_LEVELS} groups a comparison can show: merge the rare ones into '{OTHER}' "
                           f"with --min-group {enough} (answers with fewer than {enough} ratings)")
    return labels


def _level_counts(labels) -> dict[str, int]:
    """Ratings per group name over several label arrays (rows of no group left out)."""
    counts: dict[str, int] = {}
    for values in labels:
        for value in values:
            if value is not None:
                counts[value] = counts.get(value, 0) + 1
    return counts


@dataclass
class GroupMatrix:
    """Train on group i's training part, test on group j's test part, in every fold of every repeat.

    ``mse`` and ``r2`` are (groups, groups, folds x repeats); ``n_train`` (groups, folds x repeats)
    counts the training samples behind each row's cells, ``n_test`` (groups, folds x repeats)
    the test samples behind each column's.
    """

    category: str
    k: int
    groups: list[str]
    mse: np.ndarray
    r2: np.ndarray
    n_train: np.ndarray
    n_test: np.ndarray
    equalised: bool = False
    group_by: str = "none"

    @property
    def n_folds(self) -> int:
        return self.mse.shape[2]

    def mean(self, metric: str) -> np.ndarray:
        """(groups, groups) mean over folds of ``mse`` or ``r2`` (NaN where no fold had data)."""
        return _reduce(getattr(self, metric), np.nanmean)

    def std(self, metric: str) -> np.ndarray:
        """(groups, groups) sample standard deviation over folds (ddof=1; 0 for one fold)."""
        values = getattr(self, metric)
        if values.shape[2] < 2:
            return np.where(np.isfinite(self.mean(metric)), 0.0, np.nan)
        return _reduce(values, lambda v, axis: np.nanstd(v, axis=axis, ddof=1))

    def train_size(self) -> np.ndarray:
        """Mean training samples per fold of each row (training group)."""
        return self.n_train.mean(axis=1)

    def test_size(self) -> np.ndarray:
        """Mean test samples per fold of each column (test group)."""
        return self.n_test.mean(axis=1)


def _reduce(values: np.ndarray, reduce) -> np.ndarray:
    """``reduce`` over the folds axis; all-NaN cells stay NaN without a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return reduce(values, axis=2)


def compare_groups(vectors: np.ndarray, samples: Samples, labels: np.ndarray, k: int, category: str = "",
                   weighting: str = DEFAULT_WEIGHTING, plan: CVPlan | None = None, equalise: bool = False,
                   lonlat: np.ndarray | None = None) -> GroupMatrix:
    """The train-on-group x test-on-group MSE and R² over the folds of ``plan`` for one category.

    The folds are those of ``percept evaluate``'s cross-validation (same seed, same
    ``plan.group_by`` grouping), so no sample, image or block is ever on both sides. With
    ``equalise`` every group's training part is subsampled, in each fold, to the smallest
    group's (seeded by the plan's seed, repeat and fold), and refused when that leaves fewer
    than 2 K training samples. Cells whose training or test part is empty in a fold hold NaN
    for that fold.
    """
    plan = plan or CVPlan()
    labels = np.asarray(labels, dtype=object)
    if len(labels) != len(samples):
        raise PerceptError(f"{len(labels)} group labels for {len(samples)} samples")
    groups = sorted({g for g in labels if g is not None})
    if len(groups) < 2:
        raise PerceptError(f"--compare-groups found {len(groups)} group(s) among the {category or 'category'} "
                           "ratings; it needs at least two")
    member = np.array([groups.index(g) if g is not None else -1 for g in labels])
    runs = plan.folds * plan.repeats
    mse, r2 = np.full((len(groups), len(groups), runs), np.nan), np.full((len(groups), len(groups), runs), np.nan)
    n_train, n_test = np.zeros((len(groups), runs), dtype=np.int64), np.zeros((len(groups), runs), dtype=np.int64)
    folds = repeat_folds(samples, plan, lonlat)
    if equalise:
        refuse_small_training(folds, member, groups, k, category, plan.folds)
    for repeat, fold_of in enumerate(folds):
        for fold in range(plan.folds):
            run = repeat * plan.folds + fold
            trains = [np.flatnonzero((fold_of != fold) & (member == i)) for i in range(len(groups))]
            if equalise:
                rng = np.random.default_rng([plan.seed, repeat, fold, EQUALISE_STREAM])
                smallest = min(len(t) for t in trains)
                trains = [np.sort(rng.choice(t, smallest, replace=False)) for t in trains]
            tests = [np.flatnonzero((fold_of == fold) & (member == j)) for j in range(len(groups))]
            n_train[:, run] = [len(t) for t in trains]
            n_test[:, run] = [len(t) for t in tests]
            for i, train in enumerate(trains):
                if not len(train):
                    continue
                model = KNNRegressor(k, weighting).fit(vectors, samples.scores[train], samples.rows[train])
                for j, test in enumerate(tests):
                    if len(test):
                        predicted = model.predict(vectors[samples.rows[test]])
                        mse[i, j, run], r2[i, j, run] = regression_metrics(samples.scores[test], predicted)
    return GroupMatrix(category, k, groups, mse, r2, n_train, n_test, equalise, plan.group_by.label)


def refuse_small_training(folds: list[np.ndarray], member: np.ndarray, groups: list[str], k: int, category: str,
                          n_folds: int) -> None:
    """``--equalise`` trains every group on the smallest training part of any group in a fold: refuse one
    below 2 K samples, naming the group, its fold and size."""
    sizes = np.array([[[np.sum((fold_of != fold) & (member == i)) for i in range(len(groups))]
                       for fold in range(n_folds)] for fold_of in folds])  # (repeats, folds, groups)
    repeat, fold, group = np.unravel_index(np.argmin(sizes), sizes.shape)
    smallest = int(sizes[repeat, fold, group])
    if smallest < 2 * k:
        where = f"fold {fold + 1}" + (f" of repeat {repeat + 1}" if len(folds) > 1 else "")
        raise PerceptError(f"--equalise would train every {category or 'category'} group on {smallest} samples, "
                           f"the training part of group {groups[group]!r} in {where}: fewer than 2 K = {2 * k} "
                           f"(K = {k}); merge small groups (--min-group), compare coarser groups or drop --equalise")
