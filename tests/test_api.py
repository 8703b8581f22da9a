"""The notebook API gives the drop-in CLI's numbers."""

from __future__ import annotations

import json

import numpy as np

from percept import api
from percept.model.io import load_model


def test_evaluate_matches_reference(reference_dir):
    survey = reference_dir / "survey"
    data = api.load_survey(survey / "data.geojson", survey / "embeddings", clip_model="open_clip:ViT-B-32")
    table = api.evaluate(data, ks=[10, 40], training_split=0.7, randomize=True, seed=1000)
    expected = json.loads((reference_dir / "expected" / "random.json").read_text())["lines"]
    assert [(r.category, str(r.k)) for r in table.itertuples()] == [(e[0], e[1]) for e in expected]
    np.testing.assert_allclose(table["mse"], [float(e[2]) for e in expected], atol=5e-6)
    np.testing.assert_allclose(table["r2"], [float(e[3]) for e in expected], atol=5e-6)


def test_fit_predict_export(reference_dir, tmp_path):
    survey = reference_dir / "survey"
    data = api.load_survey(survey / "data.geojson", survey / "embeddings", demographics=survey / "demo.csv",
                           age="30,49")
    model = api.fit(data, "safety", k=5)
    own = data.vectors[data.samples["safety"].rows[:3]]
    assert api.predict(model, own).shape == (3,)
    api.export(data, tmp_path / "m.npz", clip_model="open_clip:ViT-B-32", k=5)
    exported = load_model(tmp_path / "m.npz")
    assert exported.settings.k == 5
    assert len(exported.scores["safety"]) == len(data.samples["safety"])


def test_a_notebook_exported_environmental_model_is_refused_for_photo_only_scoring(tmp_path, capsys):
    from percept.cli.main import main as percept_main

    survey = tmp_path / "survey"  # a drawn sample survey, encoded (images and prompts) by the built-in model
    assert percept_main(["sample", str(survey), "--images", "60", "-q"]) == 0
    assert percept_main(["encode", str(survey / "images"), "-o", str(survey / "embeddings"), "-M", "percept:tiny",
                         "-q"]) == 0
    data = api.load_survey(survey / "data.geojson", survey / "embeddings", environmental="slerp", prompt_style=1,
                           clip_model="percept:tiny")
    api.export(data, tmp_path / "env.npz", clip_model="percept:tiny", k=5)
    settings = load_model(tmp_path / "env.npz").settings
    assert (settings.environmental_method, settings.prompt_style, settings.prompt_encoding) == ("slerp", 1, "whole")
    assert percept_main(["rate", "--model", str(tmp_path / "env.npz"), "-e", str(survey / "embeddings"),
                         "--out", str(tmp_path / "rated.csv")]) == 2
    assert "environmental prompts (slerp)" in capsys.readouterr().err
    assert not (tmp_path / "rated.csv").exists()
