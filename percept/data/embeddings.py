"""Read and write embeddings in clip-retrieval's layout.

``DIR/img_emb/img_emb_N.npy`` (float16 rows) beside ``DIR/metadata/metadata_N.parquet``
(first column ``image_path``); text embeddings use ``text_emb/text_emb_N.npy`` and
the metadata column ``caption``. Parts are read in numeric order of N. Every row read
is checked: NaN or infinite values are refused, naming the file and row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from percept.atomic import atomic_path
from percept.data import npy
from percept.data.vector_checks import Where, check_rows, refuse_nonfinite
from percept.errors import PerceptError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow

KINDS = {"img": "image_path", "text": "caption"}
REENCODE = "re-encode the images (--skip-cache)"
#: Characters a default folder name may keep; any other (``:``, ``/``, spaces, ...) becomes ``_``.
UNSAFE_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]")


@dataclass
class Embeddings:
    """Rows of vectors and, for each, the metadata column naming it (image path or caption).

    ``files`` lists, for embeddings read from disk, each part's vector file and its row
    count, so that a row can be traced to the file holding it.
    """

    names: list[str]
    vectors: np.ndarray
    metadata: pyarrow.Table | None  # None when read with ``metadata=False``
    files: list[tuple[Path, int]] = field(default_factory=list)
    _zero_rows: np.ndarray | None = field(default=None, repr=False)

    def zero_rows(self, folder: str | Path = "embeddings") -> np.ndarray:
        """Positions of the all-zero rows; refuses NaN or infinite rows (naming file and row) on first use.

        ``folder`` names the embeddings in messages when the rows were not read from files.
        """
        if self._zero_rows is None:
            check = check_rows(self.vectors)
            refuse_nonfinite(check, lambda row: self.describe_row(row, folder), REENCODE)
            self._zero_rows = check.zero
        return self._zero_rows

    def describe_row(self, row: int, folder: str | Path = "embeddings") -> str:
        """``FILE row R (NAME)`` for a row read from disk (R counts from 0 within the file), else
        ``embeddings in FOLDER, row R (NAME)``."""
        start = 0
        for path, rows in self.files:
            if row < start + rows:
                return f"{path} row {row - start} ({self.names[row]})"
            start += rows
        return f"embeddings in {folder}, row {row} ({self.names[row]})"


def embeddings_dir_name(model: str) -> str:
    """The default folder: ``embeddings-`` + the model name with every character that pyarrow or a
    shell treats specially (``:``, ``/``, spaces, ...) replaced by ``_``, e.g. ``embeddings-percept_tiny``."""
    return "embeddings-" + UNSAFE_NAME_CHARACTERS.sub("_", model)


def legacy_embeddings_dir_name(model: str) -> str:
    """The original tool's default: ``embeddings-`` + the model name with only ``/`` replaced by ``_``."""
    return "embeddings-" + model.replace("/", "_")


def default_embeddings_dir(model: str) -> str:
    """:func:`embeddings_dir_name`, or the original tool's name when a cache exists only under that."""
    name, legacy = embeddings_dir_name(model), legacy_embeddings_dir_name(model)
    if legacy != name and Path(legacy).is_dir() and not Path(name).exists():
        return legacy
    return name


def arrow_path(path: str | Path) -> str:
    """``path`` made absolute, so that pyarrow never reads a relative ``a:b/...`` as a URI scheme."""
    return str(Path(path).absolute())


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


def read_embeddings(root: str | Path, kind: str = "img", metadata: bool = True) -> Embeddings:
    """Read every part of a clip-retrieval embeddings folder, checking rows against metadata.

    With ``metadata=False`` only the naming column is read (without loading pyarrow when the
    files allow) and ``Embeddings.metadata`` is None.
    """
    root = Path(root)
    column = KINDS[kind]
    vectors: list[np.ndarray] = []
    frames: list[pyarrow.Table] = []
    files: list[tuple[Path, int]] = []
    zero: list[np.ndarray] = []
    names: list[str] = []
    for vec_path, meta_path in required_parts(root, kind):
        part_vectors = _load_npy(vec_path)
        if metadata:
            meta = read_metadata(meta_path, column)
            part_names = meta.column(column).to_pylist()
            frames.append(meta)
        else:
            part_names = read_names(meta_path, column)
        check_row_counts(vec_path, len(part_vectors), meta_path, len(part_names))
        check = check_rows(part_vectors)
        refuse_nonfinite(check, _row_label(vec_path, part_names), REENCODE)
        zero.append(check.zero + sum(rows for _, rows in files))
        vectors.append(part_vectors)
        names += part_names
        files.append((vec_path, len(part_vectors)))
    table = None
    if metadata:
        import pyarrow

        table = pyarrow.concat_tables(frames, promote_options="default")
    dims = {v.shape[1] for v in vectors if v.ndim == 2}
    if len(dims) > 1:
        raise PerceptError(f"embedding parts in {root} have different dimensions {sorted(dims)}: re-encode them")
    stacked = vectors[0] if len(vectors) == 1 else np.concatenate(vectors)
    return Embeddings([str(name) for name in names], stacked, table, files, np.concatenate(zero))


def _row_label(path: Path, names: list[str]) -> Where:
    return lambda row: f"{path} row {row} ({names[row]})"


def read_names(path: Path, column: str) -> list[str]:
    """A metadata file's naming column, read without pyarrow where :mod:`.parquet_names` can."""
    from percept.data.parquet_names import Unsupported, read_string_column

    if path.exists():
        try:
            names = read_string_column(path, column)
        except (Unsupported, IndexError, KeyError, ValueError, UnicodeDecodeError):
            pass  # pyarrow reads it, or says what is wrong
        else:
            present = [name for name in names if name is not None]
            if len(present) < len(names):
                raise PerceptError(f"metadata file {path}: row {names.index(None)} has no {column}: "
                                   "re-encode the images")
            return present
    return read_metadata(path, column, names_only=True).column(0).to_pylist()


def _load_npy(path: Path) -> np.ndarray:
    try:
        array = npy.load(path)
    except (OSError, ValueError) as exc:
        raise PerceptError(f"cannot read embeddings file {path} ({exc}): re-encode the images") from None
    if array.ndim != 2:
        raise PerceptError(f"{path} holds an array of shape {array.shape}, not rows of vectors: re-encode")
    if array.dtype.kind not in "fiu":
        raise PerceptError(f"{path} holds {array.dtype} values, not numbers: re-encode the images")
    return array


def read_metadata(path: Path, column: str, names_only: bool = False) -> pyarrow.Table:
    """A part's metadata table (just the naming ``column`` with ``names_only``), checked."""
    import pyarrow
    import pyarrow.parquet as pq

    if not path.exists():
        raise PerceptError(f"metadata file {path} is missing: the embeddings are incomplete, re-encode them")
    try:
        table = pq.ParquetFile(arrow_path(path)).read(columns=[column] if names_only else None)
    except (OSError, pyarrow.ArrowException) as exc:
        raise PerceptError(f"cannot read metadata file {path} ({exc}): re-encode the images") from None
    if column not in table.column_names:
        raise PerceptError(f"metadata file {path} has no {column!r} column: is this a clip-retrieval output?")
    names = table.column(column)
    if names.null_count:
        row = int(np.flatnonzero(names.is_null().to_numpy(zero_copy_only=False))[0])
        raise PerceptError(f"metadata file {path}: row {row} has no {column}: re-encode the images")
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
