"""Guards of ``percept evaluate`` against small samples: fold sizes and their warnings, grouping folds by a
survey property, rater groups with many answers, --equalise below 2 K, the home country of ``region``."""

from __future__ import annotations

import importlib
import json
import re
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from percept.cli.common import ArgumentParser, report_errors
from percept.data.survey import Samples, image_name
from percept.encoders.options import EncodingOptions
from percept.errors import PerceptError
from percept.model.knn import l2_normalise
from percept.study.crossval import CVPlan, repeat_folds
from percept.study.dataset import DataSelection, load_dataset
from percept.study.fold_sizes import fold_size_warnings, format_fold_sizes
from percept.study.folds import GroupBy, parse_group_by, sample_groups
from percept.study.groups import (
    MAX_LEVELS,
    OTHER,
    compare_groups,
    group_labels,
    parse_group_spec,
    rater_groups,
)


def run_evaluate(*argv: str) -> int:
    parser = ArgumentParser(prog="percept")
    importlib.import_module("percept.cli.evaluate").register(parser.add_subparsers(parser_class=ArgumentParser))
    args = parser.parse_args(["evaluate", *argv])
    return report_errors(lambda: args.run(args))


def folds_of_sizes(*sizes: int) -> np.ndarray:
    """A shuffled fold-of-each-sample array whose fold f holds sizes[f] samples."""
    folds = np.repeat(np.arange(len(sizes)), sizes)
    return np.random.default_rng(0).permutation(folds)


# ---------------------------------------------------------------- fold sizes


def test_a_small_or_uneven_fold_gives_one_warning_naming_it():
    [warning] = fold_size_warnings(folds_of_sizes(255, 526, 11, 2, 204), "walkability")
    assert warning.startswith("walkability: fold 4 holds 2 samples") and "fewer than 30" in warning
    assert "the largest fold holds 526" in warning
    [uneven] = fold_size_warnings(folds_of_sizes(40, 250, 45, 41, 60), "safety")  # all >= 30, ratio 6.25
    assert uneven.startswith("safety: fold 1 holds 40 samples") and "fewer than" not in uneven
    [small] = fold_size_warnings(folds_of_sizes(29, 30, 31), "greenness")  # small, ratio near 1
    assert small.startswith("greenness: fold 1 holds 29 samples (fewer than 30)") and "largest" not in small
    assert fold_size_warnings(folds_of_sizes(60, 64, 61, 67, 48), "walkability") == []
    assert fold_size_warnings(folds_of_sizes(30, 150, 30), "walkability") == []  # the limits themselves pass


def test_the_warning_names_the_repeat_with_the_smallest_fold():
    repeats = np.stack([folds_of_sizes(50, 50, 50, 50), folds_of_sizes(80, 80, 20, 20)])
    [warning] = fold_size_warnings(repeats, "bikeability")
    assert warning.startswith("bikeability: fold 3 of repeat 2 holds 20 samples")
    assert fold_size_warnings(repeats[:1], "bikeability") == []


def test_fold_sizes_are_one_compact_line():
    folds = {"walkability": folds_of_sizes(255, 526, 11), "safety": folds_of_sizes(3, 4, 5)}
    assert format_fold_sizes(folds) == "samples per fold (repeat 1): walkability 255/526/11, safety 3/4/5"
    same = {"walkability": folds_of_sizes(5, 6), "safety": folds_of_sizes(5, 6)}
    assert format_fold_sizes(same) == "samples per fold (repeat 1): 5/6 in every category"
    two_repeats = np.stack([folds_of_sizes(7, 8), folds_of_sizes(8, 7)])
    assert format_fold_sizes({"walkability": two_repeats}).endswith("walkability 7/8")


# ---------------------------------------------------------------- --group-by column:NAME


def test_parse_column_grouping():
    grouping = parse_group_by("column:city")
    assert grouping == GroupBy("column", column="city") and grouping.label == "column:city"
    assert "'city'" in grouping.describe()
    for bad in ("column", "column:", "column: ", "city"):
        with pytest.raises(PerceptError):
            parse_group_by(bad)


def test_column_groups_follow_equal_values_and_refuse_missing_ones():
    values = ["Delft", "Leiden", 3, "Delft", [1, 2], 3.0]
    rows = np.array([0, 0, 1, 2, 3, 3, 4, 5, 5])
    groups = sample_groups(GroupBy("column", column="city").with_values(values), rows)
    for a in range(len(rows)):  # same group exactly when the images' values are equal (3 and 3.0 differ)
        for b in range(len(rows)):
            same = json.dumps(values[rows[a]]) == json.dumps(values[rows[b]])
            assert (groups[a] == groups[b]) == same
    assert len(np.unique(groups)) == 5
    lacking = GroupBy("column", column="city").with_values(["Delft", None, "", "Leiden"])
    with pytest.raises(PerceptError, match=r"column:city: 2 of 4 rated images' survey features lack"):
        sample_groups(lacking, np.array([0, 1, 1, 2, 3]))
    assert len(np.unique(sample_groups(lacking, np.array([0, 3, 3])))) == 2  # only the samples' images count
    with pytest.raises(PerceptError, match="none were loaded"):
        sample_groups(GroupBy("column", column="city"), rows)


@pytest.fixture
def district_survey(survey_copy):
    """The reference survey with a 'district' on each feature: five districts by longitude, the last tiny."""
    path = survey_copy / "data.geojson"
    data = json.loads(path.read_text())
    lon = np.array([f["geometry"]["coordinates"][0] for f in data["features"]])
    order = np.argsort(lon, kind="stable")
    district = np.empty(len(lon), dtype=object)
    for number, part in enumerate(np.split(order, [95, 190, 285, 380])):
        district[part] = f"D{number}"
    for feature, name in zip(data["features"], district):
        feature["properties"]["district"] = name
    path.write_text(json.dumps(data))
    return survey_copy


def district_counts(survey) -> dict[str, Counter]:
    """Per category, the rated images of each district, read straight from the GeoJSON."""
    features = json.loads((survey / "data.geojson").read_text())["features"]
    return {c: Counter(f["properties"]["district"] for f in features if f["properties"][f"average_{c}"] is not None)
            for c in ("walkability", "bikeability", "pleasantness", "greenness", "safety")}


def test_dataset_loads_a_named_survey_property(district_survey):
    selection = DataSelection(district_survey / "data.geojson",
                              EncodingOptions("ViT-B/32", embeddings_dir=district_survey / "embeddings"),
                              properties=("district",))
    dataset = load_dataset(selection, log=lambda message: None)
    features = json.loads((district_survey / "data.geojson").read_text())["features"]
    by_name = {image_name(f["properties"]["url"]): f["properties"]["district"] for f in features}
    assert list(dataset.properties("district")) == [by_name[image_name(n)] for n in dataset.names]
    with pytest.raises(PerceptError):
        dataset.properties("city")


def test_evaluate_groups_folds_by_a_survey_property(district_survey, capsys):
    base = ["-g", str(district_survey / "data.geojson"), "-e", str(district_survey / "embeddings"), "-M", "ViT-B/32",
            "-k", "5", "--cv", "5", "--no-baselines", "-q"]
    assert run_evaluate(*base, "--group-by", "column:district") == 0
    captured = capsys.readouterr()
    out, err = captured.out.splitlines(), captured.err.splitlines()
    grouping = next(line for line in out if "(--group-by " in line)
    assert grouping.startswith("folds grouped by survey property 'district'")
    assert "(--group-by column:district" in grouping
    sizes_line = next(line for line in out if line.startswith("samples per fold (repeat 1): "))
    printed = dict(re.findall(r"(\w+) ([\d/]+)", sizes_line.partition(": ")[2]))
    counts = district_counts(district_survey)
    for category, sizes in printed.items():  # five districts, five folds: each fold is one whole district
        assert sorted(map(int, sizes.split("/"))) == sorted(counts[category].values())
    # the tiny district (20 images) makes a small fold: one warning per category, naming that fold and its size
    fold_warnings = [line for line in err if re.match(r"warning: \w+: fold ", line)]
    assert len(fold_warnings) == 5
    for line in fold_warnings:
        category, fold, size = re.match(r"warning: (\w+): fold (\d) holds (\d+) samples", line).groups()
        assert int(size) == counts[category]["D4"] < 30
        assert int(printed[category].split("/")[int(fold) - 1]) == int(size)


def test_a_property_missing_on_some_features_is_an_error(district_survey, capsys):
    path = district_survey / "data.geojson"
    data = json.loads(path.read_text())
    rated = [f for f in data["features"] if f["properties"]["average_walkability"] is not None]
    for feature in rated[:3]:
        del feature["properties"]["district"]
    path.write_text(json.dumps(data))
    code = run_evaluate("-g", str(path), "-e", str(district_survey / "embeddings"), "-M", "ViT-B/32", "-k", "5",
                        "--no-baselines", "-q", "--group-by", "column:district")
    [error] = capsys.readouterr().err.splitlines()
    assert code == 2 and error.startswith("error: --group-by column:district: 3 of ")
    assert run_evaluate("-g", str(path), "-e", str(district_survey / "embeddings"), "-M", "ViT-B/32",
                        "--group-by", "column:nowhere", "-q") == 2
    assert "lack the property 'nowhere'" in capsys.readouterr().err


# ---------------------------------------------------------------- rater groups


def test_many_free_text_answers_are_refused_unless_merged():
    rng = np.random.default_rng(0)
    answers = [f"answer {i}" for i in range(20)]
    weights = np.arange(20, 0, -1) ** 2 / np.sum(np.arange(20, 0, -1) ** 2)
    frames = {c: pd.DataFrame({"gender": list(rng.choice(answers, size, p=weights)) + [None]})
              for c, size in (("walkability", 900), ("safety", 700))}
    counts = Counter(v for f in frames.values() for v in f["gender"] if isinstance(v, str))  # pandas: None is NaN
    assert len(counts) > MAX_LEVELS
    with pytest.raises(PerceptError, match=rf"finds {len(counts)} different answers.*--min-group (\d+)") as refused:
        rater_groups(frames, parse_group_spec("gender"))
    suggested = int(re.search(r"--min-group (\d+)", str(refused.value)).group(1))
    merged = rater_groups(frames, parse_group_spec("gender", min_group=suggested))
    kept = {a for a, n in counts.items() if n >= suggested}
    for category, frame in frames.items():
        expected = [None if not isinstance(v, str) else v if v in kept else OTHER for v in frame["gender"]]
        assert list(merged[category]) == expected
    assert len(kept) + 1 <= MAX_LEVELS
    with pytest.raises(PerceptError, match="after merging answers with fewer than 2 ratings"):
        rater_groups(frames, parse_group_spec("gender", min_group=2))
    few = {"walkability": pd.DataFrame({"gender": ["a", "b", "b"]})}
    assert list(rater_groups(few, parse_group_spec("gender"))["walkability"]) == ["a", "b", "b"]  # 2 answers pass


def test_the_home_country_of_region():
    frame = pd.DataFrame({"country": ["Germany", " de ", "Deutschland", "Netherlands", None, "Amsterdam"],
                          "postalcode": [None, None, None, "1012 AB", "1234AB", None]})
    german = parse_group_spec("region", home_country="de,Germany")
    assert german.home_country == ("DE", "Germany")
    assert list(group_labels(frame, german)) == ["DE", "DE", "non-DE", "non-DE", "non-DE", "non-DE"]
    assert list(group_labels(frame, parse_group_spec("region"))) == ["non-NL", "non-NL", "non-NL", "NL", "NL", "NL"]
    coarsened = pd.DataFrame({"region": ["NL", "non-NL", None]})
    assert list(group_labels(coarsened, parse_group_spec("region"))) == ["NL", "non-NL", None]
    with pytest.raises(PerceptError, match="leaving out --home-country"):
        group_labels(coarsened, german)
    for bad in ({"text": "gender", "home_country": "DE"}, {"text": "region", "min_group": 5},
                {"text": "age", "min_group": 5}, {"text": "region", "home_country": "DE,,x"}):
        with pytest.raises(PerceptError):
            parse_group_spec(**bad)


def test_equalise_refuses_training_below_twice_k():
    rng = np.random.default_rng(2)
    vectors = l2_normalise(rng.standard_normal((300, 8)))
    rows = np.arange(300)
    scores = rng.integers(1, 6, 300).astype(float)
    labels = np.where(np.arange(300) < 270, "big", "small").astype(object)
    samples, plan = Samples(rows, scores), CVPlan(folds=5, repeats=2, seed=4)
    folds = repeat_folds(samples, plan)
    smallest = min(np.sum((fold_of != fold) & (labels == "small")) for fold_of in folds for fold in range(5))
    assert 10 < smallest < 40
    with pytest.raises(PerceptError, match=rf"on {smallest} samples, the training part of group 'small' in fold \d "
                                           rf"of repeat \d: fewer than 2 K = 40 \(K = 20\)"):
        compare_groups(vectors, samples, labels, 20, "walkability", plan=plan, equalise=True)
    assert compare_groups(vectors, samples, labels, 20, plan=plan).n_train.min() == smallest  # fine unequalised
    k = smallest // 2
    assert compare_groups(vectors, samples, labels, k, plan=plan, equalise=True).equalised  # exactly 2 K passes


@pytest.fixture
def many_genders(survey_copy):
    """The reference ratings with 16 gender answers, answer j given about j + 1 times as often as answer 0."""
    path = survey_copy / "demo.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    pattern = [f"answer {j}" for j in range(16) for _ in range(j + 1)]
    frame["gender"] = [pattern[i % len(pattern)] for i in range(len(frame))]
    frame.to_csv(path, index=False)
    return survey_copy


def test_evaluate_compares_many_answers_only_when_merged(many_genders, capsys):
    base = ["-g", str(many_genders / "data.geojson"), "-e", str(many_genders / "embeddings"), "-M", "ViT-B/32",
            "-d", str(many_genders / "demo.csv"), "-k", "5", "--cv", "3", "--no-baselines", "-q",
            "--compare-groups", "gender"]
    assert run_evaluate(*base) == 2
    [error] = capsys.readouterr().err.splitlines()
    assert error.startswith("error: --compare-groups gender finds 16 different answers") and "--min-group" in error
    frame = pd.read_csv(many_genders / "demo.csv", dtype=str)
    counts = frame["gender"].value_counts()
    threshold = (int(counts.iloc[2]) + int(counts.iloc[3])) // 2 + 1  # keeps the three most common answers
    assert counts.iloc[2] >= threshold > counts.iloc[3]
    assert run_evaluate(*base, "--min-group", str(threshold)) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.lstrip().startswith("train n"))
    groups = re.findall(r"answer \d+|other", header)
    assert sorted(groups) == sorted([*counts.index[:3], OTHER])


def test_evaluate_flag_combinations(reference_dir, capsys):
    survey = reference_dir / "survey"
    base = ["-g", str(survey / "data.geojson"), "-e", str(survey / "embeddings"), "-M", "ViT-B/32", "-k", "40",
            "--cv", "3", "--no-baselines", "-q"]
    demo = ["-d", str(survey / "demo.csv")]
    assert run_evaluate(*base, "--min-group", "5") == 2
    assert run_evaluate(*base, "--home-country", "DE") == 2
    assert run_evaluate(*base, *demo, "--compare-groups", "gender", "--home-country", "DE") == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 3 and all(line.startswith("error: ") for line in errors)
    assert run_evaluate(*base, *demo, "--compare-groups", "gender", "--equalise") == 2
    [error] = capsys.readouterr().err.splitlines()
    assert re.match(r"error: --equalise would train every \w+ group on \d+ samples, the training part of group "
                    r"'[\w -]+' in fold \d: fewer than 2 K = 80 \(K = 40\)", error)
    assert run_evaluate(*base, *demo, "--compare-groups", "region", "--home-country", "DE,Germany") == 0
    out = capsys.readouterr().out
    assert "walkability: by rater group" in out and re.search(r"R² non-DE +\d", out)
