"""Add environmental features to image vectors: prompts → text vectors → combined vectors.

Prompts are written to ``text-prompt<style>-<embeddings dir>/text/`` (or read from
``--environmental-text-dir``) and encoded with the same encoder family as the images:
the external ``clip-retrieval`` command or the built-in encoder. Text vectors are
matched to images by image name, never by position alone.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from percept.data.embeddings import Embeddings, has_embeddings, read_embeddings
from percept.data.survey import Survey, image_name
from percept.data.vector_checks import refuse_unusable
from percept.encoders.options import EncodingOptions
from percept.encoders.tokens import token_counter
from percept.environment.clauses import (
    SPECIAL_TOKENS,
    mean_of_clauses,
    split_clauses,
    truncation,
)
from percept.environment.combining import combine
from percept.environment.options import EnvironmentOptions
from percept.environment.prompt_files import (
    prompt_root,
    prompt_stem,
    read_prompts,
    write_prompts,
)
from percept.environment.prompts import QuintileReference, build_prompts, quintile_reference
from percept.errors import PerceptError
from percept.model.knn import l2_normalise
from percept.model.unit_rows import UnitRows

Log = Callable[[str], None]


def image_prompts(environment: EnvironmentOptions, survey: Survey, names: list[str], log: Log) -> list[str]:
    """The prompt of each image row: generated from the survey, or read from --environmental-text-dir."""
    if environment.text_dir:
        return read_prompts(environment.text_dir, names)
    prompt_set = build_prompts(survey.features, environment.prompt_style)
    if prompt_set.warning():
        log(f"warning: {prompt_set.warning()}")
    return [prompt_set.prompts[survey.by_name[image_name(n)]] for n in names]


def environment_reference(environment: EnvironmentOptions, survey: Survey) -> QuintileReference | None:
    """The survey's quintile reference that its style-1 prompts are ranked by (None for style 0, or
    prompts read from --environmental-text-dir), for new places to be ranked the same way."""
    if environment.prompt_style != 1 or environment.text_dir:
        return None
    return quintile_reference(survey.features)


def environmental_vectors(encoding: EncodingOptions, environment: EnvironmentOptions, survey: Survey,
                          names: list[str], vectors: np.ndarray | UnitRows, log: Log) -> np.ndarray:
    """Image vectors combined with their prompts' text vectors (rows unchanged, unit length).

    Image rows are combined as stored (``UnitRows.raw``), as rating combines the rows it reads, so that
    rating a survey image rebuilds its vector bit for bit (normalising a unit row again can move its last bit).
    """
    prompts = image_prompts(environment, survey, names, log)
    texts = text_vectors(encoding, environment, names, prompts, log)
    root = prompt_root(encoding.embeddings_folder, environment.prompt_style)
    refuse_unusable(texts, lambda row: f"text embeddings in {root}, row {row} ({image_name(names[row])})",
                    "encode the prompts again (--skip-cache)")
    images = vectors.raw if isinstance(vectors, UnitRows) else vectors
    return l2_normalise(combine(images, texts, environment.method))


def text_vectors(encoding: EncodingOptions, environment: EnvironmentOptions, names: list[str],
                 prompts: list[str], log: Log) -> np.ndarray:
    """One text vector per image row, from the cache when it holds exactly these prompts."""
    root = prompt_root(encoding.embeddings_folder, environment.prompt_style)
    if not encoding.read_only and not environment.text_dir:
        write_prompts(root / "text", dict(zip(names, prompts)))
    if environment.prompt_encoding == "clauses":
        index = split_clauses(prompts)
        return mean_of_clauses(distinct_text_vectors(encoding, index.clauses, root / "clauses", log), index)
    warn_truncation(encoding, prompts, log)
    if not encoding.uses_external_encoder():
        from percept.encoders.pipeline import encode_texts

        found = encode_texts(names, prompts, root, encoding.clip_model, pretrained=encoding.pretrained,
                             skip_cache=encoding.skip_cache, read_only=encoding.read_only, quiet=encoding.quiet)
        return np.asarray(found.vectors, dtype=np.float64)
    if encoding.read_only:
        with tempfile.TemporaryDirectory() as scratch:
            return _external_text_vectors(encoding, environment, names, prompts, Path(scratch), fresh=True, log=log)
    return _external_text_vectors(encoding, environment, names, prompts, root, fresh=encoding.skip_cache, log=log)


def warn_truncation(encoding: EncodingOptions, prompts: list[str], log: Log) -> None:
    """Warn when the model's text window cuts whole prompts, with the share of variables lost."""
    counter = token_counter(encoding.clip_model, encoding.pretrained)
    if counter is None:
        return
    index = split_clauses(prompts)
    own_tokens = counter.count(index.clauses) - SPECIAL_TOKENS
    message = truncation(index, own_tokens, counter.context_length).warning(encoding.clip_model)
    if message:
        log(f"warning: {message}")


def distinct_text_vectors(encoding: EncodingOptions, texts: list[str], root: Path, log: Log) -> np.ndarray:
    """One vector per distinct text (rows in the order given), cached in ``root``."""
    names = [f"clause{i:05d}" for i in range(len(texts))]
    if not encoding.uses_external_encoder():
        from percept.encoders.pipeline import encode_texts

        found = encode_texts(names, texts, root, encoding.clip_model, pretrained=encoding.pretrained,
                             skip_cache=encoding.skip_cache, read_only=encoding.read_only, quiet=encoding.quiet)
        return np.asarray(found.vectors, dtype=np.float64)
    if encoding.read_only:
        with tempfile.TemporaryDirectory() as scratch:
            return _external_distinct_vectors(encoding, names, texts, Path(scratch), fresh=True, log=log)
    return _external_distinct_vectors(encoding, names, texts, root, fresh=encoding.skip_cache, log=log)


def _external_distinct_vectors(encoding: EncodingOptions, names: list[str], texts: list[str], root: Path,
                               fresh: bool, log: Log) -> np.ndarray:
    """Distinct texts encoded by clip-retrieval; its rows are matched to the texts by caption."""
    from percept.encoders.external import run_clip_retrieval

    if not fresh and has_embeddings(root, "text"):
        rows = _rows_by_caption(read_embeddings(root, "text"), texts)
        if rows is not None:
            return rows
        log(f"cached clause embeddings in {root} do not hold these clauses; encoding again")
    source = root / "text"
    write_prompts(source, dict(zip(names, texts)))
    run_clip_retrieval(source, root, encoding.clip_model, encoding.other_clip_retrieval_args)
    rows = _rows_by_caption(read_embeddings(root, "text"), texts)
    if rows is None:
        raise PerceptError(f"clip-retrieval's text embeddings in {root} do not hold every clause written to {source}")
    return rows


def _rows_by_caption(found: Embeddings, texts: list[str]) -> np.ndarray | None:
    row_of = {caption.removesuffix("\n"): row for row, caption in enumerate(found.names)}
    rows = [row_of[text] for text in texts if text in row_of]
    if len(rows) < len(texts):
        return None
    return np.asarray(found.vectors[rows], dtype=np.float64)


def _external_text_vectors(encoding: EncodingOptions, environment: EnvironmentOptions, names: list[str],
                           prompts: list[str], root: Path, fresh: bool, log: Log) -> np.ndarray:
    from percept.encoders.external import run_clip_retrieval

    source = Path(environment.text_dir) if environment.text_dir else root / "text"
    if not source.exists():
        write_prompts(source, dict(zip(names, prompts)))
    if not fresh and has_embeddings(root, "text"):
        try:
            return match_text_rows(read_embeddings(root, "text"), source, names, prompts)
        except PerceptError as stale:
            log(f"cached text embeddings in {root} are stale ({stale}); encoding again")
    run_clip_retrieval(source, root, encoding.clip_model, encoding.other_clip_retrieval_args)
    return match_text_rows(read_embeddings(root, "text"), source, names, prompts)


def match_text_rows(found: Embeddings, source: Path, names: list[str], prompts: list[str]) -> np.ndarray:
    """Text vectors in image-row order: clip-retrieval encodes prompt files in sorted key order.

    Each row's caption must equal its image's prompt, otherwise the cache is stale.
    """
    keys = sorted(p.relative_to(source).as_posix()[: -len(".txt")] for p in source.rglob("*.txt"))
    if len(keys) != len(found.names):
        raise PerceptError(f"{len(found.names)} text vectors for {len(keys)} prompt files")
    row_of = {key: row for row, key in enumerate(keys)}
    rows = []
    for name, prompt in zip(names, prompts):
        row = row_of.get(prompt_stem(name))
        if row is None or found.names[row].removesuffix("\n") != prompt:
            raise PerceptError(f"the text vector for {image_name(name)} does not belong to its prompt")
        rows.append(row)
    return np.asarray(found.vectors[rows], dtype=np.float64)
