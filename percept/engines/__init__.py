"""Engines decide where batches run: ``local`` (this process) or ``ray`` (a Ray cluster).

Both run the same stages (reading, encoding and writing parts; scoring chunks) and write the
same files, so every other command reads their output unchanged.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from percept.engines.options import ENGINES, EngineOptions

__all__ = ["ENGINES", "EngineOptions", "encode_images", "rate", "session"]


def _engine(options: EngineOptions):
    if options.engine == "ray":
        from percept.engines import ray

        return ray
    from percept.engines import local

    return local


def session(options: EngineOptions, quiet: bool = False):
    """A context in which several runs share one engine (one Ray connection for encode then rate)."""
    if options.engine == "ray":
        from percept.engines.ray import session as ray_session

        return ray_session(options.ray_address, quiet)
    return contextlib.nullcontext()


def encode_images(images_dir, out_dir, model_name: str, options: EngineOptions, *, quiet: bool = False,
                  **encoding):
    """Encode a folder of images into clip-retrieval's layout and manifest on the chosen engine
    (``encoding``: the keyword options of :func:`percept.encoders.pipeline.encode_images`)."""
    return _engine(options).encode_images(images_dir, out_dir, model_name, options, quiet=quiet, **encoding)


def rate(model, embeddings_dir: str | Path, out: str | Path, options: EngineOptions, *, quiet: bool = False,
         **rating_options):
    """Score every embedding row into ``out`` on the chosen engine (``rating_options``: the keyword
    options of :func:`percept.city.rating.rate`)."""
    return _engine(options).rate(model, embeddings_dir, out, options, quiet=quiet, **rating_options)
