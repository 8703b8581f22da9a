"""Every failure a user can cause: one clear line, exit status 2, no traceback, nothing written."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from percept.cli.dropin import main

BASE = ["-g", "data.geojson", "-e", "embeddings", "-M", "open_clip:ViT-B-32"]


def run(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_clean_error(code, err, *fragments):
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error:")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
def survey(survey_copy, monkeypatch):
    monkeypatch.chdir(survey_copy)
    return survey_copy


def edit_geojson(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("argv, fragments", [
    (["-g", "missing.geojson"], ["missing.geojson", "does not exist"]),
    (["-g", "embeddings"], ["cannot read survey GeoJSON"]),
    (["-k", "0"], ["K must be at least 1"]),
    (["-k", "abc"], ["K must be a positive whole number"]),
    (["--age", "1,2,3", "-d", "demo.csv"], ["--age"]),
    (["--age", "x", "-d", "demo.csv"], ["--age"]),
    (["--region", "XY", "-d", "demo.csv"], ["--region", "NL, non-NL"]),
    (["--training-split", "0"], ["--training-split"]),
    (["--training-split", "1.5"], ["--training-split"]),
    (["--normalization-method", "softmax2"], ["unknown normalization method", "divbysum"]),
    (["--read-only", "-L", "results.csv"], ["--read-only", "--results-log"]),
    (["--read-only", "--export", "model.npz"], ["--read-only", "--export"]),
    (["-e", "nowhere"], ["no embeddings in nowhere"]),
    (["--environmental-method", "concat", "--environmental"], ["--environmental-method"]),
])
def test_bad_flag_or_path(survey, capsys, argv, fragments):
    args = BASE + argv if "-g" not in argv else ["-e", "embeddings", "-M", "m"] + argv
    code, out, err = run(args + ["-L", "results.csv"] if "--read-only" not in argv and "-L" not in argv else args,
                         capsys)
    assert_clean_error(code, err, *fragments)
    assert not (survey / "results.csv").exists()
    assert not (survey / "model.npz").exists()


def test_invalid_json(survey, capsys):
    (survey / "data.geojson").write_text('{"type": "FeatureCollection", "features": [')
    assert_clean_error(*run(BASE, capsys)[::2], "not valid JSON")


def test_not_a_feature_collection(survey, capsys):
    (survey / "data.geojson").write_text('{"type": "Feature", "properties": {}}')
    assert_clean_error(*run(BASE, capsys)[::2], "not a GeoJSON FeatureCollection")


def test_feature_without_url(survey, capsys):
    edit_geojson(survey / "data.geojson", lambda d: d["features"][3]["properties"].pop("url"))
    assert_clean_error(*run(BASE, capsys)[::2], "feature 3", "'url'")


def test_embeddings_dir_without_parts(survey, capsys):
    shutil.rmtree(survey / "embeddings" / "img_emb")
    assert_clean_error(*run(BASE, capsys)[::2], "no embeddings in embeddings")


def test_row_counts_disagree(survey, capsys):
    meta = survey / "embeddings" / "metadata" / "metadata_0.parquet"
    pd.read_parquet(meta).iloc[:-3].to_parquet(meta)
    assert_clean_error(*run(BASE, capsys)[::2], "400 rows", "397")


def test_no_embedding_matches(survey, capsys):
    edit_geojson(survey / "data.geojson",
                 lambda d: [f["properties"].update(url=f"x/other_{i}.jpg") for i, f in enumerate(d["features"])])
    assert_clean_error(*run(BASE, capsys)[::2], "no embedding row matches")


def test_demographics_missing_column(survey, capsys):
    pd.read_csv(survey / "demo.csv").drop(columns=["age"]).to_csv(survey / "demo.csv", index=False)
    assert_clean_error(*run(BASE + ["-d", "demo.csv", "--age", "30"], capsys)[::2], "lacks column(s) age")


@pytest.mark.parametrize("column, value", [("age", "thirty"), ("rating", "4.5"), ("rating", "")])
def test_demographics_non_integer(survey, capsys, column, value):
    frame = pd.read_csv(survey / "demo.csv", dtype=str)
    frame.loc[5, column] = value
    frame.to_csv(survey / "demo.csv", index=False)
    assert_clean_error(*run(BASE + ["-d", "demo.csv"], capsys)[::2], f"column '{column}'", "data row 6")


def test_all_categories_empty(survey, capsys):
    code, out, err = run(BASE + ["-d", "demo.csv", "--gender", "nobody", "-L", "results.csv"], capsys)
    assert_clean_error(code, err.splitlines()[-1], "no category has any sample")
    assert not (survey / "results.csv").exists()


def test_empty_category_is_skipped_with_warning(survey, capsys):
    frame = pd.read_csv(survey / "demo.csv")
    frame[frame.category_id != 2].to_csv(survey / "demo.csv", index=False)
    code, out, err = run(BASE + ["-d", "demo.csv"], capsys)
    assert code == 0
    assert "bikeability has no samples" in err
    assert [line.split(";")[0] for line in out.splitlines()] == [
        "category = walkability", "category = pleasantness", "category = greenness", "category = safety"]


def test_k_above_training_size_uses_all_samples(survey, capsys):
    code, out, err = run(BASE + ["-k", "100000,167"], capsys)
    assert code == 0
    assert "exceeds the 167 training samples" in err
    lines = out.splitlines()
    walk_all, walk_167 = lines[0].split("mse")[1], lines[1].split("mse")[1]
    assert walk_all == walk_167


def test_quiet_prints_only_metric_lines(survey, capsys):
    code, out, err = run(BASE + ["-q", "-k", "100000"], capsys)
    assert code == 0 and err == ""
    assert all(line.startswith("category = ") for line in out.splitlines())


def test_extra_assertions_pass_on_reference(survey, capsys):
    code, out, _ = run(BASE + ["--extra-assertions", "--randomize", "--random-seed", "5"], capsys)
    assert code == 0 and len(out.splitlines()) == 5


def test_results_log_appends(survey, capsys):
    run(BASE + ["-L", "results.csv"], capsys)
    run(BASE + ["-L", "results.csv", "-k", "3"], capsys)
    rows = (survey / "results.csv").read_text().splitlines()
    assert len(rows) == 10 and rows[5].split(",")[2] == "3"
    assert not list(survey.glob(".results.csv.*"))


def test_export_roundtrip(survey, capsys):
    from percept.model.io import load_model

    assert run(BASE + ["--export", "model.npz", "-k", "40"], capsys)[0] == 0
    model = load_model(survey / "model.npz")
    assert model.settings.clip_model == "open_clip:ViT-B-32" and model.settings.k == 40
    assert model.vectors["walkability"].shape == (209, 512)
    np.testing.assert_allclose(np.linalg.norm(model.vectors["safety"], axis=1), 1.0)
    assert len(model.images["walkability"]) == 209 and model.images["walkability"][0].endswith(".jpg")


def test_version_and_results_log_columns_in_help(run_tool, tmp_path):
    from percept import __version__
    from percept.study.results_log import COLUMNS

    for command in ("clip_retrieval_knn", "percept"):
        result = run_tool([command, "--version"], cwd=tmp_path)
        assert result.returncode == 0 and result.stdout.strip() == f"{command} (Percept KNN) {__version__}"
    help_text = " ".join(run_tool(["clip_retrieval_knn", "--help"], cwd=tmp_path).stdout.split())
    assert "columns: " + "; ".join(f"{i}. {name}" for i, (name, _) in enumerate(COLUMNS, 1)) in help_text
    assert len(COLUMNS) == 11


EMBEDDINGS = "embeddings/img_emb/img_emb_0.npy"


def edit_vectors(survey, change):
    path = survey / EMBEDDINGS
    vectors = np.load(path)
    change(vectors)
    np.save(path, vectors)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nan_or_infinite_embedding_names_file_and_row(survey, capsys, value):
    edit_vectors(survey, lambda v: v.__setitem__((17, 40), value))
    code, out, err = run(BASE + ["-L", "results.csv"], capsys)
    assert_clean_error(code, err, EMBEDDINGS, "row 17 (", "NaN or infinite")
    assert not (survey / "results.csv").exists()


def test_every_bad_row_is_counted_in_the_one_line(survey, capsys):
    edit_vectors(survey, lambda v: v.__setitem__((slice(30, 33), 0), np.nan))
    assert_clean_error(*run(BASE, capsys)[::2], "row 30 (", "and 2 more rows hold NaN")


@pytest.mark.parametrize("extra", [["-L", "results.csv"], ["--export", "model.npz"]])
def test_zero_vector_is_refused_in_evaluation_and_export(survey, capsys, extra):
    edit_vectors(survey, lambda v: v.__setitem__(5, 0))
    code, out, err = run(BASE + extra, capsys)
    assert_clean_error(code, err, EMBEDDINGS, "row 5 (", "zero vector")
    assert not (survey / "results.csv").exists() and not (survey / "model.npz").exists()


def test_zero_vector_of_an_image_outside_the_survey_is_skipped(survey, capsys):
    edit_vectors(survey, lambda v: v.__setitem__(5, 0))
    edit_geojson(survey / "data.geojson", lambda d: d["features"][5]["properties"].update(url="x/elsewhere.jpg"))
    code, out, err = run(BASE, capsys)
    assert code == 0 and len(out.splitlines()) == 5


def test_zero_vector_is_refused_by_percept_evaluate(survey, capsys):
    from percept.cli.main import main as percept_main

    edit_vectors(survey, lambda v: v.__setitem__(9, 0))
    code = percept_main(["evaluate", *BASE, "--cv", "2", "-k", "3", "--no-baselines"])
    assert_clean_error(code, capsys.readouterr().err, EMBEDDINGS, "row 9 (", "zero vector")


def set_property(number, key, value):
    return lambda d: d["features"][number]["properties"].__setitem__(key, value)


@pytest.mark.parametrize("number, key, value, argv, fragments", [
    (3, "url", 123, [], ["feature 3", "'url' 123", "not a string"]),
    (3, "url", ["a.jpg"], [], ["feature 3", "'url'", "not a string"]),
    (0, "average_pleasantness", "5.0", [], ["feature 0", "'average_pleasantness' '5.0' (str)", "from 1 to 5"]),
    (0, "average_pleasantness", True, [], ["feature 0", "'average_pleasantness' True (bool)"]),
    (0, "average_pleasantness", 7.5, [], ["feature 0", "'average_pleasantness' 7.5", "from 1 to 5"]),
    (0, "average_safety", 0, [], ["feature 0", "'average_safety' 0", "from 1 to 5"]),
    (0, "average_safety", {"mean": 3}, [], ["feature 0", "'average_safety'"]),
    (0, "image_id", "1", ["-d", "demo.csv"], ["feature 0", "'image_id' '1'", "not a whole number"]),
    (0, "image_id", 1.5, ["-d", "demo.csv"], ["feature 0", "'image_id' 1.5"]),
    (0, "image_id", None, ["-d", "demo.csv"], ["feature 0", "has no 'image_id'"]),
])
def test_survey_property_of_the_wrong_type(survey, capsys, number, key, value, argv, fragments):
    edit_geojson(survey / "data.geojson", set_property(number, key, value))
    code, out, err = run(BASE + argv + ["-L", "results.csv"], capsys)
    assert_clean_error(code, err, "data.geojson", *fragments)
    assert not (survey / "results.csv").exists()


def test_whole_float_image_id_is_a_json_number_like_any_other(survey, capsys):
    _, expected, _ = run(BASE + ["-d", "demo.csv", "-q"], capsys)
    edit_geojson(survey / "data.geojson", set_property(0, "image_id", 1.0))
    code, out, _ = run(BASE + ["-d", "demo.csv", "-q"], capsys)
    assert code == 0 and out == expected


@pytest.mark.parametrize("column, value, needs", [
    ("category_id", "6", "from 1 to 5"), ("category_id", "0", "from 1 to 5"),
    ("rating", "0", "from 1 to 5"), ("rating", "7", "from 1 to 5"), ("rating", "five", "from 1 to 5"),
    ("age", "-3", "from 0 to 150"), ("age", "1e9", "from 0 to 150"),
    ("image_id", "99999999999999999999", "whole numbers"), ("session_id", "nan", "whole numbers"),
    ("rating", "1_0", "from 1 to 5"), ("rating", "\u0663", "from 1 to 5"),  # Python's int() reads these, CSV does not
])
def test_demographics_value_out_of_range(survey, capsys, column, value, needs):
    frame = pd.read_csv(survey / "demo.csv", dtype=str)
    frame.loc[5, column] = value
    frame.to_csv(survey / "demo.csv", index=False)
    assert_clean_error(*run(BASE + ["-d", "demo.csv"], capsys)[::2], "demo.csv", f"column '{column}'", needs,
                       "data row 6", repr(value))


def test_embeddings_of_text_values(survey, capsys):
    np.save(survey / EMBEDDINGS, np.full((400, 4), "x"))
    assert_clean_error(*run(BASE, capsys)[::2], EMBEDDINGS, "<U1 values, not numbers")


def test_metadata_without_image_name(survey, capsys):
    meta = survey / "embeddings" / "metadata" / "metadata_0.parquet"
    frame = pd.read_parquet(meta)
    frame.loc[7, "image_path"] = None
    frame.to_parquet(meta)
    assert_clean_error(*run(BASE, capsys)[::2], "metadata_0.parquet", "row 7 has no image_path")


def test_demographics_numbers_written_another_way_read_as_before(survey, capsys):
    """" 2", "+2" and "2.0" are the whole number 2, on the fast path's fallback as before."""
    _, expected, _ = run(BASE + ["-d", "demo.csv", "-q"], capsys)
    frame = pd.read_csv(survey / "demo.csv", dtype=str)
    frame.loc[5, "rating"] = {"1": " 1", "2": "+2", "3": "3.0", "4": "4.0", "5": " 5 "}[frame.loc[5, "rating"]]
    frame.to_csv(survey / "demo.csv", index=False)
    code, out, _ = run(BASE + ["-d", "demo.csv", "-q"], capsys)
    assert code == 0 and out == expected


def test_the_drop_in_loads_the_export_code_only_to_export():
    """A plain run starts without scipy.stats and pandas (the export's cross-validation and publishing code,
    about a second and 150 MB of start-up): importing the command's module leaves them out."""
    loaded = subprocess.run([sys.executable, "-c", "import sys, percept.cli.dropin; "
                             "print(sorted(m for m in ('scipy.stats', 'pandas') if m in sys.modules))"],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"
