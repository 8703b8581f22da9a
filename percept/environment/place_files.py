"""Files of places: read the points to measure, write them with their environmental variables, read those back.

Input: a GeoJSON FeatureCollection of Point features in WGS84 (such as a survey's
``data.geojson``), or a locations file (CSV or GeoJSON: image name, lon, lat, optionally angle
and sequence). Output by extension: ``.geojson`` (the input features, or one feature per
location, with the variables added as properties after the others, replacing any of the same
name) or ``.csv`` (image, lon, lat, then the variables). Counts are written as whole numbers,
everything else rounded to 4 decimals.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from percept.atomic import atomic_open, atomic_write_text
from percept.data.geojson import read_collection
from percept.data.locations import NAME_KEYS, location_key, read_locations
from percept.environment.keys import ENV_KEYS
from percept.errors import PerceptError

OUTPUT_SUFFIXES = (".geojson", ".csv")
DECIMALS = 4


@dataclass
class Places:
    """Points to measure: an image name for each (``""`` where there is none) and WGS84 coordinates."""

    names: list[str]
    lon: np.ndarray
    lat: np.ndarray
    collection: dict | None = None  # the GeoJSON read, written back with the variables added
    extra: pd.DataFrame | None = None  # a locations file's angle and sequence

    def __len__(self) -> int:
        return len(self.names)


def check_output(path: str | Path) -> Path:
    """The output path, if its extension is one we write."""
    path = Path(path)
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise PerceptError(f"cannot write {path}: the output must end in {' or '.join(OUTPUT_SUFFIXES)}")
    return path


def read_geojson_places(path: str | Path) -> Places:
    """Every feature of a GeoJSON FeatureCollection, each of which must be a Point (WGS84)."""
    data = read_collection(path, "places GeoJSON", "check the path",
                           "give Point features such as a survey's data.geojson")
    features = data["features"]
    if not features:
        raise PerceptError(f"{path} is not a GeoJSON FeatureCollection with features: give Point features "
                           "such as a survey's data.geojson")
    lon, lat, names = [], [], []
    for number, feature in enumerate(features):
        geometry = feature.get("geometry") if isinstance(feature, dict) else None
        coords = geometry.get("coordinates") if isinstance(geometry, dict) and geometry.get("type") == "Point" else None
        if not isinstance(coords, list) or len(coords) < 2 or not all(_is_number(c) for c in coords[:2]):
            raise PerceptError(f"{path}: feature {number} is not a Point with longitude and latitude: "
                               "every feature needs a Point geometry")
        lon.append(coords[0])
        lat.append(coords[1])
        names.append(place_name(feature.get("properties") or {}))
    return Places(names, _coordinates(lon, -180, 180, path, "longitude"), _coordinates(lat, -90, 90, path, "latitude"),
                  collection=data)


def read_location_places(path: str | Path) -> Places:
    """The images of a locations file (``percept rate --locations`` format)."""
    table = read_locations(path).by_name
    extra = table[["angle", "sequence"]].reset_index(drop=True)
    extra = extra[[c for c in extra.columns if extra[c].notna().any()]]
    return Places([str(n) for n in table.index], table["lon"].to_numpy(np.float64), table["lat"].to_numpy(np.float64),
                  extra=extra)


def place_name(properties: dict) -> str:
    """A feature's image file name from its first name property (``image`` … ``url``), or ``""``."""
    for key in NAME_KEYS:
        value = properties.get(key)
        if value:
            return location_key(str(value))
    return ""


def write_places(path: str | Path, places: Places, variables: pd.DataFrame) -> None:
    """Write the places with their variables (one row per place, in order) as GeoJSON or CSV."""
    path = check_output(path)
    values = _json_columns(variables)
    if path.suffix.lower() == ".csv":
        table = pd.DataFrame({"image": places.names, "lon": places.lon, "lat": places.lat})
        if places.extra is not None:
            table = pd.concat([table, places.extra], axis=1)
        table = pd.concat([table, pd.DataFrame(values, columns=list(variables.columns))], axis=1)
        with atomic_open(path, "w", encoding="utf-8", newline="") as handle:
            table.to_csv(handle, index=False, lineterminator="\n")
        return
    rows = [dict(zip(variables.columns, row)) for row in zip(*values.values())]
    collection = _with_properties(places, rows, set(variables.columns))
    atomic_write_text(path, json.dumps(collection, ensure_ascii=False) + "\n")


def _with_properties(places: Places, rows: list[dict], replaced: set[str]) -> dict:
    if places.collection is not None:
        features = []
        for feature, row in zip(places.collection["features"], rows):
            kept = {k: v for k, v in (feature.get("properties") or {}).items() if k not in replaced}
            features.append({**feature, "properties": {**kept, **row}})
        return {**places.collection, "features": features}
    features = []
    for number, row in enumerate(rows):
        props = {"image": places.names[number]}
        if places.extra is not None:
            props.update({k: _plain(v) for k, v in places.extra.iloc[number].items() if _plain(v) is not None})
        features.append({"type": "Feature", "properties": {**props, **row},
                         "geometry": {"type": "Point", "coordinates": [float(places.lon[number]),
                                                                       float(places.lat[number])]}})
    return {"type": "FeatureCollection", "features": features}


def _json_columns(variables: pd.DataFrame) -> dict[str, list]:
    """Each column as a list of Python numbers: integers stay whole, floats are rounded."""
    out = {}
    for column in variables.columns:
        series = variables[column]
        if pd.api.types.is_integer_dtype(series):
            out[column] = series.astype(np.int64).tolist()
        else:
            out[column] = np.round(series.to_numpy(np.float64), DECIMALS).tolist()
    return out


@dataclass
class EnvironmentTable:
    """Environmental variables of named places: a name per row, and the rows' values by key."""

    names: list[str]
    records: list[dict]  # each row's environmental keys, in the file's order (prompts list them so)


def read_environment_table(path: str | Path) -> EnvironmentTable:
    """Read a file written by ``percept environment`` (GeoJSON or CSV) keyed by image name."""
    path = Path(path)
    if path.suffix.lower() in (".geojson", ".json"):
        features = read_collection(path, "environment file", "check the path",
                                 "give the output of 'percept environment'")["features"]
        properties = [(f.get("properties") or {}) if isinstance(f, dict) else {} for f in features]
        names = [place_name(p) for p in properties]
    else:
        table = _read_csv(path)
        name_column = next((c for c in NAME_KEYS if c in table.columns), None)
        if name_column is None:
            raise PerceptError(f"{path} has no image name column ({', '.join(NAME_KEYS)}): give the output of "
                               "'percept environment'")
        names = [location_key(str(n)) for n in table[name_column]]
        properties = table.to_dict("records")
    present = set().union(*(p.keys() for p in properties)) if properties else set()
    keys = [k for k in ENV_KEYS if k in present]
    if not keys:
        raise PerceptError(f"{path} holds none of the {len(ENV_KEYS)} environmental variables (such as "
                           f"{ENV_KEYS[0]}): make it with 'percept environment'")
    wanted = set(keys)
    records = [{k: _number_or_none(v) for k, v in p.items() if k in wanted} for p in properties]
    return EnvironmentTable(names, records)


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except FileNotFoundError:
        raise PerceptError(f"{path} does not exist: check the path") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise PerceptError(f"cannot read {path} as CSV: {exc}") from None


def _plain(value):
    """A table cell as a JSON value: None for missing, Python numbers for numpy ones."""
    if isinstance(value, np.generic):
        value = value.item()
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number_or_none(value):
    """A finite number as a Python int or float (a whole float stays a float), else None."""
    if isinstance(value, np.generic):
        value = value.item()
    return value if _is_number(value) and math.isfinite(value) else None


def _coordinates(values: list, low: float, high: float, path, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(array) | (array < low) | (array > high)
    if bad.any():
        number = int(np.flatnonzero(bad)[0])
        raise PerceptError(f"{path}: feature {number} has {what} {values[number]!r}, not between {low} and {high}: "
                           "give WGS84 longitude/latitude")
    return array
