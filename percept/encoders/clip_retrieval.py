"""Image embeddings made by the external ``clip-retrieval`` command, cached with our manifest.

clip-retrieval writes no record of its inputs, so after each run we write the
same manifest the built-in encoder writes (model, every image's path, size and
modification time). A later run reuses the folder only when the manifest still
matches the images and the model; otherwise it encodes again.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from percept.data.embeddings import Embeddings, has_embeddings, read_embeddings
from percept.data.images import find_images
from percept.encoders.cache import ImageManifest, read_manifest, write_manifest
from percept.encoders.external import run_clip_retrieval
from percept.errors import PerceptError

WEIGHTS_ID = "external:clip-retrieval"

logger = logging.getLogger(__name__)


def encode_images_external(images_dir, out_dir, model_name: str, other_args: str | None, *,
                           skip_cache: bool = False, read_only: bool = False,
                           log: Callable[[str], None] = logger.info) -> Embeddings:
    """Embeddings of the images under ``images_dir`` from clip-retrieval, reusing a matching cache."""
    images = find_images(images_dir)
    if not images:
        raise PerceptError(f"no images in {images_dir}")
    out = Path(out_dir)
    plan = ImageManifest(model_name, WEIGHTS_ID, len(images), [i.key for i in images], [i.size for i in images],
                         [i.mtime_ns for i in images], complete=True)
    if read_only:
        with tempfile.TemporaryDirectory() as scratch:
            run_clip_retrieval(images_dir, scratch, model_name, other_args)
            return read_embeddings(scratch)
    if not skip_cache and has_embeddings(out):
        if _same_inputs(read_manifest(out, "img"), plan):
            log(f"using cached embeddings in {out}")
            return read_embeddings(out)
        log(f"cached embeddings in {out} do not match these images and model: encoding again")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        run_clip_retrieval(images_dir, staging, model_name, other_args)
        read_embeddings(staging)
        write_manifest(staging, plan)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return read_embeddings(out)


def _same_inputs(old, plan: ImageManifest) -> bool:
    return (isinstance(old, ImageManifest) and old.complete and old.model == plan.model
            and old.weights_id == plan.weights_id and old.keys == plan.keys and old.sizes == plan.sizes
            and old.mtimes_ns == plan.mtimes_ns)
