"""The report folder, and ``percept evaluate`` end to end on the reference survey."""

from __future__ import annotations

import base64
import csv
import importlib
import json
import re

import numpy as np

from percept.cli.common import ArgumentParser, report_errors
from percept.data.survey import Samples
from percept.model.knn import l2_normalise
from percept.study.crossval import CVPlan, cross_validate
from percept.study.groups import compare_groups
from percept.study.report import write_report

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
    results = cross_validate(vectors, samples, [3, 6], CVPlan(folds=3, repeats=2))
    labels = np.array(["man", "woman"] * 80, dtype=object)
    groups = [compare_groups(vectors, samples["walkability"], labels, 3, "walkability")]
    return results, groups


def test_report_files_exist_and_the_html_embeds_the_images(tmp_path):
    results, groups = small_results()
    written = write_report(tmp_path / "report", results, {"folds": 3}, groups)
    names = {p.name for p in written}
    assert names == {"report.json", "report.csv", "metrics.png", "predicted.png", "residuals.png", "groups.png",
                     "report.html"}
    folder = tmp_path / "report"
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)  # no temporary files left behind
    html = (folder / "report.html").read_text()
    embedded = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)
    assert len(embedded) == 4
    for name, data in zip(("metrics.png", "predicted.png", "residuals.png", "groups.png"), embedded):
        assert base64.b64decode(data) == (folder / name).read_bytes()
        assert base64.b64decode(data).startswith(PNG_MAGIC)
    assert "src='http" not in html and "<link" not in html
    data = json.loads((folder / "report.json").read_text())
    walk = data["categories"][0]
    assert walk["category"] == "walkability" and walk["best_k"] in (3, 6)
    assert len(walk["rows"][0]["metrics"]["mse"]["folds"]) == 6
    assert data["groups"][0]["groups"] == ["man", "woman"]
    with open(folder / "report.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["category"], r["model"], r["k"]) for r in rows[:4]] == [
        ("walkability", "knn", "3"), ("walkability", "knn", "6"), ("walkability", "mean", ""), ("walkability", "ridge", "")]
    assert sum(r["best"] == "True" for r in rows) == 2


def test_evaluate_cli_on_the_reference_survey(reference_dir, tmp_path, capsys):
    survey = reference_dir / "survey"
    code = run_evaluate("-g", str(survey / "data.geojson"), "-e", str(survey / "embeddings"), "-M", "ViT-B/32",
                        "-d", str(survey / "demo.csv"), "--cv", "3", "-k", "5,10", "--group-by-image",
                        "--compare-groups", "region", "--report", str(tmp_path / "out"), "-q")
    assert code == 0
    out = capsys.readouterr().out
    assert sum("knn k=" in line and " *" in line for line in out.splitlines()) == 5  # one best K per category
    assert "walkability: R² by rater group" in out and "non-NL" in out
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
