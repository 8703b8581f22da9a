"""Everything the drop-in CLI and ``percept evaluate`` load before modelling.

Survey GeoJSON, embeddings (read, or encoded from images), optional rating rows
with demographic filters, and optional environmental text vectors, brought
together as one :class:`Dataset`: unit vectors per image plus each category's
samples (vector row and score). What to load is one typed :class:`DataSelection`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from percept.data.embeddings import REENCODE, Embeddings, read_embeddings
from percept.data.filters import RatingFilter
from percept.data.missing import MissingImages, missing_images
from percept.data.survey import (
    CORE_PROPERTIES,
    Samples,
    Survey,
    average_samples,
    load_survey,
    match_features,
)
from percept.data.vector_checks import refuse_zero
from percept.encoders.options import EncodingOptions
from percept.environment.options import EnvironmentOptions
from percept.errors import PerceptError
from percept.model.unit_rows import Rows, UnitRows, row_norms

if TYPE_CHECKING:
    import pandas as pd

Log = Callable[[str], None]
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataSelection:
    """Which survey, vectors, ratings and environmental features make up a dataset."""

    geojson: Path
    encoding: EncodingOptions
    demographics: Path | None = None
    filters: RatingFilter = field(default_factory=RatingFilter)
    environment: EnvironmentOptions | None = None
    properties: tuple[str, ...] = ()  # survey feature properties to keep per image (e.g. for --group-by column:NAME)

    def __post_init__(self):
        if self.filters != RatingFilter() and not self.demographics:
            raise PerceptError("--gender, --region, --age and --education filter individual ratings: "
                               "give the ratings CSV with -d/--demographics")


@dataclass
class Dataset:
    """Unit vectors of the survey's images and, per category, the samples that point into them.

    ``vectors`` gives float64 unit rows on indexing; it stores the embeddings as read (float16
    stays float16), see :class:`~percept.model.unit_rows.UnitRows`.
    """

    names: list[str]
    vectors: np.ndarray | UnitRows
    samples: dict[str, Samples]
    rating_rows: dict[str, pd.DataFrame] | None = None  # per category, the rating rows behind its samples (-d)
    environment: str | None = None  # "<method>+p<style>" when environmental features were added
    lonlat: np.ndarray | None = None  # (images, 2) survey Point of each vector row; NaN where none
    missing: MissingImages | None = None  # rated survey images dropped for lack of an embedding
    selection: DataSelection | None = None  # what was loaded (files, filters, environmental options)
    feature_properties: dict[str, np.ndarray] = field(default_factory=dict)  # DataSelection.properties per row
    environment_reference: dict | None = None  # the survey's style-1 quintile thresholds per environmental key

    def properties(self, name: str) -> np.ndarray:
        """The survey property ``name`` of each vector row's feature (object array; None where absent)."""
        if name not in self.feature_properties:
            raise PerceptError(f"the survey property {name!r} was not loaded: name it in DataSelection.properties")
        return self.feature_properties[name]


def load_dataset(selection: DataSelection, log: Log = logger.info) -> Dataset:
    """Load survey, vectors, samples and (optionally) environmental vectors as ``selection`` says; ``log``
    gets the notes (this module's logger by default)."""
    with ThreadPoolExecutor(1) as pool:  # cached embeddings are read while the survey is decoded
        cached = None if selection.encoding.images_dir else pool.submit(_read_cached, selection.encoding)
        survey = load_survey(selection.geojson,
                             None if selection.environment else CORE_PROPERTIES.union(selection.properties))
        if survey.duplicates:
            log(f"warning: {survey.duplicates} survey features repeat an image name; the last one is used")
        embeddings, norms = cached.result() if cached else (obtain_embeddings(selection.encoding, log), None)
    matches = matched, unmatched = match_features(embeddings.names, survey)
    keep = np.array([m is not None for m in matched], dtype=bool)
    if not keep.any():
        raise PerceptError(f"no embedding row matches an image of {selection.geojson}: embeddings and survey "
                           "name different images (rows match by the file name after the last '/')")
    folder = selection.encoding.embeddings_folder
    zero = embeddings.zero_rows(folder)
    describe = embeddings.describe_row
    refuse_zero(zero[keep[zero]], lambda row: describe(row, folder), REENCODE)
    if unmatched:
        log(f"skipped {len(unmatched)} embedding rows with no survey feature (first: {unmatched[0]})")
    names = [n for n, k in zip(embeddings.names, keep) if k]
    features = [m for m in matched if m is not None]
    lonlat = None if survey.lonlat is None else survey.lonlat[features]
    properties = {name: feature_values(survey, features, name) for name in selection.properties}
    vectors: Rows
    if keep.all():
        vectors = UnitRows(embeddings.vectors, norms)
    else:
        vectors = UnitRows(embeddings.vectors[keep], None if norms is None else norms[keep])
    del embeddings
    if selection.demographics:
        from percept.data.ratings import filter_ratings, load_ratings, rating_samples

        ratings = filter_ratings(load_ratings(selection.demographics, selection.filters.columns()),
                                 selection.filters, log)
        sample_set = rating_samples(names, survey, ratings)
        if sample_set.unrated:
            log(f"{sample_set.unrated} images have no rating that passes the filters")
        missing = missing_images(survey, matched, ratings)
    else:
        sample_set = average_samples(names, survey, matches if keep.all() else None)
        missing = missing_images(survey, matched)
    for line in missing.lines():
        log(line)
    environment = reference = None
    if selection.environment:
        from percept.environment.text_vectors import environment_reference, environmental_vectors

        vectors = environmental_vectors(selection.encoding, selection.environment, survey, names, vectors, log)
        environment = selection.environment.label
        reference = environment_reference(selection.environment, survey)
    return Dataset(names, vectors, sample_set.by_category, sample_set.rating_rows, environment, lonlat,
                   missing=missing, selection=selection, feature_properties=properties,
                   environment_reference=reference)


def feature_values(survey: Survey, features: list[int], name: str) -> np.ndarray:
    """Property ``name`` of each of the survey's ``features`` (object array; None where absent)."""
    values = np.empty(len(features), dtype=object)
    for index, feature in enumerate(features):  # one by one: a value may itself be a JSON list
        values[index] = survey.features[feature].get(name)
    return values


def _read_cached(options: EncodingOptions) -> tuple[Embeddings, np.ndarray]:
    """The cached embeddings and their row norms (computed on the reading thread, while the survey decodes)."""
    embeddings = read_embeddings(options.embeddings_folder, metadata=False)
    return embeddings, row_norms(embeddings.vectors)


def obtain_embeddings(options: EncodingOptions, log: Log) -> Embeddings:
    """Encode ``options.images_dir`` into the embeddings folder, or reuse a valid cache there."""
    folder = options.embeddings_folder
    if options.images_dir is None or not Path(options.images_dir).is_dir():
        raise PerceptError(f"--images-dir {options.images_dir} is not a folder of images")
    images = Path(options.images_dir)
    if options.uses_external_encoder():
        from percept.encoders.clip_retrieval import encode_images_external

        return encode_images_external(images, folder, options.clip_model, options.other_clip_retrieval_args,
                                      skip_cache=options.skip_cache, read_only=options.read_only, log=log)
    from percept.encoders.pipeline import encode_images

    return encode_images(images, folder, options.clip_model, pretrained=options.pretrained, precision=options.precision,
                         skip_cache=options.skip_cache, read_only=options.read_only, quiet=options.quiet,
                         skip_missing=options.skip_missing)
