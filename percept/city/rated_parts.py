"""The parts of a rated file that workers write on their own, and their joining into the file.

A run's parts lie in a hidden folder beside the output, named after the run's fingerprint (the
model, the locations, the input files as they are now, the settings and the work units):
``.<output name>.parts-<fingerprint>``. A worker writes its unit's part under a temporary name
and renames it, then records the unit's summary beside it: a unit counts as done once its
record exists. A run repeated after its driver was killed finds the finished units of the same
fingerprint and rates only the others; the folders of other fingerprints beside the same output
are left-overs, removed when a run starts. The folder goes once the output is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from percept import __version__
from percept.atomic import atomic_path
from percept.city.rating import RateSummary
from percept.city.rating_plan import RatingInputs, WorkUnit
from percept.data.locations import Locations
from percept.data.rated_points import RatedWriter, join_parts
from percept.errors import PerceptError
from percept.model.io import ExportedModel

if TYPE_CHECKING:
    import pyarrow as pa

#: Passes over the parts folder when it is removed (each removes what workers added during the one before).
REMOVE_PASSES = 10
#: The file suffix of a part of each kind of rated file.
SUFFIXES = {"csv": ".csv", "parquet": ".parquet", "geoparquet": ".parquet", "geojson": ".geojson"}


@dataclass(frozen=True)
class RatedParts:
    """The parts folder of the rated file ``out`` (an absolute path) of kind ``kind`` for a run's fingerprint."""

    out: Path
    kind: str
    fingerprint: str

    @property
    def folder(self) -> Path:
        return self.out.parent / f".{self.out.name}.parts-{self.fingerprint}"

    def part(self, unit: int) -> Path:
        return self.folder / f"part-{unit:06d}{SUFFIXES[self.kind]}"

    def record(self, unit: int) -> Path:
        return self.folder / f"part-{unit:06d}.json"

    def start(self) -> dict[int, RateSummary]:
        """Remove left-over folders of other runs for the same output, make this run's folder, and return
        the summaries of the units already done in it, by unit number."""
        prefix = f".{self.out.name}.parts-"
        for stale in self.out.parent.iterdir():
            if stale.name.startswith(prefix) and stale != self.folder and stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        done = {}
        for record in self.folder.glob("part-*.json"):
            unit = int(record.stem.split("-")[1])
            if self.part(unit).exists():
                done[unit] = RateSummary.from_counts(json.loads(record.read_text(encoding="utf-8")), self.part(unit))
        return done

    def write(self, unit: int, metadata: dict, schema: pa.Schema | None,
              rate: Callable[[Callable[[pd.DataFrame], None]], RateSummary]) -> RateSummary:
        """Write unit ``unit``'s part with ``rate(write)`` (``schema``: the whole file's, for Parquet), then
        record its summary."""
        given_up = PerceptError(f"the rating into {self.out} was given up: its parts folder is gone")
        if not self.folder.is_dir():
            raise given_up
        # Only the driver makes the folder: a worker still writing after the run was given up (and its folder
        # removed) fails here rather than leaving a new folder behind.
        try:
            with atomic_path(self.part(unit), make_folder=False) as tmp, \
                    RatedWriter(self.kind, tmp, metadata, part=True, schema=schema) as write:
                summary = rate(write)
            summary.out = self.part(unit)
            with atomic_path(self.record(unit), make_folder=False) as tmp:
                tmp.write_text(json.dumps(summary.counts()), encoding="utf-8")
        except FileNotFoundError:
            if self.folder.is_dir():
                raise
            raise given_up from None
        return summary

    def join(self, units: list[WorkUnit], metadata: dict, first: pd.DataFrame) -> None:
        """Write the parts of ``units``, in order, to the output (atomically): the file one writer makes."""
        with atomic_path(self.out) as tmp:
            join_parts(self.kind, [self.part(unit.number) for unit in units], tmp, metadata, first)

    def remove(self) -> None:
        """Remove the folder. Workers never make it, so once it is gone it stays gone; a part a worker was still
        writing when the folder was listed can keep it from going, and is removed on the next pass."""
        for _ in range(REMOVE_PASSES):
            shutil.rmtree(self.folder, ignore_errors=True)
            if not self.folder.exists():
                return


def run_fingerprint(model: ExportedModel, locations: Locations | None, inputs: RatingInputs, units: list[WorkUnit],
                    settings: dict) -> str:
    """A digest of everything a run's parts depend on: the model, the locations, the input files (path, size,
    modification time), the ``settings`` (JSON values) and the work units."""
    digest = hashlib.sha256(__version__.encode())
    for category in model.categories:
        digest.update(np.ascontiguousarray(model.vectors[category]).data)
        digest.update(np.ascontiguousarray(model.scores[category], dtype=np.float64).data)
    digest.update(pickle.dumps((model.settings, model.images, model.calibration, model.card, model.domain_threshold,
                                model.mean_distance)))
    if locations is not None:
        for table in (locations.by_name, locations.by_stem):
            digest.update(np.ascontiguousarray(pd.util.hash_pandas_object(table, index=True).to_numpy()).data)
    for part in inputs.images + (inputs.texts or []):
        for path in (part.vectors, part.metadata):
            found = os.stat(path)
            digest.update(f"{path}\0{found.st_size}\0{found.st_mtime_ns}\0".encode())
    digest.update(json.dumps([settings, inputs.method, inputs.chunk_size, inputs.panoramic,
                              [(u.start, u.stop) for u in units]], sort_keys=True).encode())
    return digest.hexdigest()[:16]
