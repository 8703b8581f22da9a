"""Score on a torch device (a GPU) with the neighbours of :class:`~percept.model.scoring.MultiScorer`.

The float32 similarity pass, the candidate selection and the float64 re-ranking run as torch
matrix products on the device; the rules that decide the neighbours are the CPU path's. Each
query keeps its float32-best candidates per category; when a vector outside them could still be
among the K best (its float32 similarity lies within the float32 error bound of the K-th best),
the query is searched again with twice the candidates. Candidates are re-ranked in float64 and
their samples ordered by float64 similarity, ties by training order. Weighted means are the CPU
path's own code. The float32 pass runs in full IEEE float32 (no TF32 or bfloat16), whose error bound the
rules assume; the process's own precision settings are restored after it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from percept.model.io import ExportedModel
from percept.model.knn import RERANK_MARGIN, Neighbours
from percept.model.scoring import MultiScorer
from percept.model.screens import float32_error
from percept.model.shared_settings import IEEE_FLOAT32

if TYPE_CHECKING:
    from torch import Tensor

#: Categories sharing one set of distinct vectors: their positions on the device (None for all of them) and
#: each category with its members (sample positions of each vector, -1 padded) on the device.
VectorGroup = tuple["Tensor | None", list[tuple[str, "Tensor"]]]

#: Queries per block on the device: bounds the float32 block to BLOCK x distinct training vectors.
DEVICE_BLOCK = 8192
#: Queries re-ranked at once: bounds the gathered float64 candidates to ROWS x candidates x dim.
DEVICE_RERANK_ROWS = 1024


class TorchScorer(MultiScorer):
    """:class:`MultiScorer` whose similarity search runs on ``device`` (``cuda``, ``cuda:N`` or ``cpu``)."""

    blocks_per_thread = 1  # one block of DEVICE_BLOCK queries at a time bounds the device's memory

    def __init__(self, model: ExportedModel, k: int | None = None, weighting: str | None = None,
                 device: str = "cuda", block_size: int = DEVICE_BLOCK):
        import torch

        super().__init__(model, k=k, weighting=weighting, block_size=block_size, threads=1)
        self.device = torch.device(device)
        self._v64 = torch.from_numpy(self.vectors64).to(self.device)
        self._v32 = self._v64.float()
        self._groups = self._vector_groups()

    def _vector_groups(self) -> list[VectorGroup]:
        """Categories grouped by their set of distinct vectors: one candidate search per group."""
        import torch

        groups: dict[bytes, VectorGroup] = {}
        for category, group in self._cats.items():
            every = len(group.vectors) == self.n_vectors
            key = b"all" if every else group.vectors.tobytes()
            if key not in groups:
                positions = None if every else torch.from_numpy(group.vectors).to(self.device)
                groups[key] = (positions, [])
            groups[key][1].append((category, torch.from_numpy(group.members).to(self.device)))
        return list(groups.values())

    def _block(self, block: np.ndarray) -> dict[str, Neighbours]:
        import torch

        queries = torch.from_numpy(np.ascontiguousarray(block, dtype=np.float64)).to(self.device)
        with IEEE_FLOAT32.held():
            approx = queries.float() @ self._v32.T
        found: dict[str, Neighbours] = {}
        for positions, members in self._groups:
            own = approx if positions is None else approx[:, positions]
            found.update(self._group_neighbours(queries, own, positions, members))
        return {category: found[category] for category in self.categories}

    def _group_neighbours(self, queries: Tensor, approx: Tensor, positions: Tensor | None,
                          members: list[tuple[str, Tensor]]) -> dict[str, Neighbours]:
        """Neighbours of every query in the categories sharing the vectors whose float32 similarities
        are the columns of ``approx`` (K read now: a copy of the scorer may search more)."""
        import torch

        count, n_local = approx.shape
        slack = 2 * float32_error(self.dim)
        categories = [(c, own, min(self._k(c), n_local), self._k(c)) for c, own in members]
        index = {c: torch.empty((count, k), dtype=torch.int64, device=self.device) for c, _, _, k in categories}
        sims = {c: torch.empty((count, k), dtype=torch.float64, device=self.device) for c, _, _, k in categories}
        width = min(max(kth for _, _, kth, _ in categories) + RERANK_MARGIN, n_local)
        rows = torch.arange(count, device=self.device)
        while len(rows):
            values, cols = torch.topk(approx if len(rows) == count else approx[rows], width, dim=1)
            sure = torch.ones(len(rows), dtype=torch.bool, device=self.device)
            if width < n_local:
                # Vectors outside the candidates are at most values[:, -1] similar (float32 pass).
                for _, _, kth, _ in categories:
                    sure &= values[:, kth - 1] - slack > values[:, -1]
            done, cols = rows[sure], cols[sure]
            exact = self._exact(queries[done], cols if positions is None else positions[cols])
            for category, own, _, k in categories:
                index[category][done], sims[category][done] = _nearest_samples(own, cols, exact, k)
            rows, width = rows[~sure], min(2 * width, n_local)
        return {c: Neighbours(index[c].cpu().numpy(), sims[c].cpu().numpy()) for c, _, _, _ in categories}

    def _exact(self, queries: Tensor, vectors: Tensor) -> Tensor:
        """Float64 similarity of each query with its candidate vectors (positions in the distinct vectors)."""
        import torch

        exact = torch.empty(vectors.shape, dtype=torch.float64, device=self.device)
        for start in range(0, len(queries), DEVICE_RERANK_ROWS):
            part = slice(start, start + DEVICE_RERANK_ROWS)
            exact[part] = torch.bmm(self._v64[vectors[part]], queries[part, :, None])[..., 0]
        return exact


def _nearest_samples(members: Tensor, cand: Tensor, exact: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The K most similar samples of candidate vectors, ties by sample position (as the CPU path)."""
    import torch

    width = members.shape[1]
    samples = members[cand].reshape(len(cand), cand.shape[1] * width)
    sample_sims = exact.repeat_interleave(width, dim=1).masked_fill(samples < 0, float("-inf"))
    tiebreak = samples.masked_fill(samples < 0, torch.iinfo(torch.int64).max)
    order = torch.argsort(tiebreak, dim=1, stable=True)
    order = order.gather(1, torch.argsort(-sample_sims.gather(1, order), dim=1, stable=True))[:, :k]
    return samples.gather(1, order), sample_sims.gather(1, order)

