"""Images that cannot be reached are never mistaken for unreadable ones (local engine).

A file that exists and cannot be decoded gets a verdict, kept while the file is unchanged; a file
that is gone (or whose storage cannot be reached) gets none: the rest is encoded and kept, the run
fails with one line and exit status 1 (or warns with --skip-missing), and the next run reads it
again. Files are removed between listing and reading through the engine's stream, as when storage
goes away during a run.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from percept.cli.common import ArgumentParser, report_errors
from percept.cli.data_options import add_data_arguments, data_selection
from percept.cli.main import main as percept_main
from percept.data.embeddings import read_embeddings
from percept.encoders import pipeline
from percept.encoders.builtin import BuiltinEncoder
from percept.encoders.cache import Verdict, manifest_path, read_manifest
from percept.encoders.options import EncodingOptions
from percept.encoders.registry import resolve_model
from percept.encoders.stages import Unreachable, read_image
from percept.errors import IncompleteRun, PerceptError
from percept.study.dataset import obtain_embeddings

MODEL = "percept:tiny"
NAMES = ["a.png", "b.jpg", "c.png", "d/e.png", "d/f.jpg", "g.png", "h.jpg", "i.png", "j.png"]


def _draw(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (20 + seed % 7, 28, 3), dtype=np.uint8)).save(path, quality=95)
    return path


@pytest.fixture
def images(tmp_path) -> Path:
    folder = tmp_path / "images"
    for seed, name in enumerate(NAMES):
        _draw(folder / name, seed)
    return folder


@pytest.fixture
def encoded(monkeypatch) -> list[int]:
    """The images the built-in model actually encodes, counted (the model itself runs unchanged)."""
    count = [0]
    real = BuiltinEncoder.encode_image_batch

    def counted(self, batch):
        count[0] += len(batch)
        return real(self, batch)

    monkeypatch.setattr(BuiltinEncoder, "encode_image_batch", counted)
    return count


class Storage:
    """Files taken away after the images were listed and before any is read, and put back later as they were."""

    def __init__(self, *paths: Path):
        self.kept = {path: (path.read_bytes(), path.stat()) for path in paths}

    def around(self, stream: pipeline.ImageStream) -> pipeline.ImageStream:
        """``stream``, run once the files are gone."""

        def gone_first(lazy, paths):
            for path in self.kept:
                path.unlink(missing_ok=True)
            return stream(lazy, paths)

        return gone_first

    def stream(self) -> pipeline.ImageStream:
        return self.around(pipeline.local_stream())

    def restore(self) -> None:
        for path, (data, stat) in self.kept.items():
            path.write_bytes(data)
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def _encode(images: Path, out: Path, **options):
    return pipeline.encode_images(images, out, MODEL, quiet=True, part_size=3, **options)


def _verdict_keys(manifest) -> set[str]:
    return {key for part in manifest.done.values() for key in part} | {
        key for partial in manifest.partial.values() for key in partial.unreadable}


def test_a_missing_file_is_told_from_a_damaged_one(images, tmp_path):
    transform = resolve_model(MODEL).load("cpu").transform
    truncated = images / "b.jpg"
    truncated.write_bytes(truncated.read_bytes()[:300])
    tensor, reason = read_image(truncated, transform)
    assert tensor is None and "truncated or corrupt" in reason and not isinstance(reason, Unreachable)

    for path, cause in ((images / "gone.png", "No such file or directory"),
                        (images / "a.png" / "x.png", "Not a directory"),  # a folder on its path replaced
                        (images / "d", "Is a directory")):
        tensor, reason = read_image(path, transform)
        assert tensor is None and isinstance(reason, Unreachable)
        assert reason == f"image {path} cannot be reached ({cause})"
    tensor, reason = read_image(images / "a.png", transform)
    assert reason is None and tuple(tensor.shape) == (3, 32, 32)


def test_images_gone_while_encoding_fail_the_run_and_are_encoded_once_back(images, tmp_path, encoded):
    out = tmp_path / "emb"
    storage = Storage(images / "b.jpg", images / "h.jpg")
    (images / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # a damaged file: a verdict
    with pytest.raises(IncompleteRun) as failed:
        _encode(images, out, stream=storage.stream())
    message = str(failed.value)
    assert failed.value.exit_status == 1 and "\n" not in message
    assert message.startswith(f"2 of 9 images could not be reached: image {images / 'b.jpg'} cannot be reached "
                              f"(No such file or directory); also {images / 'h.jpg'}: restore them")
    assert message.endswith("or add --skip-missing to go on without them")

    manifest = read_manifest(out, "img")  # parts of 3: [a b c] [d/e d/f g] [h i j]
    assert not manifest.complete and sorted(manifest.done) == [1] and sorted(manifest.partial) == [0, 2]
    assert manifest.partial[0].unreached == ["b.jpg"] and manifest.partial[2].unreached == ["h.jpg"]
    assert _verdict_keys(manifest) == {"c.png"}  # a missing file is never recorded as unreadable
    written = read_embeddings(out)  # everything else is encoded and written
    assert [Path(name).name for name in written.names] == ["a.png", "e.png", "f.jpg", "g.png", "i.png", "j.png"]
    listed = (out / pipeline.FAILED_LIST).read_text()
    assert "b.jpg\timage" in listed and "cannot be reached" in listed and "c.png\timage" in listed

    storage.restore()
    encoded[0] = 0
    resumed = _encode(images, out)
    assert encoded[0] == 2  # only the images that were gone: the partial parts' rows are reused
    manifest = read_manifest(out, "img")
    assert manifest.complete and sorted(manifest.done) == [0, 1, 2] and not manifest.partial
    assert list(manifest.done[0]) == ["c.png"]
    clean = _encode(images, tmp_path / "clean")
    assert resumed.names == clean.names and len(clean.names) == 8
    np.testing.assert_array_equal(resumed.vectors, clean.vectors)
    np.testing.assert_array_equal(read_embeddings(out).vectors, clean.vectors)


def test_skip_missing_warns_and_the_next_run_reads_them_again(images, tmp_path, encoded, caplog):
    out = tmp_path / "emb"
    storage = Storage(images / "d" / "f.jpg")
    first = _encode(images, out, stream=storage.stream(), skip_missing=True)
    assert len(first.names) == 8 and str(images / "d/f.jpg") not in first.names
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"1 of 9 images could not be reached: image {images / 'd/f.jpg'} cannot be reached (No such file or "
        "directory): left out for now; the next run reads them again"]
    manifest = read_manifest(out, "img")
    assert sorted(manifest.partial) == [1] and sorted(manifest.done) == [0, 2] and not manifest.complete

    storage.restore()
    encoded[0] = 0
    again = _encode(images, out)
    assert encoded[0] == 1 and len(again.names) == 9
    np.testing.assert_array_equal(again.vectors, _encode(images, tmp_path / "clean").vectors)


def test_a_damaged_file_keeps_its_verdict_until_it_changes(images, tmp_path, encoded):
    out = tmp_path / "emb"
    damaged = images / "h.jpg"
    good = damaged.read_bytes()
    damaged.write_bytes(good[:200])  # a truncated JPEG
    first = _encode(images, out)
    assert len(first.names) == 8
    verdict = read_manifest(out, "img").done[2]["h.jpg"]
    stat = damaged.stat()
    assert "truncated or corrupt" in verdict.reason and (verdict.size, verdict.mtime_ns) == (200, stat.st_mtime_ns)

    encoded[0] = 0
    assert len(_encode(images, out).names) == 8 and encoded[0] == 0  # unchanged: the verdict holds

    damaged.write_bytes(good)  # replaced by an intact copy
    encoded[0] = 0
    repaired = _encode(images, out)
    assert encoded[0] == 1 and len(repaired.names) == 9
    assert read_manifest(out, "img").done[2] == {}
    np.testing.assert_array_equal(repaired.vectors, _encode(images, tmp_path / "clean").vectors)


def _as_format_1(out: Path) -> None:
    """Rewrite the folder's image manifest as the older format wrote it: every part done, verdicts as bare
    reasons (no size, no modification time), images that were not reached among them."""
    path = manifest_path(out, "img")
    data = json.loads(path.read_text())
    done = {part: {key: verdict["reason"] for key, verdict in failed.items()} for part, failed in data["done"].items()}
    for part, partial in data.pop("partial").items():
        done[part] = {**{key: v["reason"] for key, v in partial["unreadable"].items()},
                      **{key: f"image {key} does not exist" for key in partial["unreached"]}}
    path.write_text(json.dumps({**data, "format": 1, "done": done, "complete": True}))


def test_verdicts_of_an_older_manifest_are_read_again(images, tmp_path, encoded):
    out = tmp_path / "emb"
    (images / "i.png").write_bytes(b"not an image")
    storage = Storage(images / "a.png")
    _encode(images, out, stream=storage.stream(), skip_missing=True)
    storage.restore()  # unchanged: as when a worker could not see it
    _as_format_1(out)
    old = read_manifest(out, "img")
    assert old.done[0] == {"a.png": Verdict("image a.png does not exist")} and not old.partial

    encoded[0] = 0
    again = _encode(images, out)
    assert encoded[0] == 1  # a.png, once "unreadable", is read and encoded; the damaged i.png is read again
    assert len(again.names) == 8 and str(images / "a.png") in again.names
    manifest = read_manifest(out, "img")
    assert manifest.complete and manifest.done[2]["i.png"].size == len(b"not an image")
    np.testing.assert_array_equal(again.vectors, _encode(images, tmp_path / "clean").vectors)


def _gone_before_reading(monkeypatch, storage: Storage) -> None:
    """Every command's local engine, with ``storage``'s files taken away before reading."""
    local = pipeline.local_stream
    monkeypatch.setattr(pipeline, "local_stream", lambda *args, **kwargs: storage.around(local(*args, **kwargs)))


def test_the_encode_command_fails_in_one_line_with_status_1_or_warns_with_skip_missing(images, tmp_path,
                                                                                       monkeypatch, capsys):
    out = tmp_path / "emb"
    argv = ["encode", str(images), "-o", str(out), "-m", MODEL, "--part-size", "3", "-q"]
    storage = Storage(images / "j.png")
    with monkeypatch.context() as patch:
        _gone_before_reading(patch, storage)
        assert percept_main(argv) == 1
        assert capsys.readouterr().err == (
            f"error: 1 of 9 images could not be reached: image {images / 'j.png'} cannot be reached (No such file or "
            "directory): restore them (on a cluster, on storage every node mounts at the same path) and run the "
            "same command again, which encodes only what is left, or add --skip-missing to go on without them\n")
        storage.restore()
        assert percept_main([*argv, "--skip-missing"]) == 0
        assert capsys.readouterr().err == (
            f"warning: 1 of 9 images could not be reached: image {images / 'j.png'} cannot be reached (No such file "
            "or directory): left out for now; the next run reads them again\n")
    assert len(read_embeddings(out).names) == 8
    storage.restore()
    assert percept_main(argv) == 0 and capsys.readouterr().err == ""
    assert len(read_embeddings(out).names) == 9 and read_manifest(out, "img").complete


def test_rate_with_images_stops_before_rating_unless_skip_missing(images, tmp_path, monkeypatch, capsys):
    from web_fixtures import write_model

    model = write_model(tmp_path / "model.npz", names=False)
    out = tmp_path / "rated.csv"
    argv = ["rate", "--model", str(model), "--images", str(images), "--cache", str(tmp_path / "cache"),
            "--out", str(out), "-q"]
    storage = Storage(images / "a.png", images / "b.jpg")
    _gone_before_reading(monkeypatch, storage)
    assert percept_main(argv) == 1 and not out.exists()
    assert capsys.readouterr().err.startswith("error: 2 of 9 images could not be reached: ")
    storage.restore()
    assert percept_main([*argv, "--skip-missing"]) == 0
    assert len(pd.read_csv(out)) == 7


def test_the_drop_in_passes_skip_missing_to_the_encoder(images, tmp_path, monkeypatch):
    parser = ArgumentParser()
    add_data_arguments(parser)
    args = parser.parse_args(["-g", "survey.geojson", "-i", str(images), "-e", str(tmp_path / "emb"), "-M", MODEL,
                              "--encoder", "builtin", "-q", "--skip-missing"])
    options = data_selection(args).encoding
    assert options.skip_missing
    storage = Storage(images / "g.png")
    _gone_before_reading(monkeypatch, storage)
    assert len(obtain_embeddings(options, lambda line: None).names) == 8
    storage.restore()
    strict = EncodingOptions(MODEL, images_dir=images, embeddings_dir=tmp_path / "strict", encoder="builtin",
                             quiet=True)
    with pytest.raises(IncompleteRun, match="1 of 9 images could not be reached"):
        obtain_embeddings(strict, lambda line: None)


def test_an_incomplete_run_is_exit_status_1_and_other_errors_stay_2(capsys):
    def fails(error):
        def run():
            raise error

        return run

    assert report_errors(fails(IncompleteRun("3 of 5 images could not be reached"))) == 1
    assert report_errors(fails(PerceptError("bad flag"))) == 2
    assert capsys.readouterr().err == "error: 3 of 5 images could not be reached\nerror: bad flag\n"


def test_a_read_only_run_fails_the_same_and_writes_nothing(images, tmp_path):
    storage = Storage(images / "a.png")
    with pytest.raises(IncompleteRun) as failed:
        _encode(images, tmp_path / "emb", read_only=True, stream=storage.stream())
    assert str(failed.value).endswith(": restore them (on a cluster, on storage every node mounts at the same path) "
                                      "and run the same command again, or add --skip-missing to go on without them")
    assert not (tmp_path / "emb").exists()
    storage.restore()
    assert len(_encode(images, tmp_path / "emb", read_only=True).names) == 9
