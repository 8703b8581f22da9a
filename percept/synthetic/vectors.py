"""A vector-level synthetic survey for benchmarks: no images, only vectors, survey and ratings.

Scene features are drawn from the street profiles (the same latent model as the image
sample, ``percept.synthetic.simulation``) and set the true scores. Each image's vector is
``BASE + (features - FEATURE_CENTRE) @ SCENE_AXES + panorama look + noise``, L2-normalised:
cosine neighbours share scene features, so KNN on the vectors predicts the scores, and
crops of one panorama lie close together. Vectors are made in fixed chunks with their own
random streams, so they do not depend on how many parts are written, and memory stays
bounded by one part.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from percept.data.embeddings import write_part
from percept.synthetic.simulation import (
    FEATURE_CENTRE,
    FEATURES,
    PROFILE_KEYS,
    SUNNY_SHARE,
    SampleInfo,
    average_ratings,
    claim_output_dir,
    place_images,
    simulate_environment,
    simulate_ratings,
    street_profiles,
    summarise,
    true_scores,
    write_survey_files,
)

CHUNK = 4096
SCENE_GAIN = 1.0  # length of the scene axes relative to the shared base direction
PANORAMA_GAIN = 0.35
PANORAMA_RANK = 16
NOISE_NORM = 0.45  # expected length of the per-image noise
IMAGE_PATH = "/data/img/ams/"


def generate_synthetic_survey(out_dir: str | Path, n_images: int = 20000, dim: int = 1024,
                              ratings_per_image: float = 3.0, seed: int = 0, parts: int = 1,
                              force: bool = False) -> SampleInfo:
    """Write embeddings/ (clip-retrieval layout), data.geojson, demo.csv, locations.csv and scenes.csv.

    ``out_dir`` must be new or empty unless ``force`` (see :func:`claim_output_dir`).
    """
    if n_images < 1 or dim < 2 or not 1 <= parts <= n_images:
        raise ValueError(f"need n_images >= 1, dim >= 2 and 1 <= parts <= n_images; got {n_images}, {dim}, {parts}")
    place_seq, scene_seq, rating_seq, env_seq, vector_seq = np.random.SeedSequence(seed).spawn(5)
    places = place_images(n_images, np.random.default_rng(place_seq))
    root = claim_output_dir(out_dir, "vectors", seed, _owned_files(parts), force)
    scene_rng = np.random.default_rng(scene_seq)
    profiles = street_profiles(places.n_panos, scene_rng)
    sunny = scene_rng.random(places.n_panos) < SUNNY_SHARE
    features = scene_features(profiles[places.pano], sunny[places.pano], scene_rng)
    scores = true_scores(features)
    ratings = simulate_ratings(scores, ratings_per_image, np.random.default_rng(rating_seq))
    averages = average_ratings(ratings, n_images)
    environment = simulate_environment(profiles, np.random.default_rng(env_seq))
    environment = {k: v[places.pano] for k, v in environment.items()}
    _write_vectors(root / "embeddings", VectorModel(dim, places.pano, places.n_panos, vector_seq),
                   features, places.names, parts)
    write_survey_files(root, places, averages, environment, ratings, features, scores)
    return summarise(root, "vectors", places, ratings, averages, dim)


def _owned_files(parts: int) -> list[str]:
    vectors = [f"embeddings/{kind}/{kind}_{i}.{ext}" for i in range(parts)
               for kind, ext in (("img_emb", "npy"), ("metadata", "parquet"))]
    return vectors + ["data.geojson", "demo.csv", "locations.csv", "scenes.csv"]


def scene_features(profiles: np.ndarray, sunny: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n, 10) scene features drawn from street profiles, distributed like those measured in the drawings."""
    p = dict(zip(PROFILE_KEYS, profiles.T))
    n = len(profiles)
    noise = rng.normal(0.0, 1.0, (n, 3))
    values = {
        "green": 0.7 * p["green"] + 0.12 * noise[:, 0],
        "sky": 0.1 + 0.3 * p["openness"] + 0.06 * noise[:, 1],
        "pavement": 0.1 + 0.5 * p["walk"] + 0.1 * noise[:, 2],
        "cycle_lane": (rng.random(n) < p["cycle"]) * rng.uniform(0.6, 1.0, n),
        "cars": rng.binomial(6, p["traffic"]) / 6,
        "people": rng.binomial(8, p["activity"]) / 8,
        "shops": rng.binomial(4, p["commerce"]) / 4,
        "lamps": rng.binomial(4, p["lighting"]) / 4,
        "disorder": rng.binomial(8, p["disorder"]) / 8,
        "sun": sunny.astype(np.float64),
    }
    return np.clip(np.stack([values[f] for f in FEATURES], axis=1), 0.0, 1.0)


class VectorModel:
    """Fixed random directions: a shared base, one axis per scene feature, a low-rank panorama look."""

    def __init__(self, dim: int, pano: np.ndarray, n_panos: int, seq: np.random.SeedSequence):
        axes_seq, look_seq, noise_seq = seq.spawn(3)
        self.chunk_seqs = noise_seq.spawn(-(-len(pano) // CHUNK))
        axes = np.random.default_rng(axes_seq).standard_normal((1 + len(FEATURES) + PANORAMA_RANK, dim))
        axes /= np.sqrt(dim)
        self.base, self.scene_axes, self.look_axes = axes[0], axes[1:1 + len(FEATURES)], axes[1 + len(FEATURES):]
        look_rng = np.random.default_rng(look_seq)
        self.look = look_rng.standard_normal((n_panos, PANORAMA_RANK)) / np.sqrt(PANORAMA_RANK)
        self.pano, self.dim = pano, dim

    def chunk(self, index: int, features: np.ndarray) -> np.ndarray:
        """L2-normalised float32 vectors of rows ``index * CHUNK`` onwards (``features`` are those rows)."""
        rows = slice(index * CHUNK, index * CHUNK + len(features))
        rng = np.random.default_rng(self.chunk_seqs[index])
        noise = rng.standard_normal((len(features), self.dim), dtype=np.float32)
        vectors = noise * np.float32(NOISE_NORM / np.sqrt(self.dim))
        vectors += (SCENE_GAIN * (features - FEATURE_CENTRE) @ self.scene_axes).astype(np.float32)
        vectors += (PANORAMA_GAIN * self.look[self.pano[rows]] @ self.look_axes).astype(np.float32)
        vectors += self.base.astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors


def _write_vectors(folder: Path, model: VectorModel, features: np.ndarray, names: list[str], parts: int) -> None:
    """Write ``parts`` parts of about equal size, each assembled chunk by chunk."""
    bounds = np.linspace(0, len(names), parts + 1).astype(int)
    for part, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:])):
        vectors = np.empty((stop - start, model.dim), dtype=np.float16)
        for index in range(start // CHUNK, (stop - 1) // CHUNK + 1):
            first = index * CHUNK
            chunk = model.chunk(index, features[first:first + CHUNK])
            lo, hi = max(start, first), min(stop, first + len(chunk))
            vectors[lo - start:hi - start] = chunk[lo - first:hi - first]
        metadata = pd.DataFrame({"image_path": [IMAGE_PATH + name for name in names[start:stop]]})
        write_part(folder, "img", part, vectors, metadata)
