"""A vector-level survey whose scores vary smoothly in space and whose vectors carry location.

For testing validation schemes: nearby images score alike (each category's true score is
``3 + SCORE_AMPLITUDE * field`` plus a panorama effect and an image effect, where the field is
smooth and random with wavelengths of 1–3 km), and each image's vector is a random-Fourier
embedding of its position (length scale ``LOCATION_SCALE_M``) plus a panorama look shared by
its crops and per-image noise. So a KNN model finds spatial neighbours and predicts well when
nearby images sit in training: random folds are optimistic, spatial blocks are not; and the
other ratings of the same image (or crops of the same panorama) reveal its own effect.
Images are 1–4 crops of panoramas (same coordinates). Ratings come from the raters of
``percept.synthetic.simulation``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from percept.atomic import atomic_open
from percept.categories import CATEGORIES
from percept.data.embeddings import write_part
from percept.synthetic.simulation import (
    LAT_RANGE,
    LON_RANGE,
    METRES_PER_DEG_LAT,
    URL_PREFIX,
    SampleInfo,
    average_ratings,
    claim_output_dir,
    simulate_ratings,
)

SCORE_AMPLITUDE = 1.1
#: How far east each further city of a several-city survey lies (degrees of longitude, about 14 km).
CITY_SPACING_DEG = 0.2
WAVELENGTHS_M = (1000.0, 3000.0)
FIELD_WAVES = 12
PANORAMA_EFFECT_SD = 0.3
IMAGE_EFFECT_SD = 0.4
LOCATION_SCALE_M = 250.0
LOOK_GAIN = 0.3
NOISE_GAIN = 0.3
FILES = ["embeddings/img_emb/img_emb_0.npy", "embeddings/metadata/metadata_0.parquet", "data.geojson", "demo.csv"]


def generate_spatial_survey(out_dir: str | Path, n_panoramas: int = 600, dim: int = 64,
                            ratings_per_image: float = 4.0, seed: int = 0, force: bool = False,
                            cities: int = 1) -> SampleInfo:
    """Write embeddings/, data.geojson (Point per image) and demo.csv into ``out_dir``.

    With ``cities`` > 1 the panoramas are dealt to that many cities, each the sample area moved
    :data:`CITY_SPACING_DEG` further east, and each feature names its ``city`` ("city-1", ...).
    ``out_dir`` must be new or empty unless ``force`` (see :func:`claim_output_dir`).
    """
    if n_panoramas < 1 or dim < 2 or cities < 1:
        raise ValueError(f"need n_panoramas >= 1, dim >= 2 and cities >= 1, got {n_panoramas}, {dim}, {cities}")
    place_rng, field_rng, vector_rng, rating_rng = (np.random.default_rng(s)
                                                    for s in np.random.SeedSequence(seed).spawn(4))
    root = claim_output_dir(out_dir, "spatial", seed, FILES, force)
    city = np.arange(n_panoramas) % cities
    lon = place_rng.uniform(*LON_RANGE, n_panoramas) + CITY_SPACING_DEG * city
    lat = place_rng.uniform(*LAT_RANGE, n_panoramas)
    crops = place_rng.integers(1, 5, n_panoramas)
    pano = np.repeat(np.arange(n_panoramas), crops)
    names = [f"{2_000_000 + p}_x{c}.jpg" for p, n in enumerate(crops) for c in range(n)]
    x, y = local_metres(lon[pano], lat[pano])
    scores = true_scores(x, y, field_rng)
    effects = (PANORAMA_EFFECT_SD * field_rng.standard_normal((n_panoramas, len(CATEGORIES)))[pano]
               + IMAGE_EFFECT_SD * field_rng.standard_normal(scores.shape))
    scores = np.clip(scores + effects, 1.0, 5.0)
    vectors = location_vectors(x, y, pano, dim, vector_rng)
    ratings = simulate_ratings(scores, ratings_per_image, rating_rng)
    averages = average_ratings(ratings, len(names))
    metadata = pd.DataFrame({"image_path": [f"/data/img/ams/{name}" for name in names]})
    write_part(root / "embeddings", "img", 0, vectors, metadata)
    city_names = [f"city-{c + 1}" for c in city[pano]] if cities > 1 else None
    _write_geojson(root / "data.geojson", names, lon[pano], lat[pano], averages, city_names)
    with atomic_open(root / "demo.csv", "w", encoding="utf-8", newline="") as handle:
        ratings.to_csv(handle, index=False, lineterminator="\n")
    per_category = np.bincount(ratings["category_id"].to_numpy() - 1, minlength=len(CATEGORIES))
    return SampleInfo(root, "spatial", len(names), n_panoramas, len(ratings), int(ratings["session_id"].nunique()),
                      {c: int(np.isfinite(averages[:, i]).sum()) for i, c in enumerate(CATEGORIES)},
                      {c: int(per_category[i]) for i, c in enumerate(CATEGORIES)}, dim)


def local_metres(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Equirectangular metres from the south-west corner of the sample area (good to ~0.1 % here)."""
    metres_lon = METRES_PER_DEG_LAT * np.cos(np.radians(np.mean(LAT_RANGE)))
    return (lon - LON_RANGE[0]) * metres_lon, (lat - LAT_RANGE[0]) * METRES_PER_DEG_LAT


def true_scores(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n, 5) smooth scores in [1, 5]: per category a sum of ``FIELD_WAVES`` random plane waves."""
    out = np.empty((len(x), len(CATEGORIES)))
    for c in range(len(CATEGORIES)):
        wavelength = rng.uniform(*WAVELENGTHS_M, FIELD_WAVES)
        angle = rng.uniform(0, 2 * np.pi, FIELD_WAVES)
        phase = rng.uniform(0, 2 * np.pi, FIELD_WAVES)
        k = 2 * np.pi / wavelength
        waves = np.cos(np.outer(x, k * np.cos(angle)) + np.outer(y, k * np.sin(angle)) + phase)
        field = waves.sum(axis=1) * np.sqrt(2.0 / FIELD_WAVES)
        out[:, c] = np.clip(3.0 + SCORE_AMPLITUDE * field, 1.0, 5.0)
    return out


def location_vectors(x: np.ndarray, y: np.ndarray, pano: np.ndarray, dim: int,
                     rng: np.random.Generator) -> np.ndarray:
    """Unit vectors: random Fourier features of position + panorama look + image noise."""
    frequencies = rng.normal(0.0, 1.0 / LOCATION_SCALE_M, (2, dim))
    offsets = rng.uniform(0, 2 * np.pi, dim)
    place = np.sqrt(2.0 / dim) * np.cos(np.column_stack([x, y]) @ frequencies + offsets)
    look = rng.standard_normal((pano.max() + 1, dim)) / np.sqrt(dim)
    noise = rng.standard_normal((len(x), dim)) / np.sqrt(dim)
    vectors = place + LOOK_GAIN * look[pano] + NOISE_GAIN * noise
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def _write_geojson(path: Path, names: list[str], lon: np.ndarray, lat: np.ndarray, averages: np.ndarray,
                   city: list[str] | None = None) -> None:
    features = [{"type": "Feature", "properties": {
        "image_id": i + 1, "url": URL_PREFIX + name, **({"city": city[i]} if city else {}),
        **{f"average_{c}": None if np.isnan(averages[i, j]) else float(averages[i, j])
           for j, c in enumerate(CATEGORIES)}},
        "geometry": {"type": "Point", "coordinates": [round(float(lon[i]), 7), round(float(lat[i]), 7)]}}
        for i, name in enumerate(names)]
    with atomic_open(path, "w", encoding="utf-8") as handle:
        json.dump({"type": "FeatureCollection", "features": features}, handle)
        handle.write("\n")
