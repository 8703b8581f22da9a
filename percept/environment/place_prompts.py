"""Environmental prompts and their text vectors for new places, so environmental models can rate them.

The prompts are built from a file of environmental variables (``percept environment``'s output)
exactly as the drop-in builds them from a survey. Style 1 ranks each value against the survey's
quintile reference recorded in the model, so a place's prompt does not depend on the other places
in its file; models without one (older files) fall back to quintiles over the file's places.
Images are matched to places by file name, then by name without extension.

Text vectors are made with the same arithmetic as the model's: whole prompts as encoded, clause
prompts as the float64 mean of their clauses, stored unrounded so that a survey image's combined
vector is the model's own bit for bit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from percept.atomic import atomic_path
from percept.data.locations import location_key, location_stem
from percept.environment.clauses import mean_of_clauses, split_clauses
from percept.environment.place_files import EnvironmentTable, read_environment_table
from percept.environment.prompts import QuintileReference, build_prompts
from percept.errors import PerceptError

Log = Callable[[str], None]
logger = logging.getLogger(__name__)


def image_prompts(table: EnvironmentTable, names: list[str], style: int, source: str = "the environment file",
                  reference: QuintileReference | None = None, log: Log = logger.warning) -> list[str]:
    """The prompt of each image in ``names`` (in order) from its place's variables; style 1 ranks them
    against ``reference`` (the survey's), else within the file with a warning."""
    if style == 1 and reference is None:
        log(f"warning: the model records no survey quintiles (an older model file), so the places in "
            f"{source} are ranked among themselves and a place's prompt depends on the others in the file: "
            "re-export the model to rank them as the survey was")
    prompt_set = build_prompts(table.records, style, reference)
    if prompt_set.unranked:
        log(f"warning: the survey had no values of {len(prompt_set.unranked)} environmental variables in {source} "
            f"(first: {prompt_set.unranked[0]}); the prompts leave them out, as the survey's did")
    prompts = prompt_set.prompts
    by_name = dict(zip(table.names, prompts))
    by_stem = {location_stem(n): p for n, p in zip(table.names, prompts)}
    found: list[str] = []
    missing: list[str] = []
    for name in names:
        prompt = by_name.get(location_key(name), by_stem.get(location_stem(name)))
        if prompt is None:
            missing.append(location_key(name))
        else:
            found.append(prompt)
    if missing:
        raise PerceptError(f"{len(missing)} of {len(names)} images have no environmental variables in {source} "
                           f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}): compute them with "
                           "'percept environment --locations FILE --osm EXTRACT -o FILE'")
    return found


def text_dir_for(embeddings_dir: str | Path, style: int) -> Path:
    """Where rating keeps the prompt vectors: ``text-prompt<style>-<embeddings folder>`` beside the embeddings."""
    embeddings_dir = Path(embeddings_dir)
    return embeddings_dir.parent / f"text-prompt{style}-{embeddings_dir.name}"


def place_text_embeddings(environment_file: str | Path, embeddings_dir: str | Path, names: list[str],
                          clip_model: str, style: int, *, pretrained: str | None = None, quiet: bool = False,
                          prompt_encoding: str = "whole", reference: QuintileReference | None = None,
                          log: Log = logger.warning) -> Path:
    """Encode each image's environmental prompt (rows in ``names`` order) with ``clip_model`` as the model was
    trained (whole prompts, or the mean of their clauses; style 1 ranked against the survey's ``reference``);
    return the folder of text embeddings."""
    from percept.encoders.pipeline import encode_texts

    prompts = image_prompts(read_environment_table(environment_file), names, style, str(environment_file),
                            reference, log)
    out = text_dir_for(embeddings_dir, style)
    if prompt_encoding == "whole":
        encode_texts(names, prompts, out, clip_model, pretrained=pretrained, quiet=quiet)
        return out
    out = out.with_name(out.name + "-clauses")
    index = split_clauses(prompts)
    clause_names = [f"clause{i:05d}" for i in range(len(index.clauses))]
    clauses = encode_texts(clause_names, index.clauses, out / "clauses", clip_model, pretrained=pretrained,
                           quiet=quiet)
    write_exact_text_part(out, mean_of_clauses(clauses.vectors, index),
                          pd.DataFrame({"caption": prompts, "image_name": names}))
    return out


def write_exact_text_part(root: Path, vectors: np.ndarray, metadata: pd.DataFrame) -> None:
    """Text vectors as part 0 of ``root`` (clip-retrieval layout), at their own precision: a float16
    part (as encoders write) would round the clause means away from the model's vectors."""
    with atomic_path(root / "metadata" / "metadata_0.parquet") as tmp:
        metadata.to_parquet(tmp, index=False)
    with atomic_path(root / "text_emb" / "text_emb_0.npy") as tmp, open(tmp, "wb") as handle:
        np.save(handle, np.asarray(vectors))
