"""Score on a torch device (a GPU) with the neighbours of :class:`~percept.model.scoring.MultiScorer`.

For each block of queries, on the device:

1. The screen (:mod:`percept.model.torch_screen`): every similarity in float16 (or bfloat16) products summed
   in float32, each within a proven bound ``eps`` of the CPU path's float64 similarity.
2. One list of the best-screened distinct vectors (``topk``), and per set of categories sharing their vectors
   the cut: the K-th best value among its own vectors minus ``2 eps``. No vector screened below a set's cut
   can be one of its neighbours; a query whose list ends above some cut (or holds fewer than K of a set's
   vectors) is searched again with a list twice as long.
3. Float64 similarities of the candidates past a cut, once for all categories (categories often rate
   different images: their candidates would overlap), and each category's K first samples among them by
   (similarity descending, sample position ascending), as the CPU path orders them.

The float64 similarities are batched products, whose last bits can differ from the CPU's fixed-order sums.
Where two candidates lie within the two sums' combined error of each other, or a candidate lies next to
similarity 1 (whose last bits the dissimilarity index magnifies), that query's candidates are summed again in
the CPU's order (:mod:`percept.model.torch_rows`): the neighbours are the CPU's in every case, and the
similarities of near copies its bits. :mod:`percept.model.torch_estimates` adds the statistics on the device.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from percept.errors import PerceptError
from percept.model.io import ExportedModel
from percept.model.knn import RERANK_MARGIN, Neighbours
from percept.model.scoring import MultiScorer
from percept.model.screens import NONFINITE_QUERIES, NORM_SLACK, U64, gamma
from percept.model.torch_rows import fixed_order_products
from percept.model.torch_screen import DEFAULT_PRECISION, DeviceScreen, Screened
from percept.model.unit_rows import Rows

#: Categories sharing one set of distinct vectors: which vectors are theirs (None: every one), how many, and each
#: category with its members (the sample positions of every distinct vector, -1 padded), on the device.
VectorGroup = tuple[Tensor | None, int, list[tuple[str, Tensor]]]
#: Per category, each query's K nearest samples and their float64 similarities, on the device.
DeviceNeighbours = dict[str, tuple[Tensor, Tensor]]

#: Query rows a call sends to the device at a time.
DEVICE_CHUNK = 65536
#: Queries screened at once, at most: bounds the float32 block to this x distinct training vectors.
DEVICE_BLOCK = 16384
#: Screen values per block, at most (float32: 1 GiB).
SCREEN_VALUES = 2 ** 28
#: Float64 candidate elements gathered at once for the re-ranking (512 MiB).
RERANK_VALUES = 2 ** 26
#: Queries with a candidate this similar or more (1 - 1e-8) have it summed in the CPU's order: the dissimilarity
#: index, sqrt(2 - 2 s) over the survey's mean distance, magnifies the last bits of similarities next to 1.
NEAR_ONE = 1 - 1e-8


class TorchScorer(MultiScorer):
    """:class:`MultiScorer` whose similarity search runs on ``device`` (``cuda``, ``cuda:N`` or ``cpu``), the
    screen in ``precision`` (``fp16``, ``bf16`` or ``fp32``)."""

    def __init__(self, model: ExportedModel, k: int | None = None, weighting: str | None = None,
                 device: str = "cuda", block_size: int = DEVICE_BLOCK, precision: str = DEFAULT_PRECISION):
        super().__init__(model, k=k, weighting=weighting, block_size=block_size, threads=1)
        self.device = torch.device(device)
        self.vectors = torch.from_numpy(self.vectors64).to(self.device)
        self.screen = DeviceScreen(self.vectors, precision)
        self._groups = self._vector_groups()

    def _vector_groups(self) -> list[VectorGroup]:
        """Categories grouped by their set of distinct vectors: one cut per group."""
        groups: dict[bytes, VectorGroup] = {}
        for category, group in self._cats.items():
            every = len(group.vectors) == self.n_vectors
            key = b"all" if every else group.vectors.tobytes()
            if key not in groups:
                mask = None if every else torch.zeros(self.n_vectors, dtype=torch.bool, device=self.device)
                if mask is not None:
                    mask[torch.from_numpy(group.vectors).to(self.device)] = True
                groups[key] = (mask, len(group.vectors), [])
            members = np.full((self.n_vectors, group.members.shape[1]), -1, dtype=np.int64)
            members[group.vectors] = group.members
            groups[key][2].append((category, torch.from_numpy(members).to(self.device)))
        return list(groups.values())

    @property
    def block_rows(self) -> int:
        """Queries screened at once."""
        return max(1, min(self.block_size, SCREEN_VALUES // max(1, self.n_vectors)))

    def sample_counts(self, k: int) -> dict[str, int]:
        """Neighbours per category for a search of ``k``: ``k``, or all of a category's samples if fewer."""
        return {c: min(k, self.n_samples(c)) for c in self.categories}

    def neighbours(self, queries: Rows) -> dict[str, Neighbours]:
        """Per category, the K nearest samples of each unit query vector, most similar first."""
        queries = np.asarray(self._check(queries))  # unit rows widened at once: the device takes them whole
        ks = self.sample_counts(self.k)
        parts: list[DeviceNeighbours] = []
        for start in range(0, len(queries), DEVICE_CHUNK):  # a chunk on the device at a time
            unit = torch.from_numpy(np.ascontiguousarray(queries[start:start + DEVICE_CHUNK])).to(self.device)
            if not bool(torch.isfinite(unit).all()):
                raise PerceptError(NONFINITE_QUERIES)
            found = self.search(unit, unit, None, ks)
            parts.append({c: (index.cpu(), similarity.cpu()) for c, (index, similarity) in found.items()})
        return {c: Neighbours(np.concatenate([p[c][0].numpy() for p in parts] or [np.empty((0, ks[c]), np.int64)]),
                              np.concatenate([p[c][1].numpy() for p in parts] or [np.empty((0, ks[c]))]))
                for c in self.categories}

    def search(self, unit: Tensor, rows: Tensor, divisors: Tensor | None, ks: dict[str, int]) -> DeviceNeighbours:
        """Each category's ``ks[c]`` nearest samples of float64 ``unit`` rows, screened from ``rows`` (the
        stored rows with their ``divisors``, or the unit rows themselves with None)."""
        m = len(unit)
        found = {c: (torch.empty((m, k), dtype=torch.int64, device=self.device),
                     torch.empty((m, k), dtype=torch.float64, device=self.device)) for c, k in ks.items()}
        with self.screen.held():
            for start in range(0, m, self.block_rows):
                part = slice(start, start + self.block_rows)
                screened = self.screen.similarities(rows[part], None if divisors is None else divisors[part])
                found_block = _BlockSearch(self, unit[part], screened, ks).run()
                for category, (index, similarity) in found_block.items():
                    found[category][0][part], found[category][1][part] = index, similarity
        return found

    def _tie_tolerance(self, unit: Tensor) -> Tensor:
        """Per query: float64 similarities further apart than this are ordered as the CPU's fixed-order sums
        order them (both sums lie within g64(d + 4) |q| |x| of the exact product)."""
        norms = torch.linalg.vector_norm(unit, dim=1) * NORM_SLACK
        return 4 * gamma(self.dim + 4, U64) * norms * self.screen.exact_norm * (1 + 2.0 ** -40)


class _BlockSearch:
    """The neighbours of a block of screened queries in every category (steps 2 and 3)."""

    def __init__(self, scorer: TorchScorer, unit: Tensor, screened: Screened, ks: dict[str, int]):
        self.scorer, self.unit, self.screened, self.ks = scorer, unit, screened, ks
        self.tolerance = scorer._tie_tolerance(unit)
        # per group: its vectors and the most vectors any of its categories needs (they bound its cut from below)
        self.cuts = [(mask, max(min(ks[c], size) for c, _ in members)) for mask, size, members in scorer._groups]
        # a list this long holds the K best of every group and their candidates, for most queries
        listed = max(-(-max(min(ks[c], size) for c, _ in members) * scorer.n_vectors // size)
                     for _, size, members in scorer._groups)
        kth = max(kth for _, kth in self.cuts)
        self.width = min(scorer.n_vectors, listed + max(RERANK_MARGIN, kth // 2))

    def run(self) -> DeviceNeighbours:
        m, device, n = len(self.unit), self.unit.device, self.scorer.n_vectors
        found = {c: (torch.empty((m, k), dtype=torch.int64, device=device),
                     torch.empty((m, k), dtype=torch.float64, device=device)) for c, k in self.ks.items()}
        rows: Tensor | None = None  # every query
        width = self.width
        while True:
            sums = self.screened.sums if rows is None else self.screened.sums[rows]
            eps = self.screened.eps if rows is None else self.screened.eps[rows]
            top, columns = torch.topk(sums, width, dim=1)  # the screen values' order: scales are positive
            top64 = self.screened.values(top, slice(None) if rows is None else rows)
            complete = torch.ones(len(top64), dtype=torch.bool, device=device)
            passed = torch.zeros(top64.shape, dtype=torch.bool, device=device)
            lowest = torch.full_like(eps, torch.inf)
            for mask, kth in self.cuts:
                if mask is None:
                    cut = top64[:, kth - 1] - 2 * eps
                    passed |= top64 >= cut[:, None]
                else:
                    inside = mask[columns]
                    rank = torch.cumsum(inside, dim=1)
                    complete &= rank[:, -1] >= kth  # the list holds K of the group's vectors
                    kth_value = top64.gather(1, (rank < kth).sum(dim=1, keepdim=True).clamp(max=width - 1))[:, 0]
                    cut = kth_value - 2 * eps
                    passed |= inside & (top64 >= cut[:, None])
                lowest = torch.minimum(lowest, cut)
            if width < n:
                complete &= top64[:, -1] < lowest  # every vector past a cut is in the list
            counts = torch.where(complete, passed.sum(dim=1), 0)
            every, widest = (int(v) for v in torch.stack([complete.all().long(), counts.max()]).tolist())
            if every:
                self._rerank(rows, columns, passed, widest, found)
                return found
            done = torch.nonzero(complete).ravel()
            if len(done):
                self._rerank(done if rows is None else rows[done], columns[done], passed[done], widest, found)
            later = torch.nonzero(~complete).ravel()
            rows = later if rows is None else rows[later]
            width = min(2 * width, n)

    def _rerank(self, rows: Tensor | None, columns: Tensor, passed: Tensor, widest: int,
                found: DeviceNeighbours) -> None:
        """Float64 similarities of the listed ``columns`` past a cut (``passed``, at most ``widest`` a query) of
        the queries at ``rows`` (None: all), and each category's first samples by them, written to ``found``."""
        unit = self.unit if rows is None else self.unit[rows]
        tolerance = self.tolerance if rows is None else self.tolerance[rows]
        first = torch.argsort(passed.to(torch.int8), dim=1, descending=True, stable=True)[:, :widest]
        vectors, passed = columns.gather(1, first), passed.gather(1, first)
        exact = _products(self.scorer.vectors, unit, vectors).masked_fill_(~passed, -torch.inf)
        ordered = torch.sort(exact, dim=1, descending=True).values
        gaps = ordered[:, :-1] - ordered[:, 1:]
        near = torch.nonzero((gaps <= tolerance[:, None]).any(dim=1) | (ordered[:, 0] >= NEAR_ONE)).ravel()
        if len(near):  # near ties and near copies: summed as the CPU sums them, so they have its bits
            exact[near] = fixed_order_products(unit[near][:, None, :], self.scorer.vectors[vectors[near]]) \
                .masked_fill_(~passed[near], -torch.inf)
        for _, _, members in self.scorer._groups:
            for category, samples in members:
                step = max(1, RERANK_VALUES // max(1, vectors.shape[1] * samples.shape[1]))  # bounded memory
                for start in range(0, len(vectors), step):
                    part = slice(start, start + step)
                    where = part if rows is None else rows[part]
                    found[category][0][where], found[category][1][where] = _nearest_samples(
                        samples, vectors[part], exact[part], self.ks[category])


def _products(table: Tensor, unit: Tensor, vectors: Tensor) -> Tensor:
    """Float64 similarity of each query with its candidate vectors (rows of ``table``), gathered a part at a time."""
    exact = torch.empty(vectors.shape, dtype=torch.float64, device=unit.device)
    step = max(1, RERANK_VALUES // max(1, vectors.shape[1] * table.shape[1]))
    for start in range(0, len(unit), step):
        part = slice(start, start + step)
        rows = vectors[part]
        gathered = torch.index_select(table, 0, rows.reshape(-1)).view(*rows.shape, table.shape[1])
        exact[part] = torch.bmm(gathered, unit[part, :, None])[..., 0]
    return exact


def _nearest_samples(members: Tensor, cand: Tensor, exact: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The K most similar samples of candidate vectors, ties by sample position (as the CPU path)."""
    width = members.shape[1]
    samples = members[cand].reshape(len(cand), cand.shape[1] * width)
    sample_sims = exact.repeat_interleave(width, dim=1).masked_fill(samples < 0, -torch.inf)
    tiebreak = samples.masked_fill(samples < 0, torch.iinfo(torch.int64).max)
    order = torch.argsort(tiebreak, dim=1, stable=True)
    order = order.gather(1, torch.argsort(-sample_sims.gather(1, order), dim=1, stable=True))[:, :k]
    return samples.gather(1, order), sample_sims.gather(1, order)
