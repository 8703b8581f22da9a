"""Survey image names of a model's vectors, for the Image Demo's thumbnails.

Models exported by this toolkit record each sample's survey image; models without
that record show similar survey samples without names or thumbnails.
"""

from __future__ import annotations

from percept.model.io import ExportedModel
from percept.model.scoring import MultiScorer


def sample_image_names(model: ExportedModel, scorer: MultiScorer) -> list[str | None]:
    """For each distinct model vector, the image name of its first sample that has one."""
    names: list[str | None] = [None] * scorer.n_vectors
    for category in scorer.categories:
        recorded = (model.images or {}).get(category)
        if recorded is None or len(recorded) != scorer.n_samples(category):
            continue
        for vector, name in zip(scorer.sample_vectors(category), recorded):
            if names[vector] is None:
                names[vector] = name
    return names
