"""``make demo-city`` at a small size (its maps of the score and of how far it can be trusted), and
``percept rate`` of the environmental model it exports."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
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
SVG = "{http://www.w3.org/2000/svg}"


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


def svg_texts(path: Path, group: str) -> list[str]:
    """The text of every <text> inside the SVG element with id ``group`` (none when there is no such element)."""
    root = ET.parse(path).getroot()
    element = next((e for e in root.iter() if e.get("id") == group), None)
    return [] if element is None else [t.text for t in element.iter(f"{SVG}text")]


def svg_children(path: Path, group: str) -> int:
    """How many shapes the SVG group ``group`` holds (0 when there is no such group)."""
    root = ET.parse(path).getroot()
    element = next((e for e in root.iter() if e.get("id") == group), None)
    return 0 if element is None else len(element.findall(f"{SVG}path"))


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
    assert sum(h["properties"]["count"] for h in hexagons) == 120
    assert all({"mean", "spread", "mean_width", "out_of_domain_share"} <= set(h["properties"]) for h in hexagons)
    shares = [h["properties"]["out_of_domain_share"] for h in hexagons]
    assert sum(shares[i] * h["properties"]["count"] for i, h in enumerate(hexagons)) == pytest.approx(
        rated["out_of_domain"].sum())


def test_demo_city_maps_say_how_far_they_can_be_trusted(city):
    """The score map greys the cells mostly outside the survey's domain and says so; the spread, interval
    width and out-of-domain maps carry their own titles and legends."""
    rated = pd.read_csv(city / "city" / "rated.csv")
    with_intervals = "walkability_lo" in rated.columns
    expected = {
        "map": ("Walkability", "mean walkability score (1–5 scale)"),
        "map_sd": ("Walkability: spread of neighbours' scores",
                   "mean sd of the neighbours' walkability scores (score points)"),
        "map_width": ("Walkability: width of the 90 % interval",
                      "mean width of the 90 % prediction interval (score points)"),
        "map_out_of_domain": ("Share outside the survey's domain", "images outside the survey's domain (% per cell)"),
    }
    if not with_intervals:
        del expected["map_width"]
        assert not (city / "map_width.png").exists()
    ARTIFACTS.mkdir(exist_ok=True)
    for name, (title, legend) in expected.items():
        svg = city / f"{name}.svg"
        assert svg_texts(svg, "title") == [title]
        assert svg_texts(svg, "legend")[-1] == legend
        assert svg_texts(svg, "attribution") == ["Basemap © OpenStreetMap contributors"]
        with Image.open(city / f"{name}.png") as image:
            assert image.format == "PNG" and image.width > 500
        shutil.copyfile(city / f"{name}.png", ARTIFACTS / f"demo-city-{name.replace('_', '-')}.png")
    assert svg_texts(city / "map.svg", "cell-key") == ["outside the survey's domain (over 20 % of images)"]
    assert svg_texts(city / "map_out_of_domain.svg", "cell-key") == []  # the share itself is drawn, not greyed
    hexagons = json.loads((city / "map.geojson").read_text())["features"]
    greyed = sum(h["properties"]["out_of_domain_share"] > demo_city.MAX_OOD for h in hexagons)
    assert svg_children(city / "map.svg", "outside-cells") == greyed
    assert svg_children(city / "map.svg", "cells") == len(hexagons) - greyed
    assert svg_children(city / "map_out_of_domain.svg", "cells") == len(hexagons)
    assert [h["properties"]["outside_domain"] for h in hexagons] == [
        h["properties"]["out_of_domain_share"] > demo_city.MAX_OOD for h in hexagons]


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
    code = percept_main.main(["rate", "--model", str(model), "--embeddings", str(survey / "embeddings"),
                              "--environment", str(survey / "with_env.geojson"), "--include-self", "-q",
                              "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    rated = pd.read_csv(out)
    assert len(rated) == 40 and rated["best_similarity"].min() > 1 - 1e-3
