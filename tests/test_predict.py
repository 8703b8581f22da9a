"""``percept predict``: scores equal the KNN evaluation code; mismatched encoders are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from web_fixtures import write_model

from percept.categories import CATEGORIES
from percept.cli.main import main as percept_main
from percept.encoders import encode_pil_images, load_encoder
from percept.model.io import ModelSettings, save_model
from percept.model.knn import KNNRegressor, l2_normalise


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for i in range(3):
        path = folder / f"photo_{i}.png"
        Image.new("RGB", (60, 40), (40 * i, 200 - 30 * i, 90)).save(path)
        paths.append(path)
    return paths


def test_predict_equals_knn_on_the_same_vectors(tmp_path, photos, capsys):
    model_path = write_model(tmp_path / "model.npz", names=False)
    assert percept_main(["predict", "--model", str(model_path), "--json", *map(str, photos)]) == 0
    printed = json.loads(capsys.readouterr().out)
    encoder = load_encoder("percept:tiny")
    queries = l2_normalise(encode_pil_images(encoder, [Image.open(p).convert("RGB") for p in photos]))
    with np.load(model_path) as archive:
        for category in CATEGORIES:
            knn = KNNRegressor(5).fit(archive[f"{category}_vecs"], archive[f"{category}_scores"])
            np.testing.assert_allclose([row["scores"][category] for row in printed], knn.predict(queries),
                                       rtol=0, atol=1e-12)


def test_table_and_csv_output(tmp_path, photos, capsys):
    model_path = write_model(tmp_path / "model.npz", names=False)
    assert percept_main(["predict", "--model", str(model_path), str(photos[0])]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["image", *CATEGORIES, "best_similarity", "out_of_domain"]
    assert table[1].startswith("photo_0.png") and table[1].count("±") == len(CATEGORIES)
    assert percept_main(["predict", "--model", str(model_path), "--csv", *map(str, photos)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    assert lines[0].split(",") == ["image", *CATEGORIES, *(f"{c}_sd" for c in CATEGORIES),
                                   "best_similarity", "dissimilarity", "out_of_domain"]


def test_bare_model_needs_clip_model(tmp_path, photos, capsys):
    rng = np.random.default_rng(0)
    vectors = l2_normalise(rng.normal(size=(50, 64)))
    bare = tmp_path / "data.npz"
    save_model(bare, {c: vectors for c in CATEGORIES}, {c: rng.uniform(1, 5, 50) for c in CATEGORIES}, None)
    assert percept_main(["predict", "--model", str(bare), str(photos[0])]) == 2
    assert "give --clip-model" in capsys.readouterr().err
    assert percept_main(["predict", "--model", str(bare), "--clip-model", "percept:tiny", "--json",
                         str(photos[0])]) == 0
    scores = json.loads(capsys.readouterr().out)[0]["scores"]
    query = l2_normalise(encode_pil_images(load_encoder("percept:tiny"), [Image.open(photos[0]).convert("RGB")]))
    want = KNNRegressor(40).fit(vectors, np.load(bare)["safety_scores"]).predict(query)[0]
    assert scores["safety"] == pytest.approx(want, abs=1e-12)


def test_mismatched_encoder_is_refused(tmp_path, photos, capsys):
    model_path = write_model(tmp_path / "model.npz", names=False)
    assert percept_main(["predict", "--model", str(model_path), "--clip-model", "percept:small", str(photos[0])]) == 2
    assert "built with CLIP model 'percept:tiny'" in capsys.readouterr().err
    wide = tmp_path / "wide.npz"
    rng = np.random.default_rng(1)
    vectors = l2_normalise(rng.normal(size=(20, 32)))
    save_model(wide, {c: vectors for c in CATEGORIES}, {c: rng.uniform(1, 5, 20) for c in CATEGORIES},
               ModelSettings(clip_model="percept:tiny"))
    assert percept_main(["predict", "--model", str(wide), str(photos[0])]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "64-dimensional" in err and len(err.splitlines()) == 1


def test_unreadable_image_is_one_line(tmp_path, capsys):
    model_path = write_model(tmp_path / "model.npz", names=False)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    assert percept_main(["predict", "--model", str(model_path), str(broken)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: image {broken} is not an image") and len(err.splitlines()) == 1
