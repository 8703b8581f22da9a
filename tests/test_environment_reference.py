"""Rating new places with an environmental model: prompts ranked against the survey's quintiles stored in
the model, and survey images rebuilt bit for bit (sample survey, built-in model percept:tiny, offline)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from percept.categories import CATEGORIES
from percept.city.rating import iter_rows
from percept.cli import dropin
from percept.cli import main as percept_main
from percept.data.survey import image_name, load_survey
from percept.environment.place_files import read_environment_table
from percept.environment.place_prompts import image_prompts, text_dir_for
from percept.environment.prompts import build_prompts, quintile_bins
from percept.model.estimates import Estimator
from percept.model.io import load_model, save_model

MODEL = "percept:tiny"


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    """The sample survey (40 images with their environmental variables) and its image embeddings."""
    folder = tmp_path_factory.mktemp("sample") / "survey"
    assert percept_main.main(["sample", str(folder), "--images", "40", "--random-seed", "0", "-q"]) == 0
    assert percept_main.main(["encode", str(folder / "images"), "-o", str(folder / "embeddings"), "-M", MODEL,
                              "--quiet"]) == 0
    return folder


@pytest.fixture
def survey(encoded, tmp_path, monkeypatch):
    """A private copy of the encoded survey (no images), as the working directory."""
    target = tmp_path / "survey"
    target.mkdir()
    shutil.copy(encoded / "data.geojson", target)
    shutil.copytree(encoded / "embeddings", target / "embeddings")
    monkeypatch.chdir(target)
    return target


def export(survey, method: str = "append", style: int = 1, encoding: str = "clauses", name: str = "model.npz"):
    args = ["-g", "data.geojson", "-e", "embeddings", "-M", MODEL, "--encoder", "builtin", "--environmental",
            "--environmental-method", method, "--prompt-style", str(style), "--prompt-encoding", encoding,
            "-k", "5", "-q", "--export", name]
    assert dropin.main(args) == 0
    return survey / name


def rate(capsys, model, *extra: str) -> tuple[int, str]:
    code = percept_main.main(["rate", "--model", str(model), "-e", "embeddings", "-q", *extra])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def own_vectors(model) -> dict[str, np.ndarray]:
    """Each survey image's vector as the model holds it."""
    return {name: vector for c in model.categories for name, vector in zip(model.images[c], model.vectors[c])}


def text_dir(style: int, encoding: str):
    folder = text_dir_for("embeddings", style)
    return folder.with_name(folder.name + "-clauses") if encoding == "clauses" else folder


# --- the survey's quintiles, stored in the model ----------------------------------------------------

def test_the_model_stores_the_survey_quintiles_its_prompts_were_ranked_by(survey):
    model = load_model(export(survey))
    reference = model.settings.environment_reference
    features = load_survey("data.geojson").features
    assert len(reference) == 76
    for key, entry in reference.items():
        values = np.array([f[key] for f in features], dtype=float)
        distinct = np.unique(values)
        if distinct.size >= 5:  # the edges the original's pandas.cut bins by, between -1 and max + 1
            assert entry == {"edges": list(np.quantile(distinct, [0.2, 0.4, 0.6, 0.8]))}
        else:
            assert entry == {"distinct": list(distinct)}
        thresholds = np.array(next(iter(entry.values())))
        np.testing.assert_array_equal(np.searchsorted(thresholds, values), quintile_bins(values))
    assert load_model(export(survey, style=0, name="style0.npz")).settings.environment_reference is None


def test_survey_images_get_the_survey_prompts_and_a_place_the_same_prompt_in_any_file(survey, tmp_path):
    reference = load_model(export(survey)).settings.environment_reference
    features = load_survey("data.geojson").features
    names = [image_name(f["url"]) for f in features]
    survey_prompts = build_prompts(features, 1).prompts
    table = read_environment_table("data.geojson")
    assert image_prompts(table, names, 1, reference=reference) == survey_prompts
    data = json.loads((survey / "data.geojson").read_text())
    data["features"] = data["features"][:3]  # three places on their own
    (tmp_path / "three.geojson").write_text(json.dumps(data))
    three = read_environment_table(tmp_path / "three.geojson")
    assert image_prompts(three, names[:3], 1, reference=reference) == survey_prompts[:3]
    within_file = image_prompts(three, names[:3], 1, log=lambda line: None)
    assert within_file != survey_prompts[:3]  # ranked among three places, words move


# --- survey images rebuilt bit for bit --------------------------------------------------------------

@pytest.mark.parametrize("method, style, encoding", [("append", 1, "clauses"), ("average", 1, "clauses"),
                                                     ("slerp", 0, "clauses"), ("slerp", 1, "whole")])
def test_rating_survey_images_rebuilds_the_model_vectors_bit_for_bit(survey, capsys, method, style, encoding):
    """Each survey image's query vector equals its vector in the model exactly (tolerance 0), so with
    --include-self its nearest sample is itself: scores, spread and similarity are the model's own."""
    model = load_model(export(survey, method, style, encoding))
    code, text = rate(capsys, "model.npz", "--environment", "data.geojson", "--include-self", "--out", "rated.parquet")
    assert code == 0, text
    own = own_vectors(model)
    queries = {image_name(n): v for names, vectors in iter_rows("embeddings", 7, text_dir(style, encoding), method)
               for n, v in zip(names, vectors)}
    assert queries.keys() == own.keys()
    for name, vector in own.items():
        assert np.array_equal(queries[name], vector), name
    rated = pd.read_parquet("rated.parquet")
    names = rated["image"].tolist()
    expected = Estimator(model).estimate(np.stack([own[image_name(n)] for n in names]), names, include_self=True)
    np.testing.assert_array_equal(rated["best_similarity"], expected.best_similarity)
    for number, category in enumerate(CATEGORIES):
        np.testing.assert_array_equal(rated[category], expected.scores[:, number])
        np.testing.assert_array_equal(rated[f"{category}_sd"], expected.sd[:, number])
    # each survey image finds its own vector: similarity exactly 1 (not the float64 sum of its squares)
    assert (rated["best_similarity"] == 1.0).all()
    assert rated["in_survey"].all() and not rated["out_of_domain"].any()


def test_text_embeddings_from_the_environment_rate_the_same(survey, capsys):
    export(survey)
    code, text = rate(capsys, "model.npz", "--environment", "data.geojson", "--out", "from-variables.parquet")
    assert code == 0, text
    stored = text_dir(1, "clauses")
    assert np.load(stored / "text_emb" / "text_emb_0.npy").dtype == np.float64  # clause means, unrounded
    shutil.copytree(stored, "texts")
    code, text = rate(capsys, "model.npz", "--text-embeddings", "texts", "--out", "from-texts.parquet")
    assert code == 0, text
    pd.testing.assert_frame_equal(pd.read_parquet("from-variables.parquet"), pd.read_parquet("from-texts.parquet"))


# --- models without the survey's quintiles --------------------------------------------------------

def test_a_model_without_survey_quintiles_ranks_within_the_file_with_one_warning(survey, capsys):
    model = load_model(export(survey))
    model.settings.environment_reference = None
    save_model("older.npz", model.vectors, model.scores, model.settings, model.images)
    code, text = percept_main.main(["rate", "--model", "older.npz", "-e", "embeddings", "--environment",
                                    "data.geojson", "--out", "older.csv", "-q"]), capsys.readouterr().err
    assert code == 0, text
    warnings = [line for line in text.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "records no survey quintiles" in warnings[0] and "re-export" in warnings[0]
    assert len(pd.read_csv("older.csv")) == 40


def test_a_damaged_survey_reference_is_one_error(survey, capsys):
    model = load_model(export(survey))
    model.settings.environment_reference["shops_count_100"] = {"edges": [3.0, "many"]}
    save_model("damaged.npz", model.vectors, model.scores, model.settings, model.images)
    code, text = rate(capsys, "damaged.npz", "--environment", "data.geojson", "--out", "x.csv")
    assert code == 2
    assert text.startswith("error: ") and text.count("\n") == 1
    assert "quintile reference for 'shops_count_100' is damaged" in text and "re-export the model" in text
