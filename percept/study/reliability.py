"""How much do raters agree? Inter-rater reliability of each category's individual ratings (1..5).

Per category, from the ratings (image, rater, rating):

- **Krippendorff's alpha**, ordinal metric, on the images rated at least twice. Each
  rating is one value of its image (the coincidence matrix pairs every two ratings of
  an image), so rater identities are not needed.
- **ICC(2,k)** (two-way random effects, absolute agreement, average of k ratings; Shrout
  and Fleiss' ICC(2,k), McGraw and Wong's ICC(A,k)) of the image means, and **ICC(2,1)**
  of a single rating, from the variance components of ``rating = mu + image + rater +
  error`` on the images rated at least twice. A survey is unbalanced (every image has
  its own raters, most pairs of image and rater are missing), so the components are
  estimated by Henderson's Method I for the two-way crossed random model without
  interaction: the sums of squares of images, of raters and the residual
  ``SS_E = SS_total - SS_images - SS_raters`` (all about the grand mean, unadjusted) are
  equated to their expectations, which are linear in the components with coefficients
  from the counts ``n_ij`` (:func:`variance_components`), and the 3 x 3 system is
  solved. Then ``ICC(2,k) = s2_image / (s2_image + (s2_rater + s2_error) / k)``
  with ``k`` the harmonic mean of the images' rating counts (the mean of ``1 / k_i``
  is what sets the error variance of the means), and ``ICC(2,1) = s2_image /
  (s2_image + s2_rater + s2_error)``. For a balanced design (every rater rates every
  image once) these are the ANOVA estimators, ``ICC(2,k) = (MSB - MSE) / (MSB + (MSJ
  - MSE) / n)`` exactly as ``pingouin.intraclass_corr`` computes its ``ICC(A,k)``
  (``ICC2k`` in pingouin before 0.7) from the two-way ANOVA mean squares of images
  (MSB), raters (MSJ) and residual (MSE); pingouin refuses or drops (listwise) images
  with missing cells, which in a survey is nearly all of them. Where the rater effect
  cannot be told apart from error (no rater rated two of the images; or ``raters`` not
  given, when every rating counts as its own rater) the system is solved by least
  squares, which gives the one-way estimator: ``s2_rater + s2_error`` is then the
  within-image variance and the ICCs are ICC(1,k) and ICC(1,1). Components are not
  truncated at zero, so an ICC is negative when the images' means vary less than
  their ratings' noise predicts (as in pingouin).
- **The noise ceiling**: the R² a perfect model (one that knows each image's true mean)
  is expected to reach against the noisy image means it is evaluated on, the
  reliability of those means: ``s2_image / (s2_image + (s2_rater + s2_error) *
  mean(1 / k_i))`` over every rated image with its actual rating count ``k_i``. For a
  model evaluated on single ratings (samples are individual ratings) the ceiling is
  ICC(2,1).
- **Offsets of demographic groups**: the mean of a group's ratings minus the mean of
  all ratings of the same image, over images rated at least twice (a single rating is
  its image's mean and says nothing).

Every estimate has a 95 % percentile interval from a bootstrap over images (all
statistics of one category from the same seeded resamples; :mod:`percept.study.bootstrap`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse

from percept.categories import CATEGORY_BY_ID
from percept.errors import PerceptError
from percept.study.bootstrap import CHUNK_ENTRIES, DEFAULT_LEVEL, DEFAULT_RESAMPLES, bootstrap_intervals

#: The rating scale (ordinal values of Krippendorff's alpha).
LEVELS = np.arange(1, 6)
#: Relative size below which a singular value of the Method I system counts as zero (rater effect not separable).
SINGULAR_TOLERANCE = 1e-10


@dataclass(frozen=True)
class Estimate:
    """A statistic and its bootstrap interval."""

    value: float
    low: float
    high: float


@dataclass(frozen=True)
class VarianceComponents:
    """Variances of ``rating = mu + image + rater + error``: between images, between raters, residual."""

    images: float
    raters: float
    error: float

    @property
    def within(self) -> float:
        """Variance of a rating about its image's true mean (a random rater's leniency plus error)."""
        return self.raters + self.error

    def reliability(self, mean_inverse_count: float) -> float:
        """Reliability of image means whose ``1 / ratings`` average ``mean_inverse_count``."""
        return _reliability(self.images, self.within, mean_inverse_count)


@dataclass(frozen=True)
class GroupOffset:
    """A demographic group's mean rating minus its images' mean ratings, with the counts behind it."""

    group: str
    offset: Estimate
    ratings: int
    images: int


@dataclass
class CategoryReliability:
    """Reliability of one category's ratings (see the module's description of each statistic).

    ``repeated_images`` counts the images rated at least twice, on which alpha and the
    ICCs are computed; ``raters`` the raters among their ratings; ``harmonic_count`` the
    harmonic mean of their rating counts (the k of ICC(2,k)). Statistics that need two
    images rated at least twice are NaN without them.
    """

    category: str
    ratings: int
    images: int
    repeated_images: int
    raters: int
    harmonic_count: float
    components: VarianceComponents
    alpha: Estimate
    icc2k: Estimate
    icc21: Estimate
    ceiling: Estimate
    offsets: list[GroupOffset]


# ---------------------------------------------------------------- point estimates


def krippendorff_alpha(images: np.ndarray, ratings: np.ndarray) -> float:
    """Krippendorff's alpha for ordinal ratings 1..5; ``images`` names the image of each rating."""
    table = _Ratings(images, None, ratings)
    return float(table.statistics(np.ones((1, table.n_images)))[0, 0])


def variance_components(images: np.ndarray, raters: np.ndarray | None, ratings: np.ndarray) -> VarianceComponents:
    """Henderson Method I estimates on the images rated at least twice (``raters`` None: one-way).

    With ``T_0 = sum y²``, ``T_A = sum_i Y_i² / n_i``, ``T_B = sum_j Y_j² / n_j``, ``T_mu =
    Y² / N`` (``Y`` sums of ratings of image i, rater j, all; ``n`` their counts) and
    ``k1 = sum_i n_i² / N``, ``k2 = sum_j n_j² / N``, ``k3 = sum_ij n_ij² / n_i``, ``k4 =
    sum_ij n_ij² / n_j``, the expectations are
    ``E[T_A - T_mu] = (N - k1) s2_image + (k3 - k2) s2_rater + (I - 1) s2_error``,
    ``E[T_B - T_mu] = (k4 - k1) s2_image + (N - k2) s2_rater + (J - 1) s2_error``,
    ``E[T_0 - T_A - T_B + T_mu] = (k1 - k4) s2_image + (k2 - k3) s2_rater + (N - I - J + 1) s2_error``.
    """
    table = _Ratings(images, raters, ratings)
    values = table.components(np.ones((1, table.n_images)))[0]
    return VarianceComponents(*(float(v) for v in values))


# ---------------------------------------------------------------- one category, with intervals


def category_reliability(images: np.ndarray, raters: np.ndarray | None, ratings: np.ndarray,
                         labels: np.ndarray | None = None, category: str = "", seed: int = 0,
                         resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL) -> CategoryReliability:
    """Alpha, ICC(2,k), ICC(2,1), the noise ceiling and group offsets of one category's ratings.

    ``images``, ``raters`` (None: unknown, every rating its own rater) and ``ratings`` (1..5)
    hold one entry per rating, ``labels`` (object, None for no group) its rater's demographic
    group. Intervals resample images ``resamples`` times from ``seed``.
    """
    table = _Ratings(images, raters, ratings, labels)
    values = table.statistics(np.ones((1, table.n_images)))[0]
    bounds = bootstrap_intervals(table.statistics, table.n_images, seed, resamples, level)
    estimates = [Estimate(float(v), float(lo), float(hi)) for v, (lo, hi) in zip(values, bounds)]
    components = table.components(np.ones((1, table.n_images)))[0]
    offsets = [GroupOffset(group, estimate, int(n_ratings), int(n_images)) for group, estimate, n_ratings, n_images
               in zip(table.groups, estimates[4:], table.group_ratings, table.group_images)]
    alpha, icc2k, icc21, ceiling = estimates[:4]
    return CategoryReliability(category, table.n_ratings, table.n_images, table.n_repeated, table.n_raters,
                               table.harmonic_count, VarianceComponents(*(float(v) for v in components)),
                               alpha, icc2k, icc21, ceiling, offsets)


def survey_reliability(ratings: pd.DataFrame, rater_column: str | None = "session_id",
                       labels: np.ndarray | None = None, seed: int = 0, resamples: int = DEFAULT_RESAMPLES,
                       progress: Callable[[list], Iterable] = iter) -> list[CategoryReliability]:
    """:func:`category_reliability` of every category in a ratings table (the demographics CSV).

    ``ratings`` has columns ``image_id``, ``category_id`` (1..5), ``rating`` and the rater
    column (``session_id``: one survey session per rater; None when the table has none);
    ``labels`` (one per row, e.g. from :func:`percept.study.groups.group_labels`) adds group
    offsets. ``progress`` wraps the list of categories.
    """
    needed = ["image_id", "category_id", "rating"] + ([rater_column] if rater_column else [])
    missing = [c for c in needed if c not in ratings.columns]
    if missing:
        raise PerceptError(f"inter-rater reliability needs the ratings column(s) {', '.join(missing)}: export the "
                           "ratings table with them")
    if labels is not None and len(labels) != len(ratings):
        raise PerceptError(f"{len(labels)} group labels for {len(ratings)} ratings")
    category_ids = ratings["category_id"].to_numpy(dtype=np.int64)
    present = [c for c in sorted(CATEGORY_BY_ID) if np.any(category_ids == c)]
    if not present:
        raise PerceptError("the ratings table holds no ratings of the five categories: nothing to measure")
    results = []
    for category_id in progress(present):
        rows = category_ids == category_id
        part = ratings[rows]
        results.append(category_reliability(
            part["image_id"].to_numpy(), part[rater_column].to_numpy() if rater_column else None,
            part["rating"].to_numpy(dtype=np.float64), None if labels is None else np.asarray(labels)[rows],
            CATEGORY_BY_ID[category_id], seed, resamples))
    return results


# ---------------------------------------------------------------- weighted statistics


def _group_names(labels) -> np.ndarray:
    """Group labels as text; None (or a missing value, NaN) where a rating belongs to no group."""
    return np.array([None if g is None or (isinstance(g, float) and np.isnan(g)) else str(g) for g in labels],
                    dtype=object)


def _reliability(images, within, mean_inverse_count):
    with np.errstate(invalid="ignore", divide="ignore"):
        return images / (images + within * mean_inverse_count)


class _Ratings:
    """One category's ratings as per-image sums, so that any resample of images (a row of weights: how
    often each image was drawn) gives every statistic as if the drawn images were copied, copies keeping
    their raters. One matrix product with the per-image columns, and one with the (image, rater) cells,
    serve every statistic."""

    def __init__(self, images, raters, ratings, labels=None):
        ratings = np.asarray(ratings, dtype=np.float64)
        images = np.asarray(images)
        if len(images) != len(ratings) or (raters is not None and len(raters) != len(ratings)):
            raise PerceptError(f"{len(images)} images and {len(ratings)} ratings"
                               + ("" if raters is None else f" and {len(raters)} raters") + ": give one of each per "
                               "rating")
        if not len(ratings):
            raise PerceptError("inter-rater reliability needs ratings, got none")
        if labels is not None and len(labels) != len(ratings):
            raise PerceptError(f"{len(labels)} group labels for {len(ratings)} ratings")
        if not np.all(np.isin(ratings, LEVELS)):
            raise PerceptError("ratings must be whole numbers from 1 to 5 for inter-rater reliability")
        image_of = np.unique(images, return_inverse=True)[1].ravel()
        self.n_ratings, self.n_images = len(ratings), int(image_of.max()) + 1
        count = np.bincount(image_of, minlength=self.n_images).astype(np.float64)
        repeated = count >= 2
        self.repeated_index = np.flatnonzero(repeated)
        self.n_repeated = len(self.repeated_index)
        self.harmonic_count = float(self.n_repeated / np.sum(1.0 / count[repeated])) if self.n_repeated \
            else float("nan")
        kept = repeated[image_of]
        self.one_way = raters is None  # every rating its own rater, also in a resample's copies of an image
        rater_of = np.arange(self.n_ratings) if raters is None else np.unique(np.asarray(raters),
                                                                              return_inverse=True)[1].ravel()
        image_of, rater_of, ratings = image_of[kept], np.unique(rater_of[kept], return_inverse=True)[1].ravel(), \
            ratings[kept]
        centred = ratings - ratings.mean() if len(ratings) else ratings
        self.n_raters = int(rater_of.max()) + 1 if len(rater_of) else 0
        columns = {"inverse": 1.0 / count, "inverse_repeated": np.where(repeated, 1.0 / count, 0.0)}
        columns.update(self._anova_columns(image_of, rater_of, centred, np.where(repeated, count, 0.0)))
        columns["coincidences"] = self._coincidences(image_of, ratings)
        columns.update(self._offset_columns(image_of, ratings, None if labels is None else _group_names(labels)[kept]))
        self.layout, start = {}, 0
        for name, values in columns.items():
            width = values.shape[1] if values.ndim == 2 else 1
            self.layout[name] = slice(start, start + width) if values.ndim == 2 else start
            start += width
        self.per_image = np.column_stack([v.reshape(self.n_images, -1) for v in columns.values()])
        self.cells = None if self.one_way else self._cells(image_of, rater_of, centred)

    def statistics(self, weights: np.ndarray) -> np.ndarray:
        """(resamples, 4 + groups): alpha, ICC(2,k), ICC(2,1), the noise ceiling, then each group's offset."""
        sums = weights @ self.per_image
        column = self._reader(sums)
        images, raters, error = self._components(weights, sums).T
        within = raters + error
        with np.errstate(invalid="ignore", divide="ignore"):
            inverse_repeated = column("inverse_repeated") / column("repeated")
            inverse_all = column("inverse") / weights.sum(axis=1)
            offsets = column("offset_sum") / column("offset_count")
        return np.column_stack([self._alpha(column("coincidences")),
                                _reliability(images, within, inverse_repeated),
                                _reliability(images, within, 1.0),
                                _reliability(images, within, inverse_all), offsets])

    def _reader(self, sums: np.ndarray):
        """Look-up of a named per-image column (or block of columns) in the weighted sums."""
        return lambda name: sums[:, self.layout[name]]

    def components(self, weights: np.ndarray) -> np.ndarray:
        """(resamples, 3) Method I variance components of images, raters and error."""
        return self._components(weights, weights @ self.per_image)

    # alpha: each image's coincidences, o_ck = (n_uc n_uk - [c = k] n_uc) / (m_u - 1), summed over images

    def _coincidences(self, image_of, ratings) -> np.ndarray:
        counts = np.zeros((self.n_images, len(LEVELS)))
        np.add.at(counts, (image_of, ratings.astype(np.int64) - LEVELS[0]), 1.0)
        size = counts.sum(axis=1)
        pairable = np.where(size >= 2, 1.0 / np.maximum(size - 1, 1), 0.0)
        pairs = counts[:, :, None] * counts[:, None, :] - counts[:, :, None] * np.eye(len(LEVELS))
        return (pairs * pairable[:, None, None]).reshape(self.n_images, -1)

    @staticmethod
    def _alpha(coincidences: np.ndarray) -> np.ndarray:
        """Ordinal Krippendorff's alpha from each resample's coincidence matrix (flattened)."""
        observed = coincidences.reshape(len(coincidences), len(LEVELS), len(LEVELS))
        margins = observed.sum(axis=2)
        total = margins.sum(axis=1)
        cumulative = np.cumsum(margins, axis=1)
        low, high = np.minimum.outer(LEVELS, LEVELS) - 1, np.maximum.outer(LEVELS, LEVELS) - 1
        between = cumulative[:, high] - cumulative[:, low] + margins[:, low]  # sum of margins from c to k
        distance = (between - (margins[:, :, None] + margins[:, None, :]) / 2) ** 2
        disagreement = np.sum(observed * distance, axis=(1, 2))
        expected = np.sum(margins[:, :, None] * margins[:, None, :] * distance, axis=(1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(expected > 0, 1.0 - (total - 1) * disagreement / expected, np.nan)

    # ICC: Henderson Method I sums of each image and each (image, rater) cell, ratings centred

    def _anova_columns(self, image_of, rater_of, centred, count) -> dict[str, np.ndarray]:
        sums = np.bincount(image_of, weights=centred, minlength=self.n_images)
        cells, cell_count = np.unique(np.column_stack([image_of, rater_of]), axis=0, return_counts=True)
        cell_square = np.bincount(cells[:, 0], weights=cell_count.astype(np.float64) ** 2, minlength=self.n_images)
        with np.errstate(invalid="ignore", divide="ignore"):
            return {"repeated": (count > 0).astype(np.float64), "count": count, "count_square": count * count,
                    "sum": sums, "square": np.bincount(image_of, weights=centred * centred, minlength=self.n_images),
                    "between": np.where(count > 0, sums * sums / count, 0.0),
                    "k3": np.where(count > 0, cell_square / count, 0.0)}

    def _components(self, weights: np.ndarray, sums: np.ndarray) -> np.ndarray:
        """Solve the Method I equations (see :func:`variance_components`) for each resample."""
        column = self._reader(sums)
        total_n, n_images = column("count"), column("repeated")
        safe_n = np.where(total_n > 0, total_n, 1.0)
        t_0, t_a, t_mu = column("square"), column("between"), column("sum") ** 2 / safe_n
        k1, k3 = column("count_square") / safe_n, column("k3")
        drawn = weights[:, self.repeated_index]
        t_b, n_square, k4, n_raters = self._rater_sums(drawn) if self.cells is not None else \
            (t_0, total_n, total_n, total_n)  # every rating its own rater: T_B = T_0, n_j = 1, J = N
        k2 = n_square / safe_n
        squares = np.stack([t_a - t_mu, t_b - t_mu, t_0 - t_a - t_b + t_mu], axis=1)
        system = np.stack([
            np.stack([total_n - k1, k3 - k2, n_images - 1], axis=1),
            np.stack([k4 - k1, total_n - k2, n_raters - 1], axis=1),
            np.stack([k1 - k4, k2 - k3, total_n - n_images - n_raters + 1], axis=1),
        ], axis=1)
        values = (np.linalg.pinv(system, rcond=SINGULAR_TOLERANCE) @ squares[:, :, None])[:, :, 0]
        values[np.count_nonzero(drawn, axis=1) < 2] = np.nan
        return values

    def _rater_sums(self, drawn: np.ndarray) -> np.ndarray:
        """T_B, sum_j n_j², k4 and the raters drawn, per resample, from the cells (in bounded slices)."""
        out = np.zeros((4, len(drawn)))
        step = max(1, CHUNK_ENTRIES // max(3 * self.n_raters, 1))
        for start in range(0, len(drawn), step):
            stacked = self.cells @ np.ascontiguousarray(drawn[start:start + step].T)  # (3 x raters, resamples)
            n, y, n2 = np.split(stacked, 3)
            present = n > 0
            safe = np.where(present, n, 1.0)
            out[:, start:start + step] = [np.sum(y * y / safe, axis=0), np.sum(n * n, axis=0),
                                          np.sum(n2 / safe, axis=0), present.sum(axis=0)]
        return out

    def _cells(self, image_of, rater_of, centred) -> sparse.csr_array:
        """(3 x raters, repeated images): each cell's count, sum of centred ratings and squared count."""
        compact = np.searchsorted(self.repeated_index, image_of)
        shape = (self.n_raters, self.n_repeated)
        count = sparse.csr_array((np.ones(len(centred)), (rater_of, compact)), shape=shape)
        total = sparse.csr_array((centred, (rater_of, compact)), shape=shape)
        count.sum_duplicates()
        total.sum_duplicates()
        return sparse.vstack([count, total, count * count], format="csr")

    # group offsets: per image and group, the sum of (rating - image mean) and the count

    def _offset_columns(self, image_of, ratings, labels) -> dict[str, np.ndarray]:
        self.groups = [] if labels is None else sorted({g for g in labels if g is not None})
        self.group_ratings, self.group_images = [], []
        shape = (self.n_images, len(self.groups))
        offset_sum, offset_count = np.zeros(shape), np.zeros(shape)
        mean = np.bincount(image_of, weights=ratings, minlength=self.n_images) / np.maximum(
            np.bincount(image_of, minlength=self.n_images), 1)
        for column, group in enumerate(self.groups):
            member = labels == group
            offset_sum[:, column] = np.bincount(image_of[member], weights=ratings[member] - mean[image_of[member]],
                                                minlength=self.n_images)
            offset_count[:, column] = np.bincount(image_of[member], minlength=self.n_images)
            self.group_ratings.append(int(member.sum()))
            self.group_images.append(len(np.unique(image_of[member])))
        return {"offset_sum": offset_sum, "offset_count": offset_count}
