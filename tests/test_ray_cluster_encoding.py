"""``percept encode --engine ray`` on two nodes started in their own folders, run as an operator runs it.

Each Ray worker runs in its node's folder, not the driver's (tests/ray_two_nodes.py). Images a node
cannot see are made with links through ``/proc/self/cwd``, which names the folder of the process
that follows the link: the driver, run from the test's folder, sees them; the workers do not, as
when a node lacks a mount.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from ray_two_nodes import two_nodes  # noqa: F401 - the module fixture

from percept.data.embeddings import read_embeddings
from percept.encoders import pipeline
from percept.encoders.cache import read_manifest

pytestmark = pytest.mark.ray
MODEL = "percept:tiny"


def _images(folder: Path, names) -> Path:
    rng = np.random.default_rng(3)
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (22, 30, 3), dtype=np.uint8)).save(folder / name, quality=95)
    return folder


def _encode(cluster, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """``percept encode`` as a command run from ``cwd``, joining the cluster through ``$RAY_ADDRESS``."""
    command = [sys.executable, "-m", "percept.cli.main", "encode", *args, "-M", MODEL, "--engine", "ray",
               "--batch-size", "2", "--part-size", "3"]
    return subprocess.run(command, cwd=cwd, env=cluster.env, capture_output=True, text=True, timeout=300)


def _local(images: Path, out: Path):
    return pipeline.encode_images(images, out, MODEL, part_size=3, quiet=True)


def test_a_relative_images_path_encodes_every_image(two_nodes, tmp_path):  # noqa: F811
    images = _images(tmp_path / "images", [f"i{n}.{'jpg' if n % 2 else 'png'}" for n in range(6)])
    done = _encode(two_nodes, tmp_path, "images", "-o", "emb", "-q")
    assert done.returncode == 0, done.stderr
    assert "warning:" not in done.stderr and "error:" not in done.stderr
    on_ray = read_embeddings(tmp_path / "emb")
    assert on_ray.names == [str(images / f"i{n}.{'jpg' if n % 2 else 'png'}") for n in range(6)]  # made absolute
    np.testing.assert_array_equal(on_ray.vectors, _local(images, tmp_path / "local").vectors)
    assert read_manifest(tmp_path / "emb", "img").complete


def test_images_a_node_cannot_see_fail_the_run_until_they_are_restored(two_nodes, tmp_path):  # noqa: F811
    names = ["a.png", "b.jpg", "c.png", "d.png", "e.jpg", "f.png"]
    images = _images(tmp_path / "images", names)
    stash = tmp_path / "stash"
    stash.mkdir()
    for name in ("b.jpg", "e.jpg"):  # seen by the driver only
        (images / name).rename(stash / name)
        (images / name).symlink_to(Path("/proc/self/cwd/stash") / name)

    failed = _encode(two_nodes, tmp_path, "images", "-o", "emb")
    assert failed.returncode == 1, failed.stderr
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert errors == [failed.stderr.splitlines()[-1]]
    assert errors[0] == (
        f"error: 2 of 6 images could not be reached: image {images / 'b.jpg'} cannot be reached (No such file or "
        f"directory); also {images / 'e.jpg'}: restore them (on a cluster, on storage every node mounts at the same "
        "path) and run the same command again, which encodes only what is left, or add --skip-missing to go on "
        "without them")
    manifest = read_manifest(tmp_path / "emb", "img")
    assert not manifest.complete and sorted(manifest.partial) == [0, 1]
    assert all(not part for part in manifest.done.values()) and not manifest.partial[0].unreadable
    assert len(read_embeddings(tmp_path / "emb").names) == 4  # everything else is encoded and written

    for name in ("b.jpg", "e.jpg"):  # restored: the files themselves, where every node sees them
        (stash / name).replace(images / name)
    done = _encode(two_nodes, tmp_path, "images", "-o", "emb")
    assert done.returncode == 0, done.stderr
    assert f"6 images, 2 encoded, 4 from the cache: {tmp_path / 'emb'}" in done.stderr.splitlines()
    on_ray = read_embeddings(tmp_path / "emb")
    assert on_ray.names == [str(images / name) for name in names] and read_manifest(tmp_path / "emb", "img").complete
    np.testing.assert_array_equal(on_ray.vectors, _local(images, tmp_path / "local").vectors)


def test_a_folder_no_node_sees_is_named_with_the_node_in_one_line(two_nodes, tmp_path):  # noqa: F811
    _images(tmp_path / "images", ["a.png"])
    failed = _encode(two_nodes, tmp_path, "/proc/self/cwd/images", "-o", "emb", "-q")
    assert failed.returncode == 2
    assert re.fullmatch(r"error: node [0-9.]+ \([0-9a-f]{8}\) of the Ray cluster cannot see the images folder "
                        r"at /proc/self/cwd/images: put it on storage every node mounts at the same path\n",
                        failed.stderr), failed.stderr
    assert not (tmp_path / "emb").exists()  # nothing started
