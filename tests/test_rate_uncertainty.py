"""``percept rate`` carries <category>_sd, best_similarity, out_of_domain and in_survey in every output
format; survey images are scored without their own samples (leave-one-out) unless --include-self;
rated files with these columns still load in the map, the web app and ``percept map``."""

from __future__ import annotations

import json

import brute_force
import numpy as np
import pandas as pd
import pytest
from test_rating import write_embeddings

from percept.categories import CATEGORIES
from percept.city.rating import rate
from percept.cli.main import main as percept_main
from percept.data.locations import read_locations
from percept.data.rated_points import read_rated
from percept.model.io import ModelSettings, load_model, save_model
from percept.model.knn import l2_normalise

DIM = 12
K = 6
UNCERTAINTY = [*(f"{c}_sd" for c in CATEGORIES), "best_similarity", "dissimilarity", "out_of_domain", "in_survey"]


@pytest.fixture
def survey(tmp_path):
    """A model of 60 named survey images in a cone around the first axis (as photos' vectors cluster),
    two ratings of each image per category (one sample per rating)."""
    rng = np.random.default_rng(0)
    vectors = l2_normalise(rng.normal(size=(60, DIM)) + 3 * np.eye(DIM)[0])
    names = [f"survey_{i}.jpg" for i in range(60)]
    rows = np.repeat(np.arange(60), 2)
    path = tmp_path / "model.npz"
    save_model(path, {c: vectors[rows] for c in CATEGORIES}, {c: rng.uniform(1, 5, len(rows)) for c in CATEGORIES},
               ModelSettings(clip_model="percept:tiny", k=K), {c: [names[r] for r in rows] for c in CATEGORIES})
    return path, vectors, names


@pytest.fixture
def city(tmp_path, survey):
    """15 city images: 5 survey images (as encoded again, float16) and 10 new ones; locations for all."""
    _, vectors, names = survey
    rng = np.random.default_rng(1)
    city_names = [*names[:5], *(f"new_{i}.jpg" for i in range(10))]
    city_vectors = np.vstack([vectors[:5], l2_normalise(rng.normal(size=(10, DIM)) + 3 * np.eye(DIM)[0])])
    city_vectors[10] = -np.eye(DIM)[0]  # unlike every survey image
    city_vectors = city_vectors.astype(np.float16)
    folder = write_embeddings(tmp_path / "emb", [f"/data/{n}" for n in city_names], city_vectors, 6)
    locations = tmp_path / "locations.csv"
    locations.write_text("image,lon,lat\n" + "".join(f"{n},{4.9 + i * 1e-3},{52.37 + i * 1e-3}\n"
                                                      for i, n in enumerate(city_names)))
    return folder, city_names, city_vectors, locations


def expected(model_path, city_names, city_vectors, include_self=False):
    """Brute force: per city image, scores and sd per category, best similarity, flags."""
    model = load_model(model_path)
    queries = l2_normalise(np.asarray(city_vectors, dtype=np.float64))
    survey_names = set(model.images["walkability"])
    table = {"image": city_names}
    for category in CATEGORIES:
        images = np.array(model.images[category])
        rows = [brute_force.estimate(model.vectors[category], model.scores[category], q, K, "softmax10**",
                                     None if include_self else images == name)
                for q, name in zip(queries, city_names)]
        table[category] = [r[0] for r in rows]
        table[f"{category}_sd"] = [r[1] for r in rows]
        table.setdefault("best", []).append([r[2] for r in rows])
    best = np.max(np.array(table.pop("best")), axis=0)
    table["best_similarity"] = best
    table["out_of_domain"] = best < model.domain_threshold
    table["in_survey"] = [n in survey_names for n in city_names]
    return pd.DataFrame(table)


def check(table: pd.DataFrame, want: pd.DataFrame) -> None:
    assert table["image"].tolist() == want["image"].tolist()
    numbers = [*CATEGORIES, *(f"{c}_sd" for c in CATEGORIES), "best_similarity"]
    np.testing.assert_allclose(table[numbers].to_numpy(float), want[numbers].to_numpy(float), rtol=0, atol=1e-12)
    assert table["out_of_domain"].astype(bool).tolist() == want["out_of_domain"].tolist()
    assert table["in_survey"].astype(bool).tolist() == want["in_survey"].tolist()


def geojson_table(path) -> pd.DataFrame:
    return pd.DataFrame([f["properties"] for f in json.loads(path.read_text())["features"]])


@pytest.mark.parametrize("suffix,located", [(".csv", False), (".csv", True), (".parquet", False),
                                            (".parquet", True), (".geojson", True)])
def test_every_output_format_carries_the_uncertainty_columns(tmp_path, survey, city, suffix, located):
    folder, city_names, city_vectors, locations = city
    out = tmp_path / f"rated{suffix}"
    summary = rate(load_model(survey[0]), folder, out, locations=read_locations(locations) if located else None,
                   chunk_size=4, quiet=True)
    assert summary.in_survey == 5 and summary.out_of_domain >= 1
    table = geojson_table(out) if suffix == ".geojson" else pd.read_parquet(out) if suffix == ".parquet" \
        else pd.read_csv(out)
    assert list(table.columns[:1 + len(CATEGORIES) + len(UNCERTAINTY)]) == ["image", *CATEGORIES, *UNCERTAINTY]
    want = expected(survey[0], city_names, city_vectors)
    check(table, want)
    assert want["in_survey"].tolist() == [True] * 5 + [False] * 10
    assert want["out_of_domain"][10] and want["best_similarity"][10] < 0
    if suffix == ".parquet":
        assert table["out_of_domain"].dtype == bool and table["in_survey"].dtype == bool
    if located:
        rated = read_rated(out)
        np.testing.assert_allclose(rated.sd, want[[f"{c}_sd" for c in CATEGORIES]].to_numpy(), rtol=0, atol=1e-12)
        np.testing.assert_allclose(rated.best_similarity, want["best_similarity"], rtol=0, atol=1e-12)
        assert rated.in_survey.tolist() == want["in_survey"].tolist()
        assert rated.out_of_domain.tolist() == want["out_of_domain"].tolist()


def test_survey_images_are_scored_without_themselves_unless_include_self(tmp_path, survey, city):
    folder, city_names, city_vectors, _ = city
    left_out, with_self = tmp_path / "loo.csv", tmp_path / "self.csv"
    rate(load_model(survey[0]), folder, left_out, quiet=True)
    rate(load_model(survey[0]), folder, with_self, include_self=True, quiet=True)
    loo, own = pd.read_csv(left_out), pd.read_csv(with_self)
    check(own, expected(survey[0], city_names, city_vectors, include_self=True))
    assert own["in_survey"].tolist() == loo["in_survey"].tolist() == [True] * 5 + [False] * 10
    assert (own["best_similarity"][:5] > 1 - 1e-3).all() and (loo["best_similarity"][:5] < 0.99).all()
    assert (own[list(CATEGORIES)].to_numpy()[:5] != loo[list(CATEGORIES)].to_numpy()[:5]).all()
    pd.testing.assert_frame_equal(own.iloc[5:], loo.iloc[5:])


def test_a_panorama_with_a_crop_in_the_survey_leaves_that_crop_out(tmp_path):
    rng = np.random.default_rng(2)
    vectors = l2_normalise(rng.normal(size=(30, DIM)))
    names = ["pano_x0.jpg", "pano_x1.jpg", *(f"s{i}.jpg" for i in range(28))]
    model_path = tmp_path / "model.npz"
    save_model(model_path, {c: vectors for c in CATEGORIES}, {c: rng.uniform(1, 5, 30) for c in CATEGORIES},
               ModelSettings(k=4), {c: names for c in CATEGORIES})
    crops = np.vstack([vectors[:2], l2_normalise(rng.normal(size=(1, DIM)))]).astype(np.float16)
    folder = write_embeddings(tmp_path / "emb", ["pano_x0.jpg", "pano_x1.jpg", "other_x0.jpg"], crops, 5)
    out = tmp_path / "pano.csv"
    rate(load_model(model_path), folder, out, average_panoramic=True, quiet=True)
    table = pd.read_csv(out).set_index("image")
    assert table["in_survey"].to_dict() == {"pano": True, "other": False}
    query = l2_normalise(l2_normalise(crops[:2].astype(np.float64)).mean(axis=0, keepdims=True))[0]
    excluded = np.isin(np.arange(30), [0, 1])
    mean, sd, best = brute_force.estimate(vectors, load_model(model_path).scores["safety"], query, 4,
                                          "softmax10**", excluded)
    assert table.loc["pano", "safety"] == pytest.approx(mean, abs=1e-12)
    assert table.loc["pano", "safety_sd"] == pytest.approx(sd, abs=1e-12)
    assert table.loc["pano", "best_similarity"] == pytest.approx(best, abs=1e-12)


def test_rate_command_include_self_and_summary(tmp_path, survey, city, capsys):
    folder = city[0]
    out = tmp_path / "cli.csv"
    assert percept_main(["rate", "--model", str(survey[0]), "--embeddings", str(folder), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "5 in the survey (scored without their own samples)" in err and "out of domain" in err
    assert percept_main(["rate", "--model", str(survey[0]), "--embeddings", str(folder), "--out", str(out),
                         "--include-self"]) == 0
    assert "scored with their own samples" in capsys.readouterr().err
    assert (pd.read_csv(out)["best_similarity"][:5] > 1 - 1e-3).all()


@pytest.mark.parametrize("suffix", [".csv", ".geojson", ".parquet"])
def test_percept_map_reads_rated_files_with_uncertainty_columns(tmp_path, survey, city, suffix, capsys):
    folder, _, _, locations = city
    rated = tmp_path / f"rated{suffix}"
    rate(load_model(survey[0]), folder, rated, locations=read_locations(locations), quiet=True)
    for value in ([], ["--value", "walkability_sd"]):
        out = tmp_path / f"map{len(value)}.geojson"
        assert percept_main(["map", "--rated", str(rated), "--category", "walkability", "--hex", "200",
                             "--out", str(out), "--quiet", *value]) == 0, capsys.readouterr().err
        hexagons = json.loads(out.read_text())["features"]
        assert hexagons and all(f["properties"]["mean"] is not None for f in hexagons)
    table = pd.read_csv(rated) if suffix == ".csv" else geojson_table(rated) if suffix == ".geojson" \
        else pd.read_parquet(rated)
    sd_mean = json.loads((tmp_path / "map2.geojson").read_text())["features"]
    assert max(f["properties"]["mean"] for f in sd_mean) <= table["walkability_sd"].max() + 1e-9


def test_a_zero_vector_gets_empty_scores_sd_and_similarity(tmp_path, survey, city):
    folder, city_names, city_vectors, _ = city
    vectors = np.array(city_vectors)
    vectors[[1, 7]] = 0  # survey_1.jpg and new_2.jpg
    folder = write_embeddings(tmp_path / "zero", [f"/data/{n}" for n in city_names], vectors, 6)
    out = tmp_path / "rated.csv"
    summary = rate(load_model(survey[0]), folder, out, chunk_size=4, quiet=True)
    assert summary.zero.count == 2 and summary.in_survey == 5
    table = pd.read_csv(out)
    numbers = [*CATEGORIES, *(f"{c}_sd" for c in CATEGORIES), "best_similarity"]
    assert table.loc[[1, 7], numbers].isna().all().all() and not table.loc[[1, 7], "out_of_domain"].any()
    assert table.loc[[1, 7], "in_survey"].tolist() == [True, False]
    kept = [i for i in range(len(city_names)) if i not in (1, 7)]
    check(table.iloc[kept].reset_index(drop=True),
          expected(survey[0], [city_names[i] for i in kept], vectors[kept]))
