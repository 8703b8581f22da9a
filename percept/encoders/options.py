"""Where a survey's image vectors come from: the typed options of reading or encoding embeddings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from percept.data.embeddings import default_embeddings_dir
from percept.encoders.precision import check_precision
from percept.errors import PerceptError

ENCODERS = ("auto", "builtin", "clip-retrieval")


@dataclass(frozen=True)
class EncodingOptions:
    """Read embeddings from ``embeddings_dir``, or encode ``images_dir`` first with ``clip_model``.

    ``encoder``: ``builtin``, ``clip-retrieval`` (the external command, as the original tool
    calls it) or ``auto`` (clip-retrieval when it is on PATH). ``precision``: the built-in encoder's
    arithmetic (:mod:`percept.encoders.precision`). ``skip_missing``: the built-in encoder goes on without
    images it cannot reach (a warning) instead of failing the run once the rest is encoded.
    """

    clip_model: str
    images_dir: Path | None = None
    embeddings_dir: Path | None = None
    encoder: str = "auto"
    pretrained: str | None = None
    other_clip_retrieval_args: str | None = None
    skip_cache: bool = False
    read_only: bool = False
    quiet: bool = False
    precision: str = "auto"
    skip_missing: bool = False

    def __post_init__(self):
        if self.encoder not in ENCODERS:
            raise PerceptError(f"--encoder must be one of {', '.join(ENCODERS)}, got {self.encoder!r}")
        check_precision(self.precision)

    @property
    def embeddings_folder(self) -> Path:
        """The embeddings folder: as given, else the default name for the model."""
        return Path(self.embeddings_dir or default_embeddings_dir(self.clip_model))

    def uses_external_encoder(self) -> bool:
        """The original calls clip-retrieval; we do too when it is on PATH, else encode ourselves."""
        if self.encoder == "auto":
            from percept.encoders.external import external_available

            return external_available()
        return self.encoder == "clip-retrieval"
