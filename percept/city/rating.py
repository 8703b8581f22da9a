"""Rate every image of a city: stream embedding parts in bounded chunks through a model into a file.

Rows are read from each part's ``.npy`` file a chunk at a time (never the whole part), scored
with :class:`~percept.model.estimates.Estimator` (here, on the CPU or a GPU) and appended to the
output, so memory does not grow with the number of images. An engine's workers rate ranges of rows
(work units, :mod:`percept.city.rating_plan`) the same way into parts of the output. Outputs
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
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from percept.atomic import atomic_path
from percept.city.rating_plan import EmbeddingPart, RatingInputs, VectorFile, embedding_parts, part_names, rating_inputs
from percept.data.locations import Locations, location_key, location_keys, panorama_id
from percept.data.rated_points import RatedWriter, output_kind
from percept.environment.combining import combine
from percept.errors import PerceptError
from percept.model.devices import make_estimator as make_device_estimator
from percept.model.estimates import Estimates, Estimator, interval_level
from percept.model.io import ExportedModel
from percept.model.knn import l2_normalise
from percept.model.unit_rows import Rows, UnitRows
from percept.read_ahead import map_ahead, read_ahead

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_CHUNK = 4096
#: The share of out-of-domain rows above which rating warns.
OUT_OF_DOMAIN_WARNING = 0.05


@dataclass
class Chunk:
    """Consecutive rated items: their names, how many crops each averages, unit query vectors (float64 rows, or
    :class:`UnitRows`) and, where known, which of the vectors have a direction (are not zero vectors; None: look at
    the vectors)."""

    names: list[str]
    crops: np.ndarray
    first_crop: list[str]
    vectors: Rows
    usable: np.ndarray | None = None


@dataclass
class ZeroRows:
    """Embedding rows found to be zero vectors: how many, and which comes first (``first_row`` over all rows)."""

    count: int = 0
    first: str | None = None
    first_row: int | None = None

    def add(self, rows: np.ndarray, where, base: int = 0) -> None:
        """Count ``rows`` (positions from row ``base`` over all rows); ``where(row)`` names a row."""
        if len(rows) and (self.first_row is None or base + int(rows.min()) < self.first_row):
            self.first_row = base + int(rows.min())
            self.first = where(int(rows.min()))
        self.count += len(rows)

    def merge(self, other: ZeroRows) -> None:
        """Count the zero rows ``other`` found too."""
        if other.first_row is not None and (self.first_row is None or other.first_row < self.first_row):
            self.first, self.first_row = other.first, other.first_row
        self.count += other.count


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

    def add(self, other: RateSummary) -> None:
        """Count ``other`` (the summary of the rows after these) in."""
        self.rows += other.rows
        self.without_location += other.without_location
        self.zero.merge(other.zero)
        self.in_survey += other.in_survey
        self.out_of_domain += other.out_of_domain
        self.scored += other.scored
        self.level = other.level if other.rows else self.level

    def counts(self) -> dict:
        """The counts as JSON values (the output path left out)."""
        return {"rows": self.rows, "without_location": self.without_location, "zero": vars(self.zero),
                "in_survey": self.in_survey, "out_of_domain": self.out_of_domain, "scored": self.scored,
                "level": self.level}

    @classmethod
    def from_counts(cls, counts: dict, out: Path) -> RateSummary:
        """The summary :meth:`counts` describes, of the file ``out``."""
        return cls(**{**counts, "zero": ZeroRows(**counts["zero"])}, out=out)


#: Opens a part: its reader and names.
PartOpener = Callable[[EmbeddingPart], tuple[VectorFile, list[str]]]


def open_part(part: EmbeddingPart) -> tuple[VectorFile, list[str]]:
    """The reader of a part and the names of its rows (read and checked)."""
    return VectorFile(part.vectors), part_names(part)


class PartRows:
    """Rows of a list of parts by their position over all of them; each part is opened with ``opener`` when
    first read."""

    def __init__(self, parts: list[EmbeddingPart], opener: PartOpener = open_part):
        self.parts, self.opener = parts, opener
        self.bounds = np.array([part.first for part in parts] + [parts[-1].stop if parts else 0])
        self.opened: dict[int, tuple[VectorFile, list[str]]] = {}

    def open(self, number: int) -> tuple[VectorFile, list[str]]:
        """The reader and names of part ``number``."""
        if number not in self.opened:
            self.opened[number] = self.opener(self.parts[number])
        return self.opened[number]

    def names(self, start: int, stop: int) -> list[str]:
        """The names of rows ``start:stop``."""
        return [name for number, low, high in self.spans(start, stop) for name in self.open(number)[1][low:high]]

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``start:stop`` (as stored) and the positions, within them, of the zero rows."""
        pieces, zero = [], []
        for number, low, high in self.spans(start, stop):
            reader, names = self.open(number)
            rows, empty = reader.read(low, high, partial(describe, reader, names))
            pieces.append(rows)
            zero.append(empty + self.parts[number].first + low - start)
        return np.concatenate(pieces), np.concatenate(zero)

    def spans(self, start: int, stop: int) -> Iterator[tuple[int, int, int]]:
        """(part number, first row, end row) within each part that rows ``start:stop`` touch."""
        for number in range(max(0, int(np.searchsorted(self.bounds, start, "right")) - 1), len(self.parts)):
            part = self.parts[number]
            if part.first >= stop:
                return
            low, high = max(start, part.first), min(stop, part.stop)
            if low < high:
                yield number, low - part.first, high - part.first


def describe(reader: VectorFile, names: list[str], row: int, offset: int = 0) -> str:
    """``FILE row R (NAME)`` of row ``offset + row`` of a part."""
    return f"{reader.path} row {offset + row} ({names[offset + row]})"


def text_vector_of(names: list[str], offset: int, row: int) -> str:
    """``the text vector of NAME`` of row ``offset + row`` of a part."""
    return f"the text vector of {names[offset + row]}"


class RowRange:
    """Rows ``start:stop`` of a run's inputs, read as the whole run reads them: in blocks of at most
    ``chunk_size`` rows within a part, each checked, combined with its text row and made unit length.
    ``opener`` opens the parts (a worker rating many ranges keeps the last few open)."""

    def __init__(self, inputs: RatingInputs, start: int, stop: int, opener: PartOpener = open_part):
        self.inputs, self.start, self.stop = inputs, start, stop
        self.images = PartRows(inputs.images, opener)
        self.texts = PartRows(inputs.texts, opener) if inputs.texts is not None else None

    @property
    def stored_rows_suffice(self) -> bool:
        """Whether each rated item is one embedding row as stored (no panoramas averaged, no texts combined), so
        a device estimator may take the rows as read and normalise them itself."""
        return not self.inputs.panoramic and self.texts is None

    def rows(self, zero: ZeroRows, stored: bool = False) -> Iterator[tuple[list[str], np.ndarray, np.ndarray | None]]:
        """(names, unit float64 vectors, which of them have a direction) of each block; NaN or infinite rows are
        refused, zero rows (image or text) stay zero and are counted in ``zero``. ``stored`` (only where
        :attr:`stored_rows_suffice`): the rows as stored instead (float16 as encoded), neither widened nor
        normalised (and None for their directions)."""
        for names, vectors, empty in self._blocks(zero, stored):
            if stored:
                yield names, vectors, None
                continue
            unit = UnitRows(vectors)  # l2_normalise, keeping the norms
            vectors = np.asarray(unit)
            vectors[empty] = 0.0
            yield names, vectors, directions(vectors, unit.norms, empty)

    def unit_rows(self, zero: ZeroRows) -> Iterator[tuple[list[str], UnitRows, np.ndarray]]:
        """:meth:`rows` with the unit vectors as :class:`UnitRows` of the rows as stored (or combined), widened only
        where they are read: the CPU search widens a block at a time, in its own cache."""
        for names, vectors, empty in self._blocks(zero, stored=False):
            vectors[empty] = 0  # fresh from the file (or combined): zero rows stay zero
            unit = UnitRows(vectors)
            yield names, unit, directions(vectors, unit.norms, empty)

    def _blocks(self, zero: ZeroRows, stored: bool) -> Iterator[tuple[list[str], np.ndarray, np.ndarray]]:
        """(names, rows as stored or, unless ``stored``, combined with their text rows, positions of the zero rows)
        of each block of at most ``chunk_size`` rows within a part; zero rows are counted in ``zero``."""
        size = self.inputs.chunk_size
        for number, low, high in self.images.spans(self.start, self.stop):
            reader, names = self.images.open(number)
            first = self.inputs.images[number].first
            for start in range(low, high, size):
                stop = min(start + size, high)
                vectors, empty = reader.read(start, stop, partial(describe, reader, names))
                zero.add(empty, partial(describe, reader, names, offset=start), first + start)
                if not stored and self.texts is not None and self.inputs.method is not None:
                    texts, empty_texts = self.texts.read(first + start, first + stop)
                    zero.add(np.setdiff1d(empty_texts, empty), partial(text_vector_of, names, start), first + start)
                    empty = np.union1d(empty, empty_texts)
                    vectors = combine(vectors, texts, self.inputs.method)
                yield names[start:stop], vectors, empty

    def chunks(self, zero: ZeroRows, stored: bool = False, unit: bool = False) -> Iterator[Chunk]:
        """The chunks of these rows: single rows (as stored with ``stored``, as :class:`UnitRows` with ``unit``), or
        their panoramas averaged."""
        if self.inputs.panoramic:
            names = self.images.names(self.start, self.stop)
            return panoramic_chunks(self.rows(zero), names, self.inputs.chunk_size)
        return single_chunks(self.unit_rows(zero) if unit else self.rows(zero, stored))


def embedding_names(embeddings_dir: str | Path) -> list[str]:
    """The image name of every embedding row, in row order."""
    return [name for part in embedding_parts(embeddings_dir, "img") for name in part_names(part)]


def iter_rows(embeddings_dir: str | Path, chunk_size: int = DEFAULT_CHUNK, text_dir: str | Path | None = None,
              method: str | None = None, zero: ZeroRows | None = None) -> Iterator[tuple[list[str], np.ndarray]]:
    """(names, unit float64 vectors) of at most ``chunk_size`` rows, over every part in order.

    With ``text_dir`` and ``method``, row i is combined with text row i (environmental models).
    Rows with NaN or infinite values are refused; zero rows (image or text) stay zero vectors
    and are counted in ``zero``.
    """
    inputs = rating_inputs(embeddings_dir, text_dir, method, chunk_size, panoramic=False)
    for names, vectors, _ in RowRange(inputs, 0, inputs.total).rows(ZeroRows() if zero is None else zero):
        yield names, vectors


def directions(vectors: np.ndarray, norms: np.ndarray, zeroed: np.ndarray) -> np.ndarray:
    """Which unit rows have a direction (are not zero vectors), told from the ``norms`` their rows were divided by
    rather than by reading them: a row of finite, positive norm keeps an element of at least about 1/sqrt(dim). The
    rows of another norm (zero rows, or rows whose squares all underflow) are read; rows ``zeroed`` have none."""
    usable = (norms > 0) & (norms < np.inf)
    unclear = np.flatnonzero(~usable)
    usable[unclear] = vectors[unclear].any(axis=1)
    usable[zeroed] = False
    return usable


def single_chunks(rows: Iterator[tuple[list[str], Rows, np.ndarray | None]]) -> Iterator[Chunk]:
    """One rated item per embedding row."""
    for names, vectors, usable in rows:
        yield Chunk(location_keys(names), np.ones(len(names), dtype=np.int64), list(names), vectors, usable)


def panoramic_chunks(rows: Iterator[tuple[list[str], np.ndarray, np.ndarray | None]], all_names: list[str],
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
    for names, vectors, _ in rows:
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
    ``device`` (``auto``, ``cpu`` with ``threads`` threads, or ``cuda``: the whole estimate on the GPU),
    intervals at level ``interval`` (None: the default where the model is calibrated; 0: none)."""
    return make_device_estimator(model, k=k, device=device, threads=threads, interval=interval,
                                 image_key=panorama_id if average_panoramic else location_key)


def check_request(model: ExportedModel, out: str | Path, located: bool, chunk_size: int,
                  text_dir: str | Path | None) -> tuple[str | None, str]:
    """The combining method (:func:`check_rateable`) and the output's kind of a rating run; refuses a chunk
    size below 1 and an output the extension or missing locations rule out."""
    if chunk_size < 1:
        raise PerceptError(f"the chunk size must be a positive number of rows, got {chunk_size}")
    return check_rateable(model, text_dir), output_kind(out, located)


def read_inputs(embeddings_dir: str | Path, text_dir: str | Path | None, method: str | None, chunk_size: int,
                panoramic: bool) -> RatingInputs:
    """:func:`~percept.city.rating_plan.rating_inputs`, refusing a folder without rows."""
    inputs = rating_inputs(embeddings_dir, text_dir, method, chunk_size, panoramic)
    if inputs.total == 0:
        raise PerceptError(f"{embeddings_dir} holds no embedding rows: nothing to rate")
    return inputs


def rating_metadata(model: ExportedModel, interval: float | None) -> dict:
    """What a rated file records: the model card's id and the intervals' level."""
    return {"model_card": model.card.get("id") if model.card else None,
            "interval_level": interval_level(model, interval)}


def rate(model: ExportedModel, embeddings_dir: str | Path, out: str | Path, *, locations: Locations | None = None,
         average_panoramic: bool = False, chunk_size: int = DEFAULT_CHUNK, k: int | None = None,
         text_dir: str | Path | None = None, include_self: bool = False, device: str = "cpu",
         threads: int | None = None, interval: float | None = None, quiet: bool = False) -> RateSummary:
    """Score every embedding row (or panorama) in all five categories and write them to ``out``.

    Rows named after survey images of the model are scored without their own samples unless ``include_self``.
    Scoring runs here on ``device`` with ``threads`` threads; an engine's workers rate work units
    (:mod:`percept.city.rating_plan`) with :func:`rate_rows` and make the same chunks and file.
    ``interval`` is the level of the prediction intervals (:func:`make_estimator`).
    """
    method, kind = check_request(model, out, locations is not None, chunk_size, text_dir)
    estimator = make_estimator(model, k, average_panoramic, device, threads, interval)
    inputs = read_inputs(embeddings_dir, text_dir, method, chunk_size, average_panoramic)
    with atomic_path(out) as tmp, RatedWriter(kind, tmp, rating_metadata(model, interval)) as write, \
            tqdm(total=inputs.total, unit="img", disable=quiet, desc="rating") as progress:
        summary = rate_rows(RowRange(inputs, 0, inputs.total), estimator, include_self, locations, write,
                            progress.update)
    summary.out = Path(out)
    return summary


def rate_rows(rows: RowRange, estimator: Estimator, include_self: bool, locations: Locations | None,
              write: Callable[[pd.DataFrame], None], progress: Callable[[int], object] | None = None) -> RateSummary:
    """Score the chunks of ``rows`` and ``write`` their tables in order; ``progress(n)`` after every chunk of
    ``n`` embedding rows. Returns their summary (its ``out`` left empty)."""
    summary = RateSummary(0, 0, Path())
    # a device estimator (percept.model.torch_estimates) streams chunks itself, overlapping its copies, and
    # takes rows as stored where they suffice
    stream = getattr(estimator, "estimate_chunks", None)
    stored = stream is not None and rows.stored_rows_suffice
    # the CPU search widens stored rows a block at a time, in its own cache, rather than the reader a chunk at once
    chunks = read_ahead(_checked(rows.chunks(summary.zero, stored, unit=stream is None), estimator.model.dim))
    # the next chunk is read while this one is scored, and scored while the one before is written
    if stream is not None:
        estimated = stream(chunks, include_self, stored)
    else:  # two chunks at once: the workers one chunk's search leaves idle at its end take the next one's blocks
        estimated = map_ahead(partial(_estimated, estimator, include_self), chunks, _chunks_at_once(estimator),
                              name="percept-rating")
    for chunk, estimates in estimated:
        table, unlocated = rated_table(chunk, estimator.categories, estimates, rows.inputs.panoramic, locations)
        summary.in_survey += int(estimates.in_survey.sum())
        summary.out_of_domain += int(estimates.out_of_domain.sum())
        summary.scored += int(np.isfinite(estimates.best_similarity).sum())
        summary.level = estimates.level
        summary.without_location += unlocated
        write(table)
        summary.rows += len(table)
        if progress is not None:
            progress(int(chunk.crops.sum()))
    return summary


def first_table(rows: RowRange, categories: list[str], level: float | None,
                locations: Locations | None) -> pd.DataFrame:
    """The first chunk's table of ``rows`` with empty estimates: the columns and types every chunk's table has
    (what a rated file's header and schema are made of), without scoring."""
    chunk = next(iter(rows.chunks(ZeroRows())))
    size = len(chunk.names)
    estimates = Estimates.empty(size, len(categories), np.zeros(size, dtype=bool), level)
    return rated_table(chunk, categories, estimates, rows.inputs.panoramic, locations)[0]


def _checked(chunks: Iterator[Chunk], dim: int) -> Iterator[Chunk]:
    """The chunks, refusing vectors of another size than the model's."""
    for chunk in chunks:
        if len(chunk.names) and chunk.vectors.shape[1] != dim:
            raise PerceptError(f"the embeddings have {chunk.vectors.shape[1]} dimensions but the model's "
                               f"vectors have {dim}: rate with embeddings from the model's CLIP model")
        yield chunk


def _estimated(estimator: Estimator, include_self: bool, chunk: Chunk) -> tuple[Chunk, Estimates]:
    """A chunk with its estimates."""
    return chunk, estimate_chunk(estimator, chunk, include_self)


def _chunks_at_once(estimator: Estimator) -> int:
    """How many chunks are estimated at once: two, but one where the scorer is held to a single thread."""
    return 1 if getattr(estimator.scorer, "threads", None) == 1 else 2


def estimate_chunk(estimator: Estimator, chunk: Chunk, include_self: bool) -> Estimates:
    """Estimates of a chunk; zero vectors, which have no direction, get empty scores (NaN), sd and similarity."""
    usable = np.asarray(np.asarray(chunk.vectors).any(axis=1)) if chunk.usable is None else chunk.usable
    if usable.all():
        return estimator.estimate(chunk.vectors, chunk.names, include_self)
    out = Estimates.empty(len(usable), len(estimator.categories), estimator.in_survey(chunk.names), estimator.level)
    if usable.any():
        found = estimator.estimate(chunk.vectors[usable], [n for n, u in zip(chunk.names, usable) if u], include_self)
        out.fill(usable, found)
    return out


def rated_table(chunk: Chunk, categories: list[str], estimates: Estimates, panoramic: bool,
                locations: Locations | None) -> tuple[pd.DataFrame, int]:
    """A chunk's rows as written (with lon/lat, angle and sequence where ``locations`` are given), and how many
    of them have no location."""
    import pandas as pd
    columns: dict[str, object] = {"image": chunk.names}
    if panoramic:
        columns["crops"] = chunk.crops
    for column, category in enumerate(categories):
        columns[category] = estimates.scores[:, column]
    for column, category in enumerate(categories):
        columns[f"{category}_sd"] = estimates.sd[:, column]
    if estimates.level is not None:
        for column, category in enumerate(categories):
            columns[f"{category}_lo"] = estimates.lo[:, column]
            columns[f"{category}_hi"] = estimates.hi[:, column]
    columns["best_similarity"] = estimates.best_similarity
    columns["dissimilarity"] = estimates.dissimilarity
    columns["out_of_domain"] = estimates.out_of_domain
    columns["in_survey"] = estimates.in_survey
    table = pd.DataFrame(columns)  # built at once: adding columns one by one copies the column index each time
    if locations is None:
        return table, 0
    where = locations.lookup(chunk.names, chunk.first_crop)
    return pd.concat([table, where], axis=1), int(where["lon"].isna().sum())
