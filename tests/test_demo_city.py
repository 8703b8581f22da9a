"""``make demo-city`` at a small size, and ``percept rate`` of the environmental model it exports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from percept import demo_city
from percept.categories import CATEGORIES
from percept.cli import main as percept_main
from percept.environment.keys import ENV_KEYS

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    """The demo with 40 survey images and 120 images to rate; its folder."""
    out = tmp_path_factory.mktemp("demo-city")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(out)
        assert demo_city.main([str(out), "40", "120"]) == 0
    return out


def inside_area(lon, lat) -> bool:
    west, south, east, north = demo_city.AREA
    return bool(np.all((west <= lon) & (lon <= east) & (south <= lat) & (lat <= north)))


def test_demo_city_draws_a_map_of_rated_places_in_helsinki(city):
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(city / "map.png", ARTIFACTS / "demo-city-map.png")
    with Image.open(city / "map.png") as image:
        assert image.format == "PNG" and image.width > 500
    survey = pd.read_csv(city / "survey" / "locations.csv")
    assert inside_area(survey["lon"], survey["lat"])
    features = json.loads((city / "survey" / "with_env.geojson").read_text())["features"]
    assert len(features) == 40 and all(set(ENV_KEYS) <= set(f["properties"]) for f in features)
    assert sum(f["properties"]["shops_count_300"] for f in features) > 0
    rated = pd.read_csv(city / "city" / "rated.csv")
    assert len(rated) == 120 and rated[list(CATEGORIES)].stack().between(1, 5).all()
    assert inside_area(rated["lon"], rated["lat"])
    hexagons = json.loads((city / "map.geojson").read_text())["features"]
    assert hexagons and all("walkability" in h["properties"] for h in hexagons)


def rate(city: Path, capsys, *extra: str) -> tuple[int, str]:
    survey = city / "survey"
    code = percept_main.main(["rate", "--model", str(survey / "model.npz"), "--embeddings",
                              str(survey / "embeddings"), "-q", *extra])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_rating_with_variables_equals_rating_with_the_drop_in_prompt_vectors(city, tmp_path, capsys):
    survey = city / "survey"
    dropin_texts = tmp_path / "dropin-texts"
    shutil.copytree(survey / "text-prompt0-embeddings", dropin_texts)
    code, text = rate(city, capsys, "--environment", str(survey / "with_env.geojson"), "--out",
                      str(tmp_path / "from-variables.csv"))
    assert code == 0, text
    code, text = rate(city, capsys, "--text-embeddings", str(dropin_texts), "--out", str(tmp_path / "from-dropin.csv"))
    assert code == 0, text
    from_variables = pd.read_csv(tmp_path / "from-variables.csv")
    assert len(from_variables) == 40
    pd.testing.assert_frame_equal(from_variables, pd.read_csv(tmp_path / "from-dropin.csv"))


def test_rating_an_environmental_model_needs_the_variables_of_every_image(city, tmp_path, capsys):
    code, text = rate(city, capsys, "--out", str(tmp_path / "x.csv"))
    assert code == 2 and "--environment FILE" in text
    data = json.loads((city / "survey" / "with_env.geojson").read_text())
    data["features"] = data["features"][:-1]
    (tmp_path / "partial.geojson").write_text(json.dumps(data))
    code, text = rate(city, capsys, "--environment", str(tmp_path / "partial.geojson"), "--out",
                      str(tmp_path / "x.csv"))
    assert code == 2 and "1 of 40 images have no environmental variables in" in text and text.count("\n") == 1


@pytest.mark.parametrize("prompt_encoding", ["whole", "clauses"])
def test_rating_survey_places_finds_their_own_training_vectors(city, tmp_path, capsys, prompt_encoding):
    """Rated as the model was trained (whole prompts or clause means, recorded in the model), each survey
    image's query vector is its own training vector: best similarity 1."""
    from percept.cli import dropin
    from percept.model.io import load_model

    survey = city / "survey"
    model = tmp_path / f"model-{prompt_encoding}.npz"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(survey)
        assert dropin.main(["-g", "with_env.geojson", "-e", "embeddings", "-M", "percept:tiny", "--encoder", "builtin",
                            "--environmental", "--prompt-encoding", prompt_encoding, "-q", "--export", str(model)]) == 0
    assert load_model(model).settings.prompt_encoding == prompt_encoding
    out = tmp_path / "rated.csv"
    code = percept_main.main(["rate", "--model", str(model), "--embeddings", str(survey / "embeddings"), "--environment",
                              str(survey / "with_env.geojson"), "--include-self", "-q", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    rated = pd.read_csv(out)
    assert len(rated) == 40 and rated["best_similarity"].min() > 1 - 1e-3
