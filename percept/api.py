"""The Python API for notebooks: each step one call.

    from percept import api
    data = api.load_survey("data.geojson", "embeddings", demographics="demo.csv", age="30,49")
    table = api.evaluate(data, ks=[10, 20], randomize=True, seed=1000)
    model = api.fit(data, "walkability", k=20)
    api.export(data, "model.npz", clip_model="open_clip:ViT-B-32")
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from percept.categories import CATEGORIES
from percept.data.filters import RatingFilter, parse_age, parse_list, parse_region
from percept.data.vector_checks import refuse_unusable
from percept.encoders.options import EncodingOptions
from percept.environment.options import EnvironmentOptions
from percept.model.knn import KNNRegressor
from percept.model.weighting import DEFAULT_WEIGHTING
from percept.study.crossval import CVPlan
from percept.study.dataset import DataSelection, Dataset, load_dataset
from percept.study.folds import GroupBy
from percept.study.holdout import check_training_split, holdout_evaluation
from percept.study.publish import ModelRecipe, publish_model

logger = logging.getLogger(__name__)


def load_survey(geojson: str | Path, embeddings: str | Path | None = None, *, clip_model: str = "unknown",
                images_dir: str | Path | None = None, demographics: str | Path | None = None,
                gender: str | None = None, region: str | None = None, age: str | None = None,
                education: str | None = None, environmental: str | None = None, prompt_style: int = 0,
                prompt_encoding: str = "whole", quiet: bool = True) -> Dataset:
    """Vectors and per-category samples, exactly as ``clip_retrieval_knn`` loads them.

    Filters take the command-line spellings (``age="30,49"``, ``gender="man,woman"``);
    ``environmental`` names the combining method (append, average, slerp) to add
    environmental features. Unless ``quiet``, the loading notes go to this module's logger (INFO).
    """
    encoding = EncodingOptions(clip_model, images_dir=_path(images_dir), embeddings_dir=_path(embeddings),
                               quiet=quiet)
    filters = RatingFilter(parse_list(gender), parse_region(region), parse_age(age), parse_list(education))
    selection = DataSelection(Path(geojson), encoding, _path(demographics), filters,
                              EnvironmentOptions(environmental, prompt_style, prompt_encoding=prompt_encoding)
                              if environmental else None)
    return load_dataset(selection, (lambda message: None) if quiet else logger.info)


def _path(value: str | Path | None) -> Path | None:
    return None if value is None else Path(value)


def fit(data: Dataset, category: str, k: int = 10, weighting: str = DEFAULT_WEIGHTING) -> KNNRegressor:
    """A KNN model on every sample of one category."""
    samples = data.samples[category]
    return KNNRegressor(k=k, weighting=weighting).fit(data.vectors, samples.scores, samples.rows)


def evaluate(data: Dataset, ks: Sequence[int] = (10,), training_split: float = 0.8, randomize: bool = False,
             seed: int = 0, stratified: bool = False, weighting: str = DEFAULT_WEIGHTING) -> pd.DataFrame:
    """The drop-in CLI's holdout evaluation as a table: category, k, train, test, mse, r2."""
    rng = random.Random(seed) if randomize else None
    results = holdout_evaluation(data.vectors, {c: data.samples[c] for c in CATEGORIES}, list(ks),
                                 check_training_split(training_split), rng, stratified, weighting)
    return pd.DataFrame([{"category": r.category, "k": r.k, "train": len(r.split.train), "test": len(r.split.test),
                          "mse": r.mse, "r2": r.r2} for r in results])


def export(data: Dataset, path: str | Path, clip_model: str, k: int = 40, weighting: str = DEFAULT_WEIGHTING,
           seed: int = 0) -> dict:
    """Write ``model.npz`` exactly as ``clip_retrieval_knn --export`` does (every sample's vector, score and
    survey image per category, the environmental settings the data were loaded with, intervals calibrated
    on folds grouped by image) and return its model card."""
    recipe = ModelRecipe(clip_model, k, weighting, CVPlan(group_by=GroupBy("image"), seed=seed), k_choice="given")
    return publish_model(path, data, recipe).card


def predict(model: KNNRegressor, vectors: np.ndarray) -> np.ndarray:
    """Scores of new unit vectors with a fitted model (NaN, infinite and zero vectors are refused)."""
    vectors = np.atleast_2d(vectors)
    refuse_unusable(vectors, lambda row: f"query vector {row}", "give finite, non-zero vectors")
    return model.predict(vectors)
