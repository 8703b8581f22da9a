"""Embeddings from the external clip-retrieval command: called like the original, cache validated."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
from conftest import REFERENCE
from PIL import Image

from percept.cli.dropin import main as dropin_main
from percept.encoders.clip_retrieval import encode_images_external


@pytest.fixture
def stand_in_on_path(monkeypatch):
    path = os.pathsep.join([str(REFERENCE / "tools"), os.path.dirname(sys.executable), os.environ["PATH"]])
    monkeypatch.setenv("PATH", path)


def write_images(folder, colours):
    folder.mkdir(parents=True, exist_ok=True)
    for name, colour in colours.items():
        Image.new("RGB", (16, 16), colour).save(folder / name)


def test_reuses_only_a_matching_cache(tmp_path, stand_in_on_path):
    images = tmp_path / "images"
    write_images(images, {"a.jpg": "red", "b.jpg": "green"})
    messages = []
    first = encode_images_external(images, tmp_path / "emb", "ViT-B/32", None, log=messages.append)
    assert len(first.names) == 2 and first.vectors.shape == (2, 512)
    again = encode_images_external(images, tmp_path / "emb", "ViT-B/32", None, log=messages.append)
    assert messages[-1].startswith("using cached embeddings")
    np.testing.assert_array_equal(first.vectors, again.vectors)
    write_images(images, {"c.jpg": "blue"})
    grown = encode_images_external(images, tmp_path / "emb", "ViT-B/32", None, log=messages.append)
    assert "do not match" in messages[-1] and len(grown.names) == 3
    encode_images_external(images, tmp_path / "emb", "ViT-L/14", None, log=messages.append)
    assert "do not match" in messages[-1]


def test_read_only_writes_nothing(tmp_path, stand_in_on_path):
    images = tmp_path / "images"
    write_images(images, {"a.jpg": "red"})
    found = encode_images_external(images, tmp_path / "emb", "ViT-B/32", None, read_only=True, log=print)
    assert len(found.names) == 1 and not (tmp_path / "emb").exists()


def test_dropin_encodes_images_with_clip_retrieval(tmp_path, stand_in_on_path, monkeypatch, capsys):
    survey = tmp_path / "survey"
    images = survey / "images"
    write_images(images, {f"{i}.jpg": (i * 20, 100, 200 - i * 20) for i in range(10)})
    features = [{"type": "Feature", "properties": {"image_id": i, "url": f"https://x/{i}.jpg",
                                                   **{f"average_{c}": 1.0 + i % 5 for c in
                                                      ("walkability", "bikeability", "pleasantness",
                                                       "greenness", "safety")}}} for i in range(10)]
    (survey / "data.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    monkeypatch.chdir(survey)
    code = dropin_main(["-g", "data.geojson", "-i", "images", "-M", "open_clip:ViT-B-32", "-k", "3", "-q"])
    assert code == 0
    assert len(capsys.readouterr().out.splitlines()) == 5
    assert (survey / "embeddings-open_clip_ViT-B-32" / "img_emb" / "img_emb_0.npy").exists()


def test_missing_command_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable))
    survey = tmp_path
    write_images(survey / "images", {"a.jpg": "red"})
    (survey / "data.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    monkeypatch.chdir(survey)
    code = dropin_main(["-g", "data.geojson", "-i", "images", "-M", "ViT-B/32", "--encoder", "clip-retrieval"])
    err = capsys.readouterr().err
    assert code == 2 and "clip-retrieval command is not on PATH" in err and "Traceback" not in err
