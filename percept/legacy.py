"""Old flat module paths (``percept.knn``, ``percept.survey`` …), kept importable for one release.

Importing an old path warns (DeprecationWarning) and gives the module at its new place,
so notebooks written against 0.1 keep working while they move to the new names.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings

MOVED = {
    "survey": "data.survey", "ratings": "data.ratings", "rating_filters": "data.filters",
    "embeddings": "data.embeddings", "image_files": "data.images", "locations": "data.locations",
    "knn": "model.knn", "weighting": "model.weighting", "neighbour_lists": "model.neighbour_lists",
    "scoring": "model.scoring", "model_io": "model.io",
    "encoding": "encoders.pipeline", "encode_cache": "encoders.cache", "external_encoding": "encoders.clip_retrieval",
    "env_keys": "environment.keys", "environment_vectors": "environment.text_vectors",
    "prompt_files": "environment.prompt_files",
    "dataset": "study.dataset", "evaluation": "study.holdout", "crossval": "study.crossval", "groups": "study.groups",
    "results_log": "study.results_log", "report": "study.report", "hexgrid": "study.hexgrid",
    "rating": "city.rating", "spatial_index": "city.spatial_index", "mapillary": "city.mapillary",
    "simulation": "synthetic.simulation", "sample": "synthetic.sample", "synthetic": "synthetic.vectors",
}


class _Alias:
    """A loader (importlib's protocol) that makes the old module a thin stand-in whose names are looked up
    in the new module."""

    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        target = importlib.import_module(self.target)
        module.__getattr__ = lambda name: getattr(target, name)
        module.__dir__ = lambda: dir(target)


class LegacyFinder:
    """A meta path finder (importlib's protocol; its base classes would import importlib.resources at every
    start) that finds ``percept.<old name>`` and answers with the module at its new path."""

    def find_spec(self, fullname, path=None, target=None):
        prefix, _, name = fullname.partition(".")
        if prefix != "percept" or name not in MOVED:
            return None
        new = f"percept.{MOVED[name]}"
        warnings.warn(f"{fullname} moved to {new}; the old path goes away in the next release",
                      DeprecationWarning, stacklevel=2)
        return importlib.util.spec_from_loader(fullname, _Alias(new))


def install() -> None:
    if not any(isinstance(finder, LegacyFinder) for finder in sys.meta_path):
        sys.meta_path.append(LegacyFinder())
