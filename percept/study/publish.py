"""Publishing a model: the one export behind ``clip_retrieval_knn --export``, ``percept evaluate
--export`` and ``api.export``.

Every sample's vector, score and survey image per category, the settings it must be used with,
the survey's domain over distinct images, the interval calibration on grouped out-of-fold
predictions of exactly this configuration, and the model card (in the file and beside it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from percept.atomic import atomic_write_text
from percept.data.missing import MISSING_LIMIT, MissingImages
from percept.data.survey import Samples, image_name
from percept.encoders.cache import read_manifest
from percept.errors import PerceptError
from percept.model.conformal import DEFAULT_LEVEL
from percept.model.domain import survey_domain
from percept.model.io import ExportedModel, ModelSettings, save_model
from percept.study.calibration import CalibrationResult, calibrate_model
from percept.study.crossval import CategoryResult, CVPlan
from percept.study.dataset import DataSelection, Dataset
from percept.study.model_card import arrays_digest, build_card, card_markdown, file_digest, folder_digest


@dataclass(frozen=True)
class ModelRecipe:
    """What a published model is: its encoder, K and weighting, how K was chosen, and the folds its
    intervals are calibrated on (None: no calibration). Environmental features come with the dataset."""

    clip_model: str | None
    k: int
    weighting: str
    calibration: CVPlan | None = field(default_factory=CVPlan)
    k_choice: str = "given"
    evaluation: dict | None = None  # scheme and scores with intervals, from an evaluation


@dataclass(frozen=True)
class Published:
    """A model made for publishing: the model, its card and its calibration (None without one)."""

    model: ExportedModel
    card: dict
    calibration: CalibrationResult | None


def evaluated_k(results: list[CategoryResult]) -> int:
    """The K with the lowest mean MSE summed over the categories (ties: the smaller K)."""
    totals: dict[int, float] = {}
    for result in results:
        for row in result.knn:
            if row.k is not None:  # every KNN row has its K
                totals[row.k] = totals.get(row.k, 0.0) + np.nan_to_num(row.mean("mse"), nan=np.inf)
    return min(totals, key=lambda k: (totals[k], k))


def evaluation_summary(results: list[CategoryResult], plan: CVPlan, k: int, intervals: dict) -> dict:
    """The scheme and each category's pooled out-of-fold MSE and R² of ``k`` with their 95 % intervals
    (:func:`percept.study.score_intervals.score_intervals`), for the model card."""
    scores = {}
    for result in results:
        found = intervals[result.category][k]
        scores[result.category] = {"mse": found["mse"], "mse_ci": list(found["mse_ci"]), "r2": found["r2"],
                                   "r2_ci": list(found["r2_ci"])}
    scheme = (f"{plan.repeats} x {plan.folds}-fold cross-validation, {plan.group_by.describe()}, seed {plan.seed}"
              f"{', stratified' if plan.stratified else ''}")
    return {"scheme": scheme, "scores": scores}


def check_missing(missing: MissingImages | None, allow: bool) -> None:
    """Refuse a study that lost more than :data:`MISSING_LIMIT` of a category's rated images (unless ``allow``)."""
    if missing is None or allow or not missing.any:
        return
    category, dropped = missing.worst()
    if dropped.share > MISSING_LIMIT:
        raise PerceptError(f"{dropped.dropped_images} of {dropped.images} rated survey images of {category} "
                           f"({dropped.share:.1%}, first: {missing.first}) have no embedding: fetch and encode them "
                           f"(percept fetch-images, percept encode), or accept the loss with --allow-missing")


def publish_model(path: str | Path, dataset: Dataset, recipe: ModelRecipe,
                  progress: Callable[[list], Iterable] = iter) -> Published:
    """Write the model of ``recipe`` on ``dataset`` to ``path`` and its card to ``path.card.md``."""
    made = assemble_model(dataset, recipe, progress)
    model = made.model
    save_model(path, model.vectors, model.scores, model.settings, model.images, model.calibration, made.card)
    atomic_write_text(card_path(path), card_markdown(made.card))
    return made


def assemble_model(dataset: Dataset, recipe: ModelRecipe,
                   progress: Callable[[list], Iterable] = iter) -> Published:
    """The model of ``recipe`` on ``dataset``, in memory, with its card and calibration."""
    selection = dataset.selection
    samples = _with_samples(dataset)
    if not samples:
        raise PerceptError("no category has any sample to export: relax the filters or check the survey")
    vectors, images = _sample_arrays(dataset, samples)
    scores = {c: s.scores for c, s in samples.items()}
    domain = survey_domain(vectors, images)
    calibrated = None
    if recipe.calibration is not None:
        calibrated = calibrate_dataset(dataset, recipe.k, recipe.weighting, recipe.calibration, domain, progress)
    environment = selection.environment if selection is not None else None
    settings = ModelSettings(clip_model=recipe.clip_model, k=recipe.k, weighting=recipe.weighting,
                             environmental_method=environment.method if environment else None,
                             prompt_style=environment.prompt_style if environment else None,
                             prompt_encoding=environment.prompt_encoding if environment else None,
                             weights_id=_weights_id(selection),
                             domain_threshold=domain.threshold if domain else None,
                             mean_distance=domain.mean_distance if domain else None,
                             calibration=calibrated.describe() if calibrated else None,
                             environment_reference=dataset.environment_reference)
    card = _card(dataset, recipe, settings, samples, calibrated, domain,
                 arrays_digest([a for c in samples for a in (vectors[c], scores[c])]))
    calibration = calibrated.calibration if calibrated else None
    model = ExportedModel(vectors, scores, settings, images, calibration, card)
    return Published(model, card, calibrated)


def calibrate_dataset(dataset: Dataset, k: int, weighting: str, plan: CVPlan, domain=None,
                      progress: Callable[[list], Iterable] = iter) -> CalibrationResult:
    """The interval calibration of a dataset's model with ``k`` and ``weighting`` on ``plan``'s grouped folds
    (``domain``: the survey's, computed when not given)."""
    samples = _with_samples(dataset)
    if domain is None:
        domain = survey_domain(*_sample_arrays(dataset, samples))
    return calibrate_model(dataset.vectors, samples, k, weighting, plan, domain, dataset.lonlat, progress=progress)


def _with_samples(dataset: Dataset) -> dict[str, Samples]:
    """The categories that have samples."""
    return {c: s for c, s in dataset.samples.items() if len(s)}


def _sample_arrays(dataset: Dataset, samples: dict[str, Samples]) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """Per category, the samples' float64 vectors and their survey images' names."""
    vectors = {c: np.asarray(dataset.vectors[s.rows], dtype=np.float64) for c, s in samples.items()}
    images = {c: [image_name(dataset.names[r]) for r in s.rows] for c, s in samples.items()}
    return vectors, images


def card_path(path: str | Path) -> Path:
    """``model.npz`` → ``model.npz.card.md``."""
    return Path(f"{path}.card.md")


def _weights_id(selection: DataSelection | None) -> str | None:
    """The encoder weights' identity, from the embeddings' manifest where it has one."""
    if selection is None:
        return None
    manifest = read_manifest(selection.encoding.embeddings_folder, "img")
    return getattr(manifest, "weights_id", None)


def _card(dataset: Dataset, recipe: ModelRecipe, settings: ModelSettings, samples: dict,
          calibrated: CalibrationResult | None, domain, arrays_sha: str) -> dict:
    selection = dataset.selection
    inputs: dict[str, dict[str, str | None]] = {}
    filters: dict[str, object] = {}
    if selection is not None:
        inputs["survey"] = {"path": str(selection.geojson), "sha256": file_digest(selection.geojson)}
        if selection.demographics:
            inputs["ratings"] = {"path": str(selection.demographics), "sha256": file_digest(selection.demographics)}
        folder = selection.encoding.embeddings_folder
        inputs["embeddings"] = {"path": str(folder), "sha256": folder_digest(folder)}
        filters = {name: _plain(value) for name, value in vars(selection.filters).items()}
    missing = dataset.missing.as_dict() if dataset.missing else {}
    data = {}
    for category, found in samples.items():
        dropped = missing.get(category, {})
        data[category] = {"samples": len(found), "images": len(np.unique(found.rows)),
                          "dropped_images": dropped.get("dropped_images"),
                          "dropped_ratings": dropped.get("dropped_ratings")}
    model = {"k": recipe.k, "k_choice": recipe.k_choice, "weighting": recipe.weighting,
             "environment": settings.environmental_method and dataset.environment}
    calibration = None
    if calibrated is not None:
        calibration = {**calibrated.describe(), "level": DEFAULT_LEVEL,
                       "coverage": {c: cov.as_dict() for c, cov in calibrated.coverage.items()}}
    domain_card = None if domain is None else {"threshold": domain.threshold, "mean_distance": domain.mean_distance,
                                               "distinct_images": domain.groups}
    return build_card(clip_model=settings.clip_model, weights_id=settings.weights_id, inputs=inputs, filters=filters,
                      data=data, model=model, evaluation=recipe.evaluation, calibration=calibration,
                      domain=domain_card, arrays_sha=arrays_sha)


def _plain(value):
    """A filter value as JSON: tuples and sets as lists."""
    if isinstance(value, (tuple, list, set, frozenset)):
        return [_plain(v) for v in sorted(value, key=str)] if isinstance(value, (set, frozenset)) else \
            [_plain(v) for v in value]
    return value
