"""Read and write embeddings in clip-retrieval's layout.

``DIR/img_emb/img_emb_N.npy`` (float16 rows) beside ``DIR/metadata/metadata_N.parquet``
(first column ``image_path``); text embeddings use ``text_emb/text_emb_N.npy`` and
the metadata column ``caption``. Parts are read in numeric order of N.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow
import pyarrow.parquet as pq

from percept.atomic import atomic_path
from percept.errors import PerceptError

if TYPE_CHECKING:
    import pandas as pd

KINDS = {"img": "image_path", "text": "caption"}


@dataclass
class Embeddings:
    """Rows of vectors and, for each, the metadata column naming it (image path or caption)."""

    names: list[str]
    vectors: np.ndarray
    metadata: pyarrow.Table


def default_embeddings_dir(model: str) -> str:
    """The original tool's default: ``embeddings-`` + the model name with ``/`` replaced by ``_``."""
    return "embeddings-" + model.replace("/", "_")


def part_paths(root: str | Path, kind: str = "img") -> list[tuple[Path, Path]]:
    """(vectors, metadata) file pairs of every part, in numeric order."""
    root = Path(root)
    pattern = re.compile(rf"^{kind}_emb_(\d+)\.npy$")
    found = []
    folder = root / f"{kind}_emb"
    if folder.is_dir():
        for path in folder.iterdir():
            match = pattern.match(path.name)
            if match:
                found.append((int(match.group(1)), path))
    return [(p, root / "metadata" / f"metadata_{n}.parquet") for n, p in sorted(found)]


def has_embeddings(root: str | Path, kind: str = "img") -> bool:
    return bool(part_paths(root, kind))


def required_parts(root: Path, kind: str = "img") -> list[tuple[Path, Path]]:
    """:func:`part_paths`, or a PerceptError naming the expected files when there are none."""
    parts = part_paths(root, kind)
    if not parts:
        raise PerceptError(f"no embeddings in {root}: expected {root}/{kind}_emb/{kind}_emb_0.npy and "
                           f"{root}/metadata/metadata_0.parquet (give --images-dir to encode images)")
    return parts


def check_row_counts(vec_path: Path, vec_rows: int, meta_path: Path, meta_rows: int) -> None:
    """A part's vectors and metadata must have one row per image."""
    if vec_rows != meta_rows:
        raise PerceptError(f"{vec_path} has {vec_rows} rows but {meta_path} has {meta_rows}: "
                           "the embeddings are incomplete, re-encode them (--skip-cache)")


def read_embeddings(root: str | Path, kind: str = "img") -> Embeddings:
    """Read every part of a clip-retrieval embeddings folder, checking rows against metadata."""
    root = Path(root)
    column = KINDS[kind]
    vectors, frames = [], []
    for vec_path, meta_path in required_parts(root, kind):
        part_vectors = _load_npy(vec_path)
        meta = read_metadata(meta_path, column)
        check_row_counts(vec_path, len(part_vectors), meta_path, len(meta))
        vectors.append(part_vectors)
        frames.append(meta)
    metadata = pyarrow.concat_tables(frames, promote_options="default")
    dims = {v.shape[1] for v in vectors if v.ndim == 2}
    if len(dims) > 1:
        raise PerceptError(f"embedding parts in {root} have different dimensions {sorted(dims)}: re-encode them")
    stacked = vectors[0] if len(vectors) == 1 else np.concatenate(vectors)
    return Embeddings([str(name) for name in metadata.column(column).to_pylist()], stacked, metadata)


def _load_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise PerceptError(f"cannot read embeddings file {path} ({exc}): re-encode the images") from None
    if array.ndim != 2:
        raise PerceptError(f"{path} holds an array of shape {array.shape}, not rows of vectors: re-encode")
    return array


def read_metadata(path: Path, column: str, names_only: bool = False) -> pyarrow.Table:
    """A part's metadata table (just the naming ``column`` with ``names_only``), checked."""
    if not path.exists():
        raise PerceptError(f"metadata file {path} is missing: the embeddings are incomplete, re-encode them")
    try:
        table = pq.read_table(path, columns=[column] if names_only else None)
    except (OSError, pyarrow.ArrowException) as exc:
        raise PerceptError(f"cannot read metadata file {path} ({exc}): re-encode the images") from None
    if column not in table.column_names:
        raise PerceptError(f"metadata file {path} has no {column!r} column: is this a clip-retrieval output?")
    return table


def write_part(root: str | Path, kind: str, index: int, vectors: np.ndarray, metadata: pd.DataFrame) -> None:
    """Write one part atomically: metadata first, then vectors (a part counts once its vectors exist)."""
    root = Path(root)
    if KINDS[kind] not in metadata.columns:
        raise ValueError(f"metadata for {kind} embeddings needs a {KINDS[kind]!r} column")
    with atomic_path(root / "metadata" / f"metadata_{index}.parquet") as tmp:
        metadata.to_parquet(tmp, index=False)
    with atomic_path(root / f"{kind}_emb" / f"{kind}_emb_{index}.npy") as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, np.asarray(vectors, dtype=np.float16))
