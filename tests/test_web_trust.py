"""How far each number of the web API can be trusted: /api/score's prediction interval and dissimilarity
(against a brute force and the conformal rule worked by hand), the weight each similar survey image and
each nearby rated image had in a score, the rated points' intervals, and ``percept serve --interval``."""

from __future__ import annotations

import io
import math

import brute_force
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from web_fixtures import CENTRE, TINY, build_state, calibration, png_bytes, write_model

from percept.categories import CATEGORIES
from percept.cli.main import build_parser, main
from percept.cli.serve import build_app
from percept.encoders import encode_pil_images, load_encoder
from percept.model.io import load_model
from percept.model.knn import l2_normalise
from percept.web.app import create_app


def client_for(tmp, **state_options) -> TestClient:
    return TestClient(create_app(build_state(tmp, **state_options)), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trust")
    return client_for(tmp, calibrated=True, crops=3), load_model(tmp / "model.npz"), tmp / "rated.csv"


def upload(client: TestClient, picture: bytes | None = None) -> dict:
    response = client.post("/api/score", files={"image": ("street.png", picture or png_bytes(), "image/png")})
    assert response.status_code == 200, response.text
    return response.json()


def photo_vector(picture: bytes | None = None) -> np.ndarray:
    photo = Image.open(io.BytesIO(picture or png_bytes())).convert("RGB")
    return l2_normalise(encode_pil_images(load_encoder(TINY), [photo]))[0]


def expected_interval(model, category: str, query: np.ndarray, level: float) -> tuple[float, float, float]:
    """(lo, hi, dissimilarity) by hand: mean ± q (sd + beta d), q the ceil((n+1) level)-th smallest
    calibration score, d the chord distance to the nearest sample over the survey's mean, clipped to 1-5."""
    mean, sd, best = brute_force.estimate(model.vectors[category], model.scores[category], query, 5, "softmax10**")
    far = math.sqrt(2 - 2 * best) / model.mean_distance
    fitted = calibration(category)
    q = fitted.scores[math.ceil((len(fitted.scores) + 1) * level) - 1]
    half = q * (sd + fitted.beta * far)
    return min(max(mean - half, 1.0), 5.0), min(max(mean + half, 1.0), 5.0), far


@pytest.mark.parametrize("picture", [png_bytes(), png_bytes((64, 40), (200, 40, 90))])
def test_score_carries_the_interval_and_dissimilarity(calibrated, picture):
    client, model, _ = calibrated
    body = upload(client, picture)
    query = photo_vector(picture)
    assert body["interval"]["level"] == 0.9
    assert set(body["interval"]["lo"]) == set(body["interval"]["hi"]) == set(CATEGORIES)
    for category in CATEGORIES:
        lo, hi, _ = expected_interval(model, category, query, 0.9)
        assert body["interval"]["lo"][category] == pytest.approx(lo, abs=2e-6)
        assert body["interval"]["hi"][category] == pytest.approx(hi, abs=2e-6)
        assert lo <= body["scores"][category] <= hi
    best = max(brute_force.estimate(model.vectors[c], model.scores[c], query, 5, "softmax10**")[2] for c in CATEGORIES)
    assert body["dissimilarity"] == pytest.approx(math.sqrt(2 - 2 * best) / model.mean_distance, abs=2e-6)


def test_the_interval_level_is_the_servers(tmp_path):
    client = client_for(tmp_path, calibrated=True, interval=0.5)
    model = load_model(tmp_path / "model.npz")
    body = upload(client)
    assert body["interval"]["level"] == 0.5
    lo, hi, _ = expected_interval(model, "safety", photo_vector(), 0.5)
    assert (body["interval"]["lo"]["safety"], body["interval"]["hi"]["safety"]) == (
        pytest.approx(lo, abs=2e-6), pytest.approx(hi, abs=2e-6))


@pytest.mark.parametrize("calibrated,interval", [(False, None), (True, 0.0)])
def test_no_calibration_or_intervals_off_gives_null(tmp_path, calibrated, interval):
    body = upload(client_for(tmp_path, calibrated=calibrated, interval=interval))
    assert body["interval"] is None
    assert body["dissimilarity"] > 0 and set(body["scores"]) == set(CATEGORIES)


def test_similar_images_carry_the_weight_they_had_in_the_scores(calibrated):
    """Each similar image's weight times its rating, summed, gives the score: the weights are the model's."""
    client, model, _ = calibrated
    body = upload(client)
    query = photo_vector()
    for category in CATEGORIES:
        weights = np.array([item["weights"][category] for item in body["similar"]])
        ratings = np.array([item["ratings"][category] for item in body["similar"]])
        assert weights.sum() == pytest.approx(1.0, abs=1e-5) and (weights > 0).all()
        assert np.sum(weights * ratings) == pytest.approx(body["scores"][category], abs=1e-5)
        chosen = brute_force.nearest(model.vectors[category], query, 5)
        assert [item["vector"] for item in body["similar"]] == list(chosen)  # one sample per vector here
    assert body["similar"][0]["weights"]["walkability"] == max(i["weights"]["walkability"] for i in body["similar"])


def test_point_lists_each_images_inverse_distance_weight(calibrated):
    client, _, rated = calibrated
    table = pd.read_csv(rated).set_index("image")
    body = client.get("/api/point", params={"lat": CENTRE[0], "lon": CENTRE[1], "radius": 120}).json()
    assert 1 < body["count"] == body["shown"] <= 25
    distance = np.array([p["distance_m"] for p in body["points"]])
    inverse = 1 / np.maximum(distance, 1.0) ** 2
    weights = np.array([p["weight"] for p in body["points"]])
    np.testing.assert_allclose(weights, inverse / inverse.sum(), rtol=1e-3)
    for category in CATEGORIES:
        scores = np.array([table.loc[p["image"], category] for p in body["points"]])
        assert np.sum(weights * scores) == pytest.approx(body["scores"][category], abs=1e-4)


def test_rated_points_carry_their_interval_and_dissimilarity(calibrated):
    client, _, rated = calibrated
    table = pd.read_csv(rated).set_index("image")
    features = client.get("/api/rated", params={"category": "greenness", "limit": 1000}).json()["features"]
    singles = [f["properties"] for f in features if len(f["properties"]["crops"]) == 1]
    assert len(singles) == 60
    for props in singles:
        row = table.loc[props["image"]]
        assert props["lo"] == pytest.approx(row.greenness_lo, abs=1e-6)
        assert props["hi"] == pytest.approx(row.greenness_hi, abs=1e-6)
        assert props["dissimilarity"] == pytest.approx(row.dissimilarity, abs=1e-6)
        assert props["out_of_domain"] is bool(row.out_of_domain)
    panorama = next(f["properties"] for f in features if len(f["properties"]["crops"]) > 1)
    for crop in panorama["crops"]:
        assert crop["lo"] == pytest.approx(table.loc[crop["image"], "greenness_lo"], abs=1e-6)
        assert crop["hi"] == pytest.approx(table.loc[crop["image"], "greenness_hi"], abs=1e-6)
    nearest = client.get("/api/point", params={"lat": CENTRE[0], "lon": CENTRE[1], "radius": 200}).json()["points"][0]
    row = table.loc[nearest["image"]]
    assert nearest["lo"] == {c: pytest.approx(row[f"{c}_lo"], abs=1e-6) for c in CATEGORIES}
    assert nearest["hi"] == {c: pytest.approx(row[f"{c}_hi"], abs=1e-6) for c in CATEGORIES}
    assert nearest["dissimilarity"] == pytest.approx(row.dissimilarity, abs=1e-6)


def test_rated_files_without_intervals_send_none(tmp_path):
    props = client_for(tmp_path).get("/api/rated", params={"category": "safety"}).json()["features"][0]["properties"]
    assert not {"lo", "hi", "dissimilarity"} & set(props)


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve_interval")
    return write_model(tmp / "plain.npz"), write_model(tmp / "calibrated.npz", calibrated=True)


def served(*argv: str) -> TestClient:
    args = build_parser(["serve"]).parse_args(["serve", "--allow-host", "testserver", *argv])
    return TestClient(build_app(args), raise_server_exceptions=False)


@pytest.mark.parametrize("flags,level", [((), 0.9), (("--interval", "0.8"), 0.8), (("--interval", "0"), None)])
def test_serve_interval_flag(model_files, flags, level):
    body = upload(served("--model", str(model_files[1]), *flags))
    assert (body["interval"] or {}).get("level") == level


def test_serve_without_calibration_shows_no_intervals_by_default(model_files):
    assert upload(served("--model", str(model_files[0])))["interval"] is None


@pytest.mark.parametrize("level", ["1", "1.5", "-0.1", "nan", "ninety"])
def test_serve_refuses_a_level_outside_0_to_1(model_files, level, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["serve", "--model", str(model_files[1]), "--interval", level])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: ") and "--interval" in err and "between 0 and 1" in err and repr(level) in err


def test_serve_refuses_a_level_the_model_cannot_give(model_files, capsys):
    assert main(["serve", "--model", str(model_files[0]), "--interval", "0.9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no interval calibration" in err and len(err.splitlines()) == 1


def test_rated_intervals_carry_the_level_the_rated_file_records(tmp_path):
    """GeoJSON and Parquet rated files record their intervals' level (``percept rate``); the API passes it on."""
    import dataclasses
    import json

    from percept.data.rated_points import read_rated

    state = build_state(tmp_path, calibrated=True)
    table = pd.read_csv(tmp_path / "rated.csv")
    features = [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [row.lon, row.lat]},
                 "properties": {k: v for k, v in row._asdict().items() if k not in ("Index", "lon", "lat")}}
                for row in table.itertuples()]
    path = tmp_path / "rated.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "percept": {"model_card": "abc", "interval_level": 0.8},
                                "features": features}, default=lambda v: v.item()))
    client = TestClient(create_app(dataclasses.replace(state, rated=read_rated(path))))
    props = client.get("/api/rated", params={"category": "safety", "limit": 1000}).json()["features"][0]["properties"]
    assert props["level"] == 0.8 and "lo" in props
