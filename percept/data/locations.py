"""Where each image was taken: read a GeoJSON or CSV file mapping image names to longitude and latitude.

A CSV needs a name column (``image``, ``image_path``, ``name``, ``filename`` or ``url``) and
``lon``/``longitude`` and ``lat``/``latitude``; ``angle`` (or ``camera_angle``, ``heading``,
``compass_angle``) and ``sequence`` (or ``sequence_id``) are optional. A GeoJSON file holds Point
features whose properties carry the same name, angle and sequence keys.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np

from percept.data.geojson import read_collection
from percept.errors import PerceptError

if TYPE_CHECKING:
    import pandas as pd

NAME_KEYS = ("image", "image_path", "name", "filename", "image_name", "url")
LON_KEYS = ("lon", "longitude", "lng")
LAT_KEYS = ("lat", "latitude")
ANGLE_KEYS = ("angle", "camera_angle", "heading", "compass_angle")
SEQUENCE_KEYS = ("sequence", "sequence_id")
COLUMNS = ("lon", "lat", "angle", "sequence")
#: The crops of one panorama: ``<image id>_x<number>.<ext>``.
PANORAMA_CROP = re.compile(r"^(?P<id>.+)_x\d+\.[^./]+$")


def location_key(name: str) -> str:
    """Images are matched by their file name, the part after the last ``/`` (as ``PurePosixPath.name``
    reads it: empty and ``.`` parts skipped)."""
    tail = str(name).replace("\\", "/").rsplit("/", 1)[-1]
    if tail and tail != ".":
        return tail  # the usual case, without a path object (a city holds hundreds of thousands of names)
    return PurePosixPath(str(name).replace("\\", "/")).name


def location_keys(names: list[str]) -> list[str]:
    """:func:`location_key` of each name; names that are already file names (no ``/`` or ``\\``, not empty or
    ``.``), as clip-retrieval writes them, are told at once and kept as they are."""
    if all(isinstance(n, str) and n for n in names) and "." not in names:
        joined = "\0".join(names)
        if "/" not in joined and "\\" not in joined:
            return list(names)
    return [location_key(n) for n in names]


def panorama_id(name: str) -> str:
    """``<image id>_x<number>.<ext>`` → ``<image id>``; other names → their file name."""
    base = location_key(name)
    match = PANORAMA_CROP.match(base)
    return match.group("id") if match else base


def location_stem(name: str) -> str:
    """The file name without its extension: a second way to match."""
    return PurePosixPath(location_key(name)).stem


class Locations:
    """Image name → lon, lat, angle, sequence; looked up by file name, then by name without extension."""

    def __init__(self, frame: pd.DataFrame, source: str = "locations"):
        self.source = source
        frame = frame.reset_index(drop=True)
        self.by_name = frame.drop_duplicates("key", keep="last").set_index("key")[list(COLUMNS)]
        stems = frame.assign(key=frame["key"].map(location_stem))
        self.by_stem = stems.drop_duplicates("key", keep="last").set_index("key")[list(COLUMNS)]

    def __len__(self) -> int:
        return len(self.by_name)

    def lookup(self, names: list[str], fallbacks: list[str] | None = None) -> pd.DataFrame:
        """Rows (lon, lat, angle, sequence; NaN where unknown) for ``names``, in order.

        Unmatched names are tried without their extension, then as ``fallbacks`` (e.g. a crop's file name).
        """
        found = self.by_name.reindex(location_keys(names)).reset_index(drop=True)
        tries = [(self.by_stem, [location_stem(n) for n in names])]
        if fallbacks is not None:
            tries.append((self.by_name, location_keys(fallbacks)))
        for table, keys in tries:
            missing = found["lon"].isna().to_numpy()
            if missing.any():
                found.loc[missing] = table.reindex(keys).reset_index(drop=True).loc[missing]
        return found


def read_locations(path: str | Path) -> Locations:
    """Read a GeoJSON (``.geojson``/``.json``) or CSV locations file, validating every row."""
    path = Path(path)
    if not path.exists():
        raise PerceptError(f"locations file {path} does not exist: give a GeoJSON or CSV of image locations")
    if path.suffix.lower() in (".geojson", ".json"):
        frame = _from_geojson(path)
    else:
        frame = _from_csv(path)
    return Locations(_validate(frame, path), str(path))


def _pick(columns: Iterable[str], keys: tuple[str, ...]) -> str | None:
    lower = {str(c).lower(): c for c in columns}
    return next((lower[k] for k in keys if k in lower), None)


def _from_csv(path: Path) -> pd.DataFrame:
    import pandas as pd
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise PerceptError(f"cannot read locations CSV {path}: {exc}") from None
    name, lon, lat = _pick(table.columns, NAME_KEYS), _pick(table.columns, LON_KEYS), _pick(table.columns, LAT_KEYS)
    if name is None or lon is None or lat is None:
        raise PerceptError(f"locations CSV {path} needs an image name column ({', '.join(NAME_KEYS)}) and "
                           f"lon/longitude and lat/latitude columns; it has {', '.join(map(str, table.columns))}")
    angle, sequence = _pick(table.columns, ANGLE_KEYS), _pick(table.columns, SEQUENCE_KEYS)
    return pd.DataFrame({
        "name": table[name], "lon": table[lon], "lat": table[lat],
        "angle": table[angle] if angle else None, "sequence": table[sequence] if sequence else None,
    })


def _from_geojson(path: Path) -> pd.DataFrame:
    import pandas as pd
    features = read_collection(path, "locations GeoJSON", "check the --locations path",
                             "give Point features whose properties name their image")["features"]
    rows = []
    for number, feature in enumerate(features):
        props = feature.get("properties") if isinstance(feature, dict) else None
        geometry = feature.get("geometry") if isinstance(feature, dict) else None
        props = props if isinstance(props, dict) else {}
        name = _pick(props, NAME_KEYS)
        point = isinstance(geometry, dict) and geometry.get("type") == "Point"
        coords = geometry.get("coordinates") if point and isinstance(geometry, dict) else None
        if name is None or not isinstance(coords, list) or len(coords) < 2:
            raise PerceptError(f"locations GeoJSON {path}: feature {number} needs a Point geometry and an image "
                               f"name property ({', '.join(NAME_KEYS)})")
        angle, sequence = _pick(props, ANGLE_KEYS), _pick(props, SEQUENCE_KEYS)
        row = (props[name], coords[0], coords[1], props.get(angle) if angle else None,
               props.get(sequence) if sequence else None)
        _check_types(row, path, number)
        rows.append(row)
    return pd.DataFrame(rows, columns=["name", "lon", "lat", "angle", "sequence"])


def _is_number(value: object) -> bool:
    return type(value) is int or type(value) is float


def _is_identifier(value: object) -> bool:
    return type(value) is str or type(value) is int


#: What each value of a GeoJSON location must be (None allowed only where said).
_EXPECTED = (("image name", _is_identifier, False, "a string"), ("longitude", _is_number, False, "a number"),
             ("latitude", _is_number, False, "a number"), ("angle", _is_number, True, "a number or null"),
             ("sequence", _is_identifier, True, "a string, a whole number or null"))


def _check_types(row: tuple, path: Path, number: int) -> None:
    """Refuse a GeoJSON location whose values have the wrong JSON types (text coordinates, ...)."""
    for value, (what, valid, optional, expected) in zip(row, _EXPECTED):
        if not (valid(value) or (optional and value is None)):
            raise PerceptError(f"locations GeoJSON {path}: feature {number} holds {what} {value!r} "
                               f"({type(value).__name__}), which must be {expected}: fix the file")


def _validate(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    import pandas as pd
    out = pd.DataFrame({"key": frame["name"].astype(str).map(location_key)})
    for column, low, high in (("lon", -180, 180), ("lat", -90, 90), ("angle", None, None)):
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna() & frame[column].notna() if column == "angle" else values.isna()
        if low is not None:
            bad |= (values < low) | (values > high)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            limits = f" between {low} and {high}" if low is not None else ""
            raise PerceptError(f"{path}: entry {row + 1} ({frame['name'].iloc[row]!r}) needs a number{limits} "
                               f"for {column}, got {frame[column].iloc[row]!r}")
        out[column] = values.astype(np.float64)
    out["sequence"] = frame["sequence"].astype(object).where(frame["sequence"].notna(), None)
    if frame["name"].isna().any():
        row = int(np.flatnonzero(frame["name"].isna().to_numpy())[0])
        raise PerceptError(f"{path}: entry {row + 1} has no image name")
    return out
