"""Manifests that make an embeddings folder a validated cache.

An image manifest records the model, its weights identity, the precision and runtime it was
encoded in, the part size and every input (relative path, size, modification time) in row order,
plus which parts are complete and which inputs in them are unreadable (a :class:`Verdict` on the
file as it was: its size and modification time, so it holds only while the file is unchanged). A
part written without inputs that could not be reached is *partial*: its rows are reused, and those
inputs are read again by the next run; they are never recorded as unreadable. A text manifest records
the model, weights identity, precision, runtime, and each row's image name and text digest. A cache
is used only where all of these match: vectors of two precisions or runtimes are never mixed.

Manifests of format 1 are still read: their rows are reused, and their unreadable inputs, recorded
without the file's size and modification time, are read again.
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

#: The format each kind of manifest is written in.
FORMATS = {"img": 2, "text": 1}
#: The formats read: image manifests of format 1 hold verdicts without the file's size and modification time.
READABLE_FORMATS = {"img": (1, 2), "text": (1,)}
MANIFEST_NAMES = {"img": "percept_img_manifest.json", "text": "percept_text_manifest.json"}


@dataclass(frozen=True)
class Verdict:
    """Why an input could not be decoded, and the file it was said of (None: not recorded, format 1)."""

    reason: str
    size: int | None = None
    mtime_ns: int | None = None

    def holds_for(self, size: int | None, mtime_ns: int | None) -> bool:
        """Whether the verdict may be reused for a file of this size and modification time."""
        return self.size is not None and (self.size, self.mtime_ns) == (size, mtime_ns)


@dataclass
class PartialPart:
    """A part written without some of its inputs, which could not be reached: not complete."""

    unreadable: dict[str, Verdict]
    unreached: list[str]


@dataclass
class ImageManifest:
    """Inputs in row order (before unreadable ones are dropped), split into parts of ``part_size``."""

    model: str
    weights_id: str
    part_size: int
    keys: list[str]
    sizes: list[int]
    mtimes_ns: list[int]
    done: dict[int, dict[str, Verdict]] = field(default_factory=dict)  # complete part → {unreadable key: verdict}
    complete: bool = False
    precision: str | None = None  # None: a manifest written before precisions were recorded
    runtime: str | None = None
    partial: dict[int, PartialPart] = field(default_factory=dict)

    @property
    def part_count(self) -> int:
        return max(1, -(-len(self.keys) // self.part_size))

    def part_range(self, part: int) -> range:
        return range(part * self.part_size, min(len(self.keys), (part + 1) * self.part_size))

    def stamps(self, part: int) -> list[tuple[str, int, int]]:
        return [(self.keys[i], self.sizes[i], self.mtimes_ns[i]) for i in self.part_range(part)]

    def verdict(self, row: int, reason: str) -> Verdict:
        """The verdict ``reason`` on input ``row`` as the manifest records that file."""
        return Verdict(reason, self.sizes[row], self.mtimes_ns[row])

    def unreadable(self, part: int) -> dict[str, Verdict]:
        """The unreadable inputs of a written part (complete or partial)."""
        return self.partial[part].unreadable if part in self.partial else self.done.get(part, {})

    def row_keys(self, part: int) -> list[str]:
        """Keys of the rows a written part holds (its inputs without the unreadable and unreached ones)."""
        left_out = {*self.unreadable(part), *(self.partial[part].unreached if part in self.partial else ())}
        return [self.keys[i] for i in self.part_range(part) if self.keys[i] not in left_out]


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
    data = {"format": FORMATS[kind], "kind": kind, **asdict(manifest)}
    atomic_write_text(manifest_path(folder, kind), json.dumps(data, separators=(",", ":")) + "\n")


@overload
def read_manifest(folder: str | Path, kind: Literal["img"]) -> ImageManifest | None: ...


@overload
def read_manifest(folder: str | Path, kind: Literal["text"]) -> TextManifest | None: ...


def read_manifest(folder: str | Path, kind: str) -> ImageManifest | TextManifest | None:
    """The folder's manifest, or None when it is missing, unreadable or of another format."""
    try:
        data = json.loads(manifest_path(folder, kind).read_text(encoding="utf-8"))
        if data.pop("kind") != kind or data.pop("format") not in READABLE_FORMATS[kind]:
            return None
        if kind == "text":
            return TextManifest(**data)
        data["done"] = {int(part): _verdicts(failed) for part, failed in data["done"].items()}
        data["partial"] = {int(part): PartialPart(_verdicts(written["unreadable"]), list(written["unreached"]))
                           for part, written in data.get("partial", {}).items()}
        return ImageManifest(**data)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _verdicts(recorded: dict) -> dict[str, Verdict]:
    """Verdicts as stored: ``{key: {reason, size, mtime_ns}}``, or ``{key: reason}`` (format 1, no stamp)."""
    return {key: Verdict(value) if isinstance(value, str) else Verdict(**value) for key, value in recorded.items()}


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
