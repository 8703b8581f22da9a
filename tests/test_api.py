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
