"""Encode a folder of images, or a list of texts, into clip-retrieval's layout with a validated cache.

Images: found as clip-retrieval finds them, decoded (JPEG files at the size the model needs) and
preprocessed by DataLoader workers (or by the stream an engine passes in) while this process encodes
the batch before, in the precision and runtime ``--precision`` settles (:mod:`percept.encoders.precision`:
float16 on CUDA, bfloat16 on CPUs that multiply it natively), stored as L2-normalised float16 rows in
parts of ``part_size`` inputs. On CUDA the workers' batches are loaded onto the device ahead on a second
stream, and JPEG files are decoded there (:mod:`percept.encoders.device_feed`). Each part is
written atomically and recorded in the manifest as it completes, so a killed run resumes after
its last complete part. Rows of unchanged images are reused from the cache; only new or changed
images are encoded.
Images are read by :func:`percept.encoders.stages.read_image` (upright 8-bit RGB; images over
the size limits are refused before decoding). Unreadable or refused images are skipped, listed in
``failed_images.txt`` and counted at the end; the verdict is kept while the file is unchanged.
Images that cannot be reached (gone since they were listed, storage not mounted, no permission) are
never given a verdict: the rest is encoded and written, the parts that lack them are recorded as
partial, and the run ends with :class:`percept.errors.IncompleteRun` (``skip_missing``: a warning);
the next run reads them again. Every engine's stream goes through this one path.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa

from percept.atomic import atomic_write_text
from percept.data.embeddings import Embeddings, has_embeddings, write_part
from percept.data.images import EXTENSIONS, ImageFile, find_images
from percept.encoders import Encoder, ResolvedModel, resolve_model
from percept.encoders.cache import (
    ImageManifest,
    PartialPart,
    TextManifest,
    Verdict,
    mismatch,
    part_indices,
    read_manifest,
    read_part,
    remove_part,
    text_digest,
    write_manifest,
)
from percept.encoders.device_feed import feed_for
from percept.encoders.stages import Unreachable, encode_readable
from percept.errors import IncompleteRun, PerceptError
from percept.extras import require

FAILED_LIST = "failed_images.txt"
TEXT_CHUNK = 256
MAX_WORKERS = 16
#: How much lower decoding workers run than the model on the CPU (os.nice steps).
DECODE_NICENESS = 10

logger = logging.getLogger(__name__)

Manifest = TypeVar("Manifest", ImageManifest, TextManifest)
#: A part the cache keeps whole: its vectors, its metadata and its unreadable images ({key: verdict}).
KeptPart = tuple[np.ndarray, pd.DataFrame, dict[str, Verdict]]


class _Log:
    """Progress notes (INFO) unless quiet, and warnings always, to this module's logger (the command-line tools
    show them on stderr)."""

    def __init__(self, quiet: bool):
        self.quiet = quiet

    def note(self, message: str) -> None:
        if not self.quiet:
            logger.info(message)

    def warn(self, message: str) -> None:
        logger.warning(message)


class LazyEncoder:
    """Builds the model only when something must actually be encoded (on ``device``; None: CUDA when present)."""

    def __init__(self, resolved: ResolvedModel, device: str | None = None):
        self.resolved, self.device = resolved, device
        self._encoder: Encoder | None = None

    def get(self) -> Encoder:
        if self._encoder is None:
            self._encoder = self.resolved.load(self.device)
        return self._encoder


#: Given the encoder and the image paths, yields ``(vector, None)`` or ``(None, reason)`` per path, in order
#: (the reason an :class:`~percept.encoders.stages.Unreachable` where the file could not be reached).
ImageStream = Callable[[LazyEncoder, list[Path]], Iterator[tuple[np.ndarray | None, str | None]]]


def _usable(manifest: Manifest | None, kind: str, out: Path, resolved: ResolvedModel,
            log: _Log) -> Manifest | None:
    """The folder's manifest if it may serve this model; otherwise None, saying why."""
    if manifest is None:
        if has_embeddings(out, kind):
            log.note(f"{out} holds embeddings without a manifest (made by another tool?): encoding anew")
        return None
    reason = mismatch(manifest, resolved.name, resolved.weights_id, resolved.precision, resolved.runtime)
    if reason:
        log.note(f"not reusing the embeddings in {out}: {reason}")
        return None
    return manifest


# --------------------------------------------------------------------------- images


class _ImageDataset:
    """``(index, *read(path))``: by default :func:`read_image` (decode upright 8-bit RGB, size limits checked
    first, and preprocess; an unreadable or oversized image yields its error instead of a tensor), or what the
    encoder's device feed reads (:mod:`percept.encoders.device_feed`)."""

    def __init__(self, paths: list[Path], read):
        self.paths, self.read = paths, read

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        return (index, *self.read(self.paths[index]))


def default_workers(count: int, batch_size: int) -> int:
    """Decode in the main process for small jobs, else one worker per core (at most 16)."""
    return 0 if count < 2 * batch_size else min(MAX_WORKERS, os.cpu_count() or 1)


def _yield_to_the_model(worker: int) -> None:
    """A decoding worker of CPU encoding runs at a lower priority: the model's threads, which use every core and
    wait for each other, are never held back by decoding; the workers fill the moments the model leaves free
    and run at full speed while it waits for a batch."""
    os.nice(DECODE_NICENESS)


def _ignore_child_signals() -> None:
    """Put SIGCHLD back to its default (ignored, so the kernel builds no signal frame for it).

    torch's DataLoader installs a SIGCHLD handler to notice a dead worker sooner; it also polls its workers,
    so nothing is lost without it. On CPUs with AMX tiles, a signal handed to one of the numerical libraries'
    native threads can fail to be delivered (the frame grows with the tile state) and the process dies.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)


def _encode_stream(get_encoder, paths: list[Path], batch_size: int, num_workers: int | None, quiet: bool):
    """Yield (vector, None) or (None, reason) for each image path, in order."""
    if not paths:
        return
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    encoder = get_encoder()
    workers = default_workers(len(paths), batch_size) if num_workers is None else num_workers
    on_cpu = not encoder.device.startswith("cuda")
    feed = feed_for(encoder)
    dataset = _ImageDataset(paths, feed.read)
    loader: DataLoader[tuple] = DataLoader(
        # any object with __len__ and __getitem__ is a map-style dataset; torch's stub asks for its Dataset class
        dataset,  # type: ignore[arg-type]
        batch_size=batch_size, num_workers=workers, collate_fn=feed.collate, pin_memory=not on_cpu,
        prefetch_factor=4 if workers else None, worker_init_fn=_yield_to_the_model if on_cpu and workers else None)
    batches = iter(loader)  # starts the workers (and torch's SIGCHLD handler)
    _ignore_child_signals()
    with tqdm(total=len(paths), unit="img", desc=f"encoding with {encoder.name}", disable=quiet,
              file=sys.stderr) as bar:
        for positions, batch, failed in feed.batches(batches):
            vectors = encode_readable(encoder, positions, batch)
            bar.update(len(positions) + len(failed))
            for index in sorted([*positions, *failed]):
                yield (vectors[index], None) if index in vectors else (None, failed[index])


def local_stream(batch_size: int = 64, num_workers: int | None = None, quiet: bool = True) -> ImageStream:
    """The local engine: DataLoader workers decode and preprocess, this process encodes."""

    def stream(lazy: LazyEncoder, paths: list[Path]):
        return _encode_stream(lazy.get, paths, batch_size, num_workers, quiet)

    return stream


def encode_image_paths(encoder: Encoder, paths: list, *, batch_size: int = 64, num_workers: int | None = None,
                       quiet: bool = True) -> tuple[np.ndarray, dict[int, str]]:
    """Encode image files without any cache: (n_readable, dim) float32 unit rows in path order, and
    ``{position: reason}`` for the files that could not be read."""
    rows, failed = [], {}
    for position, (vector, reason) in enumerate(_encode_stream(lambda: encoder, [Path(p) for p in paths],
                                                               batch_size, num_workers, quiet)):
        if vector is None:
            failed[position] = reason
        else:
            rows.append(vector)
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), encoder.dim), failed


def _reusable(old: ImageManifest | None, plan: ImageManifest,
              out: Path) -> tuple[dict[int, KeptPart], dict[str, np.ndarray], dict[str, Verdict]]:
    """From an old manifest: complete parts identical to planned ones whose verdicts all still hold (kept
    whole), rows of unchanged images (by key, from complete and partial parts), and the verdicts that still
    hold (their file unchanged since)."""
    kept: dict[int, KeptPart] = {}
    pool: dict[str, np.ndarray] = {}
    known_failed: dict[str, Verdict] = {}
    if old is None:
        return kept, pool, known_failed
    current = dict(zip(plan.keys, zip(plan.sizes, plan.mtimes_ns)))
    before = dict(zip(old.keys, zip(old.sizes, old.mtimes_ns)))
    for part in sorted({*old.done, *old.partial}):
        rows = old.row_keys(part)
        loaded = read_part(out, "img", part, len(rows))
        if loaded is None:
            continue
        holding = {key: verdict for key, verdict in old.unreadable(part).items()
                   if key in current and verdict.holds_for(*current[key])}
        if (part in old.done and part < plan.part_count and old.stamps(part) == plan.stamps(part)
                and len(holding) == len(old.done[part])):
            kept[part] = (*loaded, old.done[part])
            continue
        for row, key in enumerate(rows):
            if current.get(key) == before[key]:
                pool[key] = loaded[0][row]
        known_failed.update(holding)
    return kept, pool, known_failed


@dataclass
class ImageJob:
    """One encoding run: the plan, what the cache already holds, and the images left to encode."""

    images_dir: Path
    out: Path
    images: list[ImageFile]
    resolved: ResolvedModel
    plan: ImageManifest
    old: ImageManifest | None
    kept: dict[int, KeptPart]
    pool: dict[str, np.ndarray]
    known_failed: dict[str, Verdict]
    read_only: bool

    @cached_property
    def todo(self) -> list[ImageFile]:
        """Images of the parts still to write that the cache cannot serve, in row order."""
        return [self.images[i] for part in range(self.plan.part_count) if part not in self.kept
                for i in self.plan.part_range(part)
                if self.plan.keys[i] not in self.pool and self.plan.keys[i] not in self.known_failed]


def plan_images(images_dir, out_dir, model_name: str, *, pretrained: str | None = None, part_size: int = 100_000,
                skip_cache: bool = False, read_only: bool = False, log: _Log | None = None, precision: str = "auto",
                device: str | None = None) -> ImageJob:
    """Find the images, resolve the model (in ``precision`` for ``device``: None, CUDA where present), take
    what the cache in ``out_dir`` can serve and (unless ``read_only``) clear the parts that must be written again."""
    log = log or _Log(True)
    images = find_images(images_dir)
    if not images:
        raise PerceptError(f"no images ({', '.join(EXTENSIONS)}) in {images_dir}")
    out = Path(out_dir)
    resolved = resolve_model(model_name, pretrained, precision, device=device)
    plan = ImageManifest(model_name, resolved.weights_id, part_size, [i.key for i in images],
                         [i.size for i in images], [i.mtime_ns for i in images], precision=resolved.precision,
                         runtime=resolved.runtime)
    old = None if skip_cache else _usable(read_manifest(out, "img"), "img", out, resolved, log)
    kept, pool, known_failed = _reusable(old, plan, out)
    job = ImageJob(Path(images_dir), out, images, resolved, plan, old, kept, pool, known_failed, read_only)
    if job.todo:  # before the cache is touched: images to encode need torch
        require("clip", "torch", f"encoding with {resolved.name}")
    if not read_only:
        plan.done = {part: done for part, (_, _, done) in kept.items()}
        write_manifest(out, plan)
        for part in part_indices(out, "img"):
            if part not in kept:
                remove_part(out, "img", part)
    return job


def write_images(job: ImageJob, stream, lazy: LazyEncoder, log: _Log, skip_missing: bool = False) -> Embeddings:
    """Fill every part from the cache or ``stream`` (the vectors of ``job.todo`` in order), writing each
    part and the manifest as it completes; then raise :class:`IncompleteRun` if images could not be reached
    (``skip_missing``: warn instead)."""
    plan, out, read_only = job.plan, job.out, job.read_only
    vectors: list[np.ndarray] = []
    frames: list[pd.DataFrame] = []
    unreadable: dict[str, Verdict] = {}
    unreached: dict[str, str] = {}
    for part in range(plan.part_count):
        if part in job.kept:
            part_vectors, metadata, verdicts = job.kept[part]
            unreadable.update(verdicts)
        else:
            part_vectors, metadata, verdicts, missing = _build_part(job, part, stream, lazy)
            unreadable.update(verdicts)
            unreached.update(missing)
            if not read_only:
                write_part(out, "img", part, part_vectors, metadata)
                if missing:
                    plan.partial[part] = PartialPart(verdicts, sorted(missing))
                else:
                    plan.done[part] = verdicts
                write_manifest(out, plan)
        vectors.append(part_vectors)
        frames.append(metadata)
    stream.close()
    if not read_only:
        plan.complete = not unreached
        write_manifest(out, plan)
        _write_failed_list(out, job.images_dir, {**{k: v.reason for k, v in unreadable.items()}, **unreached})
    reused = len(job.pool) + sum(len(rows) for rows, _, _ in job.kept.values())
    log.note(f"{len(job.images)} images, {len(job.todo)} encoded, {reused} from the cache"
             + ("" if read_only else f": {out}"))
    _report_failures(unreadable, len(job.images), out, job.images_dir, read_only, log)
    _report_unreached(unreached, len(job.images), job.images_dir, skip_missing, read_only, log)
    metadata = pd.concat(frames, ignore_index=True)
    if metadata.empty:
        raise PerceptError(f"none of the {len(job.images)} images in {job.images_dir} could be read")
    return Embeddings(metadata["image_path"].astype(str).tolist(), np.concatenate(vectors), _table(metadata))


def encode_images(images_dir, out_dir, model_name: str, *, pretrained: str | None = None, batch_size: int = 64,
                  num_workers: int | None = None, part_size: int = 100_000, skip_cache: bool = False,
                  read_only: bool = False, quiet: bool = False, stream: ImageStream | None = None,
                  precision: str = "auto", device: str | None = None, skip_missing: bool = False) -> Embeddings:
    """Embeddings of every image under ``images_dir``, reusing and updating the cache in ``out_dir``
    (clip-retrieval layout and manifest; with ``read_only`` nothing is written).

    Images that cannot be reached end the run with :class:`percept.errors.IncompleteRun` once everything
    else is written (``skip_missing``: a warning instead); the next run reads them again either way.

    ``precision``: auto, fp32, bf16 or fp16, settled for ``device``, where the images are encoded (None:
    CUDA where present, else the CPU); a cache made in another precision or runtime is encoded anew.
    ``stream`` encodes the images the cache lacks (default: :func:`local_stream`); with another
    engine's stream, this process loads the model only on the CPU, for its preprocessing and size.
    """
    if batch_size < 1 or part_size < 1:
        raise PerceptError("batch size and part size must be at least 1")
    log = _Log(quiet)
    job = plan_images(images_dir, out_dir, model_name, pretrained=pretrained, part_size=part_size,
                      skip_cache=skip_cache, read_only=read_only, log=log, precision=precision, device=device)
    lazy = LazyEncoder(job.resolved, None if stream is None else "cpu")
    stream = stream or local_stream(batch_size, num_workers, quiet)
    return write_images(job, stream(lazy, [f.path for f in job.todo]), lazy, log, skip_missing)


def _build_part(job: ImageJob, part: int, stream, lazy: LazyEncoder):
    """One part's float16 rows, metadata, unreadable images ({key: verdict}) and images that could not be
    reached ({key: reason}), from the cache or the encoder."""
    rows, paths, unreadable, unreached = [], [], {}, {}
    for i in job.plan.part_range(part):
        key = job.plan.keys[i]
        if key in job.pool:
            vector, reason = job.pool[key], None
        elif key in job.known_failed:
            vector, reason = None, job.known_failed[key].reason
        else:
            vector, reason = next(stream)
        if vector is not None:
            rows.append(vector)
            paths.append(str(job.images[i].path))
        elif isinstance(reason, Unreachable):
            unreached[key] = str(reason)
        else:
            unreadable[key] = job.plan.verdict(i, str(reason))
    dim = len(rows[0]) if rows else lazy.get().dim
    matrix = np.asarray(rows, dtype=np.float16).reshape(len(rows), dim)
    return matrix, pd.DataFrame({"image_path": paths}), unreadable, unreached


def _write_failed_list(out: Path, images_dir, failures: dict[str, str]) -> None:
    path = out / FAILED_LIST
    if failures:
        lines = [f"{Path(images_dir) / key}\t{reason}\n" for key, reason in sorted(failures.items())]
        atomic_write_text(path, "".join(lines))
    else:
        path.unlink(missing_ok=True)


def _first_names(keys, images_dir, count: int = 5) -> str:
    """The first ``count`` of ``keys`` as paths under ``images_dir``, and ``...`` when there are more."""
    names = sorted(keys)
    return (", ".join(str(Path(images_dir) / key) for key in names[:count])
            + (", ..." if len(names) > count else ""))


def _report_failures(failures: dict, total: int, out: Path, images_dir, read_only: bool, log: _Log) -> None:
    if not failures:
        return
    where = _first_names(failures, images_dir) if read_only else f"listed in {out / FAILED_LIST}"
    log.warn(f"{len(failures)} of {total} images could not be read and were skipped ({where})")


def _report_unreached(unreached: dict[str, str], total: int, images_dir, skip_missing: bool, read_only: bool,
                      log: _Log) -> None:
    """Fail the run over images that could not be reached (or, with ``skip_missing``, warn), in one line."""
    if not unreached:
        return
    first, *others = sorted(unreached)
    what = (f"{len(unreached)} of {total} images could not be reached: {unreached[first]}"
            + (f"; also {_first_names(others, images_dir, 4)}" if others else ""))
    if skip_missing:
        log.warn(f"{what}: left out for now; the next run reads them again")
        return
    again = "run the same command again" + ("" if read_only else ", which encodes only what is left")
    raise IncompleteRun(f"{what}: restore them (on a cluster, on storage every node mounts at the same path) and "
                        f"{again}, or add --skip-missing to go on without them")


# --------------------------------------------------------------------------- texts


def encode_texts(names: list[str], texts: list[str], out_dir, model_name: str, *, pretrained: str | None = None,
                 skip_cache: bool = False, read_only: bool = False, quiet: bool = False,
                 precision: str = "auto") -> Embeddings:
    """Text embeddings in clip-retrieval layout (metadata columns ``caption`` and ``image_name``), one
    row per name in the given order; texts already in the cache for this model, precision and runtime
    are not re-encoded."""
    if len(names) != len(texts):
        raise PerceptError(f"{len(names)} image names but {len(texts)} texts")
    log = _Log(quiet)
    out = Path(out_dir)
    resolved = resolve_model(model_name, pretrained, precision)
    plan = TextManifest(model_name, resolved.weights_id, list(names), [text_digest(t) for t in texts],
                        precision=resolved.precision, runtime=resolved.runtime)
    metadata = pd.DataFrame({"caption": list(texts), "image_name": list(names)})
    old = None if skip_cache else _usable(read_manifest(out, "text"), "text", out, resolved, log)
    pool: dict[str, np.ndarray] = {}
    loaded = read_part(out, "text", 0, len(old.names)) if old is not None and old.complete else None
    if old is not None and loaded is not None:
        if (old.names, old.digests) == (plan.names, plan.digests):
            return Embeddings(list(texts), loaded[0], _table(metadata))
        pool = dict(zip(old.digests, loaded[0]))
    missing = {digest: text for digest, text in zip(plan.digests, texts) if digest not in pool}
    lazy = LazyEncoder(resolved)
    pool.update(_encode_text_chunks(lazy, missing, quiet))
    dim = len(next(iter(pool.values()))) if pool else lazy.get().dim
    vectors = np.asarray([pool[d] for d in plan.digests], dtype=np.float16).reshape(len(texts), dim)
    if not read_only:
        write_manifest(out, plan)
        for part in part_indices(out, "text"):
            remove_part(out, "text", part)
        write_part(out, "text", 0, vectors, metadata)
        plan.complete = True
        write_manifest(out, plan)
    log.note(f"{len(texts)} texts, {len(missing)} encoded, {len(texts) - len(missing)} from the cache")
    return Embeddings(list(texts), vectors, _table(metadata))


def _encode_text_chunks(lazy: LazyEncoder, missing: dict[str, str], quiet: bool) -> dict[str, np.ndarray]:
    if not missing:
        return {}
    from tqdm import tqdm

    encoder = lazy.get()
    digests, texts = list(missing), list(missing.values())
    found: dict[str, np.ndarray] = {}
    with tqdm(total=len(texts), unit="text", desc=f"encoding with {encoder.name}", disable=quiet,
              file=sys.stderr) as bar:
        for start in range(0, len(texts), TEXT_CHUNK):
            chunk = encoder.encode_texts(texts[start:start + TEXT_CHUNK])
            found.update(zip(digests[start:start + TEXT_CHUNK], chunk))
            bar.update(len(chunk))
    return found


def _table(metadata: pd.DataFrame) -> pa.Table:
    """Metadata as the Arrow table that :class:`Embeddings` carries."""
    return pa.Table.from_pandas(metadata, preserve_index=False)
