"""Environmental prompts and their text vectors for new places, so environmental models can rate them.

The prompts are built from a file of environmental variables (``percept environment``'s output)
exactly as the drop-in builds them from a survey; style 1 takes its quintiles over the places in
that file. Images are matched to places by file name, then by name without extension.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from percept.data.embeddings import write_part
from percept.data.locations import location_key, location_stem
from percept.environment.clauses import mean_of_clauses, split_clauses
from percept.environment.place_files import EnvironmentTable, read_environment_table
from percept.environment.prompts import build_prompts
from percept.errors import PerceptError


def image_prompts(table: EnvironmentTable, names: list[str], style: int,
                  source: str = "the environment file") -> list[str]:
    """The prompt of each image in ``names`` (in order) from its place's variables."""
    prompts = build_prompts(table.records, style).prompts
    by_name = dict(zip(table.names, prompts))
    by_stem = {location_stem(n): p for n, p in zip(table.names, prompts)}
    found, missing = [], []
    for name in names:
        prompt = by_name.get(location_key(name), by_stem.get(location_stem(name)))
        if prompt is None:
            missing.append(location_key(name))
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
                          prompt_encoding: str = "whole") -> Path:
    """Encode each image's environmental prompt (rows in ``names`` order) with ``clip_model`` as the model was
    trained (whole prompts, or the mean of their clauses); return the folder of text embeddings."""
    from percept.encoders.pipeline import encode_texts

    prompts = image_prompts(read_environment_table(environment_file), names, style, str(environment_file))
    out = text_dir_for(embeddings_dir, style)
    if prompt_encoding == "whole":
        encode_texts(names, prompts, out, clip_model, pretrained=pretrained, quiet=quiet)
        return out
    out = out.with_name(out.name + "-clauses")
    index = split_clauses(prompts)
    clause_names = [f"clause{i:05d}" for i in range(len(index.clauses))]
    clauses = encode_texts(clause_names, index.clauses, out / "clauses", clip_model, pretrained=pretrained,
                           quiet=quiet)
    vectors = mean_of_clauses(np.asarray(clauses.vectors, dtype=np.float64), index)
    write_part(out, "text", 0, vectors, pd.DataFrame({"caption": prompts, "image_name": names}))
    return out
