"""Manifests that make an embeddings folder a validated cache.

An image manifest records the model, its weights identity, the precision and runtime it was
encoded in, the part size and every input (relative path, size, modification time) in row order,
plus which parts are complete and which inputs in them could not be read. A text manifest records
the model, weights identity, precision, runtime, and each row's image name and text digest. A cache
is used only where all of these match: vectors of two precisions or runtimes are never mixed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, overload

import numpy as np
import pyarrow.parquet as pq

from percept.atomic import atomic_write_text
from percept.data import npy
from percept.data.embeddings import arrow_path

if TYPE_CHECKING:
    import pandas as pd

FORMAT = 1
MANIFEST_NAMES = {"img": "percept_img_manifest.json", "text": "percept_text_manifest.json"}


@dataclass
class ImageManifest:
    """Inputs in row order (before unreadable ones are dropped), split into parts of ``part_size``."""

    model: str
    weights_id: str
    part_size: int
    keys: list[str]
    sizes: list[int]
    mtimes_ns: list[int]
    done: dict[int, dict[str, str]] = field(default_factory=dict)  # part → {unreadable key: reason}
    complete: bool = False
    precision: str | None = None  # None: a manifest written before precisions were recorded
    runtime: str | None = None

    @property
    def part_count(self) -> int:
        return max(1, -(-len(self.keys) // self.part_size))

    def part_range(self, part: int) -> range:
        return range(part * self.part_size, min(len(self.keys), (part + 1) * self.part_size))

    def stamps(self, part: int) -> list[tuple[str, int, int]]:
        return [(self.keys[i], self.sizes[i], self.mtimes_ns[i]) for i in self.part_range(part)]

    def row_keys(self, part: int) -> list[str]:
        """Keys of the rows a complete part holds (its inputs without the unreadable ones)."""
        failed = self.done.get(part, {})
        return [self.keys[i] for i in self.part_range(part) if self.keys[i] not in failed]


@dataclass
class TextManifest:
    model: str
    weights_id: str
    names: list[str]
    digests: list[str]
    complete: bool = False
    precision: str | None = None
    runtime: str | None = None


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def manifest_path(folder: str | Path, kind: str) -> Path:
    return Path(folder) / MANIFEST_NAMES[kind]


def write_manifest(folder: str | Path, manifest: ImageManifest | TextManifest) -> None:
    kind = "img" if isinstance(manifest, ImageManifest) else "text"
    data = {"format": FORMAT, "kind": kind, **asdict(manifest)}
    atomic_write_text(manifest_path(folder, kind), json.dumps(data, separators=(",", ":")) + "\n")


@overload
def read_manifest(folder: str | Path, kind: Literal["img"]) -> ImageManifest | None: ...


@overload
def read_manifest(folder: str | Path, kind: Literal["text"]) -> TextManifest | None: ...


def read_manifest(folder: str | Path, kind: str) -> ImageManifest | TextManifest | None:
    """The folder's manifest, or None when it is missing, unreadable or of another format."""
    try:
        data = json.loads(manifest_path(folder, kind).read_text(encoding="utf-8"))
        if data.pop("format") != FORMAT or data.pop("kind") != kind:
            return None
        if kind == "text":
            return TextManifest(**data)
        data["done"] = {int(part): failed for part, failed in data["done"].items()}
        return ImageManifest(**data)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def mismatch(manifest: ImageManifest | TextManifest, model: str, weights_id: str, precision: str,
             runtime: str) -> str | None:
    """Why a cache made under ``manifest`` cannot serve ``model`` with ``weights_id`` encoded in ``precision``
    on ``runtime`` (None: it can)."""
    if manifest.model != model:
        return f"it was made with model {manifest.model}, not {model}"
    if manifest.weights_id != weights_id:
        return f"the weights of {model} changed ({manifest.weights_id} → {weights_id})"
    if manifest.precision is None or manifest.runtime is None:
        return "it does not record the precision and runtime it was encoded in"
    if (manifest.precision, manifest.runtime) != (precision, runtime):
        return (f"it was encoded in {manifest.precision} on {manifest.runtime}, not {precision} on {runtime} "
                "(give --precision to choose)")
    return None


def read_part(folder: str | Path, kind: str, part: int, rows: int) -> tuple[np.ndarray, pd.DataFrame] | None:
    """Vectors and metadata of one part if both exist and hold ``rows`` rows, else None."""
    folder = Path(folder)
    vectors_path = folder / f"{kind}_emb" / f"{kind}_emb_{part}.npy"
    metadata_path = folder / "metadata" / f"metadata_{part}.parquet"
    try:
        vectors = npy.load(vectors_path)
        metadata = pq.read_table(arrow_path(metadata_path)).to_pandas()
    except Exception:  # noqa: BLE001 - a missing or damaged part is simply not reused
        return None
    if vectors.ndim != 2 or len(vectors) != rows or len(metadata) != rows:
        return None
    return vectors, metadata


def part_indices(folder: str | Path, kind: str) -> list[int]:
    """Indices of the vector files present for ``kind``."""
    found = []
    for path in (Path(folder) / f"{kind}_emb").glob(f"{kind}_emb_*.npy"):
        suffix = path.stem.rsplit("_", 1)[-1]
        if suffix.isdigit():
            found.append(int(suffix))
    return sorted(found)


def remove_part(folder: str | Path, kind: str, part: int) -> None:
    """Delete one part (vectors first, so it stops counting at once)."""
    folder = Path(folder)
    (folder / f"{kind}_emb" / f"{kind}_emb_{part}.npy").unlink(missing_ok=True)
    (folder / "metadata" / f"metadata_{part}.parquet").unlink(missing_ok=True)
