"""Decoding only the properties the KNN needs gives the same survey as decoding everything."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import REFERENCE

from percept.data.survey import CORE_PROPERTIES, load_survey
from percept.errors import PerceptError


def test_kept_properties_and_coordinates_equal_the_full_decode(tmp_path):
    data = json.loads((REFERENCE / "survey" / "data.geojson").read_text())
    data["features"][0]["geometry"] = {"type": "Point", "coordinates": [4.9, 52.37]}
    del data["features"][1]["properties"]["average_safety"]  # absent reads as null
    path = tmp_path / "data.geojson"
    path.write_text(json.dumps(data))
    kept, full = load_survey(path, CORE_PROPERTIES), load_survey(path)
    assert kept.by_name == full.by_name
    for mine, theirs in zip(kept.features, full.features):
        assert {k: v for k, v in mine.items() if v is not None} == \
               {k: theirs[k] for k in CORE_PROPERTIES if theirs.get(k) is not None}
    np.testing.assert_array_equal(kept.lonlat, full.lonlat)
    assert kept.lonlat[0].tolist() == [4.9, 52.37]


def test_a_malformed_survey_gets_the_full_decoder_message(tmp_path):
    path = tmp_path / "data.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [{"properties": []}]}))
    with pytest.raises(PerceptError, match="feature 0 has no 'url'"):
        load_survey(path, CORE_PROPERTIES)
