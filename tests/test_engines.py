"""The Ray engine gives the local engine's results: byte-identical embeddings (percept:tiny) and
rated files, resumes a killed run writing only the missing parts, and refuses bad requests in one line.

Runs on the session's local Ray cluster (tests/ray_fixtures.py); ``-m 'not ray'`` leaves these out."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from test_rating import city, model_path  # noqa: F401 - fixtures

from percept.categories import CATEGORIES
from percept.cli.main import main as percept_main
from percept.data.embeddings import read_embeddings
from percept.encoders import pipeline
from percept.encoders.cache import read_manifest
from percept.engines import EngineOptions, encode_images, rate
from percept.engines import ray as ray_engine
from percept.errors import PerceptError
from percept.model.io import load_model

pytestmark = pytest.mark.ray
MODEL = "percept:tiny"
ROOT = Path(__file__).resolve().parent.parent


def _images(folder: Path, count: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(count):
        pixels = rng.integers(0, 256, (24 + number % 5, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"i{number:02d}.{'png' if number % 3 else 'jpg'}")
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_ray_embeddings_are_byte_identical_to_local(ray_cluster, tmp_path):
    images = _images(tmp_path / "images", 23)
    (images / "broken.jpg").write_bytes(b"not an image")
    local = encode_images(images, tmp_path / "local", MODEL, EngineOptions(), part_size=5, quiet=True)
    on_ray = encode_images(images, tmp_path / "ray", MODEL, EngineOptions("ray", workers=2), part_size=5,
                           batch_size=4, quiet=True)
    assert on_ray.names == local.names and len(local.names) == 23
    np.testing.assert_array_equal(on_ray.vectors, local.vectors)
    written = _files(tmp_path / "ray")
    assert written == _files(tmp_path / "local")
    assert sum(name.startswith("img_emb/") for name in written) == 5
    assert "broken.jpg" in written["failed_images.txt"].decode()


def test_separate_read_stage_gives_the_same_vectors(ray_cluster, tmp_path):
    """GPU clusters decode in Ray tasks and hand pixels to the encoding actors: the same vectors."""
    images = _images(tmp_path / "images", 9)
    local = pipeline.encode_images(images, tmp_path / "local", MODEL, part_size=4, quiet=True)
    stream = ray_engine.image_stream(ray_engine.Actors(1, "cpu", read_in_actor=False), batch_size=3)
    split = pipeline.encode_images(images, tmp_path / "split", MODEL, part_size=4, quiet=True, stream=stream)
    np.testing.assert_array_equal(split.vectors, local.vectors)
    assert _files(tmp_path / "split") == _files(tmp_path / "local")


def _part_stamps(out: Path, parts) -> dict:
    return {(p, kind): ((out / f).stat().st_ino, (out / f).stat().st_mtime_ns) for p in parts
            for kind, f in (("vectors", f"img_emb/img_emb_{p}.npy"), ("metadata", f"metadata/metadata_{p}.parquet"))}


def _wait_for(condition, process, seconds=240.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "the encode never got that far"
        time.sleep(0.05)


def _large_images(folder: Path, numbers) -> None:
    """Images ``i<number>`` replaced by 12-megapixel JPEGs, which take a while to decode."""
    ramp = np.linspace(0, 255, 4000, dtype=np.float32)
    for number in numbers:
        for old in folder.glob(f"i{number:02d}.*"):
            old.unlink()
        pixels = (ramp[None, :, None] + ramp[:3000, None, None] * 0 + number * 10) % 256
        Image.fromarray(np.broadcast_to(pixels, (3000, 4000, 3)).astype(np.uint8)).save(folder / f"i{number:02d}.jpg")


def test_killed_ray_encode_resumes_writing_only_the_missing_parts(ray_cluster, tmp_path, caplog):
    """The driver is killed as soon as the first part is written (the second part's images are large,
    so they are still being decoded, and parts are written in order). The rerun keeps the written
    parts as they are and writes only the missing ones."""
    images = _images(tmp_path / "images", 12)
    _large_images(images, range(3, 6))
    out = tmp_path / "emb"
    command = [sys.executable, "-m", "percept.cli.main", "encode", str(images), "-o", str(out), "-m", MODEL,
               "--engine", "ray", "--ray-address", ray_cluster, "--workers", "2", "--part-size", "3",
               "--batch-size", "3", "-q"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    driver = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: 0 in getattr(read_manifest(out, "img"), "done", {}), driver)
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
    manifest = read_manifest(out, "img")
    written = sorted(manifest.done)
    assert not manifest.complete and written[0] == 0 and len(written) < 4
    assert sorted(p.name for p in (out / "img_emb").iterdir()) == [f"img_emb_{p}.npy" for p in written]
    before = _part_stamps(out, written)

    caplog.set_level(logging.INFO, logger="percept")
    resumed = encode_images(images, out, MODEL, EngineOptions("ray", workers=2), part_size=3, batch_size=3)
    missing = 12 - 3 * len(written)
    assert f"12 images, {missing} encoded, {12 - missing} from the cache" in caplog.text
    assert _part_stamps(out, written) == before
    assert read_manifest(out, "img").complete and sorted(read_manifest(out, "img").done) == [0, 1, 2, 3]
    clean = pipeline.encode_images(images, tmp_path / "clean", MODEL, part_size=3, quiet=True)
    np.testing.assert_array_equal(resumed.vectors, clean.vectors)
    np.testing.assert_array_equal(read_embeddings(out).vectors, clean.vectors)


def test_ray_rating_equals_local(ray_cluster, tmp_path, model_path, city):  # noqa: F811
    folder, _, _, locations_csv = city
    model = load_model(model_path)
    from percept.data.locations import read_locations

    locations = read_locations(locations_csv)
    for name, extra in (("plain.csv", {}), ("located.parquet", {"locations": locations}),
                        ("panoramic.csv", {"average_panoramic": True, "k": 3, "include_self": True})):
        local = rate(model, folder, tmp_path / f"local-{name}", EngineOptions(), chunk_size=4, quiet=True, **extra)
        on_ray = rate(model, folder, tmp_path / f"ray-{name}", EngineOptions("ray", workers=2), chunk_size=4,
                      quiet=True, **extra)
        assert on_ray.rows == local.rows == 23
        assert (tmp_path / f"ray-{name}").read_bytes() == (tmp_path / f"local-{name}").read_bytes()
    scores = pd.read_csv(tmp_path / "ray-plain.csv")
    assert list(scores.columns[:6]) == ["image", *CATEGORIES] and scores[list(CATEGORIES)].notna().all().all()


def test_rate_command_on_ray(ray_cluster, tmp_path, model_path, city, capsys):  # noqa: F811
    folder = city[0]
    argv = ["rate", "--model", str(model_path), "--embeddings", str(folder), "-q"]
    assert percept_main([*argv, "--out", str(tmp_path / "local.csv")]) == 0
    assert percept_main([*argv, "--out", str(tmp_path / "ray.csv"), "--engine", "ray", "--ray-address",
                         ray_cluster, "--workers", "1", "--device", "cpu"]) == 0
    assert (tmp_path / "ray.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()


def test_ray_requests_beyond_the_cluster_are_refused(ray_cluster, tmp_path, model_path, city, capsys):  # noqa: F811
    import ray

    gpus = int(ray.cluster_resources().get("GPU", 0))
    cases = [(["--device", "cpu", "--workers", "3"], "--workers 3: the Ray cluster has 2 CPUs: give at most 2"),
             (["--device", "cuda", "--workers", str(gpus + 1)],
              f"--workers {gpus + 1}: the Ray cluster has {gpus} GPUs: give at most {gpus}") if gpus
             else (["--device", "cuda"], "--device cuda: the Ray cluster has no GPU: use --device cpu or auto")]
    for flags, message in cases:
        argv = ["rate", "--model", str(model_path), "--embeddings", str(city[0]), "--out", str(tmp_path / "x.csv"),
                "--engine", "ray", *flags, "-q"]
        assert percept_main(argv) == 2
        assert capsys.readouterr().err == f"error: {message}\n"


def test_engine_flags_are_checked(tmp_path, capsys):
    assert percept_main(["encode", str(tmp_path), "--ray-address", "127.0.0.1:1", "-q"]) == 2
    assert capsys.readouterr().err == "error: --ray-address joins a Ray cluster: add --engine ray\n"
    assert percept_main(["encode", str(tmp_path), "--engine", "ray", "--encoder", "clip-retrieval", "-q"]) == 2
    assert "runs the built-in encoder" in capsys.readouterr().err
    with pytest.raises(PerceptError, match="--workers must be at least 1"):
        EngineOptions("ray", workers=0)
