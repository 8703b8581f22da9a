"""The encoding pipeline: clip-retrieval layout, the validated cache, resuming, unreadable images,
read-only runs, text embeddings and the ``percept encode`` command."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image, ImageDraw

import percept.encoders.pipeline as encoding
from percept.cli import encode as encode_cli
from percept.cli.common import ArgumentParser
from percept.data.embeddings import read_embeddings
from percept.data.images import find_images
from percept.encoders.builtin import BuiltinEncoder
from percept.encoders.cache import read_manifest
from percept.errors import PerceptError

STAND_IN = Path(__file__).resolve().parent / "reference" / "tools" / "clip-retrieval"
MODEL = "percept:tiny"


def _draw(path: Path, seed: int, size=(24, 16)) -> Path:
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", size, tuple(int(c) for c in rng.integers(0, 256, 3)))
    ImageDraw.Draw(image).rectangle([2, 2, 4 + seed % 12, 12], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def _touch_later(path: Path) -> None:
    """Move the modification time clearly forward (coarse file-system clocks)."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))


@pytest.fixture
def enc_images(tmp_path) -> Path:
    folder = tmp_path / "images"
    for seed, name in enumerate(["a.jpg", "b.png", "c.JPG", "d/e.png", "d/f.jpeg", "g.bmp", "h.webp"]):
        _draw(folder / name, seed)
    return folder


@pytest.fixture
def enc_count(monkeypatch) -> list[int]:
    """Counts the images (and texts) the built-in model actually encodes."""
    counter = [0]
    image_batch, texts = BuiltinEncoder.encode_image_batch, BuiltinEncoder.encode_texts

    def counted_images(self, batch):
        counter[0] += len(batch)
        return image_batch(self, batch)

    def counted_texts(self, items):
        counter[0] += len(items)
        return texts(self, items)

    monkeypatch.setattr(BuiltinEncoder, "encode_image_batch", counted_images)
    monkeypatch.setattr(BuiltinEncoder, "encode_texts", counted_texts)
    return counter


def _encode(images, out, **kwargs):
    return encoding.encode_images(images, out, kwargs.pop("model", MODEL), quiet=True, **kwargs)


def test_find_images_like_clip_retrieval(tmp_path):
    for name in ["b.png", "a.JPG", "sub/c.jpeg", "Z.webp", "x.Jpg", "notes.txt", "sub/deeper/d.BMP"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = find_images(tmp_path)
    assert [f.key for f in found] == ["Z.webp", "a.JPG", "b.png", "sub/c.jpeg", "sub/deeper/d.BMP"]
    assert found[3].path == tmp_path / "sub" / "c.jpeg"
    with pytest.raises(PerceptError, match="does not exist"):
        find_images(tmp_path / "missing")


def test_layout_is_read_by_read_embeddings(enc_images, tmp_path, enc_count):
    out = tmp_path / "emb"
    result = _encode(enc_images, out, part_size=3)
    assert enc_count[0] == 7
    assert sorted(p.name for p in (out / "img_emb").iterdir()) == ["img_emb_0.npy", "img_emb_1.npy", "img_emb_2.npy"]
    stored = read_embeddings(out)
    assert stored.names == result.names == [str(enc_images / f.key) for f in find_images(enc_images)]
    assert stored.vectors.dtype == np.float16 and stored.vectors.shape == (7, 64)
    np.testing.assert_array_equal(stored.vectors, result.vectors)
    np.testing.assert_allclose(np.linalg.norm(stored.vectors.astype(np.float64), axis=1), 1, atol=2e-3)
    assert read_manifest(out, "img").complete


def test_stand_in_tool_output_is_read_and_never_taken_for_our_cache(enc_images, tmp_path, enc_count):
    out = tmp_path / "emb"
    subprocess.run([sys.executable, str(STAND_IN), "inference", "--input_dataset", str(enc_images),
                    "--output_folder", str(out), "--clip_model", MODEL], check=True, env={**os.environ,
                                                                                         "FAKE_CLIP_DIM": "64"})
    theirs = read_embeddings(out)
    assert theirs.names == [str(enc_images / f.key) for f in find_images(enc_images)]
    assert theirs.vectors.dtype == np.float16 and theirs.vectors.shape == (7, 64)
    ours = _encode(enc_images, out)
    assert enc_count[0] == 7  # no manifest: the folder is encoded anew, not trusted
    assert not np.array_equal(np.sort(ours.vectors, axis=0), np.sort(theirs.vectors, axis=0))


def test_unchanged_folder_reuses_the_cache(enc_images, tmp_path, enc_count):
    out = tmp_path / "emb"
    first = _encode(enc_images, out, part_size=3)
    enc_count[0] = 0
    second = _encode(enc_images, out, part_size=3)
    assert enc_count[0] == 0
    assert second.names == first.names
    np.testing.assert_array_equal(second.vectors, first.vectors)


def test_changed_image_is_re_encoded_alone(enc_images, tmp_path, enc_count):
    out = tmp_path / "emb"
    first = _encode(enc_images, out, part_size=3)
    _draw(enc_images / "d/e.png", 99)
    _touch_later(enc_images / "d/e.png")
    enc_count[0] = 0
    second = _encode(enc_images, out, part_size=3)
    assert enc_count[0] == 1
    changed = second.names.index(str(enc_images / "d/e.png"))
    assert not np.array_equal(second.vectors[changed], first.vectors[changed])
    others = [i for i in range(7) if i != changed]
    np.testing.assert_array_equal(second.vectors[others], first.vectors[others])


def test_touched_image_is_re_encoded(enc_images, tmp_path, enc_count):
    out = tmp_path / "emb"
    _encode(enc_images, out)
    _touch_later(enc_images / "a.jpg")
    enc_count[0] = 0
    _encode(enc_images, out)
    assert enc_count[0] == 1


def test_added_and_removed_images_update_the_cache(enc_images, tmp_path, enc_count):
    out = tmp_path / "emb"
    first = _encode(enc_images, out, part_size=2)
    _draw(enc_images / "aa.png", 50)
    enc_count[0] = 0
    added = _encode(enc_images, out, part_size=2)
    assert enc_count[0] == 1
    assert added.names[1] == str(enc_images / "aa.png") and len(added.names) == 8
    fresh = _encode(enc_images, tmp_path / "fresh", part_size=2)
    np.testing.assert_array_equal(added.vectors, fresh.vectors)

    for name in ["aa.png", "b.png", "c.JPG", "d/e.png"]:
        (enc_images / name).unlink()
    enc_count[0] = 0
    removed = _encode(enc_images, out, part_size=2)
    assert enc_count[0] == 0
    assert [Path(n).name for n in removed.names] == ["a.jpg", "f.jpeg", "g.bmp", "h.webp"]
    assert read_embeddings(out).names == removed.names  # parts beyond the new end are gone
    keep = [first.names.index(n) for n in removed.names]
    np.testing.assert_array_equal(removed.vectors, first.vectors[keep])


def test_another_model_or_skip_cache_re_encodes(enc_images, tmp_path, enc_count, caplog):
    caplog.set_level(logging.INFO, logger="percept")
    out = tmp_path / "emb"
    _encode(enc_images, out)
    enc_count[0] = 0
    small = encoding.encode_images(enc_images, out, "percept:small")
    assert enc_count[0] == 7 and small.vectors.shape == (7, 256)
    assert "made with model percept:tiny, not percept:small" in caplog.text  # a note through logging
    enc_count[0] = 0
    _encode(enc_images, out, model="percept:small", skip_cache=True)
    assert enc_count[0] == 7
    assert read_manifest(out, "img").model == "percept:small"


def test_changed_weights_re_encode(enc_images, tmp_path, enc_count, monkeypatch):
    out = tmp_path / "emb"
    _encode(enc_images, out)
    monkeypatch.setattr("percept.encoders.builtin.weights_id", lambda variant: "builtin:percept:tiny:v2")
    enc_count[0] = 0
    _encode(enc_images, out)
    assert enc_count[0] == 7


def warnings_logged(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]


def test_corrupt_image_is_skipped_listed_and_counted(enc_images, tmp_path, enc_count, caplog, capsys):
    (enc_images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (enc_images / "d" / "empty.jpg").write_bytes(b"")
    out = tmp_path / "emb"
    result = encoding.encode_images(enc_images, out, MODEL, part_size=4)
    assert len(result.names) == 7 and str(enc_images / "broken.png") not in result.names
    listed = (out / encoding.FAILED_LIST).read_text().splitlines()
    assert [line.split("\t")[0] for line in listed] == [str(enc_images / "broken.png"),
                                                         str(enc_images / "d/empty.jpg")]
    assert [w[:31] for w in warnings_logged(caplog)] == ["2 of 9 images could not be read"]
    assert read_embeddings(out).names == result.names

    caplog.clear()
    enc_count[0] = 0
    _encode(enc_images, out, part_size=4)
    assert enc_count[0] == 0  # unchanged unreadable files are not retried...
    assert [w[:31] for w in warnings_logged(caplog)] == ["2 of 9 images could not be read"]  # ...but reported
    assert "could not be read" not in capsys.readouterr().err  # a library prints nothing itself
    _draw(enc_images / "broken.png", 7)
    _touch_later(enc_images / "broken.png")
    repaired = _encode(enc_images, out, part_size=4)
    assert enc_count[0] == 1 and len(repaired.names) == 8
    assert (out / encoding.FAILED_LIST).read_text().startswith(str(enc_images / "d/empty.jpg"))


def test_no_readable_image_is_an_error(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(PerceptError, match="no images"):
        _encode(tmp_path / "images", tmp_path / "emb")
    (tmp_path / "images" / "x.jpg").write_bytes(b"nope")
    with pytest.raises(PerceptError, match="none of the 1 images"):
        _encode(tmp_path / "images", tmp_path / "emb")


def test_read_only_writes_nothing(enc_images, tmp_path, enc_count):
    out = tmp_path / "emb"
    in_memory = _encode(enc_images, out, read_only=True)
    assert not out.exists()
    written = _encode(enc_images, out)
    np.testing.assert_array_equal(in_memory.vectors, written.vectors)
    assert in_memory.names == written.names

    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    _draw(enc_images / "new.png", 30)
    enc_count[0] = 0
    updated = _encode(enc_images, out, read_only=True)
    assert enc_count[0] == 1 and len(updated.names) == 8  # the cache is read, the new image encoded in memory
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_killed_run_resumes_after_its_last_complete_part(enc_images, tmp_path, enc_count, monkeypatch):
    out = tmp_path / "emb"
    real_write = encoding.write_part
    calls = []

    def killed_on_second_part(*args, **kwargs):
        calls.append(args[2])
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_write(*args, **kwargs)

    monkeypatch.setattr(encoding, "write_part", killed_on_second_part)
    with pytest.raises(KeyboardInterrupt):
        _encode(enc_images, out, part_size=3)
    manifest = read_manifest(out, "img")
    assert not manifest.complete and sorted(manifest.done) == [0]
    monkeypatch.setattr(encoding, "write_part", real_write)
    enc_count[0] = 0
    resumed = _encode(enc_images, out, part_size=3)
    assert enc_count[0] == 4  # 7 images, the first part of 3 was complete
    clean = _encode(enc_images, tmp_path / "clean", part_size=3)
    assert resumed.names == clean.names
    np.testing.assert_array_equal(resumed.vectors, clean.vectors)


def test_damaged_part_is_re_encoded(enc_images, tmp_path, enc_count):
    out = tmp_path / "emb"
    first = _encode(enc_images, out, part_size=3)
    (out / "img_emb" / "img_emb_1.npy").write_bytes(b"garbage")
    enc_count[0] = 0
    again = _encode(enc_images, out, part_size=3)
    assert enc_count[0] == 3
    np.testing.assert_array_equal(again.vectors, first.vectors)


def test_decoding_workers_give_the_same_vectors(enc_images, tmp_path):
    serial = _encode(enc_images, tmp_path / "serial", read_only=True, num_workers=0, batch_size=2)
    parallel = _encode(enc_images, tmp_path / "parallel", read_only=True, num_workers=2, batch_size=2)
    np.testing.assert_array_equal(serial.vectors, parallel.vectors)


def test_text_embeddings_layout_and_cache(tmp_path, enc_count):
    out = tmp_path / "text"
    names = ["b.jpg", "a.jpg", "c.jpg"]
    texts = ["shops count is 3", "shops count is 4", "shops count is 3"]
    result = encoding.encode_texts(names, texts, out, MODEL, quiet=True)
    assert enc_count[0] == 2  # identical texts are encoded once
    stored = read_embeddings(out, "text")
    assert stored.names == texts and stored.metadata["image_name"].to_pylist() == names
    assert (out / "text_emb" / "text_emb_0.npy").exists()
    np.testing.assert_array_equal(stored.vectors, result.vectors)
    np.testing.assert_array_equal(result.vectors[0], result.vectors[2])

    enc_count[0] = 0
    again = encoding.encode_texts(names, texts, out, MODEL, quiet=True)
    assert enc_count[0] == 0
    np.testing.assert_array_equal(again.vectors, result.vectors)

    reordered = encoding.encode_texts(names[::-1] + ["d.jpg"], texts[::-1] + ["median speed is 30"], out, MODEL,
                                      quiet=True)
    assert enc_count[0] == 1
    np.testing.assert_array_equal(reordered.vectors[:3], result.vectors[::-1])
    assert read_embeddings(out, "text").metadata["image_name"].to_pylist() == ["c.jpg", "a.jpg", "b.jpg", "d.jpg"]

    enc_count[0] = 0
    other = encoding.encode_texts(names, texts, out, "percept:small", quiet=True)
    assert enc_count[0] == 2 and other.vectors.shape == (3, 256)


def test_text_read_only_and_stand_in_output(tmp_path, enc_count):
    out = tmp_path / "text"
    encoding.encode_texts(["a.jpg"], ["x is 1"], out, MODEL, read_only=True, quiet=True)
    assert not out.exists()
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "a.txt").write_text("x is 1")
    subprocess.run([sys.executable, str(STAND_IN), "inference", "--input_dataset", str(prompts),
                    "--output_folder", str(out), "--clip_model", MODEL], check=True)
    assert read_embeddings(out, "text").names == ["x is 1"]
    enc_count[0] = 0
    ours = encoding.encode_texts(["a.jpg"], ["x is 1"], out, MODEL, quiet=True)
    assert enc_count[0] == 1 and ours.vectors.shape == (1, 64)


def _cli(argv: list[str]) -> int:
    parser = ArgumentParser(prog="percept")
    encode_cli.register(parser.add_subparsers(parser_class=ArgumentParser))
    args = parser.parse_args(argv)
    from percept.cli.common import report_errors

    return report_errors(lambda: args.run(args))


def test_encode_command(enc_images, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _cli(["encode", str(enc_images), "--model", MODEL, "--quiet"]) == 0
    assert len(read_embeddings(tmp_path / "embeddings-percept_tiny").names) == 7
    assert _cli(["encode", str(enc_images), "-m", "no-such-model", "-o", "x"]) == 2
    assert "error: unknown model name 'no-such-model'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_encode_command_with_the_external_tool(enc_images, tmp_path, monkeypatch):
    tools = tmp_path / "tools"
    tools.mkdir()
    shutil.copy(STAND_IN, tools / "clip-retrieval")
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "external"
    assert _cli(["encode", str(enc_images), "--encoder", "clip-retrieval", "-o", str(out), "--quiet"]) == 0
    assert isinstance(read_embeddings(out).metadata, pa.Table) and len(read_embeddings(out).names) == 7
