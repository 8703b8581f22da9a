"""Which images to rate next: a greedy weighted coverage of a city's imagery by the survey and the picks.

Core logic without I/O (:mod:`percept.city.suggest_io` reads the candidates and writes the CSV).

Each candidate image ``j`` lies ``cur_j`` from the nearest rated image: the chord distance
``sqrt(2 - 2 s)`` of its best similarity ``s`` to the survey. Rating a candidate ``p`` brings every
other candidate ``j`` that lists ``p`` among its ``neighbours`` most similar candidates to within
``d_jp`` of a rated image. One at a time, the greedy picks the candidate whose rating most reduces

    sum over candidates j of  weight_j * (distance from j to the nearest rated or picked image)

counting only the *other* candidates a pick brings nearer. That is a facility-location objective
(monotone and submodular, so the greedy is within 1 - 1/e of the best set, and gains only fall,
which lets it re-evaluate lazily). It favours places far from the survey that stand for many
candidates: a dense cluster of unrated imagery gains from every member, while an outlier, listed
by no other candidate, gains nothing and is never picked. The weights set the strategy:

* ``coverage``: 1 for every candidate (coverage of the embedding space, weighted by its density);
* ``mixed`` (default): the candidate's prediction-interval width over the mean width, so places
  where the model is unsure count more (1 where the model has no intervals: coverage);
* ``uncertainty``: the width over the mean width, divided by the candidate's own distance to the
  survey: each candidate's whole width counts, shared out by how much of its distance a pick closes.

Never picked: a survey image, another crop of a survey image's panorama, another crop of a picked
image's panorama, an image at least ``duplicate_similarity`` similar to a pick (a near-duplicate),
and with a per-cell cap, an image without a location or in a cell that already holds the cap.
Ties are broken by a permutation drawn from ``seed``, so the picks are deterministic for a seed.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from percept.errors import PerceptError
from percept.extras import require
from percept.model.domain import chord_distance
from percept.model.knn import KNNRegressor

STRATEGIES = ("coverage", "uncertainty", "mixed")
DEFAULT_STRATEGY = "mixed"
#: Candidates each candidate lists as its nearest (the pairs a pick can cover).
DEFAULT_NEIGHBOURS = 30
#: Cosine similarity at or above which an image counts as a near-duplicate of a pick.
DEFAULT_DUPLICATE_SIMILARITY = 0.95


@dataclass(frozen=True)
class SuggestOptions:
    """How many images to pick, by which strategy, and the rules that keep the picks apart."""

    count: int
    strategy: str = DEFAULT_STRATEGY
    seed: int = 0
    per_cell: int | None = None  # the most picks per cell (None: no cap)
    duplicate_similarity: float = DEFAULT_DUPLICATE_SIMILARITY
    neighbours: int = DEFAULT_NEIGHBOURS

    def __post_init__(self):
        if self.count < 1:
            raise PerceptError(f"-n takes the number of images to suggest (1 or more), got {self.count}")
        if self.strategy not in STRATEGIES:
            raise PerceptError(f"--strategy takes {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.per_cell is not None and self.per_cell < 1:
            raise PerceptError(f"--max-per-cell takes 1 or more, got {self.per_cell}")
        if not -1.0 < self.duplicate_similarity <= 1.0:
            raise PerceptError("--duplicate-similarity takes a cosine similarity above -1 and at most 1 (e.g. "
                               f"0.95), got {self.duplicate_similarity:g}")
        if self.neighbours < 1:
            raise PerceptError(f"--neighbours takes 1 or more, got {self.neighbours}")
        if self.seed < 0:
            raise PerceptError(f"--random-seed takes a whole number of 0 or more, got {self.seed}")


@dataclass(frozen=True)
class Candidates:
    """The images to choose from, with what the model says of each.

    ``width`` is None when the model has no intervals (NaN where one is unknown); ``group`` numbers
    panoramas (crops of one share a number); ``cell`` numbers the cells of a per-cell cap (-1: no
    location), None without a cap.
    """

    vectors: np.ndarray  # (n, dim) unit rows
    distance: np.ndarray  # (n,) chord distance to the nearest survey vector
    width: np.ndarray | None  # (n,) mean prediction-interval width over the categories
    eligible: np.ndarray  # (n,) bool: may be picked (not a survey image or a crop of a survey panorama)
    group: np.ndarray  # (n,) int panorama group
    cell: np.ndarray | None = None  # (n,) int cell, -1 where unlocated

    def __len__(self) -> int:
        return len(self.vectors)


@dataclass(frozen=True)
class Picks:
    """The picked candidates in rank order, and how many other candidates each brought nearer to a rated
    image when it was picked; ``short`` says why there are fewer than asked (None when there are not)."""

    index: np.ndarray
    represents: np.ndarray
    short: str | None = None


@dataclass(frozen=True)
class CoverageLists:
    """For each candidate p (a CSR layout by p): the other candidates j that list p among their nearest, and
    the distance ``d_jp``."""

    start: np.ndarray  # (n + 1,) offsets
    demand: np.ndarray  # the j of each pair
    distance: np.ndarray  # d_jp of each pair

    def of(self, p: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.start[p], self.start[p + 1]
        return self.demand[a:b], self.distance[a:b]


def coverage_lists(vectors: np.ndarray, neighbours: int) -> CoverageLists:
    """Each candidate's ``neighbours`` most similar other candidates (exact search), grouped by the neighbour."""
    n = len(vectors)
    k = min(neighbours + 1, n)  # the candidate itself comes back too
    found = KNNRegressor(k).fit(vectors, np.zeros(n)).kneighbors(vectors, k)
    demand = np.repeat(np.arange(n), k)
    facility = found.index.ravel()
    distance = chord_distance(found.similarity.ravel())
    other = facility != demand
    demand, facility, distance = demand[other], facility[other], distance[other]
    order = np.argsort(facility, kind="stable")
    start = np.concatenate([[0], np.cumsum(np.bincount(facility, minlength=n))])
    return CoverageLists(start, demand[order], distance[order])


def check_strategy(strategy: str, intervals: bool) -> None:
    """Refuse ``uncertainty`` where the model gives no prediction intervals."""
    if strategy == "uncertainty" and not intervals:
        raise PerceptError("--strategy uncertainty needs a model with prediction intervals: re-export it with "
                           "'percept evaluate --export' or 'clip_retrieval_knn --export', or use --strategy coverage")


def demand_weights(strategy: str, distance: np.ndarray, width: np.ndarray | None) -> np.ndarray:
    """Each candidate's weight in the objective under ``strategy`` (see the module's description)."""
    check_strategy(strategy, width is not None)
    n = len(distance)
    if strategy == "coverage" or width is None:
        return np.ones(n)
    known = np.isfinite(width)
    mean = float(np.mean(width[known])) if known.any() else 0.0
    relative = np.where(known, width / mean, 1.0) if mean > 0 else np.ones(n)
    if strategy == "mixed":
        return relative
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(distance > 0, relative / distance, 0.0)


def cell_numbers(lon: np.ndarray, lat: np.ndarray, resolution: int) -> np.ndarray:
    """The H3 cell of each point at ``resolution`` as a number (-1 where the point is unknown)."""
    h3 = require("maps", "h3", "--per-cell h3:RES")
    out = np.full(len(lon), -1, dtype=np.int64)
    located = np.isfinite(lon) & np.isfinite(lat)
    cells = [h3.latlng_to_cell(b, a, resolution) for a, b in zip(lon[located].tolist(), lat[located].tolist())]
    if cells:
        out[located] = np.unique(np.array(cells), return_inverse=True)[1].ravel()
    return out


def pick(candidates: Candidates, options: SuggestOptions, picked_one: Callable[[], None] = lambda: None) -> Picks:
    """Up to ``options.count`` candidates by the lazy greedy (see the module's description); ``picked_one`` is
    called after each pick (for progress)."""
    n = len(candidates)
    if not np.isfinite(candidates.distance).all():
        raise ValueError("every candidate needs a finite distance to the survey (leave zero vectors out)")
    weight = demand_weights(options.strategy, candidates.distance, candidates.width)
    if n == 0:
        return Picks(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), "there are no candidate images")
    lists = coverage_lists(candidates.vectors, options.neighbours)
    cur = np.asarray(candidates.distance, dtype=np.float64).copy()
    state = _PickState(candidates, options)

    def gain(p: int) -> float:
        demand, distance = lists.of(p)
        return float(np.sum(weight[demand] * np.maximum(cur[demand] - distance, 0.0)))

    tiebreak = np.random.default_rng(options.seed).permutation(n)
    heap = [(-gain(p), int(tiebreak[p]), p) for p in map(int, np.flatnonzero(state.allowed_mask()))]
    heapq.heapify(heap)
    picked: list[int] = []
    represents: list[int] = []
    short = None
    while len(picked) < options.count:
        if not heap:
            short = "no candidate left may be picked (survey images, crops of picked panoramas, near-duplicates" \
                    + (", unlocated images and full cells)" if options.per_cell else ")")
            break
        _, tie, p = heapq.heappop(heap)
        if not state.allowed(p):
            continue
        value = gain(p)
        if heap and (-value, tie) > heap[0][:2]:
            heapq.heappush(heap, (-value, tie, p))  # no longer the best: look again later
            continue
        if value <= 0:
            short = "no candidate left would bring any other candidate nearer to a rated image"
            break
        if state.near_duplicate(p):
            continue
        demand, distance = lists.of(p)
        represents.append(int(np.sum(distance < cur[demand])))
        np.minimum.at(cur, demand, distance)
        cur[p] = 0.0
        picked.append(p)
        state.take(p)
        picked_one()
    return Picks(np.array(picked, dtype=np.int64), np.array(represents, dtype=np.int64), short)


class _PickState:
    """Which candidates may still be picked: panoramas taken, cells filled, the picks' vectors."""

    def __init__(self, candidates: Candidates, options: SuggestOptions):
        self.candidates, self.options = candidates, options
        self.groups_taken: set[int] = set()
        self.cell_counts: dict[int, int] = {}
        self.vectors = np.empty((options.count, candidates.vectors.shape[1]))
        self.taken = 0

    def allowed_mask(self) -> np.ndarray:
        """The candidates allowed before any pick."""
        mask = np.asarray(self.candidates.eligible, dtype=bool).copy()
        if self.options.per_cell is not None:
            mask &= self._cells() >= 0
        return mask

    def allowed(self, p: int) -> bool:
        if int(self.candidates.group[p]) in self.groups_taken:
            return False
        if self.options.per_cell is not None:
            return self.cell_counts.get(int(self._cells()[p]), 0) < self.options.per_cell
        return True

    def near_duplicate(self, p: int) -> bool:
        if not self.taken:
            return False
        similarity = self.vectors[:self.taken] @ self.candidates.vectors[p]
        return bool(np.max(similarity) >= self.options.duplicate_similarity)

    def take(self, p: int) -> None:
        self.groups_taken.add(int(self.candidates.group[p]))
        self.vectors[self.taken] = self.candidates.vectors[p]
        self.taken += 1
        if self.options.per_cell is not None:
            cell = int(self._cells()[p])
            self.cell_counts[cell] = self.cell_counts.get(cell, 0) + 1

    def _cells(self) -> np.ndarray:
        if self.candidates.cell is None:
            raise ValueError("a per-cell cap needs each candidate's cell")
        return self.candidates.cell
