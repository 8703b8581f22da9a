"""``percept suggest`` on files: read a city's candidate embeddings, ask the model how far each lies from
the survey and how wide its intervals are, pick (:mod:`percept.city.suggest`) and write the CSV; and read
a suggestions CSV back (for ``percept map`` and ``percept survey add-images``).

Survey images (matched by file name, as ``percept rate`` matches them) are left out of the candidates.
A city with more than ``pool`` other images is represented by a random sample of ``pool`` of them,
drawn from the seed (a uniform sample keeps the city's density). Rows are read a chunk at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from percept.atomic import atomic_path
from percept.city.rating import DEFAULT_CHUNK, ZeroRows, check_rateable, embedding_names, iter_rows, make_estimator
from percept.city.suggest import Candidates, Picks, SuggestOptions, cell_numbers, check_strategy, pick
from percept.data.locations import Locations, location_key, panorama_id
from percept.errors import PerceptError
from percept.model.domain import chord_distance
from percept.model.estimates import Estimates, Estimator
from percept.model.io import ExportedModel

#: The most candidates considered at once (a seeded uniform sample of a larger city).
DEFAULT_POOL = 20_000
CSV_COLUMNS = ("rank", "image", "lon", "lat", "angle", "dissimilarity", "best_similarity", "out_of_domain",
               "represents", "width", "reason")


@dataclass
class SuggestSummary:
    """What a run of ``percept suggest`` found and wrote."""

    out: Path
    asked: int
    picked: int
    images: int  # embedding rows
    in_survey: int  # rows naming survey images (never candidates)
    pool: int  # candidates considered
    strategy: str  # as applied: "mixed" falls back to "coverage" without intervals
    short: str | None = None  # why fewer than asked were picked
    unlocated: int = 0  # picks without a location
    zero: ZeroRows = field(default_factory=ZeroRows)

    def notes(self) -> list[str]:
        """Lines the user should read: fewer picks than asked, picks without a location, zero vectors, sampling."""
        notes = []
        if self.short:
            notes.append(f"note: picked {self.picked} of the {self.asked} images asked for: {self.short}")
        if self.pool < self.images - self.in_survey - self.zero.count:
            notes.append(f"note: the candidates are a random sample of {self.pool} of the "
                         f"{self.images - self.in_survey - self.zero.count} images outside the survey "
                         "(--pool sets its size, --random-seed draws it)")
        if self.unlocated:
            notes.append(f"note: {self.unlocated} suggested images have no location (give --locations FILE): "
                         "'percept survey add-images' needs one for each")
        if self.zero.count:
            notes.append(f"note: {self.zero.count} embedding rows are zero vectors (first: {self.zero.first}) "
                         "and were not considered: re-encode those images")
        return notes


def survey_panoramas(model: ExportedModel) -> set[str]:
    """The panoramas (or, for other names, the file names) of the model's survey images."""
    return {panorama_id(name) for names in (model.images or {}).values() for name in names}


def interval_width(estimates: Estimates) -> np.ndarray | None:
    """Each query's prediction-interval width averaged over the categories (None without intervals)."""
    if estimates.level is None:
        return None
    widths = estimates.hi - estimates.lo
    known = np.isfinite(widths)
    total = np.where(known, widths, 0.0).sum(axis=1)
    count = known.sum(axis=1)
    return np.divide(total, count, out=np.full(len(widths), np.nan), where=count > 0)


def assess(names: list[str], estimates: Estimates, vectors: np.ndarray, panoramas: set[str],
           cells: np.ndarray | None, duplicate_similarity: float) -> Candidates:
    """The candidates of the greedy: distance to the survey, interval width, panorama groups, cells; survey
    images, crops of survey panoramas and near-duplicates of survey images (similarity at least
    ``duplicate_similarity``) may not be picked."""
    groups = [panorama_id(name) for name in names]
    eligible = ~estimates.in_survey & np.array([g not in panoramas for g in groups], dtype=bool)
    eligible &= ~(estimates.best_similarity >= duplicate_similarity)
    group = np.unique(np.array(groups, dtype=object), return_inverse=True)[1].ravel() if groups \
        else np.zeros(0, dtype=np.int64)
    return Candidates(vectors, chord_distance(estimates.best_similarity), interval_width(estimates), eligible,
                      group, cells)


def suggestion_table(names: list[str], where: pd.DataFrame | None, estimates: Estimates, picks: Picks) -> pd.DataFrame:
    """The CSV rows of the picks, best first: rank, image, location, and why each was picked."""
    rows = picks.index
    width = interval_width(estimates)
    table = pd.DataFrame({"rank": np.arange(1, len(rows) + 1), "image": [names[i] for i in rows]})
    for column in ("lon", "lat", "angle"):
        table[column] = where[column].to_numpy(np.float64)[rows] if where is not None else np.nan
    table["dissimilarity"] = estimates.dissimilarity[rows].round(4)
    table["best_similarity"] = estimates.best_similarity[rows].round(6)
    table["out_of_domain"] = estimates.out_of_domain[rows]
    table["represents"] = picks.represents
    table["width"] = width[rows].round(4) if width is not None else np.nan
    table["reason"] = [reason(*values) for values in zip(table["dissimilarity"], table["out_of_domain"],
                                                         table["represents"], table["width"])]
    return table[list(CSV_COLUMNS)]


def reason(dissimilarity: float, out_of_domain: bool, represents: int, width: float) -> str:
    """Why an image was picked, in words."""
    where = "outside" if out_of_domain else "inside"
    text = f"{where} the survey's domain (dissimilarity {dissimilarity:.2f}); nearer than any rated image to " \
           f"{represents} other candidate{'s' if represents != 1 else ''}"
    if np.isfinite(width):
        text += f"; interval width {width:.2f}"
    return text


def suggest_images(model: ExportedModel, embeddings_dir: str | Path, out: str | Path, options: SuggestOptions, *,
                   locations: Locations | None = None, resolution: int | None = None, pool: int = DEFAULT_POOL,
                   interval: float | None = None, text_dir: str | Path | None = None,
                   chunk_size: int = DEFAULT_CHUNK, quiet: bool = False) -> SuggestSummary:
    """Pick ``options.count`` images of ``embeddings_dir`` to rate next and write them to the CSV ``out``.

    ``resolution`` is the H3 resolution of ``options.per_cell``'s cells (needs ``locations``); ``interval``
    the level of the widths (None: the default where the model is calibrated; 0: none).
    """
    if Path(out).suffix.lower() != ".csv":
        raise PerceptError(f"cannot write {out}: suggestions are written as CSV (give a name ending in .csv)")
    if (options.per_cell is None) != (resolution is None):
        raise ValueError("a per-cell cap and its resolution come together")
    if resolution is not None and locations is None:
        raise PerceptError("--per-cell needs the images' locations: give --locations FILE")
    method = check_rateable(model, text_dir)
    estimator = make_estimator(model, interval=interval)
    check_strategy(options.strategy, estimator.level is not None)
    names = embedding_names(embeddings_dir)
    if not names:
        raise PerceptError(f"{embeddings_dir} holds no embedding rows: nothing to suggest from")
    in_survey = estimator.in_survey([location_key(n) for n in names])
    chosen = sample_rows(np.flatnonzero(~in_survey), pool, options.seed)
    zero = ZeroRows()
    kept_names, vectors, estimates = read_candidates(estimator, embeddings_dir, chosen, model.dim, chunk_size,
                                                     text_dir, method, zero, quiet)
    if not kept_names:
        raise PerceptError(f"{embeddings_dir} holds no images outside the survey to suggest")
    where = locations.lookup(kept_names) if locations is not None else None
    cells = None
    if resolution is not None and where is not None:
        cells = cell_numbers(where["lon"].to_numpy(np.float64), where["lat"].to_numpy(np.float64), resolution)
    candidates = assess(kept_names, estimates, vectors, survey_panoramas(model), cells, options.duplicate_similarity)
    with tqdm(total=options.count, unit="img", disable=quiet, desc="picking") as progress:
        picks = pick(candidates, options, lambda: progress.update(1))
    table = suggestion_table(kept_names, where, estimates, picks)
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    strategy = "coverage" if options.strategy == "mixed" and candidates.width is None else options.strategy
    return SuggestSummary(Path(out), options.count, len(table), len(names), int(in_survey.sum()), len(kept_names),
                          strategy, picks.short, int(table["lon"].isna().sum()), zero)


def sample_rows(rows: np.ndarray, size: int, seed: int) -> np.ndarray:
    """``rows``, or a seeded uniform sample of ``size`` of them (in their order)."""
    if len(rows) <= size:
        return rows
    return np.sort(np.random.default_rng(seed).choice(rows, size, replace=False))


def read_candidates(estimator: Estimator, embeddings_dir: str | Path, rows: np.ndarray, dim: int, chunk_size: int,
                    text_dir, method, zero: ZeroRows, quiet: bool) -> tuple[list[str], np.ndarray, Estimates]:
    """The names, unit vectors and estimates of embedding ``rows`` (sorted positions), zero vectors left out."""
    wanted = np.zeros(rows[-1] + 1 if len(rows) else 0, dtype=bool)
    wanted[rows] = True
    names, vectors, parts = [], [], []
    done = 0
    with tqdm(total=len(rows), unit="img", disable=quiet, desc="assessing") as progress:
        for chunk_names, chunk in iter_rows(embeddings_dir, chunk_size, text_dir, method, zero):
            if chunk.shape[1] != dim:
                raise PerceptError(f"the embeddings have {chunk.shape[1]} dimensions but the model's vectors have "
                                   f"{dim}: use embeddings from the model's CLIP model")
            position = np.arange(done, done + len(chunk))
            done += len(chunk)
            keep = position < len(wanted)
            keep[keep] = wanted[position[keep]]
            progress.update(int(keep.sum()))
            keep &= chunk.any(axis=1)
            if not keep.any():
                continue
            names += [location_key(name) for name, k in zip(chunk_names, keep) if k]
            vectors.append(chunk[keep])
            parts.append(estimator.estimate(chunk[keep], include_self=True))
    if not vectors:
        return [], np.zeros((0, dim)), Estimates.empty(0, len(estimator.categories), np.zeros(0, bool),
                                                       estimator.level)
    estimates = _joined(parts, np.asarray(estimator.in_survey([location_key(n) for n in names])))
    return names, np.vstack(vectors), estimates


def _joined(parts: list[Estimates], in_survey: np.ndarray) -> Estimates:
    """One :class:`Estimates` of consecutive parts."""
    def stack(name: str) -> np.ndarray:
        return np.concatenate([getattr(part, name) for part in parts])

    return Estimates(stack("scores"), stack("sd"), stack("best_similarity"), stack("out_of_domain"), in_survey,
                     stack("lo"), stack("hi"), stack("dissimilarity"), parts[0].level)


def read_suggestions(path: str | Path) -> pd.DataFrame:
    """A suggestions CSV: ``image`` and ``lon``, ``lat`` (NaN where unknown), ``angle`` (NaN where none) and
    ``rank`` (the row order where absent), in rank order."""
    path = Path(path)
    if not path.exists():
        raise PerceptError(f"suggestions file {path} does not exist: make it with 'percept suggest ... -o FILE.csv'")
    try:
        table = pd.read_csv(path, dtype={"image": str}, keep_default_na=False, na_values=[""])
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise PerceptError(f"cannot read suggestions file {path} ({exc}): re-run 'percept suggest'") from None
    if "image" not in table.columns:
        raise PerceptError(f"suggestions file {path} has no image column: it was not written by 'percept suggest'")
    missing = table["image"].isna() | (table["image"].astype(str).str.strip() == "")
    if missing.any():
        raise PerceptError(f"suggestions file {path}: row {int(np.flatnonzero(missing.to_numpy())[0]) + 1} names "
                           "no image: re-run 'percept suggest'")
    out = pd.DataFrame({"image": table["image"].astype(str)})
    for column, low, high in (("lon", -180, 180), ("lat", -90, 90), ("angle", None, None), ("rank", None, None)):
        values = table[column] if column in table.columns else pd.Series(np.nan, index=table.index)
        numbers = pd.to_numeric(values, errors="coerce")
        bad = numbers.isna() & values.notna()
        if low is not None:
            bad |= (numbers < low) | (numbers > high)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            scale = "" if low is None else f" from {low} to {high}"
            raise PerceptError(f"suggestions file {path}: row {row + 1} ({out['image'].iloc[row]!r}) holds "
                               f"{values.iloc[row]!r} for {column}, not a number{scale}: "
                               "fix the file or re-run 'percept suggest'")
        out[column] = numbers.astype(np.float64)
    if out["rank"].isna().all():
        out["rank"] = np.arange(1, len(out) + 1, dtype=np.float64)
    return out.sort_values("rank", kind="stable").reset_index(drop=True)
