"""Every place an image is read (encode, predict, serve, thumbnails) reads it the same way: EXIF
orientation applied, 16-bit scaled to 8-bit, oversized images refused from their header."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from image_fixtures import (
    EXIF_ORIENTATION,
    blank_bilevel_png,
    encode,
    exif_rotated_jpeg,
    header_only_png,
    sixteen_bit_grey_png,
    sixteen_bit_rgb_png,
    street,
    upright_png_of_jpeg,
)
from PIL import Image
from web_fixtures import TINY, build_state, write_model

from percept.cli.main import main as percept_main
from percept.encoders import load_encoder
from percept.encoders.pipeline import encode_image_paths, encode_images
from percept.web.app import create_app


@pytest.fixture(scope="module")
def pairs():
    """(name, as stored, as it should be read) image byte pairs."""
    jpeg = exif_rotated_jpeg(street(96, 64), 6)
    grey, rgb = street(80, 60, seed=2)[..., 0], street(80, 60, seed=3)
    return [("exif", jpeg, upright_png_of_jpeg(jpeg)),
            ("grey16", sixteen_bit_grey_png(grey), encode(Image.fromarray(grey), "PNG")),
            ("rgb16", sixteen_bit_rgb_png(rgb), encode(Image.fromarray(rgb), "PNG"))]


def write_pairs(folder, pairs):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, stored, upright in pairs:
        for suffix, data in (("stored", stored), ("upright", upright)):
            path = folder / f"{name}_{suffix}.png"
            path.write_bytes(data)
            paths.append(path)
    return paths


def test_encoding_reads_images_upright_and_scaled(tmp_path, pairs):
    vectors, failed = encode_image_paths(load_encoder(TINY), write_pairs(tmp_path, pairs))
    assert failed == {}
    for i in range(0, len(vectors), 2):
        np.testing.assert_array_equal(vectors[i], vectors[i + 1])


def test_encoding_skips_oversized_images_with_the_reason(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "bomb.png").write_bytes(header_only_png(30_000, 30_000))
    (images / "line.png").write_bytes(blank_bilevel_png(39_000_000, 1))
    Image.fromarray(street()).save(images / "good.png")
    embeddings = encode_images(images, tmp_path / "out", TINY, quiet=True)
    assert len(embeddings.vectors) == 1
    listed = (tmp_path / "out" / "failed_images.txt").read_text()
    assert "bomb.png" in listed and "megapixels: at most 40 megapixels are read" in listed
    assert "line.png" in listed and "no side may be longer than 20000" in listed


def test_predict_reads_images_upright_and_scaled(tmp_path, pairs, capsys):
    model = write_model(tmp_path / "model.npz", names=False)
    paths = write_pairs(tmp_path / "photos", pairs)
    assert percept_main(["predict", "--model", str(model), "--json", *map(str, paths)]) == 0
    scores = [row["scores"] for row in json.loads(capsys.readouterr().out)]
    for i in range(0, len(scores), 2):
        assert scores[i] == scores[i + 1]


@pytest.mark.parametrize("data,flags,words", [
    (blank_bilevel_png(8, 4_999_999), [], "is 8 x 4999999 pixels: no side may be longer than 20000"),
    (header_only_png(8000, 5001), [], "megapixels): at most 40 megapixels"),
    (encode(Image.fromarray(street()), "PNG"), ["--max-image-mb", "0.001"], "bytes: at most 1048 bytes"),
])
def test_predict_applies_the_limits(tmp_path, capsys, data, flags, words):
    model = write_model(tmp_path / "model.npz", names=False)
    (tmp_path / "photo.png").write_bytes(data)
    assert percept_main(["predict", "--model", str(model), *flags, str(tmp_path / "photo.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: image ") and words in err and len(err.splitlines()) == 1


def test_serve_reads_uploads_upright_and_scaled(tmp_path, pairs):
    client = TestClient(create_app(build_state(tmp_path)))
    for name, stored, upright in pairs:
        answers = [client.post("/api/score", files={"image": (f"{name}.png", data, "image/png")}) for data in
                   (stored, upright)]
        assert [a.status_code for a in answers] == [200, 200]
        assert answers[0].json() == answers[1].json(), name


def test_thumbnails_are_upright(tmp_path):
    state = build_state(tmp_path)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    Image.new("RGB", (40, 30), (200, 40, 40)).save(tmp_path / "images" / "survey_0.png", exif=exif)
    response = TestClient(create_app(state)).get("/api/thumbnail/0")
    assert response.status_code == 200
    assert Image.open(io.BytesIO(response.content)).size == (30, 40)
