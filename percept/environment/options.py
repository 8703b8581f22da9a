"""The typed options of environmental features: how prompts are made and joined with image vectors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from percept.environment.combining import COMBINE_METHODS
from percept.environment.prompts import PROMPT_STYLES
from percept.errors import PerceptError


@dataclass(frozen=True)
class EnvironmentOptions:
    """Combine each image vector with its prompt's text vector by ``method``.

    Prompts are generated in ``prompt_style`` from the survey's environmental
    properties, or read from ``text_dir`` when it is given.
    """

    method: str = "append"
    prompt_style: int = 0
    text_dir: Path | None = None

    def __post_init__(self):
        if self.method not in COMBINE_METHODS:
            raise PerceptError(f"--environmental-method must be one of {', '.join(COMBINE_METHODS)}, "
                               f"got {self.method!r}")
        if self.prompt_style not in PROMPT_STYLES:
            raise PerceptError(f"--prompt-style must be 0 or 1, got {self.prompt_style}")

    @property
    def label(self) -> str:
        """Short label recorded with results and models, e.g. ``slerp+p1``."""
        return f"{self.method}+p{self.prompt_style}"
