"""Survey image names of a model's vectors, for the Image Demo's thumbnails.

A model may hold ``<category>_images`` (one image name per sample, beside ``<category>_vecs``);
models without them show similar survey samples without names or thumbnails.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from percept.scoring import MultiScorer


def sample_image_names(model_path: str | Path, scorer: MultiScorer) -> list[str | None]:
    """For each distinct model vector, the image name of its first sample that has one."""
    names: list[str | None] = [None] * scorer.n_vectors
    with np.load(model_path, allow_pickle=False) as archive:
        for category in scorer.categories:
            key = f"{category}_images"
            if key not in archive.files or len(archive[key]) != scorer.n_samples(category):
                continue
            for vector, name in zip(scorer.sample_vectors(category), archive[key].astype(str)):
                if names[vector] is None:
                    names[vector] = name
    return names
