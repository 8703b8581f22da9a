"""The web API carries each prediction's uncertainty: /api/score (sd, best_similarity, out_of_domain,
against a brute force) and the rated points of /api/rated and /api/point (as ``percept rate`` wrote them)."""

from __future__ import annotations

import io
import json

import brute_force
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from test_rating import write_embeddings
from web_fixtures import CENTRE, TINY, build_state, png_bytes, write_model

from percept.categories import CATEGORIES
from percept.city.rating import rate
from percept.data.locations import read_locations
from percept.data.rated_points import read_rated
from percept.encoders import encode_pil_images, load_encoder
from percept.model.io import load_model
from percept.model.knn import l2_normalise
from percept.web.app import create_app


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The web fixtures' model and a city rated by ``percept rate``: 4 survey images and 8 new ones."""
    tmp = tmp_path_factory.mktemp("web_uncertainty")
    state = build_state(tmp)
    model = load_model(write_model(tmp / "model.npz"))
    rng = np.random.default_rng(3)
    names = [*(f"survey_{i}.png" for i in range(4)), *(f"street_{i}.png" for i in range(8))]
    vectors = np.vstack([model.vectors["walkability"][:4], l2_normalise(rng.normal(size=(8, 64)))])
    folder = write_embeddings(tmp / "emb", names, vectors.astype(np.float32), 5)
    locations = tmp / "locations.csv"
    locations.write_text("image,lon,lat\n" + "".join(f"{n},{CENTRE[1] + i * 1e-4},{CENTRE[0] + i * 1e-4}\n"
                                                      for i, n in enumerate(names)))
    rated = tmp / "rated.geojson"
    rate(model, folder, rated, locations=read_locations(locations), quiet=True)
    state.rated = read_rated(rated)
    return TestClient(create_app(state), raise_server_exceptions=False), model, rated


def test_score_carries_sd_best_similarity_and_out_of_domain(setup):
    client, model, _ = setup
    body = client.post("/api/score", files={"image": ("street.png", png_bytes(), "image/png")}).json()
    photo = Image.open(io.BytesIO(png_bytes())).convert("RGB")
    query = l2_normalise(encode_pil_images(load_encoder(TINY), [photo]))[0]
    assert set(body["sd"]) == set(CATEGORIES)
    best = -np.inf
    for category in CATEGORIES:
        mean, sd, top = brute_force.estimate(model.vectors[category], model.scores[category], query, 5, "softmax10**")
        assert body["scores"][category] == pytest.approx(mean, abs=2e-6)
        assert body["sd"][category] == pytest.approx(sd, abs=2e-6)
        best = max(best, top)
    assert body["best_similarity"] == pytest.approx(best, abs=2e-6)
    assert body["out_of_domain"] is bool(best < model.domain_threshold)
    assert body["best_similarity"] == pytest.approx(body["similar"][0]["similarity"], abs=1e-6)


def test_rated_points_carry_what_the_rated_file_records(setup):
    client, _, rated = setup
    table = pd.DataFrame([f["properties"] for f in json.loads(rated.read_text())["features"]])
    box = {"west": 4.8, "south": 52.3, "east": 5.0, "north": 52.4}
    features = client.get("/api/rated", params={**box, "category": "safety", "limit": 100}).json()["features"]
    by_image = {f["properties"]["image"]: f["properties"] for f in features}
    assert len(by_image) == 12
    for row in table.itertuples():
        props = by_image[row.image]
        assert props["sd"] == pytest.approx(row.safety_sd, abs=1e-6)
        assert props["best_similarity"] == pytest.approx(row.best_similarity, abs=1e-6)
        assert props["in_survey"] is bool(row.in_survey) and props["out_of_domain"] is bool(row.out_of_domain)
    assert [by_image[f"survey_{i}.png"]["in_survey"] for i in range(4)] == [True] * 4
    assert not any(by_image[f"street_{i}.png"]["in_survey"] for i in range(8))
    point = client.get("/api/point", params={"lat": CENTRE[0], "lon": CENTRE[1], "radius": 50}).json()
    nearest = point["points"][0]
    assert nearest["image"] == "survey_0.png" and nearest["in_survey"] is True
    assert set(nearest["sd"]) == set(CATEGORIES)
    assert nearest["sd"]["walkability"] == pytest.approx(table["walkability_sd"][0], abs=1e-6)


def test_rated_files_without_uncertainty_still_serve(tmp_path):
    client = TestClient(create_app(build_state(tmp_path)), raise_server_exceptions=False)
    features = client.get("/api/rated", params={"category": "safety"}).json()["features"]
    assert features and "sd" not in features[0]["properties"] and "value" in features[0]["properties"]
