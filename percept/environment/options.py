"""The typed options of environmental features: how prompts are made and joined with image vectors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from percept.environment.combining import COMBINE_METHODS
from percept.environment.prompts import PROMPT_STYLES
from percept.errors import PerceptError

PROMPT_ENCODINGS = ("whole", "clauses")


@dataclass(frozen=True)
class EnvironmentOptions:
    """Combine each image vector with its prompt's text vector by ``method``.

    Prompts are generated in ``prompt_style`` from the survey's environmental
    properties, or read from ``text_dir`` when it is given. ``prompt_encoding``:
    ``whole`` encodes each prompt as one text (as the original tool did, so a CLIP
    window cuts long prompts); ``clauses`` encodes every ``<key> is <value>`` clause
    on its own and takes the normalised mean.
    """

    method: str = "append"
    prompt_style: int = 0
    text_dir: Path | None = None
    prompt_encoding: str = "whole"

    def __post_init__(self):
        if self.method not in COMBINE_METHODS:
            raise PerceptError(f"--environmental-method must be one of {', '.join(COMBINE_METHODS)}, "
                               f"got {self.method!r}")
        if self.prompt_style not in PROMPT_STYLES:
            raise PerceptError(f"--prompt-style must be 0 or 1, got {self.prompt_style}")
        if self.prompt_encoding not in PROMPT_ENCODINGS:
            raise PerceptError(f"--prompt-encoding must be one of {', '.join(PROMPT_ENCODINGS)}, "
                               f"got {self.prompt_encoding!r}")

    @property
    def label(self) -> str:
        """Short label recorded with results and models: ``slerp+p1``, or ``slerp+p1+clauses``."""
        whole = self.prompt_encoding == "whole"
        return f"{self.method}+p{self.prompt_style}" + ("" if whole else f"+{self.prompt_encoding}")
