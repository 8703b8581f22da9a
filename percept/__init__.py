"""Percept KNN: model how people perceive streets from survey ratings and CLIP vectors."""

from percept import legacy
from percept.errors import PerceptError

__version__ = "0.1.0"
__all__ = ["PerceptError", "__version__"]

legacy.install()
