"""The published model is the evaluated one: ``percept evaluate --export`` and the drop-in's --export give
the same arrays; the model card records inputs by SHA-256 and travels into rated files; intervals need a
calibration; survey images without embeddings never vanish silently."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from percept.categories import CATEGORIES
from percept.cli.dropin import main as dropin_main
from percept.cli.main import main as percept_main
from percept.data.embeddings import write_part
from percept.model.io import load_model, save_model
from percept.model.npz import read_npz
from percept.study.publish import card_path

MODEL = "open_clip:ViT-B-32"


def data_flags(survey):
    return ["-g", str(survey / "data.geojson"), "-e", str(survey / "embeddings"), "-M", MODEL]


def test_evaluate_export_equals_the_dropin_export(survey_copy, tmp_path):
    dropin, evaluated = tmp_path / "dropin.npz", tmp_path / "evaluated.npz"
    assert dropin_main([*data_flags(survey_copy), "-k", "10", "--export", str(dropin), "-q"]) == 0
    assert percept_main(["evaluate", *data_flags(survey_copy), "-k", "10", "--group-by", "image", "--no-baselines",
                         "--export", str(evaluated), "-q"]) == 0
    a, b = read_npz(dropin), read_npz(evaluated)
    arrays = [key for key in a if key.endswith(("_vecs", "_scores")) or key.startswith("percept_conformal_")]
    assert len([key for key in arrays if key.startswith("percept_conformal_")]) == len(CATEGORIES)
    for key in arrays:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    first, second = load_model(dropin), load_model(evaluated)
    assert first.settings == second.settings
    assert first.card["model"]["k_choice"] != second.card["model"]["k_choice"]  # how K was chosen differs
    assert card_path(evaluated).read_text().startswith(f"# Model card {second.card['id']}")


def test_the_card_changes_with_one_rating_and_travels_into_rated_files(survey_copy, tmp_path):
    model = tmp_path / "m.npz"
    assert dropin_main([*data_flags(survey_copy), "-k", "10", "--export", str(model), "-q"]) == 0
    card = load_model(model).card
    assert set(card["inputs"]) == {"survey", "embeddings"}
    geojson = survey_copy / "data.geojson"
    data = json.loads(geojson.read_text())
    feature = next(f for f in data["features"] if f["properties"]["average_safety"] is not None)
    feature["properties"]["average_safety"] = 5.0 if feature["properties"]["average_safety"] != 5.0 else 4.0
    geojson.write_text(json.dumps(data))
    changed = tmp_path / "changed.npz"
    assert dropin_main([*data_flags(survey_copy), "-k", "10", "--export", str(changed), "-q"]) == 0
    other = load_model(changed).card
    assert other["inputs"]["survey"]["sha256"] != card["inputs"]["survey"]["sha256"]
    assert other["inputs"]["embeddings"]["sha256"] == card["inputs"]["embeddings"]["sha256"]
    assert other["id"] != card["id"]
    locations = tmp_path / "locations.csv"
    pd.DataFrame({"image": [f["properties"]["url"].rsplit("/", 1)[-1] for f in data["features"]],
                  "lon": [f["geometry"]["coordinates"][0] for f in data["features"]],
                  "lat": [f["geometry"]["coordinates"][1] for f in data["features"]]}).to_csv(locations, index=False)
    for suffix in (".geojson", ".parquet"):
        out = tmp_path / f"rated{suffix}"
        assert percept_main(["rate", "--model", str(changed), "-e", str(survey_copy / "embeddings"),
                             "--locations", str(locations), "--out", str(out), "-q"]) == 0
        metadata = (json.loads(out.read_text())["percept"] if suffix == ".geojson"
                    else json.loads(pq.read_schema(out).metadata[b"percept"]))
        assert metadata == {"model_card": other["id"], "interval_level": 0.9}
        drawn = tmp_path / f"map{suffix}.svg"
        assert percept_main(["map", "--rated", str(out), "--category", "safety", "--hex", "300", "--out", str(drawn),
                             str(drawn.with_suffix(".geojson")), "--quiet"]) == 0
        assert other["id"] in drawn.read_text()
        assert json.loads(drawn.with_suffix(".geojson").read_text())["percept"] == {"model_card": other["id"]}


def test_percept_card_prints_the_card(survey_copy, tmp_path, capsys):
    model = tmp_path / "m.npz"
    assert dropin_main([*data_flags(survey_copy), "-k", "10", "--export", str(model), "-q"]) == 0
    capsys.readouterr()
    assert percept_main(["card", str(model), "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card == load_model(model).card and card["domain"]["threshold"] == load_model(model).domain_threshold
    bare = tmp_path / "bare.npz"
    save_model(bare, {"safety": np.eye(3)}, {"safety": np.ones(3)}, None)
    assert percept_main(["card", str(bare)]) == 2
    assert "holds no model card" in capsys.readouterr().err


def test_intervals_need_a_calibration(survey_copy, tmp_path, capsys):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(40, 8))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    bare = tmp_path / "bare.npz"
    save_model(bare, {c: vectors for c in CATEGORIES}, {c: rng.uniform(1, 5, 40) for c in CATEGORIES}, None)
    folder = write_vectors(tmp_path / "emb", vectors)
    out = tmp_path / "rated.csv"
    assert percept_main(["rate", "--model", str(bare), "-M", "x", "-e", str(folder), "--out", str(out), "-q"]) == 0
    assert not any(column.endswith("_lo") for column in pd.read_csv(out).columns)
    capsys.readouterr()
    assert percept_main(["rate", "--model", str(bare), "-e", str(folder), "--interval", "0.9", "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "no interval calibration" in error and "--interval 0" in error
    with pytest.raises(SystemExit) as exit_status:  # argparse refuses the value
        percept_main(["rate", "--model", str(bare), "-e", str(folder), "--interval", "1.5", "--out", str(out)])
    assert exit_status.value.code == 2 and "between 0 and 1" in capsys.readouterr().err


def write_vectors(folder, vectors):
    """An embeddings folder of float16 rows named city_<i>.jpg."""
    names = [f"city_{i}.jpg" for i in range(len(vectors))]
    write_part(folder, "img", 0, vectors.astype(np.float16), pd.DataFrame({"image_path": names}))
    return folder


def add_unembedded_features(survey, count: int) -> None:
    """Append ``count`` rated features whose images have no embedding (failed downloads)."""
    geojson = survey / "data.geojson"
    data = json.loads(geojson.read_text())
    template = data["features"][0]
    for number in range(count):
        props = {**template["properties"], "image_id": 90_000 + number,
                 "url": f"https://percept.example/img/ams/missing_{number}.jpg"}
        props.update({f"average_{c}": 3.0 for c in CATEGORIES})
        data["features"].append({**template, "properties": props})
    geojson.write_text(json.dumps(data))


def test_images_without_embeddings_are_counted_and_refused_beyond_five_percent(survey_copy, tmp_path, capsys):
    add_unembedded_features(survey_copy, 40)
    flags = ["evaluate", *data_flags(survey_copy), "-k", "5", "--cv", "3", "--no-baselines"]
    assert percept_main(flags) == 2
    error = capsys.readouterr().err
    assert "have no embedding" in error and "--allow-missing" in error and error.count("\n") == 1
    report = tmp_path / "report"
    assert percept_main([*flags, "--allow-missing", "--report", str(report)]) == 0
    out = capsys.readouterr().out
    survey = json.loads((survey_copy / "data.geojson").read_text())["features"]
    rated = sum(f["properties"]["average_walkability"] is not None for f in survey)
    assert f"walkability: dropped 40 of {rated} rated survey images" in out
    dropped = json.loads((report / "report.json").read_text())["sections"]["dropped"]
    assert dropped["walkability"]["dropped_images"] == 40 and dropped["walkability"]["images"] == rated
    assert "Survey images dropped" in (report / "report.html").read_text()
    # the drop-in keeps the original's behaviour (it runs) but says what it dropped
    assert dropin_main([*data_flags(survey_copy), "-k", "5"]) == 0
    assert "dropped 40 of" in capsys.readouterr().err
