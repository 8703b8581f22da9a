"""The sample survey generators: determinism, file formats, the latent model, and ``percept sample``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from percept.categories import CATEGORIES
from percept.cli import sample as sample_cli
from percept.cli.common import ArgumentParser, report_errors
from percept.data.embeddings import read_embeddings
from percept.data.ratings import load_ratings
from percept.data.survey import load_survey
from percept.environment.keys import ENV_KEYS
from percept.synthetic.sample import SIZE, generate_sample
from percept.synthetic.simulation import (
    DEMO_COLUMNS,
    FEATURES,
    LAT_RANGE,
    LON_RANGE,
    MARKER,
    URL_PREFIX,
    true_scores,
)
from percept.synthetic.vectors import generate_synthetic_survey

INT_MEASURES = re.compile(r"_count_\d+$|^num_nodes_|^num_edges_")
NAME = re.compile(r"^(\d{7})_x([0-3])\.jpg$")


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sample") / "survey"
    generate_sample(root, n_images=60, seed=0)
    return root


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "survey"
    generate_synthetic_survey(root, n_images=400, dim=48, ratings_per_image=3.0, seed=0, parts=2)
    return root


def read_tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def features_of(root: Path) -> list[dict]:
    return json.loads((root / "data.geojson").read_text(encoding="utf-8"))["features"]


def green_share(path: Path) -> float:
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return float(((g > r + 20) & (g > b + 20)).mean())


def check_survey_format(root: Path) -> tuple[list[dict], pd.DataFrame]:
    """Every feature in the survey export's format; every rating row valid; averages = rating means."""
    features = features_of(root)
    keys = ["image_id", "url", *(f"average_{c}" for c in CATEGORIES), *ENV_KEYS]
    for number, feature in enumerate(features, start=1):
        props = feature["properties"]
        assert list(props) == keys
        assert props["image_id"] == number and props["url"].startswith(URL_PREFIX)
        assert NAME.match(props["url"].rsplit("/", 1)[1])
        for key in ENV_KEYS:
            assert isinstance(props[key], int if INT_MEASURES.search(key) else float), key
        lon, lat = feature["geometry"]["coordinates"]
        assert feature["geometry"]["type"] == "Point"
        assert LON_RANGE[0] <= lon <= LON_RANGE[1] and LAT_RANGE[0] <= lat <= LAT_RANGE[1]
    ratings = pd.read_csv(root / "demo.csv", keep_default_na=False)
    assert tuple(ratings.columns) == DEMO_COLUMNS
    assert ratings["rating"].between(1, 5).all() and ratings["category_id"].between(1, 5).all()
    assert ratings["rating_id"].tolist() == list(range(1, len(ratings) + 1))
    means = ratings.groupby(["image_id", "category_id"])["rating"].mean()
    for feature in features:
        props = feature["properties"]
        for category_id, category in enumerate(CATEGORIES, start=1):
            expected = means.get((props["image_id"], category_id))
            assert props[f"average_{category}"] == (None if expected is None else pytest.approx(expected, abs=1e-12))
    return features, ratings


def test_sample_is_deterministic_for_a_seed(tmp_path):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        generate_sample(tmp_path / name, n_images=12, seed=seed)
    first, again, other = (read_tree(tmp_path / n) for n in "abc")
    assert first == again
    assert first["data.geojson"] != other["data.geojson"]
    assert first["demo.csv"] != other["demo.csv"]
    assert first.keys() != other.keys() or any(first[k] != other[k] for k in first if k.startswith("images/"))


def test_sample_files_match_the_survey_formats(sample):
    features, ratings = check_survey_format(sample)
    names = [f["properties"]["url"].rsplit("/", 1)[1] for f in features]
    assert len(features) == 60 and len(set(names)) == 60
    assert sorted(p.name for p in (sample / "images").iterdir()) == sorted(names)
    panoramas = pd.Series([NAME.match(n).group(1) for n in names])
    assert panoramas.value_counts().max() > 1, "several crops share a panorama"
    assert set(ratings["image_id"]) <= set(range(1, 61))
    for name in names[:10]:
        with Image.open(sample / "images" / name) as image:
            image.load()
            assert image.format == "JPEG" and image.mode == "RGB" and image.size == (SIZE, SIZE)
    locations = pd.read_csv(sample / "locations.csv")
    assert list(locations.columns) == ["image", "lon", "lat", "angle", "sequence"]
    assert locations["image"].tolist() == names
    coordinates = np.array([f["geometry"]["coordinates"] for f in features])
    np.testing.assert_allclose(locations[["lon", "lat"]].to_numpy(), coordinates)
    assert locations["angle"].between(0, 360).all()


def test_sample_loads_with_the_survey_readers(sample):
    survey = load_survey(sample / "data.geojson")
    ratings = load_ratings(sample / "demo.csv", ("gender", "age", "education", "country", "postalcode"))
    assert len(survey.features) == 60 and survey.duplicates == 0
    assert ratings["age"].between(18, 80).all()


def test_drawn_elements_drive_the_scores(sample):
    features, _ = check_survey_format(sample)
    scenes = pd.read_csv(sample / "scenes.csv")
    measured = np.array([green_share(sample / "images" / name) for name in scenes["image"]])
    assert np.corrcoef(measured, scenes["green"])[0, 1] > 0.95
    assert np.corrcoef(measured, scenes["true_greenness"])[0, 1] > 0.8
    rated = [(m, f["properties"]["average_greenness"]) for m, f in zip(measured, features)
             if f["properties"]["average_greenness"] is not None]
    assert len(rated) > 15
    assert np.corrcoef(np.array(rated).T)[0, 1] > 0.4
    truth = scenes[[f"true_{c}" for c in CATEGORIES]].to_numpy()
    np.testing.assert_allclose(true_scores(scenes[list(FEATURES)].to_numpy()), truth, atol=2e-3)


def test_synthetic_survey_has_the_asked_shape(synthetic):
    embeddings = read_embeddings(synthetic / "embeddings")
    assert embeddings.vectors.shape == (400, 48) and embeddings.vectors.dtype == np.float16
    np.testing.assert_allclose(np.linalg.norm(embeddings.vectors.astype(np.float64), axis=1), 1.0, atol=2e-3)
    features, ratings = check_survey_format(synthetic)
    assert [Path(n).name for n in embeddings.names] == [f["properties"]["url"].rsplit("/", 1)[1] for f in features]
    assert 0.85 * 1200 < len(ratings) < 1.15 * 1200
    assert ratings["category_id"].value_counts().min() > 150


def test_synthetic_vectors_carry_the_scores(synthetic):
    vectors = read_embeddings(synthetic / "embeddings").vectors.astype(np.float64)
    truth = pd.read_csv(synthetic / "scenes.csv")[[f"true_{c}" for c in CATEGORIES]].to_numpy()
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = similarity.argmax(axis=1)
    for c, category in enumerate(CATEGORIES):
        assert np.corrcoef(truth[:, c], truth[nearest, c])[0, 1] > 0.5, category


def test_synthetic_is_deterministic_and_independent_of_parts(tmp_path, synthetic):
    generate_synthetic_survey(tmp_path / "same", n_images=400, dim=48, seed=0, parts=2)
    generate_synthetic_survey(tmp_path / "one", n_images=400, dim=48, seed=0, parts=1)
    generate_synthetic_survey(tmp_path / "other", n_images=400, dim=48, seed=1, parts=2)
    assert read_tree(tmp_path / "same") == read_tree(synthetic)
    np.testing.assert_array_equal(read_embeddings(tmp_path / "one" / "embeddings").vectors,
                                  read_embeddings(synthetic / "embeddings").vectors)
    assert read_tree(tmp_path / "other")["data.geojson"] != read_tree(synthetic)["data.geojson"]


def run_cli(argv: list[str]) -> int:
    parser = ArgumentParser(prog="percept")
    sample_cli.register(parser.add_subparsers(parser_class=ArgumentParser))
    args = parser.parse_args(argv)
    return report_errors(lambda: args.run(args))


def test_cli_writes_a_sample_and_rewrites_an_earlier_one_with_force(tmp_path, capsys):
    target = tmp_path / "demo"
    assert run_cli(["sample", str(target), "--images", "9", "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert "9 images" in out and all(c in out for c in CATEGORIES)
    before = read_tree(target)
    assert run_cli(["sample", str(target), "--images", "4", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "not empty" in err and "--force" in err
    assert read_tree(target) == before
    assert run_cli(["sample", str(target), "--images", "4", "--quiet", "--force"]) == 0
    assert capsys.readouterr().out == ""
    assert len(list((target / "images").iterdir())) == 4
    assert run_cli(["sample", str(target), "--synthetic", "--images", "30", "--dim", "8", "--quiet", "--force"]) == 0
    assert not (target / "images").exists()
    assert read_embeddings(target / "embeddings").vectors.shape == (30, 8)


def test_cli_refuses_a_folder_that_is_not_a_sample(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine", encoding="utf-8")
    assert run_cli(["sample", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a sample survey" in err and "--force" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    assert run_cli(["sample", str(tmp_path / "new"), "--dim", "8"]) == 2
    assert not (tmp_path / "new").exists()
    with pytest.raises(SystemExit) as stop:
        run_cli(["sample", str(tmp_path / "new"), "--random-seed", "-1"])
    assert stop.value.code == 2


def test_force_writes_into_a_foreign_folder_and_keeps_its_files(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine", encoding="utf-8")
    assert run_cli(["sample", str(tmp_path), "--images", "3", "--quiet", "--force"]) == 0
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "mine"
    assert (tmp_path / MARKER).is_file() and len(list((tmp_path / "images").iterdir())) == 3


def test_an_empty_folder_needs_no_force(tmp_path):
    assert run_cli(["sample", str(tmp_path), "--images", "2", "--quiet"]) == 0
    assert (tmp_path / "data.geojson").is_file()
