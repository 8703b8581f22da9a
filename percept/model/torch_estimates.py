"""Estimates on a torch device: the search, the neighbours' statistics and the domain check all run there.

:class:`DeviceEstimator` gives what :class:`~percept.model.estimates.Estimator` gives (the same neighbours;
scores, sd, intervals, best similarity and dissimilarity within 1e-9). It takes query rows as stored
(:meth:`DeviceEstimator.estimate_stored`: float16 embeddings stay float16 on their way to the device and are
normalised there, in float64, as :func:`percept.model.knn.l2_normalise` normalises them) or unit rows
(:meth:`DeviceEstimator.estimate`), and :meth:`DeviceEstimator.estimate_chunks` overlaps a stream of chunks:
the next chunk is copied to the device while this one is scored, and the results of each come back
asynchronously, one array per chunk. Stored zero rows have no direction: their estimates are left empty (NaN),
as :func:`percept.city.rating.estimate_chunk` leaves them."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np
import torch
from torch import Tensor

from percept.errors import PerceptError
from percept.model.estimates import Estimates, Estimator
from percept.model.io import ExportedModel
from percept.model.screens import NONFINITE_QUERIES
from percept.model.torch_rows import unit_rows
from percept.model.torch_scoring import DEVICE_CHUNK, TorchScorer
from percept.model.torch_screen import DEFAULT_PRECISION
from percept.model.torch_statistics import (
    best_similarity,
    dissimilarity,
    interval,
    leave_out,
    nearest,
    neighbour_statistics,
    out_of_domain,
)
from percept.model.torch_transfers import Download, Transfers, Upload
from percept.model.unit_rows import Rows


class RowChunk(Protocol):
    """Consecutive query rows and the names (keys) that tell survey images apart (None: no survey images)."""

    @property
    def names(self) -> Sequence[str] | None: ...

    @property
    def vectors(self) -> np.ndarray: ...


@dataclass(frozen=True)
class _Rows:
    """A chunk of rows handed to one of the single calls."""

    vectors: np.ndarray
    names: Sequence[str] | None


C = TypeVar("C", bound=RowChunk)


@dataclass
class _Job:
    """A chunk on its way: key numbers (host and device), rows uploading, and whether they are stored rows."""

    numbers: np.ndarray
    device_numbers: Upload
    rows: Upload
    stored: bool


class DeviceEstimator(Estimator):
    """An :class:`Estimator` whose whole work runs on the torch device of its :class:`TorchScorer`."""

    scorer: TorchScorer

    def __init__(self, model: ExportedModel, k: int | None = None, image_key: Callable[[str], str] = str,
                 scorer: TorchScorer | None = None, interval: float | None = None, device: str = "cuda",
                 precision: str = DEFAULT_PRECISION):
        scorer = scorer or TorchScorer(model, k=k, device=device, precision=precision)
        super().__init__(model, k=k, image_key=image_key, scorer=scorer, interval=interval)
        self.device = scorer.device
        self.transfers = Transfers(self.device)
        self._device_scores = {c: torch.tensor(self._scores[c], device=self.device) for c in self.categories}
        self._sample_keys = {c: torch.tensor(self.keys.samples[c], device=self.device) for c in self.categories}
        self._widest = max(self.keys.widest(c) for c in self.categories)
        fitted = self.model.calibration or {}
        self._calibrations = {c: (fitted[c].quantile(self.level), fitted[c].beta) if self.level is not None
                              and c in fitted else None for c in self.categories}
        self._first_vectors: dict[str, Tensor] | None = None

    @property
    def width(self) -> int:
        """Columns of a chunk's result array: scores, sd, lo, hi per category; best similarity,
        dissimilarity, out of domain, finite."""
        return 4 * len(self.categories) + 4

    def estimate(self, queries: Rows, keys: Sequence[str] | None = None,
                 include_self: bool = False) -> Estimates:
        """Estimates for unit query vectors (as :meth:`Estimator.estimate`)."""
        return self._estimate_all(np.asarray(self.scorer._check(queries)), keys, include_self, stored=False)

    def estimate_stored(self, rows: np.ndarray, keys: Sequence[str] | None = None,
                        include_self: bool = False) -> Estimates:
        """Estimates for query rows as stored (not normalised; zero rows get empty estimates)."""
        return self._estimate_all(self._stored(rows), keys, include_self, stored=True)

    def _estimate_all(self, rows: np.ndarray, keys: Sequence[str] | None, include_self: bool,
                      stored: bool) -> Estimates:
        """Estimates of any number of rows, a chunk of :data:`DEVICE_CHUNK` at a time (bounded device memory)."""
        names = list(keys) if keys is not None else None
        chunks = [_Rows(rows[s:s + DEVICE_CHUNK], None if names is None else names[s:s + DEVICE_CHUNK])
                  for s in range(0, len(rows), DEVICE_CHUNK)] or [_Rows(rows, names)]
        found = [estimates for _, estimates in self.estimate_chunks(chunks, include_self, stored)]
        if len(found) == 1:
            return found[0]
        out = Estimates.empty(len(rows), len(self.categories), np.concatenate([f.in_survey for f in found]),
                              self.level)
        for start, part in zip(range(0, len(rows), DEVICE_CHUNK), found):
            out.fill(np.arange(start, start + len(part.scores)), part)
        return out

    def estimate_chunks(self, chunks: Iterable[C], include_self: bool, stored: bool) -> Iterator[tuple[C, Estimates]]:
        """(chunk, estimates) for each chunk in order, the next chunk's copy and the last one's results in flight
        while one is scored. ``stored``: the chunks hold rows as stored, else unit rows."""
        sent: deque[tuple[C, _Job]] = deque()
        scored: deque[tuple[C, tuple[Download, np.ndarray]]] = deque()
        for chunk in chunks:
            rows = self._stored(chunk.vectors) if stored else np.asarray(self.scorer._check(chunk.vectors))
            sent.append((chunk, self._send(rows, chunk.names, stored)))
            if len(sent) > 1:
                done, job = sent.popleft()
                scored.append((done, self._start(job, include_self)))
            while len(scored) > 1:
                done, results = scored.popleft()
                yield done, self._finish(results)
        while sent:
            done, job = sent.popleft()
            scored.append((done, self._start(job, include_self)))
        while scored:
            done, results = scored.popleft()
            yield done, self._finish(results)

    def _stored(self, rows: np.ndarray) -> np.ndarray:
        """``rows`` as stored, refused unless they are float rows of the model's size."""
        rows = np.asarray(rows)
        if rows.ndim != 2 or rows.shape[1] != self.scorer.dim or rows.dtype.kind != "f":
            raise PerceptError(f"query vectors have shape {rows.shape} ({rows.dtype}), but the model's vectors have "
                               f"{self.scorer.dim} dimensions: use the CLIP model the model was built with")
        return rows

    def _send(self, rows: np.ndarray, keys: Sequence[str] | None, stored: bool) -> _Job:
        numbers = self.keys.lookup(keys) if keys is not None else np.full(len(rows), -1, dtype=np.int64)
        return _Job(numbers, self.transfers.send(numbers), self.transfers.send(rows), stored)

    def _start(self, job: _Job, include_self: bool) -> tuple[Download, np.ndarray]:
        """Scores a chunk on the device, a block at a time, and starts copying its results back."""
        rows, numbers = self.transfers.arrived(job.rows), self.transfers.arrived(job.device_numbers)
        results = torch.empty((len(rows), self.width), dtype=torch.float64, device=self.device)
        step = self.scorer.block_rows
        for start in range(0, len(rows), step):
            part = slice(start, start + step)
            self._block(rows[part], numbers[part], job.numbers[part], job.stored, include_self,
                        results[part])
        return self.transfers.fetch(results), job.numbers

    def _block(self, rows: Tensor, numbers: Tensor, host_numbers: np.ndarray, stored: bool, include_self: bool,
               out: Tensor) -> None:
        """Estimates of one block of rows into ``out`` (one row of :attr:`width` columns each)."""
        usable: Tensor | None = None
        if stored:
            unit, norms, divisors = unit_rows(rows)
            finite = torch.isfinite(norms)
            usable = norms > 0
        else:
            unit, finite = rows, torch.isfinite(rows).all(dim=1)
        unit = torch.where(finite[:, None], unit, 0.0)
        own = not include_self and bool((host_numbers >= 0).any())
        ks = self.scorer.sample_counts(self.scorer.k + self._widest if own else self.scorer.k)
        if stored and rows.dtype == self.scorer.screen.dtype:  # the screen takes the stored rows as they are
            found = self.scorer.search(unit, torch.where(finite[:, None], rows, 0), torch.where(finite, divisors, 1.0),
                                       ks)
        else:
            found = self.scorer.search(unit, unit, None, ks)
        columns = len(self.categories)
        firsts = []
        for column, category in enumerate(self.categories):
            index, similarity = found[category]
            if own:
                excluded = (self._sample_keys[category][index] == numbers[:, None]) & (numbers >= 0)[:, None]
                index, similarity, counts = leave_out(index, similarity, excluded, self.scorer.k)
            else:
                counts = torch.full((len(unit),), index.shape[1], dtype=torch.int64, device=self.device)
            mean, sd = neighbour_statistics(index, similarity, counts, self._device_scores[category],
                                            self.scorer.weighting)
            out[:, column], out[:, columns + column] = mean, sd
            calibration = self._calibrations[category]
            if calibration is not None:
                far = dissimilarity(nearest(similarity, counts, math.nan), self.model.mean_distance)
                out[:, 2 * columns + column], out[:, 3 * columns + column] = interval(mean, sd, far, *calibration)
            else:
                out[:, 2 * columns + column] = out[:, 3 * columns + column] = math.nan
            firsts.append(nearest(similarity, counts, -math.inf))
        best = best_similarity(firsts)
        far = dissimilarity(best, self.model.mean_distance)
        outside = out_of_domain(best, self.threshold)
        if include_self and (host_numbers >= 0).any():
            same = self._own_vectors_match(unit, numbers, host_numbers)
            best = torch.where(same, 1.0, best)
            far = torch.where(same, 0.0, far)
            outside &= ~same
        out[:, 4 * columns], out[:, 4 * columns + 1], out[:, 4 * columns + 2] = best, far, outside.double()
        out[:, 4 * columns + 3] = finite.double()
        if usable is not None:  # zero rows: no direction, nothing known
            out[:, :4 * columns + 2].masked_fill_(~usable[:, None], math.nan)
            out[:, 4 * columns + 2].masked_fill_(~usable, 0.0)

    def _own_vectors_match(self, unit: Tensor, numbers: Tensor, host_numbers: np.ndarray) -> Tensor:
        """True for survey images whose query is, bit for bit, their first sample's vector in some category
        (their best similarity is then exactly 1, as :meth:`Estimator.estimate` sets it)."""
        first = self._first_vector_table()
        rows = torch.from_numpy(np.flatnonzero(host_numbers >= 0)).to(self.device)
        same = torch.zeros(len(unit), dtype=torch.bool, device=self.device)
        for vectors in first.values():
            vector = vectors[numbers[rows]]
            equal = (self.scorer.vectors[vector.clamp(min=0)] == unit[rows]).all(dim=1) & (vector >= 0)
            same[rows] |= equal
        return same

    def _first_vector_table(self) -> dict[str, Tensor]:
        """Per category, the distinct vector of each survey image's first sample (-1 where it has none)."""
        if self._first_vectors is None:
            table = {c: np.full(max(len(self.keys.numbers), 1), -1, dtype=np.int64) for c in self.categories}
            for number, pairs in self._first_samples().items():
                for category, sample in pairs:
                    table[category][number] = self.scorer.sample_vectors(category)[sample]
            self._first_vectors = {c: torch.from_numpy(t).to(self.device) for c, t in table.items()}
        return self._first_vectors

    def _finish(self, started: tuple[Download, np.ndarray]) -> Estimates:
        """The estimates of a chunk whose results were copied back."""
        download, numbers = started
        results = self.transfers.received(download)
        columns = len(self.categories)
        if not results[:, 4 * columns + 3].all():
            raise PerceptError(NONFINITE_QUERIES)
        return Estimates(results[:, :columns], results[:, columns:2 * columns], results[:, 4 * columns],
                         results[:, 4 * columns + 2] > 0.5, numbers >= 0, results[:, 2 * columns:3 * columns],
                         results[:, 3 * columns:4 * columns], results[:, 4 * columns + 1], self.level)
