"""Percept KNN: model how people perceive streets from survey ratings and CLIP vectors."""

from percept.errors import PerceptError

__version__ = "0.1.0"  # the one place the version is written: pyproject.toml reads it from here
__all__ = ["PerceptError", "__version__"]
