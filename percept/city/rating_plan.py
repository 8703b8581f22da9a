"""What a rating run reads, and how it is cut into work units that workers can score on their own.

The embedding parts are known by their ``.npy`` headers (row counts), without reading a vector.
Rows are scored in chunks: ``chunk_size`` rows of one part at a time, or with panoramic averaging
``chunk_size`` panoramas in the order their last crop comes. A work unit is a range of rows that
starts and ends where a chunk does (and, with panoramas, where none is open), so a worker rating
its units makes exactly the chunks, and so the scores, one process rating every row makes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from percept.data.embeddings import KINDS, REENCODE, check_row_counts, read_metadata, required_parts
from percept.data.locations import panorama_id
from percept.data.npy import read_header
from percept.data.vector_checks import check_rows, refuse_nonfinite
from percept.errors import PerceptError

#: About how many work units a run is cut into (more for balance and cheap losses, fewer for less overhead).
TARGET_UNITS = 256
#: The most rows a work unit holds (unless one chunk, or one stretch of open panoramas, holds more).
MAX_UNIT_ROWS = 1 << 18


@dataclass(frozen=True)
class EmbeddingPart:
    """One part of an embeddings folder: its vector and metadata files, its rows and the first one's position
    over all parts."""

    vectors: Path
    metadata: Path
    kind: str  # img or text
    rows: int
    first: int

    @property
    def stop(self) -> int:
        return self.first + self.rows


class VectorFile:
    """Reads row ranges of one ``.npy`` part with plain file reads (nothing mapped, nothing cached)."""

    def __init__(self, path: Path):
        self.path = path
        with open(path, "rb") as handle:
            try:
                header = read_header(handle)
            except ValueError as exc:
                raise PerceptError(f"cannot read embeddings file {path} ({exc}): re-encode the images") from None
            self.offset = handle.tell()
        self.shape, fortran, self.dtype = header
        if len(self.shape) != 2 or fortran or self.dtype.kind not in "fiu":
            raise PerceptError(f"{path} does not hold rows of numeric vectors: re-encode the images")

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, start: int, stop: int, where: Callable[[int], str]) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``start:stop`` as stored and the positions (within them) of the zero rows; refuses NaN or
        infinite rows, ``where(row)`` naming a row of the file."""
        row_bytes = self.shape[1] * self.dtype.itemsize
        with open(self.path, "rb") as handle:
            handle.seek(self.offset + start * row_bytes)
            rows = np.fromfile(handle, dtype=self.dtype, count=(stop - start) * self.shape[1])
        if len(rows) != (stop - start) * self.shape[1]:
            raise PerceptError(f"{self.path} is truncated: re-encode the images")
        rows = rows.reshape(stop - start, self.shape[1])
        check = check_rows(rows)
        refuse_nonfinite(check, lambda row: where(start + row), REENCODE)
        return rows, check.zero


def embedding_parts(root: str | Path, kind: str = "img") -> list[EmbeddingPart]:
    """Every part of an embeddings folder, in order, with its row count from the ``.npy`` header."""
    parts, first = [], 0
    for vectors, metadata in required_parts(Path(root), kind):
        rows = len(VectorFile(vectors))
        parts.append(EmbeddingPart(vectors, metadata, kind, rows, first))
        first += rows
    return parts


def part_names(part: EmbeddingPart) -> list[str]:
    """The name of every row of a part (its metadata's naming column), checked against its row count."""
    names = [str(n) for n in read_metadata(part.metadata, KINDS[part.kind], names_only=True).column(0).to_pylist()]
    check_row_counts(part.vectors, part.rows, part.metadata, len(names))
    return names


@dataclass(frozen=True)
class RatingInputs:
    """The rows a rating run scores: image parts, the text parts combined with them row for row by
    ``method`` (environmental models), and how they are cut into chunks."""

    images: list[EmbeddingPart]
    texts: list[EmbeddingPart] | None
    method: str | None
    chunk_size: int
    panoramic: bool

    @property
    def total(self) -> int:
        return self.images[-1].stop if self.images else 0


def rating_inputs(embeddings_dir: str | Path, text_dir: str | Path | None, method: str | None, chunk_size: int,
                  panoramic: bool) -> RatingInputs:
    """The parts of ``embeddings_dir`` (and ``text_dir``), checked: some rows, one text row per image row."""
    if text_dir is not None and method is None:
        raise ValueError("text vectors are combined with the image vectors by a method: give one")
    images = embedding_parts(embeddings_dir, "img")
    texts = embedding_parts(text_dir, "text") if text_dir is not None else None
    inputs = RatingInputs(images, texts, method, chunk_size, panoramic)
    if texts is not None and texts[-1].stop != inputs.total:
        raise PerceptError(f"{text_dir} holds {texts[-1].stop} text vectors for {inputs.total} images: "
                           "every image needs its prompt vector")
    return inputs


@dataclass(frozen=True)
class WorkUnit:
    """Rows ``start:stop`` of a run, the ``number``-th unit in output order."""

    number: int
    start: int
    stop: int


def chunk_ends(inputs: RatingInputs) -> np.ndarray:
    """Where a chunk of single rows ends: every ``chunk_size`` rows of a part, and at each part's end."""
    ends = [part.first + np.append(np.arange(inputs.chunk_size, part.rows, inputs.chunk_size), part.rows)
            for part in inputs.images if part.rows]
    return np.unique(np.concatenate(ends)) if ends else np.zeros(0, dtype=np.int64)


def panorama_ends(names: list[str], chunk_size: int) -> np.ndarray:
    """Where a unit of panoramic chunks may end: after a row that completes a multiple of ``chunk_size``
    panoramas and leaves none with crops still to come (and at the last row).

    Crops stored together (as encoders write them) allow an end after every chunk; crops of one
    panorama scattered far apart allow none between them.
    """
    import pandas as pd
    if not names:
        return np.zeros(0, dtype=np.int64)
    codes = pd.factorize(pd.Series([panorama_id(n) for n in names], dtype=object))[0]
    rows = np.arange(len(codes))
    last = np.zeros(codes.max() + 1, dtype=np.int64)
    np.maximum.at(last, codes, rows)
    closing = last[codes]
    done = np.cumsum(closing == rows)
    free = np.maximum.accumulate(closing) == rows
    ends = rows[free & (done % chunk_size == 0)] + 1
    return np.union1d(ends, [len(codes)])


def plan_units(ends: np.ndarray, chunk_size: int) -> list[WorkUnit]:
    """Work units over the rows, each ending at one of ``ends`` (sorted; the last is the row count): about
    :data:`TARGET_UNITS` of them, none of more than :data:`MAX_UNIT_ROWS` rows where the ends allow."""
    per_unit = min(max(1, -(-len(ends) // TARGET_UNITS)), max(1, MAX_UNIT_ROWS // chunk_size))
    stops = ends[per_unit - 1::per_unit].tolist()
    if not stops or stops[-1] != ends[-1]:
        stops.append(int(ends[-1]))
    starts = [0, *stops[:-1]]
    return [WorkUnit(number, start, stop) for number, (start, stop) in enumerate(zip(starts, stops))]


def plan(inputs: RatingInputs) -> list[WorkUnit]:
    """The work units of a run (panoramic runs read every image name to find where panoramas close)."""
    if inputs.panoramic:
        names = [name for part in inputs.images for name in part_names(part)]
        return plan_units(panorama_ends(names, inputs.chunk_size), inputs.chunk_size)
    return plan_units(chunk_ends(inputs), inputs.chunk_size)
