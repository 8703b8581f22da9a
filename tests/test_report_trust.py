"""The evaluation report says how far its numbers can be trusted: intervals on every score, nested
cross-validation, inter-rater reliability and the intervals' coverage, each checked against the
library that computes it (the libraries themselves are checked against independent ones elsewhere)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from percept.cli.main import main as percept_main
from percept.study.nested import metric_intervals, pooled_metrics
from percept.study.reliability import survey_reliability


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from conftest import REFERENCE

    out = tmp_path_factory.mktemp("trust")
    survey = REFERENCE / "survey"
    assert percept_main(["evaluate", "-g", str(survey / "data.geojson"), "-e", str(survey / "embeddings"),
                         "-M", "open_clip:ViT-B-32", "-d", str(survey / "demo.csv"), "-k", "5,10", "--cv", "3",
                         "--no-baselines", "--report", str(out / "report"), "-q"]) == 0
    return json.loads((out / "report" / "report.json").read_text()), out / "report", survey


def test_every_score_has_an_interval_resampling_images(report):
    data, folder, _ = report
    oof = pd.read_csv(folder / "oof_predictions.csv")
    part = oof[(oof["category"] == "safety") & (oof["K"] == 10)].sort_values(["repeat", "sample"])
    observed = part[part["repeat"] == part["repeat"].min()]["observed"].to_numpy()
    predicted = part.pivot(index="repeat", columns="sample", values="predicted").to_numpy()
    images = part[part["repeat"] == part["repeat"].min()]["image"].to_numpy()
    found = data["sections"]["scores"]["safety"]["10"]  # (the CSV holds predictions to 6 significant digits)
    assert found["mse"] == pytest.approx(pooled_metrics(observed, predicted)["mse"], rel=1e-5)
    assert found["mse_ci"] == pytest.approx(list(metric_intervals(observed, predicted, images, 0)["mse"]), rel=1e-5)
    assert found["mse_ci"][0] <= found["mse"] <= found["mse_ci"][1]


def test_nested_cross_validation_and_coverage_are_reported(report):
    data, folder, _ = report
    nested = data["sections"]["nested"]["walkability"]
    assert sum(nested["k_counts"].values()) == 3  # one choice per outer fold
    assert nested["mse_ci"][0] <= nested["mse"] <= nested["mse_ci"][1]
    coverage = data["sections"]["intervals"]["categories"]["walkability"]
    assert coverage["samples"] == coverage["samples_in_domain"] + coverage["samples_out_of_domain"]
    assert 0.8 <= coverage["coverage"] <= 1.0
    page = (folder / "report.html").read_text()
    for title in ("Scores with 95 % intervals", "Nested cross-validation", "Prediction intervals", "Raters"):
        assert title in page


def test_reliability_of_the_ratings(report):
    data, _, survey = report
    ratings = pd.read_csv(survey / "demo.csv")
    want = {r.category: r for r in survey_reliability(ratings, "session_id", seed=0)}
    for category, found in data["sections"]["reliability"].items():
        assert found["alpha"]["value"] == pytest.approx(want[category].alpha.value, abs=1e-12)
        assert found["icc2k"]["value"] == pytest.approx(want[category].icc2k.value, abs=1e-12)
        assert np.isfinite(found["r2_ceiling"]["value"])
