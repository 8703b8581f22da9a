"""The report folder, and ``percept evaluate`` end to end on the reference survey."""

from __future__ import annotations

import base64
import csv
import importlib
import io
import json
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import percept
from percept.cli.common import ArgumentParser, report_errors
from percept.data.survey import Samples
from percept.model.knn import l2_normalise
from percept.study.crossval import CVPlan, cross_validate
from percept.study.folds import GroupBy
from percept.study.groups import compare_groups
from percept.study.report import write_report
from percept.study.report_summary import calibration_bins, category_summary

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_evaluate(*argv: str) -> int:
    parser = ArgumentParser(prog="percept")
    importlib.import_module("percept.cli.evaluate").register(parser.add_subparsers(parser_class=ArgumentParser))
    args = parser.parse_args(["evaluate", *argv])
    return report_errors(lambda: args.run(args))


def small_results():
    rng = np.random.default_rng(0)
    vectors = l2_normalise(rng.standard_normal((80, 12)))
    rows = np.repeat(np.arange(80), 2)
    samples = {c: Samples(rows, np.clip(np.round(3 + vectors[rows] @ rng.standard_normal(12)), 1, 5))
               for c in ("walkability", "greenness")}
    plan = CVPlan(folds=3, repeats=2, group_by=GroupBy("image"))
    results = cross_validate(vectors, samples, [3, 6], plan)
    labels = np.array(["man", "woman"] * 80, dtype=object)
    groups = [compare_groups(vectors, samples[c], labels, 3, c, plan=plan) for c in samples]
    return results, groups


FIGURES = ("metrics", "calibration", "groups")


def test_report_files_exist_and_the_html_embeds_the_images(tmp_path):
    results, groups = small_results()
    names = [f"/img/{i}.jpg" for i in range(80)]
    written = write_report(tmp_path / "report", results, {"folds": 3, "group_by": "image"}, groups, names)
    names_written = {p.name for p in written}
    assert names_written == {"report.json", "report.csv", "oof_predictions.csv", "report.html",
                             *(f"{f}.{kind}" for f in FIGURES for kind in ("png", "svg"))}
    folder = tmp_path / "report"
    assert sorted(p.name for p in folder.iterdir()) == sorted(names_written)  # no temporary files left behind
    html = (folder / "report.html").read_text()
    embedded = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)
    assert len(embedded) == 3
    for name, data in zip(FIGURES, embedded):
        png = base64.b64decode(data)
        assert png == (folder / f"{name}.png").read_bytes() and png.startswith(PNG_MAGIC)
        with Image.open(io.BytesIO(png)) as image:
            assert image.info["dpi"][0] == pytest.approx(200, abs=0.5)
        assert (folder / f"{name}.svg").read_text().lstrip().startswith(("<?xml", "<svg"))
    assert "src='http" not in html and "<link" not in html
    assert html.count("<figcaption>") == 3 and "± 1 standard deviation over 6 folds" in html
    assert f"version {percept.__version__}" in html and "<table class='settings'>" in html
    assert "Fold grouping (--group-by)</th><td>image" in html
    data = json.loads((folder / "report.json").read_text())
    assert data["version"] == percept.__version__ and data["created"]
    walk = data["categories"][0]
    assert walk["category"] == "walkability" and walk["best_k"] in (3, 6)
    assert walk["summary"].startswith(f"Walkability (160 samples): the best K is {walk['best_k']}")
    assert len(walk["rows"][0]["metrics"]["mse"]["folds"]) == 6
    assert data["groups"][0]["groups"] == ["man", "woman"] and data["groups"][0]["folds"] == 6
    with open(folder / "report.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["category"], r["model"], r["k"]) for r in rows[:4]] == [
        ("walkability", "knn", "3"), ("walkability", "knn", "6"), ("walkability", "mean", ""),
        ("walkability", "ridge", "")]
    assert sum(r["best"] == "True" for r in rows) == 2


def test_oof_predictions_rescore_to_the_reported_fold_metrics(tmp_path):
    results, groups = small_results()
    write_report(tmp_path, results, {}, groups, [f"/img/{i}.jpg" for i in range(80)])
    oof = pd.read_csv(tmp_path / "oof_predictions.csv")
    assert list(oof.columns) == ["sample", "fold", "repeat", "category", "K", "observed", "predicted", "image"]
    assert len(oof) == 2 * 2 * 2 * 160  # categories x K x repeats x samples
    walk = results[0]
    for row in walk.knn:
        for repeat in range(2):
            for fold in range(3):
                part = oof[(oof.category == "walkability") & (oof.K == row.k) & (oof["repeat"] == repeat)
                           & (oof.fold == fold)]
                mse = np.mean((part.observed - part.predicted) ** 2)
                assert mse == pytest.approx(row.folds["mse"][repeat * 3 + fold], rel=1e-4)
    assert oof.image.iloc[0] == "0.jpg" and oof.image.iloc[2] == "1.jpg"


def test_summary_and_calibration_bins():
    results, _ = small_results()
    text = category_summary(results[0])
    assert "the best K is" in text and "ridge linear probe" in text and "training-mean baseline" in text
    assert re.search(r"KNN (is better|is worse) than the training-mean baseline \(MSE [0-9.]+\) by [0-9.]+ MSE", text)
    bins = calibration_bins(np.array([1, 2, 3, 5, 4]), np.array([1.1, 1.2, 3.0, 4.9, np.nan]), width=0.5)
    assert list(bins.count) == [2, 1, 1]
    assert np.allclose(bins.predicted, [1.15, 3.0, 4.9]) and np.allclose(bins.observed, [1.5, 3.0, 5.0])
    assert bins.standard_error[0] == pytest.approx(np.std([1, 2], ddof=1) / np.sqrt(2))


def test_evaluate_cli_on_the_reference_survey(reference_dir, tmp_path, capsys):
    survey = reference_dir / "survey"
    code = run_evaluate("-g", str(survey / "data.geojson"), "-e", str(survey / "embeddings"), "-M", "ViT-B/32",
                        "-d", str(survey / "demo.csv"), "--cv", "3", "-k", "5,10", "--group-by", "image",
                        "--compare-groups", "region", "--report", str(tmp_path / "out"), "-q")
    assert code == 0
    out = capsys.readouterr().out
    assert sum("knn k=" in line and " *" in line for line in out.splitlines()) == 5  # one best K per category
    assert "walkability: by rater group" in out and "non-NL" in out
    assert (tmp_path / "out" / "report.html").exists() and (tmp_path / "out" / "groups.png").exists()


def test_evaluate_cli_usage_errors(reference_dir, tmp_path, capsys):
    survey = reference_dir / "survey"
    base = ["-g", str(survey / "data.geojson"), "-e", str(survey / "embeddings"), "-M", "ViT-B/32"]
    assert run_evaluate(*base, "--compare-groups", "gender") == 2  # needs -d
    assert run_evaluate(*base, "--report", str(tmp_path / "r"), "--read-only") == 2
    assert run_evaluate(*base, "--normalization-method", "nope") == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("error: ") for line in errors)
    assert not (tmp_path / "r").exists()
