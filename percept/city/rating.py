"""Rate every image of a city: stream embedding parts in bounded chunks through a model into a file.

Rows are read from each part's ``.npy`` file a chunk at a time (never the whole part), scored
with :class:`~percept.model.estimates.Estimator` (here, on the CPU or a GPU, or by an engine's
workers) and appended to the output, so memory does not grow with the number of images. Outputs
by extension: ``.csv``, ``.parquet`` (GeoParquet when locations are given) and ``.geojson`` (needs
locations).

Rows with NaN or infinite values are refused (naming file and row). Zero vectors have no direction
to compare: their scores are left empty, and the summary counts them for a warning.

Each row carries its scores, their ``<category>_sd``, ``best_similarity``, ``out_of_domain`` and
``in_survey``; survey images are scored without their own samples unless ``include_self``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from percept.atomic import atomic_path
from percept.data.embeddings import (
    KINDS,
    REENCODE,
    check_row_counts,
    read_metadata,
    required_parts,
)
from percept.data.locations import Locations, location_key, panorama_id
from percept.data.npy import read_header
from percept.data.rated_points import RatedWriter, output_kind
from percept.data.vector_checks import check_rows, refuse_nonfinite
from percept.environment.combining import combine
from percept.errors import PerceptError
from percept.model.devices import make_scorer
from percept.model.estimates import Estimates, Estimator, interval_level
from percept.model.io import ExportedModel
from percept.model.knn import l2_normalise
from percept.read_ahead import read_ahead

DEFAULT_CHUNK = 4096
#: The share of out-of-domain rows above which rating warns.
OUT_OF_DOMAIN_WARNING = 0.05


@dataclass
class Chunk:
    """Consecutive rated items: their names, how many crops each averages, and unit query vectors."""

    names: list[str]
    crops: np.ndarray
    first_crop: list[str]
    vectors: np.ndarray


#: Estimates chunks in order: yields (chunk, its estimates) for each chunk it is given.
ChunkEstimator = Callable[[Iterator[Chunk]], Iterator[tuple[Chunk, Estimates]]]


@dataclass
class ZeroRows:
    """Embedding rows found to be zero vectors: how many, and where the first one is."""

    count: int = 0
    first: str | None = None

    def add(self, rows: np.ndarray, where) -> None:
        """Count ``rows`` (positions); ``where(row)`` names a row."""
        if len(rows) and self.first is None:
            self.first = where(int(rows[0]))
        self.count += len(rows)


@dataclass
class RateSummary:
    rows: int
    without_location: int
    out: Path
    zero: ZeroRows = field(default_factory=ZeroRows)  # rows whose scores were left empty
    in_survey: int = 0
    out_of_domain: int = 0
    scored: int = 0  # rows with scores (zero vectors have none)
    level: float | None = None  # the prediction intervals' level (None: none written)

    def domain_warning(self) -> str | None:
        """One line when more than :data:`OUT_OF_DOMAIN_WARNING` of the scored rows lie outside the survey's domain."""
        share = self.out_of_domain / self.scored if self.scored else 0.0
        if share <= OUT_OF_DOMAIN_WARNING:
            return None
        return (f"warning: {share:.0%} of the rated images ({self.out_of_domain} of {self.scored}) lie outside the "
                "survey's domain (less like the survey than 95 % of its images are like each other): their scores "
                "extrapolate; map them with 'percept map --value out_of_domain' and rate images like them in the "
                "survey")

    def warning(self) -> str | None:
        """One line about the zero vectors whose scores were left empty (None when there were none)."""
        count = self.zero.count
        if not count:
            return None
        what = f"{count} embedding rows are zero vectors" if count > 1 else "1 embedding row is a zero vector"
        return (f"warning: {what} (first: {self.zero.first}) with no direction to compare, so "
                f"{'their' if count > 1 else 'its'} scores are left empty: re-encode those images")


class PartReader:
    """Reads row ranges of one ``.npy`` part with plain file reads (nothing mapped, nothing cached).

    ``names`` (one per row) name rows in messages.
    """

    def __init__(self, path: Path, names: list[str]):
        self.path = path
        self.names = names
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

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``start:stop`` and the positions (within them) of the zero rows; refuses NaN or infinite rows."""
        row_bytes = self.shape[1] * self.dtype.itemsize
        with open(self.path, "rb") as handle:
            handle.seek(self.offset + start * row_bytes)
            rows = np.fromfile(handle, dtype=self.dtype, count=(stop - start) * self.shape[1])
        if len(rows) != (stop - start) * self.shape[1]:
            raise PerceptError(f"{self.path} is truncated: re-encode the images")
        rows = rows.reshape(stop - start, self.shape[1])
        check = check_rows(rows)
        refuse_nonfinite(check, lambda row: self.describe(start + row), REENCODE)
        return rows, check.zero

    def describe(self, row: int) -> str:
        """``FILE row R (NAME)``."""
        return f"{self.path} row {row} ({self.names[row]})"


def _parts(root: Path, kind: str) -> list[tuple[PartReader, list[str]]]:
    parts = []
    for vec_path, meta_path in required_parts(root, kind):
        names = [str(n) for n in read_metadata(meta_path, KINDS[kind], names_only=True).column(0).to_pylist()]
        reader = PartReader(vec_path, names)
        check_row_counts(vec_path, len(reader), meta_path, len(names))
        parts.append((reader, names))
    return parts


def embedding_names(embeddings_dir: str | Path) -> list[str]:
    """The image name of every embedding row, in row order."""
    return [name for _, names in _parts(Path(embeddings_dir), "img") for name in names]


def iter_rows(embeddings_dir: str | Path, chunk_size: int = DEFAULT_CHUNK, text_dir: str | Path | None = None,
              method: str | None = None, zero: ZeroRows | None = None) -> Iterator[tuple[list[str], np.ndarray]]:
    """(names, unit float64 vectors) of at most ``chunk_size`` rows, over every part in order.

    With ``text_dir`` and ``method``, row i is combined with text row i (environmental models).
    Rows with NaN or infinite values are refused; zero rows (image or text) stay zero vectors
    and are counted in ``zero``.
    """
    if text_dir is not None and method is None:
        raise ValueError("text vectors are combined with the image vectors by a method: give one")
    zero = ZeroRows() if zero is None else zero
    images = _parts(Path(embeddings_dir), "img")
    texts = _parts(Path(text_dir), "text") if text_dir is not None else None
    if texts is not None and sum(len(r) for r, _ in texts) != sum(len(r) for r, _ in images):
        raise PerceptError(f"{text_dir} holds {sum(len(r) for r, _ in texts)} text vectors for "
                           f"{sum(len(r) for r, _ in images)} images: every image needs its prompt vector")
    text_rows = _global_reader(texts) if texts is not None else None
    done = 0
    for reader, names in images:
        for start in range(0, len(reader), chunk_size):
            stop = min(start + chunk_size, len(reader))
            vectors, empty = reader.read(start, stop)
            zero.add(empty, lambda row, reader=reader, start=start: reader.describe(start + row))
            if text_rows is not None and method is not None:
                texts, empty_texts = text_rows(done + start, done + stop)
                zero.add(np.setdiff1d(empty_texts, empty),
                         lambda row, names=names, start=start: f"the text vector of {names[start + row]}")
                empty = np.union1d(empty, empty_texts)
                vectors = combine(vectors, texts, method)
            vectors = l2_normalise(vectors)
            vectors[empty] = 0.0
            yield names[start:stop], vectors
        done += len(reader)


def _global_reader(parts: list[tuple[PartReader, list[str]]]):
    """Reads rows by their position over all parts: (rows, positions of zero rows within them)."""
    bounds = np.cumsum([0] + [len(r) for r, _ in parts])

    def read(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        pieces, zero = [], []
        for number, (reader, _) in enumerate(parts):
            low, high = max(start, bounds[number]), min(stop, bounds[number + 1])
            if low < high:
                rows, empty = reader.read(low - bounds[number], high - bounds[number])
                pieces.append(rows)
                zero.append(empty + (low - start))
        return np.concatenate(pieces), np.concatenate(zero)

    return read


def single_chunks(rows: Iterator[tuple[list[str], np.ndarray]]) -> Iterator[Chunk]:
    """One rated item per embedding row."""
    for names, vectors in rows:
        yield Chunk([location_key(n) for n in names], np.ones(len(names), dtype=np.int64), list(names), vectors)


def panoramic_chunks(rows: Iterator[tuple[list[str], np.ndarray]], all_names: list[str],
                     chunk_size: int) -> Iterator[Chunk]:
    """Average the crops of each panorama into one unit vector, emitting a panorama after its last crop.

    Only panoramas whose crops are still to come are held, so memory stays bounded when crops are
    stored together (as encoders write them) and stays correct in any order.
    """
    keys = [panorama_id(n) for n in all_names]
    last = {key: row for row, key in enumerate(keys)}
    open_groups: dict[str, list] = {}
    ready: list[tuple[str, int, str, np.ndarray]] = []
    row = 0
    for names, vectors in rows:
        for name, vector in zip(names, vectors):
            key = keys[row]
            group = open_groups.get(key)
            if group is None:
                open_groups[key] = group = [np.zeros_like(vector), 0, name]
            group[0] += vector
            group[1] += 1
            if last[key] == row:
                total, count, first = open_groups.pop(key)
                ready.append((key, count, first, total / count))
            row += 1
        while len(ready) >= chunk_size:
            yield _chunk(ready[:chunk_size])
            ready = ready[chunk_size:]
    if ready:
        yield _chunk(ready)


def _chunk(items: list[tuple[str, int, str, np.ndarray]]) -> Chunk:
    return Chunk([i[0] for i in items], np.array([i[1] for i in items], dtype=np.int64), [i[2] for i in items],
                 l2_normalise(np.stack([i[3] for i in items])))


def check_rateable(model: ExportedModel, text_dir: str | Path | None) -> str | None:
    """The environmental combining method rating needs (None for image-only models); refuse if inputs lack."""
    method = model.settings.environmental_method if model.settings else None
    if method and text_dir is None:
        raise PerceptError(f"this model combines image vectors with environmental prompts ({method}): rating "
                           "needs each image's environmental variables (--environment FILE from 'percept environment') "
                           "or text embeddings (--text-embeddings DIR, rows in the order of the image embeddings)")
    if not method and text_dir is not None:
        raise PerceptError("--text-embeddings and --environment are only for models exported with --environmental")
    return method


def make_estimator(model: ExportedModel, k: int | None = None, average_panoramic: bool = False,
                   device: str = "cpu", threads: int | None = None, interval: float | None = None) -> Estimator:
    """The estimator rating uses: survey images matched by file name (or panorama id), scoring on
    ``device`` (``auto``, ``cpu`` with ``threads`` threads, or ``cuda``), intervals at level ``interval``
    (None: the default where the model is calibrated; 0: none)."""
    return Estimator(model, k=k, image_key=panorama_id if average_panoramic else location_key,
                     scorer=make_scorer(model, k=k, device=device, threads=threads), interval=interval)


def rate(model: ExportedModel, embeddings_dir: str | Path, out: str | Path, *, locations: Locations | None = None,
         average_panoramic: bool = False, chunk_size: int = DEFAULT_CHUNK, k: int | None = None,
         text_dir: str | Path | None = None, include_self: bool = False, device: str = "cpu",
         threads: int | None = None, interval: float | None = None, estimate_chunks: ChunkEstimator | None = None,
         quiet: bool = False) -> RateSummary:
    """Score every embedding row (or panorama) in all five categories and write them to ``out``.

    Rows named after survey images of the model are scored without their own samples unless ``include_self``.
    Scoring runs here on ``device`` with ``threads`` threads, or in ``estimate_chunks`` (an engine's
    workers, which must estimate as :func:`estimate_chunk` does); chunks and output are the same either way.
    ``interval`` is the level of the prediction intervals (:func:`make_estimator`).
    """
    if chunk_size < 1:
        raise PerceptError(f"the chunk size must be a positive number of rows, got {chunk_size}")
    method = check_rateable(model, text_dir)
    kind = output_kind(out, locations is not None)
    if estimate_chunks is None:
        estimator = make_estimator(model, k, average_panoramic, device, threads, interval)
        # each chunk is scored on a thread while the one before is written
        estimate_chunks = lambda chunks: read_ahead((c, estimate_chunk(estimator, c, include_self)) for c in chunks)
    parts = _parts(Path(embeddings_dir), "img")
    total = sum(len(reader) for reader, _ in parts)
    if total == 0:
        raise PerceptError(f"{embeddings_dir} holds no embedding rows: nothing to rate")
    zero = ZeroRows()
    rows = iter_rows(embeddings_dir, chunk_size, text_dir, method, zero)
    if average_panoramic:
        chunks = panoramic_chunks(rows, [n for _, names in parts for n in names], chunk_size)
    else:
        chunks = single_chunks(rows)
    del parts
    written = unlocated = in_survey = out_of_domain = scored = 0
    level = None
    metadata = {"model_card": model.card.get("id") if model.card else None,
                "interval_level": interval_level(model, interval)}
    with atomic_path(out) as tmp, RatedWriter(kind, tmp, metadata) as write, \
            tqdm(total=total, unit="img", disable=quiet, desc="rating") as progress:
        # the next chunk is read while this one is scored
        for chunk, estimates in estimate_chunks(read_ahead(_checked(chunks, model.dim))):
            table = _table(chunk, model.categories, estimates, average_panoramic)
            in_survey += int(estimates.in_survey.sum())
            out_of_domain += int(estimates.out_of_domain.sum())
            scored += int(np.isfinite(estimates.best_similarity).sum())
            level = estimates.level
            if locations is not None:
                where = locations.lookup(chunk.names, chunk.first_crop)
                table = pd.concat([table, where], axis=1)
                unlocated += int(where["lon"].isna().sum())
            write(table)
            written += len(table)
            progress.update(int(chunk.crops.sum()))
    return RateSummary(written, unlocated, Path(out), zero, in_survey, out_of_domain, scored, level)


def _checked(chunks: Iterator[Chunk], dim: int) -> Iterator[Chunk]:
    """The chunks, refusing vectors of another size than the model's."""
    for chunk in chunks:
        if len(chunk.names) and chunk.vectors.shape[1] != dim:
            raise PerceptError(f"the embeddings have {chunk.vectors.shape[1]} dimensions but the model's "
                               f"vectors have {dim}: rate with embeddings from the model's CLIP model")
        yield chunk


def estimate_chunk(estimator: Estimator, chunk: Chunk, include_self: bool) -> Estimates:
    """Estimates of a chunk; zero vectors, which have no direction, get empty scores (NaN), sd and similarity."""
    usable = np.asarray(chunk.vectors.any(axis=1))
    if usable.all():
        return estimator.estimate(chunk.vectors, chunk.names, include_self)
    out = Estimates.empty(len(usable), len(estimator.categories), estimator.in_survey(chunk.names), estimator.level)
    if usable.any():
        found = estimator.estimate(chunk.vectors[usable], [n for n, u in zip(chunk.names, usable) if u], include_self)
        out.fill(usable, found)
    return out


def _table(chunk: Chunk, categories: list[str], estimates: Estimates, panoramic: bool) -> pd.DataFrame:
    table = pd.DataFrame({"image": chunk.names})
    if panoramic:
        table["crops"] = chunk.crops
    for column, category in enumerate(categories):
        table[category] = estimates.scores[:, column]
    for column, category in enumerate(categories):
        table[f"{category}_sd"] = estimates.sd[:, column]
    if estimates.level is not None:
        for column, category in enumerate(categories):
            table[f"{category}_lo"] = estimates.lo[:, column]
            table[f"{category}_hi"] = estimates.hi[:, column]
    table["best_similarity"] = estimates.best_similarity
    table["dissimilarity"] = estimates.dissimilarity
    table["out_of_domain"] = estimates.out_of_domain
    table["in_survey"] = estimates.in_survey
    return table
