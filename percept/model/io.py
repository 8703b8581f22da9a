"""Export and import ``model.npz``: per category the training vectors and scores.

The layout is the original tool's (and the published Amsterdam model's):
``<category>_vecs`` (n x dim float64) and ``<category>_scores`` (n). Our files
add ``percept_settings``, UTF-8 JSON bytes (a uint8 array, so every array in the
file stays numeric) with the CLIP model, K, weighting,
environmental options and the survey's domain (threshold and mean nearest-other
distance), so a model is never used with the wrong encoder. Files without it load
too; the caller must then name the CLIP model. Files without a domain get it
computed on load.

Calibrated models add ``percept_conformal_<category>``: the sorted nonconformity
scores of the category's out-of-fold predictions (:mod:`percept.model.conformal`),
with each category's ``beta`` and how the folds were made in the settings'
``calibration``; any interval level can be asked of them at rating time.
``percept_card`` (JSON bytes) holds the model card. Where the vectors are unit rows normalised from float16
embeddings, ``percept_numerators``, ``percept_divisors`` and ``percept_rows_<category>`` hold them a second time
as quotient rows (:mod:`percept.model.quotient_members`), a quarter of the bytes: loading divides them back and
reads a ``<category>_vecs`` member only where the result is not byte for byte what it holds.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np

from percept.atomic import atomic_path
from percept.categories import CATEGORIES
from percept.data.vector_checks import RowCheck, check_rows, refuse_nonfinite, refuse_zero
from percept.errors import PerceptError
from percept.model.conformal import Calibration
from percept.model.domain import survey_domain
from percept.model.exact_search import on_workers
from percept.model.npz import array_names, read_npz, same_bytes, write_npz
from percept.model.quotient_members import (
    NUMERATORS_KEY,
    ROWS_PREFIX,
    QuotientRows,
    quotient_members,
    stored_quotients,
)
from percept.model.weighting import DEFAULT_WEIGHTING

SETTINGS_KEY = "percept_settings"
IMAGES_KEY = "percept_sample_images"
CARD_KEY = "percept_card"
CONFORMAL_PREFIX = "percept_conformal_"
PUBLISHED_K = 40


@dataclass
class ModelSettings:
    """How a model was built and is meant to predict."""

    clip_model: str | None = None
    k: int = PUBLISHED_K
    weighting: str = DEFAULT_WEIGHTING
    environmental_method: str | None = None
    prompt_style: int | None = None
    prompt_encoding: str | None = None  # "whole" or "clauses"; None (older files): whole
    weights_id: str | None = None
    domain_threshold: float | None = None  # survey's 5th-percentile nearest-other-image similarity
    mean_distance: float | None = None  # survey's mean nearest-other-image chord distance
    calibration: dict | None = None  # {"beta": {category: beta}, and how the calibration folds were made}
    environment_reference: dict | None = None  # the survey's style-1 quintile thresholds per environmental key
    extra: dict = field(default_factory=dict)


@dataclass
class ExportedModel:
    """Training vectors and scores per category, and the settings (None for a bare published file)."""

    vectors: dict[str, np.ndarray]
    scores: dict[str, np.ndarray]
    settings: ModelSettings | None
    images: dict[str, list[str]] | None = None  # survey image name of each sample, where recorded
    calibration: dict[str, Calibration] | None = None  # per category, for prediction intervals
    card: dict | None = None  # the model card
    domain_threshold: float | None = None  # the recorded one, else computed from the vectors
    mean_distance: float | None = None  # likewise
    quotients: QuotientRows | None = None  # the vectors' distinct rows as quotient rows, where the file held them

    def __post_init__(self) -> None:
        if self.settings is not None:
            if self.domain_threshold is None:
                self.domain_threshold = self.settings.domain_threshold
            if self.mean_distance is None:
                self.mean_distance = self.settings.mean_distance
        if self.domain_threshold is None or self.mean_distance is None:
            domain = survey_domain(self.vectors, self.images)
            if domain is not None:
                self.domain_threshold = domain.threshold if self.domain_threshold is None else self.domain_threshold
                self.mean_distance = domain.mean_distance if self.mean_distance is None else self.mean_distance

    @property
    def categories(self) -> list[str]:
        return [c for c in CATEGORIES if c in self.vectors]

    @property
    def dim(self) -> int:
        return next(iter(self.vectors.values())).shape[1]


def save_model(path: str | Path, vectors: dict[str, np.ndarray], scores: dict[str, np.ndarray],
               settings: ModelSettings | None, images: dict[str, list[str]] | None = None,
               calibration: dict[str, Calibration] | None = None, card: dict | None = None) -> None:
    """Write ``model.npz`` (compressed, as ``numpy.savez_compressed``) atomically; ``images`` names each sample's
    survey image, ``calibration`` gives each category's interval calibration (its betas go into the settings)."""
    arrays = {}
    for category in vectors:
        arrays[f"{category}_scores"] = np.asarray(scores[category], dtype=np.float64)
        arrays[f"{category}_vecs"] = np.asarray(vectors[category], dtype=np.float64)
    if calibration:
        if settings is None or settings.calibration is None:
            raise ValueError("a calibrated model records how it was calibrated in its settings")
        settings.calibration["beta"] = {c: float(calibration[c].beta) for c in calibration}
        for category, fitted in calibration.items():
            arrays[CONFORMAL_PREFIX + category] = np.asarray(fitted.scores, dtype=np.float64)
    if settings is not None:
        arrays[SETTINGS_KEY] = _json_bytes(asdict(settings))
    if images is not None:
        arrays[IMAGES_KEY] = _json_bytes(images)
    if card is not None:
        arrays[CARD_KEY] = _json_bytes(card)
    arrays.update(quotient_members({c: arrays[f"{c}_vecs"] for c in vectors}))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            write_npz(handle, arrays, stored={NUMERATORS_KEY})  # float16 numerators barely deflate


def load_model(path: str | Path) -> ExportedModel:
    """Read a model written by :func:`save_model`, the original tool or the published Amsterdam model."""
    path = Path(path)
    if not path.exists():
        raise PerceptError(f"model file {path} does not exist: export one with --export or 'make demo'")
    try:
        arrays, quotients = _read_arrays(path)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise PerceptError(f"{path} is not a readable model.npz ({exc}): re-export the model") from None
    vectors, scores = {}, {}
    present = [c for c in CATEGORIES if f"{c}_vecs" in arrays and f"{c}_scores" in arrays]
    checks = _row_checks({c: arrays[f"{c}_vecs"] for c in present})
    for category in present:
        vectors[category], scores[category] = _category_arrays(path, category, arrays, checks)
    if not vectors:
        raise PerceptError(f"{path} holds no <category>_vecs/<category>_scores arrays: is it a Percept model?")
    settings: ModelSettings | None = None
    recorded_images: object = None
    card: object = None
    try:
        if SETTINGS_KEY in arrays:
            settings = ModelSettings(**_json_object(arrays[SETTINGS_KEY]))
        if IMAGES_KEY in arrays:
            recorded_images = _from_json_bytes(arrays[IMAGES_KEY])
        if CARD_KEY in arrays:
            card = _from_json_bytes(arrays[CARD_KEY])
    except (ValueError, TypeError) as exc:
        raise PerceptError(f"{path}: unreadable model settings ({exc}): re-export the model") from None
    if settings is not None:
        _check_settings(path, settings)
    images = None if recorded_images is None else _checked_images(path, recorded_images)
    calibration = _calibration(path, arrays, settings, list(vectors))
    return ExportedModel(vectors, scores, settings, images, calibration, card if isinstance(card, dict) else None,
                         quotients=quotients if quotients is not None and set(quotients.rows) == set(vectors) else None)


def _read_arrays(path: Path) -> tuple[dict[str, np.ndarray], QuotientRows | None]:
    """The file's arrays, and the quotient rows of its vectors where it holds them and they match every category's.

    Each category's vectors are divided back from the quotient rows where those give the very bytes of its
    ``<category>_vecs`` member (else, and in files without them, that member is read)."""
    names = array_names(path)
    held = [c for c in CATEGORIES if f"{c}_vecs" in names and ROWS_PREFIX + c in names]
    arrays = read_npz(path, skip={f"{c}_vecs" for c in held})
    quotients = stored_quotients(arrays, held) if held else None

    def rebuilt(category: str) -> np.ndarray | None:
        """The category's vectors rebuilt from the quotient rows, where they are its member's very bytes."""
        assert quotients is not None
        vectors = quotients.vectors(quotients.rows[category])
        return vectors if same_bytes(path, f"{category}_vecs", vectors) else None

    found = dict(zip(held, on_workers(rebuilt, held))) if quotients is not None else {}
    arrays.update({f"{c}_vecs": vectors for c, vectors in found.items() if vectors is not None})
    stale = {f"{c}_vecs" for c in held if found.get(c) is None}
    if stale:
        arrays.update(read_npz(path, only=stale))
    return arrays, quotients if not stale else None


def _calibration(path: Path, arrays: dict, settings: ModelSettings | None,
                 categories: list[str]) -> dict[str, Calibration] | None:
    """The calibration of every category that has one (None when the file has none)."""
    betas = ((settings.calibration or {}).get("beta") if settings is not None else None) or {}
    found = {}
    for category in categories:
        scores = arrays.get(CONFORMAL_PREFIX + category)
        if scores is None:
            continue
        beta = betas.get(category)
        if scores.ndim != 1 or scores.dtype.kind != "f" or np.isnan(scores).any() or isinstance(beta, bool) \
                or not isinstance(beta, (float, int)):
            raise PerceptError(f"{path}: the interval calibration of {category} is damaged: re-export the model")
        found[category] = Calibration(np.sort(scores), float(beta))
    return found or None


def _row_checks(vectors: dict[str, np.ndarray]) -> dict[str, RowCheck]:
    """:func:`check_rows` of each category's vectors that are rows of numbers (the others are refused as they
    are), scanned on several threads at once (numpy lets go of the GIL while it scans them)."""
    rows = {category: array for category, array in vectors.items() if array.dtype.kind in "fiu" and array.ndim == 2}
    return dict(zip(rows, on_workers(check_rows, rows.values())))


def _category_arrays(path: Path, category: str, arrays: dict,
                     checks: dict[str, RowCheck]) -> tuple[np.ndarray, np.ndarray]:
    """One category's vectors and scores as float64, refusing wrong types, NaN, infinities and zero vectors
    (``checks``: the :func:`check_rows` of each category's vectors that are rows of numbers)."""
    vecs, scores = arrays[f"{category}_vecs"], arrays[f"{category}_scores"]
    for key, array, ndim in ((f"{category}_vecs", vecs, 2), (f"{category}_scores", scores, 1)):
        if array.dtype.kind not in "fiu" or array.ndim != ndim:
            raise PerceptError(f"{path}: {key} holds a {array.dtype} array of shape {array.shape}, not "
                               f"{'rows of vectors' if ndim == 2 else 'one score per sample'}: re-export the model")
    if len(vecs) != len(scores):
        raise PerceptError(f"{path}: {category} vectors and scores disagree in length: re-export the model")
    def where(row: int) -> str:
        return f"{path}: {category}_vecs row {row}"

    refuse_nonfinite(checks[category], where, "re-export the model")
    refuse_zero(checks[category].zero, where, "re-export the model")
    bad = np.flatnonzero(~np.isfinite(scores))
    if len(bad):
        raise PerceptError(f"{path}: {category}_scores row {bad[0]} holds {scores[bad[0]]}, not a finite score: "
                           "re-export the model")
    return vecs.astype(np.float64, copy=False), scores.astype(np.float64, copy=False)


#: The JSON types of each recorded setting (None allowed where listed).
_SETTING_TYPES = {"clip_model": (str, type(None)), "k": (int,), "weighting": (str,),
                  "environmental_method": (str, type(None)), "prompt_style": (int, type(None)),
                  "prompt_encoding": (str, type(None)),
                  "weights_id": (str, type(None)), "domain_threshold": (float, int, type(None)),
                  "mean_distance": (float, int, type(None)), "calibration": (dict, type(None)),
                  "environment_reference": (dict, type(None)),
                  "extra": (dict,)}


def _check_settings(path: Path, settings: ModelSettings) -> None:
    for name, types in _SETTING_TYPES.items():
        value = getattr(settings, name)
        if type(value) not in types:
            raise PerceptError(f"{path}: the model setting {name!r} holds {value!r} ({type(value).__name__}), "
                               f"which must be {' or '.join(t.__name__ for t in types).replace('NoneType', 'null')}: "
                               "re-export the model")
    if settings.k < 1:
        raise PerceptError(f"{path}: the model setting 'k' is {settings.k}, not a positive number: re-export the model")


def _checked_images(path: Path, images: object) -> dict[str, list[str]]:
    """The recorded survey images: a mapping of each category to a list of image names."""
    if not _image_names(images):
        raise PerceptError(f"{path}: {IMAGES_KEY} must map each category to a list of image names: "
                           "re-export the model")
    return images


def _image_names(images: object) -> TypeGuard[dict[str, list[str]]]:
    return isinstance(images, dict) and all(
        isinstance(names, list) and all(type(n) is str for n in names) for names in images.values())


def _json_bytes(value: object) -> np.ndarray:
    """JSON as a uint8 array, so every array in the file stays numeric."""
    return np.frombuffer(json.dumps(value, sort_keys=True).encode("utf-8"), dtype=np.uint8)


def _from_json_bytes(array: np.ndarray) -> object:
    """The JSON value a uint8 array holds (its type is the caller's to check)."""
    value: object = json.loads(array.astype(np.uint8).tobytes())
    return value


def _json_object(array: np.ndarray) -> dict[str, Any]:
    """The JSON object a uint8 array holds (TypeError for any other JSON value); its values' types are the
    caller's to check."""
    value = _from_json_bytes(array)
    if not isinstance(value, dict):
        raise TypeError(f"a JSON {type(value).__name__}, not an object")
    return value
