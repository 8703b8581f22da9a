"""Export and import ``model.npz``: per category the training vectors and scores.

The layout is the original tool's (and the published Amsterdam model's):
``<category>_vecs`` (n x dim float64) and ``<category>_scores`` (n). Our files
add ``percept_settings``, UTF-8 JSON bytes (a uint8 array, so every array in the
file stays numeric) with the CLIP model, K, weighting and
environmental options, so a model is never used with the wrong encoder.
Files without it load too; the caller must then name the CLIP model.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from percept.atomic import atomic_path
from percept.categories import CATEGORIES
from percept.errors import PerceptError
from percept.model.weighting import DEFAULT_WEIGHTING

SETTINGS_KEY = "percept_settings"
IMAGES_KEY = "percept_sample_images"
PUBLISHED_K = 40


@dataclass
class ModelSettings:
    """How a model was built and is meant to predict."""

    clip_model: str | None = None
    k: int = PUBLISHED_K
    weighting: str = DEFAULT_WEIGHTING
    environmental_method: str | None = None
    prompt_style: int | None = None
    weights_id: str | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class ExportedModel:
    """Training vectors and scores per category, and the settings (None for a bare published file)."""

    vectors: dict[str, np.ndarray]
    scores: dict[str, np.ndarray]
    settings: ModelSettings | None
    images: dict[str, list[str]] | None = None  # survey image name of each sample, where recorded

    @property
    def categories(self) -> list[str]:
        return [c for c in CATEGORIES if c in self.vectors]

    @property
    def dim(self) -> int:
        return next(iter(self.vectors.values())).shape[1]


def save_model(path: str | Path, vectors: dict[str, np.ndarray], scores: dict[str, np.ndarray],
               settings: ModelSettings | None, images: dict[str, list[str]] | None = None) -> None:
    """Write ``model.npz`` (compressed) atomically; ``images`` names each sample's survey image."""
    arrays = {}
    for category in vectors:
        arrays[f"{category}_scores"] = np.asarray(scores[category], dtype=np.float64)
        arrays[f"{category}_vecs"] = np.asarray(vectors[category], dtype=np.float64)
    if settings is not None:
        arrays[SETTINGS_KEY] = _json_bytes(asdict(settings))
    if images is not None:
        arrays[IMAGES_KEY] = _json_bytes(images)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)


def load_model(path: str | Path) -> ExportedModel:
    """Read a model written by :func:`save_model`, the original tool or the published Amsterdam model."""
    path = Path(path)
    if not path.exists():
        raise PerceptError(f"model file {path} does not exist: export one with --export or 'make demo'")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise PerceptError(f"{path} is not a readable model.npz ({exc}): re-export the model") from None
    vectors, scores = {}, {}
    for category in CATEGORIES:
        if f"{category}_vecs" in arrays and f"{category}_scores" in arrays:
            vectors[category] = arrays[f"{category}_vecs"].astype(np.float64, copy=False)
            scores[category] = arrays[f"{category}_scores"].astype(np.float64, copy=False)
            if vectors[category].ndim != 2 or len(vectors[category]) != len(scores[category]):
                raise PerceptError(f"{path}: {category} vectors and scores disagree in length: re-export the model")
    if not vectors:
        raise PerceptError(f"{path} holds no <category>_vecs/<category>_scores arrays: is it a Percept model?")
    settings = images = None
    try:
        if SETTINGS_KEY in arrays:
            settings = ModelSettings(**_from_json_bytes(arrays[SETTINGS_KEY]))
        if IMAGES_KEY in arrays:
            images = _from_json_bytes(arrays[IMAGES_KEY])
    except (ValueError, TypeError) as exc:
        raise PerceptError(f"{path}: unreadable model settings ({exc}): re-export the model") from None
    return ExportedModel(vectors, scores, settings, images)


def _json_bytes(value) -> np.ndarray:
    """JSON as a uint8 array, so every array in the file stays numeric."""
    return np.frombuffer(json.dumps(value, sort_keys=True).encode("utf-8"), dtype=np.uint8)


def _from_json_bytes(array: np.ndarray):
    return json.loads(array.astype(np.uint8).tobytes())
