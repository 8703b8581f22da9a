"""Rating on Ray (Ray Data): the driver plans work units (:mod:`percept.city.rating_plan`) and joins
their parts into the output; workers do the rest.

Each unit is a range of embedding rows. A pool of actors, each holding the model once (on a GPU
where the cluster has them), takes unit after unit: it reads the unit's rows from the embedding
parts itself (float16 as stored), scores them chunk by chunk exactly as the local engine does
(the same functions, so the same chunks and scores) and writes the unit's part of the output
beside it (:mod:`percept.city.rated_parts`), returning only the unit's counts. The driver joins
the parts in order into the file the local engine writes, byte for byte, without decoding them.

Ray Data restarts actors and retries their units without limit, so a lost node costs only the
units it held; a driver killed mid-run, run again, rates only the units not yet done. A failure a
user can fix, raised on a worker, comes back as its one-line message.
"""

from __future__ import annotations

import functools
import json
import pickle
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from percept.city import rating, rating_plan
from percept.city.rated_parts import RatedParts, run_fingerprint
from percept.city.rating import RateSummary, RowRange
from percept.data.locations import Locations
from percept.data.rated_points import rated_schema
from percept.engines.options import EngineOptions
from percept.engines.ray_cluster import Actors, plan_actors, ray_module, session
from percept.engines.ray_paths import absolute, require_visible
from percept.errors import PerceptError
from percept.model.estimates import interval_level
from percept.model.io import ExportedModel

if TYPE_CHECKING:
    import pyarrow as pa

#: Units waiting for or being rated per actor.
IN_FLIGHT = 2
#: Embedding parts an actor keeps open (their names read) for the next units, which mostly lie in them too.
PARTS_KEPT = 4


@dataclass(frozen=True)
class UnitJob:
    """What every actor needs besides the model and the locations: the inputs, where parts go, the output's
    metadata and schema, and how to score."""

    inputs: rating_plan.RatingInputs
    parts: RatedParts
    metadata: dict
    schema: pa.Schema | None  # the output's Parquet schema (None for CSV and GeoJSON)
    k: int | None
    include_self: bool
    interval: float | None
    device: str


class RateUnits:
    """Ray actor: loads the model once, then rates unit after unit into its part; returns each unit's counts
    (as JSON), or the failure a user can fix (pickled), which the driver raises as it is."""

    def __init__(self, job: UnitJob, shared: list):
        self.job = job
        self.failure: PerceptError | None = None
        model, self.locations = ray_module().get(shared)
        self.opener = functools.lru_cache(maxsize=PARTS_KEPT)(rating.open_part)
        try:
            self.estimator = rating.make_estimator(model, job.k, job.inputs.panoramic, job.device, threads=1,
                                                   interval=job.interval)
        except PerceptError as exc:
            self.failure = exc

    def __call__(self, batch: dict) -> dict:
        counts, errors = [], []
        for number, start, stop in zip(batch["unit"], batch["start"], batch["stop"]):
            try:
                summary = self._rate(int(number), int(start), int(stop))
            except PerceptError as exc:
                counts.append("")
                errors.append(pickle.dumps(exc))
            else:
                counts.append(json.dumps(summary.counts()))
                errors.append(b"")
        return {"unit": np.asarray(batch["unit"], dtype=np.int64), "counts": np.array(counts, dtype=object),
                "error": np.array(errors, dtype=object)}

    def _rate(self, number: int, start: int, stop: int) -> RateSummary:
        if self.failure is not None:
            raise self.failure
        job = self.job
        rows = RowRange(job.inputs, start, stop, self.opener)
        return job.parts.write(number, job.metadata, job.schema, lambda write: rating.rate_rows(
            rows, self.estimator, job.include_self, self.locations, write))


def rate(model: ExportedModel, embeddings_dir, out, options: EngineOptions, *,
         locations: Locations | None = None, average_panoramic: bool = False,
         chunk_size: int = rating.DEFAULT_CHUNK, k: int | None = None, text_dir=None, include_self: bool = False,
         interval: float | None = None, quiet: bool = False) -> RateSummary:
    """:func:`percept.city.rating.rate` on a Ray cluster: workers rate work units into parts, joined here."""
    given, out, embeddings_dir = Path(out), absolute(out), absolute(embeddings_dir)
    text_dir = absolute(text_dir) if text_dir is not None else None
    method, kind = rating.check_request(model, out, locations is not None, chunk_size, text_dir)
    level = interval_level(model, interval)  # a level the model cannot give fails here, not on the workers
    inputs = rating.read_inputs(embeddings_dir, text_dir, method, chunk_size, average_panoramic)
    units = rating_plan.plan(inputs)
    metadata = rating.rating_metadata(model, interval)
    first = rating.first_table(RowRange(inputs, units[0].start, units[0].stop), model.categories, level, locations)
    settings = {"kind": kind, "k": k, "include_self": include_self, "interval": interval, "metadata": metadata}
    parts = RatedParts(out, kind, run_fingerprint(model, locations, inputs, units, settings))
    with session(options.ray_address, quiet):
        out.parent.mkdir(parents=True, exist_ok=True)
        visible = {"embeddings folder": embeddings_dir, "folder of the output": out}
        require_visible({**visible, "text embeddings folder": text_dir} if text_dir is not None else visible)
        actors = plan_actors(options.workers, options.device)
        job = UnitJob(inputs, parts, metadata, rated_schema(kind, first, metadata), k, include_self, interval,
                      actors.device)
        done = parts.start()
        todo = [unit for unit in units if unit.number not in done]
        try:
            with tqdm(total=inputs.total, initial=sum(u.stop - u.start for u in units if u.number in done),
                      unit="img", desc=f"rating on Ray ({actors.describe()})", disable=quiet,
                      file=sys.stderr) as progress:
                for number, summary in _rated_units(todo, job, model, locations, actors):
                    done[number] = summary
                    progress.update(units[number].stop - units[number].start)
            parts.join(units, metadata, first)
        except PerceptError:
            parts.remove()  # the inputs must change, and with them the fingerprint
            raise
    parts.remove()
    return _joined_summary([done[unit.number] for unit in units], given)


def _rated_units(todo: list[rating_plan.WorkUnit], job: UnitJob, model: ExportedModel,
                 locations: Locations | None, actors: Actors) -> Iterator[tuple[int, RateSummary]]:
    """(unit number, summary) of each unit of ``todo`` as the actors finish them (in any order)."""
    if not todo:
        return
    ray = ray_module()
    ray.data.DataContext.get_current().enable_progress_bars = False
    shared = [ray.put(model), ray.put(locations)]
    data = ray.data.from_items([{"unit": u.number, "start": u.start, "stop": u.stop} for u in todo],
                               override_num_blocks=len(todo))
    pool = ray.data.ActorPoolStrategy(size=min(actors.count, len(todo)), max_tasks_in_flight_per_actor=IN_FLIGHT)
    data = data.map_batches(RateUnits, fn_constructor_args=(job, shared), batch_size=1, batch_format="numpy",
                            compute=pool, **actors.resources)
    for batch in data.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
        for number, counts, error in zip(batch["unit"], batch["counts"], batch["error"]):
            if error:
                raise pickle.loads(error)
            yield int(number), RateSummary.from_counts(json.loads(counts), job.parts.part(int(number)))


def _joined_summary(summaries: list[RateSummary], out: Path) -> RateSummary:
    """The summary of the whole output from its units' summaries (in order)."""
    joined = RateSummary(0, 0, out)
    for summary in summaries:
        joined.add(summary)
    return joined
