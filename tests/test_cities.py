"""Another city: leave-one-city-out scores in the report (--group-by column:city) and a model trained on one
city's survey scored on another's (--test-survey), checked against a direct KNN computation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from percept.categories import CATEGORIES
from percept.cli.main import main as percept_main
from percept.data.embeddings import read_embeddings
from percept.model.knn import KNNRegressor, l2_normalise
from percept.study.holdout import regression_metrics
from percept.synthetic.spatial import generate_spatial_survey


@pytest.fixture(scope="module")
def two_cities(tmp_path_factory):
    root = tmp_path_factory.mktemp("cities")
    generate_spatial_survey(root, n_panoramas=300, dim=32, seed=4, cities=2)
    data = json.loads((root / "data.geojson").read_text())
    for city in ("city-1", "city-2"):
        part = dict(data, features=[f for f in data["features"] if f["properties"]["city"] == city])
        (root / f"{city}.geojson").write_text(json.dumps(part))
    return root


def flags(root, survey="data.geojson"):
    return ["evaluate", "-g", str(root / survey), "-e", str(root / "embeddings"), "-M", "synthetic", "-q"]


def test_leave_one_city_out_scores_are_in_the_report(two_cities, tmp_path, capsys):
    report = tmp_path / "report"
    assert percept_main([*flags(two_cities), "-k", "5,10", "--group-by", "column:city", "--cv", "2",
                         "--no-baselines", "--report", str(report)]) == 0
    # one city per training part leaves nothing to split again: said, and the rest of the study stands
    assert "nested cross-validation skipped" in capsys.readouterr().err
    sections = json.loads((report / "report.json").read_text())["sections"]
    folds = [f for f in sections["folds"] if f["category"] == "walkability"]
    assert sorted(f["held_out"] for f in folds) == ["city-1", "city-2"]
    data = json.loads((two_cities / "data.geojson").read_text())["features"]
    for fold in folds:
        rated = sum(f["properties"]["city"] == fold["held_out"] and f["properties"]["average_walkability"] is not None
                    for f in data)
        assert fold["samples"] == rated and np.isfinite(fold["mse"])
    assert "Scores per fold" in (report / "report.html").read_text()


def test_a_model_of_one_city_scored_on_another(two_cities, tmp_path, capsys):
    report = tmp_path / "report"
    assert percept_main([*flags(two_cities, "city-1.geojson"), "-k", "10", "--no-baselines",
                         "--test-survey", str(two_cities / "city-2.geojson"), "--report", str(report)]) == 0
    printed = capsys.readouterr().out
    other = json.loads((report / "report.json").read_text())["sections"]["test_survey"]["categories"]
    # the same scores from a direct KNN: trained on every city-1 average, predicting city-2's images
    embeddings = read_embeddings(two_cities / "embeddings")
    vectors = l2_normalise(np.asarray(embeddings.vectors, dtype=np.float64))
    row_of = {name.rsplit("/", 1)[-1]: i for i, name in enumerate(embeddings.names)}

    def samples(city, category):
        features = json.loads((two_cities / f"{city}.geojson").read_text())["features"]
        kept = [f["properties"] for f in features if f["properties"][f"average_{category}"] is not None]
        return (np.array([row_of[p["url"].rsplit("/", 1)[-1]] for p in kept]),
                np.array([p[f"average_{category}"] for p in kept]))

    for category in CATEGORIES:
        train_rows, train_scores = samples("city-1", category)
        test_rows, test_scores = samples("city-2", category)
        predicted = KNNRegressor(10).fit(vectors[train_rows], train_scores).predict(vectors[test_rows])
        mse, r2 = regression_metrics(test_scores, predicted)
        assert other[category]["samples"] == len(test_rows)
        assert other[category]["mse"] == pytest.approx(mse, abs=1e-9)
        assert other[category]["r2"] == pytest.approx(r2, abs=1e-9)
        assert other[category]["out_of_domain"] > 0.2  # far more than the 5 % of the survey's own images
        assert 0 <= other[category]["coverage"] <= 1
    assert "scored on" in printed and "outside domain" in printed
