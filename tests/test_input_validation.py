"""Inputs the model refuses or handles.

NaN, infinite and zero vectors wherever vectors enter (embedding files, text embeddings,
model files, encoded uploads, the Python API); type checks of locations, rated files and
model files; and the default embeddings folder name with its fall-back to the old name.
Every refusal is one ``error:`` line and exit status 2 (4xx in the web API).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from web_fixtures import build_state, png_bytes, write_model

from percept import api
from percept.categories import CATEGORIES
from percept.city.rating import rate
from percept.cli.dropin import main as dropin_main
from percept.cli.main import main as percept_main
from percept.data import vector_checks
from percept.data.embeddings import (
    default_embeddings_dir,
    embeddings_dir_name,
    legacy_embeddings_dir_name,
    write_part,
)
from percept.data.locations import read_locations
from percept.data.rated_points import read_rated
from percept.data.vector_checks import check_rows
from percept.errors import PerceptError
from percept.model.io import SETTINGS_KEY, ModelSettings, load_model, save_model
from percept.model.knn import KNNRegressor, l2_normalise

DIM = 12
REFERENCE_MODEL = "open_clip:ViT-B-32"


def one_error_line(err: str, *fragments: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def unit(rng, n, dim=DIM):
    return l2_normalise(rng.normal(size=(n, dim)))


def write_embeddings(folder, names, vectors, part_size, kind="img"):
    column = "image_path" if kind == "img" else "caption"
    for part, start in enumerate(range(0, len(names), part_size)):
        write_part(folder, kind, part, vectors[start:start + part_size],
                   pd.DataFrame({column: [f"/data/{n}" for n in names[start:start + part_size]]}))
    return folder


@pytest.fixture
def model_path(tmp_path):
    rng = np.random.default_rng(0)
    vectors = unit(rng, 60)
    path = tmp_path / "model.npz"
    save_model(path, {c: vectors for c in CATEGORIES}, {c: rng.uniform(1, 5, 60) for c in CATEGORIES},
               ModelSettings(clip_model="percept:tiny", k=5))
    return path


def test_model_file_loads_every_array_and_refuses_a_damaged_one(model_path, tmp_path, capsys):
    """All arrays come back as written (each thread reads through its own handle); a truncated file is refused
    in one line."""
    with np.load(model_path) as archive:
        want = {name: archive[name] for name in archive.files}
    model = load_model(model_path)
    for c in CATEGORIES:
        np.testing.assert_array_equal(model.vectors[c], want[f"{c}_vecs"])
        np.testing.assert_array_equal(model.scores[c], want[f"{c}_scores"])
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes(model_path.read_bytes()[:-200])
    with pytest.raises(PerceptError, match="is not a readable model.npz"):
        load_model(damaged)


def expected_scores(model_path, vectors):
    model = load_model(model_path)
    queries = l2_normalise(np.asarray(vectors, dtype=np.float64))
    return np.column_stack([KNNRegressor(5).fit(model.vectors[c], model.scores[c]).predict(queries)
                            for c in CATEGORIES])


# --------------------------------------------------------------------------- the vectorised check


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_check_rows_finds_nonfinite_and_zero_rows(dtype, monkeypatch):
    monkeypatch.setattr(vector_checks, "CHUNK_ROWS", 3)  # rows found across chunk boundaries too
    vectors = np.random.default_rng(0).uniform(-1, 1, (11, 5)).astype(dtype)
    vectors[2, 4], vectors[4, 0], vectors[9, 1] = np.nan, np.inf, -np.inf
    vectors[6], vectors[7] = 0.0, -0.0
    vectors[8, :] = np.finfo(dtype).tiny  # tiny, yet a direction
    found = check_rows(vectors)
    assert found.nonfinite.tolist() == [2, 4, 9] and found.zero.tolist() == [6, 7]
    found = check_rows(np.ones((4, 3), dtype=dtype))
    assert found.nonfinite.size == found.zero.size == 0


def test_check_rows_of_whole_numbers():
    found = check_rows(np.array([[1, 0], [0, 0], [0, -3]], dtype=np.int8))
    assert found.nonfinite.size == 0 and found.zero.tolist() == [1]


# --------------------------------------------------------------------------- percept rate


@pytest.fixture
def city(tmp_path):
    """23 unit vectors (float16) in 3 parts of 10, 10 and 3 rows."""
    names = [f"img_{i}.jpg" for i in range(23)]
    vectors = unit(np.random.default_rng(1), 23).astype(np.float16)
    return names, vectors


def rate_cli(model_path, folder, out, *extra):
    return percept_main(["rate", "--model", str(model_path), "--embeddings", str(folder), "--out", str(out),
                         *map(str, extra)])


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_rate_refuses_nan_naming_file_and_row(tmp_path, model_path, city, capsys, value):
    names, vectors = city
    vectors[13, 2] = value
    folder = write_embeddings(tmp_path / "emb", names, vectors, 10)
    assert rate_cli(model_path, folder, tmp_path / "rated.csv", "--quiet") == 2
    one_error_line(capsys.readouterr().err, "img_emb_1.npy row 3 (/data/img_13.jpg)", "NaN or infinite")
    assert not (tmp_path / "rated.csv").exists()


@pytest.mark.parametrize("chunk", [1, 4, 100])
def test_rate_leaves_zero_rows_empty_with_a_warning(tmp_path, model_path, city, capsys, chunk):
    names, vectors = city
    vectors[[4, 15, 16]] = 0
    folder = write_embeddings(tmp_path / "emb", names, vectors, 10)
    out = tmp_path / "rated.csv"
    assert rate_cli(model_path, folder, out, "--chunk-size", chunk) == 0
    # (random city vectors lie outside the survey's domain: rating warns about that too)
    warnings = [line for line in capsys.readouterr().err.splitlines()
                if line.startswith("warning:") and "outside the survey's domain" not in line]
    assert len(warnings) == 1
    assert "3 embedding rows are zero vectors (first: " in warnings[0]
    assert "img_emb_0.npy row 4 (/data/img_4.jpg)" in warnings[0] and "scores are left empty" in warnings[0]
    table = pd.read_csv(out)
    assert table["image"].tolist() == names
    scores = table[list(CATEGORIES)].to_numpy()
    empty = np.zeros(len(names), dtype=bool)
    empty[[4, 15, 16]] = True
    assert np.isnan(scores[empty]).all() and not np.isnan(scores[~empty]).any()
    np.testing.assert_allclose(scores[~empty], expected_scores(model_path, vectors[~empty]), rtol=0, atol=1e-12)


def test_rate_warns_even_when_quiet_and_writes_null_scores_to_geojson(tmp_path, model_path, city, capsys):
    names, vectors = city
    vectors[0] = 0
    folder = write_embeddings(tmp_path / "emb", names, vectors, 10)
    locations = tmp_path / "loc.csv"
    locations.write_text("image,lon,lat\n" + "".join(f"{n},4.9,52.3\n" for n in names))
    out = tmp_path / "rated.geojson"
    assert rate_cli(model_path, folder, out, "--locations", locations, "--quiet") == 0
    err = capsys.readouterr().err
    zero = [line for line in err.splitlines() if "outside the survey's domain" not in line]
    assert len(zero) == 1 and zero[0].startswith("warning: 1 embedding row is a zero vector")
    features = json.loads(out.read_text())["features"]
    assert all(features[0]["properties"][c] is None for c in CATEGORIES)
    assert all(isinstance(features[1]["properties"][c], float) for c in CATEGORIES)
    rated = read_rated(out)
    assert np.isnan(rated.scores[0]).all() and not np.isnan(rated.scores[1:]).any()


def test_rate_panorama_ignores_zero_crops_and_is_empty_when_all_are(tmp_path, model_path):
    names = ["p1_x0.jpg", "p1_x1.jpg", "p1_x2.jpg", "p2_x0.jpg", "p2_x1.jpg"]
    vectors = unit(np.random.default_rng(2), len(names)).astype(np.float16)
    vectors[[1, 3, 4]] = 0
    folder = write_embeddings(tmp_path / "emb", names, vectors, 2)
    summary = rate(load_model(model_path), folder, tmp_path / "pano.csv", average_panoramic=True, quiet=True)
    assert summary.zero.count == 3 and "3 embedding rows are zero vectors" in summary.warning()
    table = pd.read_csv(tmp_path / "pano.csv").set_index("image")
    crops = l2_normalise(np.asarray(vectors, dtype=np.float64))
    want = expected_scores(model_path, crops[[0, 2]].mean(axis=0, keepdims=True))[0]
    np.testing.assert_allclose(table.loc["p1", list(CATEGORIES)].to_numpy(dtype=float), want, rtol=0, atol=1e-12)
    assert table.loc["p2", list(CATEGORIES)].isna().all()


@pytest.fixture
def environmental_model(tmp_path):
    rng = np.random.default_rng(4)
    path = tmp_path / "env.npz"
    save_model(path, {c: unit(rng, 40, 2 * DIM) for c in CATEGORIES}, {c: rng.uniform(1, 5, 40) for c in CATEGORIES},
               ModelSettings(clip_model="percept:tiny", k=5, environmental_method="append", prompt_style=0))
    return path


def test_rate_refuses_nan_text_vectors_and_leaves_zero_ones_empty(tmp_path, environmental_model, city, capsys):
    names, vectors = city
    folder = write_embeddings(tmp_path / "emb", names, vectors, 10)
    texts = unit(np.random.default_rng(5), len(names)).astype(np.float16)
    texts[11, 0] = np.nan
    write_embeddings(tmp_path / "text", names, texts, 8, kind="text")
    out = tmp_path / "rated.csv"
    assert rate_cli(environmental_model, folder, out, "--text-embeddings", tmp_path / "text", "--quiet") == 2
    one_error_line(capsys.readouterr().err, "text_emb_1.npy row 3", "NaN or infinite")
    texts[11] = 0
    shutil.rmtree(tmp_path / "text")
    write_embeddings(tmp_path / "text", names, texts, 8, kind="text")
    assert rate_cli(environmental_model, folder, out, "--text-embeddings", tmp_path / "text", "--quiet") == 0
    assert "the text vector of /data/img_11.jpg" in capsys.readouterr().err
    scores = pd.read_csv(out)[list(CATEGORIES)]
    assert scores.iloc[11].isna().all() and scores.drop(index=11).notna().all().all()


# --------------------------------------------------------------------------- model files


def model_arrays(path):
    with np.load(path) as archive:
        return {name: archive[name] for name in archive.files}


def rewrite(path, change):
    arrays = model_arrays(path)
    change(arrays)
    np.savez(path, **arrays)


def settings_bytes(**changes):
    settings = {"clip_model": "percept:tiny", "k": 5, "weighting": "softmax10**", "environmental_method": None,
                "prompt_style": None, "weights_id": None, "extra": {}, **changes}
    return np.frombuffer(json.dumps(settings).encode(), dtype=np.uint8)


@pytest.mark.parametrize("change, fragments", [
    (lambda a: a["walkability_vecs"].__setitem__((2, 3), np.nan), ["walkability_vecs row 2", "NaN or infinite"]),
    (lambda a: a["safety_vecs"].__setitem__((7, 0), -np.inf), ["safety_vecs row 7", "NaN or infinite"]),
    (lambda a: a["greenness_vecs"].__setitem__(4, 0.0), ["greenness_vecs row 4", "zero vector"]),
    (lambda a: a["bikeability_scores"].__setitem__(9, np.nan), ["bikeability_scores row 9", "not a finite score"]),
    (lambda a: a.__setitem__("walkability_scores", a["walkability_scores"].astype(str)),
     ["walkability_scores holds a <U", "not one score per sample"]),
    (lambda a: a.__setitem__("walkability_vecs", a["walkability_vecs"][0]), ["walkability_vecs", "rows of vectors"]),
    (lambda a: a.__setitem__(SETTINGS_KEY, settings_bytes(k="40")), ["setting 'k' holds '40' (str)", "int"]),
    (lambda a: a.__setitem__(SETTINGS_KEY, settings_bytes(k=0)), ["setting 'k' is 0"]),
    (lambda a: a.__setitem__(SETTINGS_KEY, settings_bytes(clip_model=5)), ["setting 'clip_model' holds 5"]),
    (lambda a: a.__setitem__(SETTINGS_KEY, settings_bytes(weighting=None)), ["setting 'weighting' holds None"]),
    (lambda a: a.__setitem__("percept_sample_images", np.frombuffer(b'["a.jpg"]', dtype=np.uint8)),
     ["percept_sample_images must map each category"]),
])
def test_model_file_values_are_checked(tmp_path, model_path, city, capsys, change, fragments):
    rewrite(model_path, change)
    names, vectors = city
    folder = write_embeddings(tmp_path / "emb", names, vectors, 10)
    assert rate_cli(model_path, folder, tmp_path / "rated.csv", "--quiet") == 2
    one_error_line(capsys.readouterr().err, str(model_path), *fragments)
    assert percept_main(["predict", "--model", str(model_path), "x.jpg"]) == 2
    one_error_line(capsys.readouterr().err, str(model_path), *fragments)


# --------------------------------------------------------------------------- encoded uploads and the API


@pytest.mark.parametrize("value, problem", [(np.nan, "NaN or infinite"), (0.0, "zero vector")])
def test_predict_refuses_an_unusable_encoder_vector(tmp_path, capsys, monkeypatch, value, problem):
    from PIL import Image

    import percept.encoders

    Image.new("RGB", (30, 20), (10, 20, 30)).save(tmp_path / "photo.png")
    model = write_model(tmp_path / "model.npz", names=False)
    monkeypatch.setattr(percept.encoders, "encode_pil_images", lambda encoder, images: np.full((1, 64), value))
    assert percept_main(["predict", "--model", str(model), str(tmp_path / "photo.png")]) == 2
    one_error_line(capsys.readouterr().err, f"the vector of image {tmp_path / 'photo.png'}", problem)


@pytest.mark.parametrize("value, problem", [(np.nan, "NaN or infinite"), (np.inf, "NaN or infinite"),
                                            (0.0, "zero vector")])
def test_web_score_answers_422_for_an_unusable_vector(tmp_path, value, problem):
    from percept.web.app import create_app

    state = build_state(tmp_path, images=False)
    state.encode = lambda images: np.full((1, 64), value)
    client = TestClient(create_app(state), raise_server_exceptions=False)
    response = client.post("/api/score", files={"image": ("street.png", png_bytes(), "image/png")})
    assert response.status_code == 422 and problem in response.json()["detail"]


def test_api_predict_refuses_nan_and_zero_vectors():
    rng = np.random.default_rng(6)
    model = KNNRegressor(3).fit(unit(rng, 10), rng.uniform(1, 5, 10))
    queries = unit(rng, 3)
    assert api.predict(model, queries).shape == (3,)
    queries[1, 0] = np.nan
    with pytest.raises(PerceptError, match="query vector 1 holds NaN or infinite values"):
        api.predict(model, queries)
    with pytest.raises(PerceptError, match="query vector 0 is a zero vector"):
        api.predict(model, np.zeros(DIM))


def test_text_embeddings_of_an_environmental_dataset_are_checked(monkeypatch, tmp_path):
    from percept.encoders.options import EncodingOptions
    from percept.environment import text_vectors
    from percept.environment.options import EnvironmentOptions

    names = ["a.jpg", "b.jpg", "c.jpg"]
    texts = unit(np.random.default_rng(7), 3)
    monkeypatch.setattr(text_vectors, "image_prompts", lambda *args: ["p"] * 3)
    monkeypatch.setattr(text_vectors, "text_vectors", lambda *args: texts)
    encoding = EncodingOptions("percept:tiny", embeddings_dir=tmp_path / "emb")
    environment = EnvironmentOptions("append", 0)
    images = unit(np.random.default_rng(8), 3)
    assert text_vectors.environmental_vectors(encoding, environment, None, names, images, print).shape == (3, 2 * DIM)
    good = texts.copy()
    for row, value, problem in ((2, np.nan, "NaN or infinite"), (1, 0.0, "zero vector")):
        texts[:] = good
        texts[row] = value
        with pytest.raises(PerceptError, match=rf"text embeddings in .*, row {row} \({names[row]}\) .*{problem}"):
            text_vectors.environmental_vectors(encoding, environment, None, names, images, print)


# --------------------------------------------------------------------------- locations and rated files


def locations_geojson(path, **props):
    properties = {"image": "a.jpg", "angle": 90, "sequence": "s1", **props}
    coordinates = properties.pop("coordinates", [4.9, 52.3])
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": coordinates}, "properties": properties}]}))
    return path


@pytest.mark.parametrize("props, fragments", [
    ({"coordinates": ["4.9", "52.3"]}, ["longitude '4.9' (str)", "a number"]),
    ({"coordinates": [4.9, True]}, ["latitude True (bool)"]),
    ({"coordinates": [4.9, None]}, ["latitude None"]),
    ({"image": ["a.jpg"]}, ["image name ['a.jpg'] (list)", "a string"]),
    ({"angle": "90"}, ["angle '90' (str)", "a number or null"]),
    ({"sequence": 1.5}, ["sequence 1.5 (float)", "a string, a whole number or null"]),
])
def test_location_geojson_types(tmp_path, props, fragments, capsys, model_path, city):
    path = locations_geojson(tmp_path / "loc.geojson", **props)
    names, vectors = city
    folder = write_embeddings(tmp_path / "emb", names, vectors, 10)
    assert rate_cli(model_path, folder, tmp_path / "rated.csv", "--locations", path, "--quiet") == 2
    one_error_line(capsys.readouterr().err, str(path), "feature 0", *fragments)


def test_location_geojson_accepts_numbers_ids_and_nulls(tmp_path):
    path = locations_geojson(tmp_path / "loc.geojson", image=1234, angle=None, sequence=None, coordinates=[5, 52])
    assert read_locations(path).lookup(["1234.jpg"])[["lon", "lat"]].iloc[0].tolist() == [5.0, 52.0]


@pytest.mark.parametrize("content, fragments", [
    ("image,walkability,lon,lat\na.jpg,3.0,4.9,north\n", ["row 1 holds 'north' in column 'lat'"]),
    ("image,walkability,lon,lat\na.jpg,3.0,4.9,52.3\nb.jpg,high,4.9,52.3\n", ["row 2 holds 'high'", "'walkability'"]),
])
def test_rated_file_columns_are_numbers(tmp_path, content, fragments):
    path = tmp_path / "rated.csv"
    path.write_text(content)
    with pytest.raises(PerceptError) as error:
        read_rated(path)
    assert all(fragment in str(error.value) for fragment in fragments)


def test_rated_geojson_with_a_bad_feature(tmp_path):
    path = tmp_path / "rated.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": ["not a feature"]}))
    with pytest.raises(PerceptError, match="feature 0 is not a Point feature"):
        read_rated(path)


# --------------------------------------------------------------------------- the embeddings folder name


@pytest.mark.parametrize("model, name, legacy", [
    ("percept:tiny", "embeddings-percept_tiny", "embeddings-percept:tiny"),
    ("open_clip:ViT-B-32", "embeddings-open_clip_ViT-B-32", "embeddings-open_clip:ViT-B-32"),
    ("open_clip:ViT-H-14/laion2b s32b", "embeddings-open_clip_ViT-H-14_laion2b_s32b",
     "embeddings-open_clip:ViT-H-14_laion2b s32b"),
    ("ViT-B/32", "embeddings-ViT-B_32", "embeddings-ViT-B_32"),
])
def test_default_folder_names(model, name, legacy):
    assert embeddings_dir_name(model) == name and legacy_embeddings_dir_name(model) == legacy


def test_old_cache_name_is_found_and_the_new_one_preferred(tmp_path, reference_dir, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    shutil.copy(reference_dir / "survey" / "data.geojson", tmp_path)
    old, new = legacy_embeddings_dir_name(REFERENCE_MODEL), embeddings_dir_name(REFERENCE_MODEL)
    shutil.copytree(reference_dir / "survey" / "embeddings", tmp_path / "embeddings")
    argv = ["-g", "data.geojson", "-M", REFERENCE_MODEL, "-q", "--encoder", "builtin"]
    assert dropin_main(argv + ["-e", "embeddings"]) == 0
    expected = capsys.readouterr().out
    shutil.copytree(tmp_path / "embeddings", tmp_path / old)
    assert default_embeddings_dir(REFERENCE_MODEL) == old
    assert dropin_main(argv) == 0 and capsys.readouterr().out == expected
    assert dropin_main(argv + ["-e", old]) == 0 and capsys.readouterr().out == expected
    shutil.copytree(tmp_path / "embeddings", tmp_path / new)
    vectors = np.load(tmp_path / new / "img_emb" / "img_emb_0.npy")
    vectors[3, 0] = np.nan
    np.save(tmp_path / new / "img_emb" / "img_emb_0.npy", vectors)
    assert default_embeddings_dir(REFERENCE_MODEL) == new
    assert dropin_main(argv) == 2
    one_error_line(capsys.readouterr().err, f"{new}/img_emb/img_emb_0.npy row 3")


def test_encode_reuses_a_cache_under_the_old_name(tmp_path, monkeypatch, capsys):
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    (tmp_path / "images").mkdir()
    for i in range(3):
        Image.new("RGB", (32, 24), (70 * i, 90, 200)).save(tmp_path / "images" / f"{i}.jpg")
    old = legacy_embeddings_dir_name("percept:tiny")
    assert percept_main(["encode", "images", "-m", "percept:tiny", "-o", old]) == 0
    assert "3 encoded" in capsys.readouterr().err
    assert percept_main(["encode", "images", "-m", "percept:tiny"]) == 0
    assert "0 encoded, 3 from the cache" in capsys.readouterr().err
    assert not (tmp_path / embeddings_dir_name("percept:tiny")).exists()
    shutil.rmtree(tmp_path / old)
    assert percept_main(["encode", "images", "-m", "percept:tiny", "-q"]) == 0
    assert (tmp_path / "embeddings-percept_tiny" / "img_emb" / "img_emb_0.npy").is_file()


def test_console_script_prints_one_line_for_a_nan_embedding(survey_copy):
    import subprocess
    import sys

    path = survey_copy / "embeddings" / "img_emb" / "img_emb_0.npy"
    vectors = np.load(path)
    vectors[250, 7] = np.inf
    np.save(path, vectors)
    done = subprocess.run([sys.executable, "-m", "percept.cli.dropin", "-g", "data.geojson", "-e", "embeddings",
                           "-M", REFERENCE_MODEL, "--encoder", "builtin"], cwd=survey_copy, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2 and done.stdout == ""
    one_error_line(done.stderr, "embeddings/img_emb/img_emb_0.npy row 250 (", "NaN or infinite")
