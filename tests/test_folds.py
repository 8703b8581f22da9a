"""Fold groups (none, image, location, spatial blocks), and that grouping removes leakage on a spatial survey."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from pyproj import Transformer

from percept.cli.common import ArgumentParser, report_errors
from percept.data.crs import WGS84, utm_crs
from percept.encoders.options import EncodingOptions
from percept.errors import PerceptError
from percept.study.crossval import CVPlan, cross_validate
from percept.study.dataset import DataSelection, load_dataset
from percept.study.folds import GroupBy, block_keys, default_group_by, parse_group_by, sample_groups
from percept.synthetic.spatial import generate_spatial_survey


def run_evaluate(*argv: str) -> int:
    parser = ArgumentParser(prog="percept")
    importlib.import_module("percept.cli.evaluate").register(parser.add_subparsers(parser_class=ArgumentParser))
    args = parser.parse_args(["evaluate", *argv])
    return report_errors(lambda: args.run(args))


def test_parse_group_by():
    assert parse_group_by("none") == GroupBy("none") and parse_group_by("image").label == "image"
    assert parse_group_by("block:500") == GroupBy("block", 500.0)
    assert parse_group_by("block:250.5").label == "block:250.5"
    assert default_group_by(True) == GroupBy("image") and default_group_by(False) == GroupBy("none")
    for bad in ("block", "block:", "block:-3", "block:x", "image:3", "panorama", "block:nan"):
        with pytest.raises(PerceptError):
            parse_group_by(bad)


def test_groups_follow_images_locations_and_blocks():
    rows = np.array([0, 0, 1, 2, 3, 3])
    lonlat = np.array([[4.90, 52.37], [4.90, 52.37], [4.9101, 52.37], [4.90, 52.3702]])
    assert sample_groups(GroupBy("none"), rows, lonlat) is None
    assert list(sample_groups(GroupBy("image"), rows)) == [0, 0, 1, 2, 3, 3]
    assert list(sample_groups(GroupBy("location"), rows, lonlat)) == [0, 0, 0, 2, 1, 1]  # rows 0 and 1 share a place
    rng = np.random.default_rng(0)
    points = np.column_stack([rng.uniform(4.86, 4.94, 500), rng.uniform(52.35, 52.385, 500)])
    keys = block_keys(points, 500.0)
    x, y = Transformer.from_crs(WGS84, utm_crs(4.9, 52.37), always_xy=True).transform(points[:, 0], points[:, 1])
    assert np.array_equal(keys, np.column_stack([np.floor(x / 500), np.floor(y / 500)]))
    groups = sample_groups(GroupBy("block", 500.0), np.arange(500), points)
    for g in np.unique(groups):  # a group is one block: all its points within one 500 m square
        members = groups == g
        assert np.ptp(x[members]) < 500 and np.ptp(y[members]) < 500
        assert len({tuple(k) for k in keys[members]}) == 1
    assert len(np.unique(groups)) == len({tuple(k) for k in keys})


def test_location_and_blocks_need_coordinates():
    rows = np.array([0, 1])
    with pytest.raises(PerceptError, match="Point geometry"):
        sample_groups(GroupBy("block", 500.0), rows, np.array([[4.9, 52.3], [np.nan, np.nan]]))
    with pytest.raises(PerceptError, match="EPSG:4326"):
        sample_groups(GroupBy("location"), rows, np.array([[121000.0, 487000.0], [4.9, 52.3]]))
    with pytest.raises(PerceptError, match="coordinates"):
        sample_groups(GroupBy("location"), rows, None)


@pytest.fixture(scope="module")
def spatial_survey(tmp_path_factory):
    root = tmp_path_factory.mktemp("spatial")
    generate_spatial_survey(root, n_panoramas=400, dim=32, ratings_per_image=12.0, seed=1)
    return root


def mean_r2(survey, group_by: str, demographics: bool) -> float:
    """Mean over categories of the KNN (K=10) R² from 5-fold cross-validation."""
    encoding = EncodingOptions("synthetic", embeddings_dir=survey / "embeddings")
    selection = DataSelection(survey / "data.geojson", encoding, survey / "demo.csv" if demographics else None)
    dataset = load_dataset(selection, log=lambda message: None)
    plan = CVPlan(folds=5, repeats=2, group_by=parse_group_by(group_by), seed=0)
    results = cross_validate(dataset.vectors, dataset.samples, [10], plan, baselines=False, lonlat=dataset.lonlat)
    return float(np.mean([r.knn[0].mean("r2") for r in results]))


def test_grouped_folds_are_less_optimistic_on_a_spatially_smooth_survey(spatial_survey):
    averages = {g: mean_r2(spatial_survey, g, False) for g in ("none", "location", "block:500")}
    ratings = {g: mean_r2(spatial_survey, g, True) for g in ("none", "image", "location", "block:500")}
    print(f"\nmean R² over categories, averaged scores: {averages}\nindividual ratings (-d): {ratings}")
    assert averages["block:500"] < averages["none"] - 0.1
    assert averages["location"] < averages["none"]
    assert ratings["image"] < ratings["none"] - 0.05
    assert ratings["block:500"] < ratings["location"] < ratings["image"]


def grouping_line(out: str) -> str:
    """The printout's line that says how folds were grouped (it names --group-by)."""
    return next(line for line in out.splitlines() if "(--group-by " in line)


def test_evaluate_prints_the_grouping_and_its_default(spatial_survey, capsys):
    base = ["-g", str(spatial_survey / "data.geojson"), "-e", str(spatial_survey / "embeddings"), "-M", "synthetic",
            "-k", "5", "--cv", "3", "--no-baselines", "-q"]
    assert run_evaluate(*base, "-d", str(spatial_survey / "demo.csv")) == 0
    assert "folds grouped by image" in grouping_line(capsys.readouterr().out)
    assert run_evaluate(*base) == 0
    assert grouping_line(capsys.readouterr().out).startswith("folds over individual samples")
    assert run_evaluate(*base, "--group-by", "block:500") == 0
    assert "500 m square block" in capsys.readouterr().out
    assert run_evaluate(*base, "-d", str(spatial_survey / "demo.csv"), "--group-by-image") == 0
    assert "--group-by image)" in capsys.readouterr().out
    assert run_evaluate(*base, "--group-by", "block:0") == 2
    assert run_evaluate(*base, "--equalise") == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all(line.startswith("error: ") for line in errors)
