"""The local engine: batches run in this process (and its DataLoader workers or scoring threads)."""

from __future__ import annotations

from pathlib import Path

from percept.city import rating
from percept.data.embeddings import Embeddings
from percept.engines.options import EngineOptions
from percept.model.io import ExportedModel


def encode_images(images_dir, out_dir, model_name: str, options: EngineOptions, *, quiet: bool = False,
                  **encoding) -> Embeddings:
    """:func:`percept.encoders.pipeline.encode_images` with ``options.workers`` decoding processes (``encoding``
    includes ``precision``)."""
    from percept.encoders import pipeline  # only encoding needs it: rating starts without it

    return pipeline.encode_images(images_dir, out_dir, model_name, num_workers=options.workers, quiet=quiet,
                                  **encoding)


def rate(model: ExportedModel, embeddings_dir: str | Path, out: str | Path, options: EngineOptions, *,
         quiet: bool = False, **rating_options) -> rating.RateSummary:
    """:func:`percept.city.rating.rate` on ``options.device`` (``options.workers`` threads on the CPU)."""
    return rating.rate(model, embeddings_dir, out, device=options.device, threads=options.workers, quiet=quiet,
                       **rating_options)
