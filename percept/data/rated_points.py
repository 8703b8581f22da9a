"""Rated points: the one home of the files ``percept rate`` writes and ``percept map``, ``percept serve`` and
``percept suggest`` read.

Each row is an image (or a panorama) with its five scores, their ``<category>_sd``, ``<category>_lo`` and
``<category>_hi`` where intervals were asked, ``best_similarity``, ``dissimilarity``, ``out_of_domain``,
``in_survey`` and, with locations, lon/lat. Formats by suffix: ``.csv``; ``.parquet`` (GeoParquet with a
WKB Point column and its CRS when located) or ``.geoparquet``; ``.geojson`` (located only). GeoJSON and
Parquet files also keep the model card's id and the intervals' level (:data:`METADATA_KEY`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, TextIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from percept.categories import CATEGORIES
from percept.data.embeddings import arrow_path
from percept.data.parquet_concat import join_parquet
from percept.errors import PerceptError

if TYPE_CHECKING:
    import pandas as pd

#: Where rated files keep their metadata (the model card's id, the intervals' level).
METADATA_KEY = "percept"

OUTPUT_SUFFIXES = (".csv", ".parquet", ".geoparquet", ".geojson")
#: WGS84 as PROJJSON (GeoParquet's ``crs``), so readers such as geopandas take the points as EPSG:4326,
#: longitude first, and join them with other EPSG:4326 data without a CRS warning.
WGS84_PROJJSON = {
    "$schema": "https://proj.org/schemas/v0.7/projjson.schema.json", "type": "GeographicCRS", "name": "WGS 84",
    "datum": {"type": "GeodeticReferenceFrame", "name": "World Geodetic System 1984",
              "ellipsoid": {"name": "WGS 84", "semi_major_axis": 6378137, "inverse_flattening": 298.257223563}},
    "coordinate_system": {"subtype": "ellipsoidal", "axis": [
        {"name": "Geodetic latitude", "abbreviation": "Lat", "direction": "north", "unit": "degree"},
        {"name": "Geodetic longitude", "abbreviation": "Lon", "direction": "east", "unit": "degree"}]},
    "id": {"authority": "EPSG", "code": 4326}}
GEO_METADATA = {"version": "1.0.0", "primary_column": "geometry",
                "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Point"], "crs": WGS84_PROJJSON}}}


def output_kind(path: str | Path, located: bool) -> str:
    """The writer for ``path``'s extension: csv, parquet, geoparquet or geojson."""
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise PerceptError(f"cannot write {path}: the output must end in {', '.join(OUTPUT_SUFFIXES)}")
    if suffix in (".geojson", ".geoparquet") and not located:
        raise PerceptError(f"{suffix} output needs image locations: give --locations FILE (or write .csv/.parquet)")
    if suffix == ".parquet" and located:
        return "geoparquet"
    return suffix[1:]


def parquet_writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    """A Parquet writer of rated rows: dictionary encoding only for the text columns that repeat (a sequence's
    id), not for the image names, each different, nor for the scores, which rarely repeat (trying it on
    every column took 40 % more time and made the file a sixth larger)."""
    repeating = [column.name for column in schema if column.name != "image"
                 and (pa.types.is_string(column.type) or pa.types.is_large_string(column.type))]
    return pq.ParquetWriter(arrow_path(path), schema, use_dictionary=repeating)


class RatedWriter:
    """Context manager giving a ``write(table)`` function that appends chunks to a file of one kind;
    ``metadata`` (JSON) goes into the file where its format has room: a GeoJSON member and Parquet
    schema metadata, both under :data:`METADATA_KEY`.

    With ``part``, the file is one part of a rated file that :func:`join_parts` puts together: a CSV
    part has no header, a GeoJSON part holds only its features, and a Parquet part is written with
    ``schema`` (:func:`rated_schema` of the whole file's first chunk), so that the parts joined are
    byte for byte the file one writer makes of the same chunks.
    """

    def __init__(self, kind: str, path: Path, metadata: dict, *, part: bool = False, schema: pa.Schema | None = None):
        self.kind, self.path, self.metadata = kind, path, metadata
        self.part, self.schema = part, schema
        self.handle: TextIO | None = None
        self.parquet: pq.ParquetWriter | None = None
        self.first = True

    def __enter__(self) -> Callable[[pd.DataFrame], None]:
        if self.kind in ("csv", "geojson"):
            self.handle = handle = open(self.path, "w", encoding="utf-8", newline="")
            if self.kind == "geojson" and not self.part:
                handle.write(_geojson_head(self.metadata))
        elif self.schema is not None:
            self.parquet = parquet_writer(self.path, self.schema)
        return self.write

    def write(self, table: pd.DataFrame) -> None:
        if table.empty:
            return
        if self.kind == "csv":
            table.to_csv(self._text(), header=self.first and not self.part, index=False)
        elif self.kind == "geojson":
            self._geojson(table)
        else:
            self._parquet(table)
        self.first = False

    def _geojson(self, table: pd.DataFrame) -> None:
        props = table.drop(columns=["lon", "lat"])
        lines = []
        for record, lon, lat in zip(props.to_dict("records"), table["lon"], table["lat"]):
            clean = {key: (None if isinstance(value, float) and np.isnan(value) else value)
                     for key, value in record.items()}
            geometry = None if np.isnan(lon) else {"type": "Point", "coordinates": [float(lon), float(lat)]}
            lines.append(json.dumps({"type": "Feature", "geometry": geometry, "properties": clean}))
        self._text().write(("" if self.first else ",\n") + ",\n".join(lines))

    def _text(self) -> TextIO:
        """The open CSV or GeoJSON file (only inside the ``with`` block)."""
        if self.handle is None:
            raise RuntimeError("a rated file is written inside its with block")
        return self.handle

    def _parquet(self, table: pd.DataFrame) -> None:
        arrow = _arrow_table(self.kind, table)
        if self.parquet is None:
            schema = _with_metadata(self.kind, arrow.schema, self.metadata)
            self.parquet = parquet_writer(self.path, schema)
        self.parquet.write_table(arrow.cast(self.parquet.schema))

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.handle is not None:
            if self.kind == "geojson" and exc_type is None and not self.part:
                self.handle.write(GEOJSON_TAIL)
            self.handle.close()
        if self.parquet is not None:
            self.parquet.close()


#: What ends a rated GeoJSON file.
GEOJSON_TAIL = "\n]}\n"


def _geojson_head(metadata: dict) -> str:
    """What starts a rated GeoJSON file: the collection, its metadata and the opening of its features."""
    return f'{{"type": "FeatureCollection", "{METADATA_KEY}": {json.dumps(metadata)}, "features": [\n'


def _arrow_table(kind: str, table: pd.DataFrame) -> pa.Table:
    """A chunk as Arrow, with a WKB ``geometry`` column for GeoParquet (converted on this thread: a chunk's columns
    are too short to gain from the thread pool pyarrow would otherwise start for each chunk)."""
    arrow = pa.Table.from_pandas(table, preserve_index=False, nthreads=1)
    if kind == "geoparquet":
        arrow = arrow.append_column("geometry", pa.array(_wkb_points(table["lon"], table["lat"]), type=pa.binary()))
    return arrow


def _with_metadata(kind: str, schema: pa.Schema, metadata: dict) -> pa.Schema:
    """``schema`` carrying the rating's metadata (and GeoParquet's ``geo`` member)."""
    schema = schema.with_metadata({**(schema.metadata or {}), METADATA_KEY.encode(): json.dumps(metadata)})
    if kind == "geoparquet":
        schema = schema.with_metadata({**(schema.metadata or {}), b"geo": json.dumps(GEO_METADATA).encode()})
    return schema


def rated_schema(kind: str, first: pd.DataFrame, metadata: dict) -> pa.Schema | None:
    """The schema a Parquet or GeoParquet file gets whose first chunk is ``first`` (None for other kinds)."""
    if kind not in ("parquet", "geoparquet"):
        return None
    return _with_metadata(kind, _arrow_table(kind, first).schema, metadata)


def join_parts(kind: str, parts: list[Path], out: Path, metadata: dict, first: pd.DataFrame) -> None:
    """Write the parts (:class:`RatedWriter` with ``part``), in order, to ``out`` as one rated file: the file
    one writer would have made of their chunks. ``first`` is the whole file's first chunk (its columns make
    the CSV header). Parquet parts are joined without decoding them (:mod:`percept.data.parquet_concat`)."""
    with open(out, "wb") as handle:
        if kind in ("parquet", "geoparquet"):
            join_parquet(parts, handle)
            return
        if kind == "csv":
            handle.write(first.iloc[:0].to_csv(index=False).encode("utf-8"))
        else:
            handle.write(_geojson_head(metadata).encode("utf-8"))
        separator = b""
        for part in parts:
            if not part.stat().st_size:
                continue
            handle.write(separator)
            with open(part, "rb") as source:
                shutil.copyfileobj(source, handle, 1 << 22)
            separator = b",\n" if kind == "geojson" else b""
        if kind == "geojson":
            handle.write(GEOJSON_TAIL.encode("utf-8"))


def _wkb_points(lon: pd.Series, lat: pd.Series) -> list[bytes | None]:
    """Little-endian WKB Points (None where the location is unknown)."""
    header = np.frombuffer(b"\x01\x01\x00\x00\x00", dtype=np.uint8)
    out = []
    for x, y in zip(lon.to_numpy(dtype=np.float64), lat.to_numpy(dtype=np.float64)):
        out.append(None if np.isnan(x) else header.tobytes() + np.array([x, y], "<f8").tobytes())
    return out


@dataclass
class RatedPoints:
    """Rated images with locations: names, lon/lat and scores (n x categories), and their uncertainty
    where the file has it: sd, interval bounds lo/hi (n x categories, NaN where a column is missing),
    best similarity, dissimilarity and the flags (n,); None when the file has none of a kind."""

    names: np.ndarray
    lon: np.ndarray
    lat: np.ndarray
    scores: np.ndarray
    categories: list[str]
    sd: np.ndarray | None = None
    best_similarity: np.ndarray | None = None
    out_of_domain: np.ndarray | None = None
    in_survey: np.ndarray | None = None
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None
    dissimilarity: np.ndarray | None = None
    metadata: dict = field(default_factory=dict)  # what rating recorded (model card id, interval level)


def rated_metadata(path: str | Path) -> dict:
    """The metadata ``percept rate`` keeps in a GeoJSON or (Geo)Parquet file ({} for CSV, other files or none)."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".parquet", ".geoparquet"):
            found = (pq.read_schema(arrow_path(path)).metadata or {}).get(METADATA_KEY.encode())
            found = json.loads(found) if found else {}
        elif path.suffix.lower() in (".geojson", ".json"):
            with open(path, "rb") as handle:  # the member comes before the features: read the head only
                head = handle.read(4096).decode("utf-8", errors="replace")
            start = head.find(f'"{METADATA_KEY}": ')
            found = json.JSONDecoder().raw_decode(head, start + len(METADATA_KEY) + 4)[0] if start >= 0 else {}
        else:
            found = {}
    except (OSError, ValueError, pa.ArrowException):
        return {}
    return found if isinstance(found, dict) else {}


class NotRatedError(PerceptError):
    """The file is not one ``percept rate`` writes (no image column, not point features, another format)."""


def read_rated(path: str | Path) -> RatedPoints:
    """Read a file written by :func:`rate` with locations (CSV, Parquet, GeoParquet or GeoJSON); unlocated
    rows are dropped. Raises :class:`NotRatedError` for a file of another kind."""
    path = Path(path)
    if not path.exists():
        raise PerceptError(f"rated file {path} does not exist: make it with 'percept rate ... --locations FILE'")
    table = _rated_table(path)
    if "image" not in table.columns:
        raise NotRatedError(f"rated file {path} has no image column: it was not written by 'percept rate'")
    categories = [c for c in CATEGORIES if c in table.columns]
    if "lon" not in table.columns or "lat" not in table.columns or not categories:
        raise PerceptError(f"rated file {path} lacks lon, lat or score columns: rate with --locations FILE")
    for column in ("lon", "lat", *categories):
        table[column] = _numbers(table[column], path, column)
    table = table[table["lon"].notna() & table["lat"].notna()]
    return RatedPoints(table["image"].astype(str).to_numpy(), table["lon"].to_numpy(np.float64),
                       table["lat"].to_numpy(np.float64), table[categories].to_numpy(np.float64), categories,
                       **_uncertainty_columns(table, categories), metadata=rated_metadata(path))


def _rated_table(path: Path) -> pd.DataFrame:
    """The rows of a rated file by its suffix, with lon/lat taken from a WKB geometry where they are missing."""
    import pandas as pd
    suffix = path.suffix.lower()
    if suffix not in (*OUTPUT_SUFFIXES, ".json"):
        raise NotRatedError(f"cannot read rated file {path}: expected {', '.join(OUTPUT_SUFFIXES)}")
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        if suffix in (".parquet", ".geoparquet"):
            return _with_lonlat(pd.read_parquet(arrow_path(path)))
        return _geojson_table(path)
    except (OSError, ValueError, pa.ArrowException, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise PerceptError(f"cannot read rated file {path} ({exc}): re-run 'percept rate'") from None


def _with_lonlat(table: pd.DataFrame) -> pd.DataFrame:
    """A (Geo)Parquet table with ``lon``/``lat``, decoded from its WKB Point ``geometry`` when it lacks them."""
    if {"lon", "lat"} <= set(table.columns) or "geometry" not in table.columns:
        return table
    points = [_wkb_point(value) for value in table["geometry"]]
    return table.assign(lon=[p[0] for p in points], lat=[p[1] for p in points])


def _wkb_point(value: object) -> tuple[float, float]:
    """(x, y) of a 2D WKB Point (either byte order); NaN for missing or other geometries."""
    if not isinstance(value, (bytes, bytearray)) or len(value) < 21:
        return np.nan, np.nan
    order = "<" if value[0] == 1 else ">"
    kind = int(np.frombuffer(value[1:5], f"{order}u4")[0])
    if kind != 1:
        return np.nan, np.nan
    x, y = np.frombuffer(value[5:21], f"{order}f8")
    return float(x), float(y)


def _uncertainty_columns(table: pd.DataFrame, categories: list[str]) -> dict[str, np.ndarray]:
    """The sd, interval bounds, best similarity, dissimilarity and flags of a rated file, where it has them
    (files rated before lack them)."""
    import pandas as pd
    found: dict[str, np.ndarray] = {}
    for name in ("sd", "lo", "hi"):
        per_category = _per_category(table, [f"{c}_{name}" for c in categories])
        if per_category is not None:
            found[name] = per_category
    for column in ("best_similarity", "dissimilarity"):
        if column in table.columns:
            found[column] = pd.to_numeric(table[column], errors="coerce").to_numpy(np.float64)
    for flag in ("out_of_domain", "in_survey"):
        if flag in table.columns:
            found[flag] = table[flag].map(_flag).to_numpy(dtype=bool)
    return found


def _per_category(table: pd.DataFrame, columns: list[str]) -> np.ndarray | None:
    """(n, len(columns)) numbers, NaN for a missing column or cell; None when all the columns are missing."""
    import pandas as pd
    if not any(column in table.columns for column in columns):
        return None
    return np.column_stack([pd.to_numeric(table[column], errors="coerce").to_numpy(np.float64)
                            if column in table.columns else np.full(len(table), np.nan) for column in columns])


def _flag(value: object) -> bool:
    """A true/false cell as written to CSV, Parquet or GeoJSON."""
    import pandas as pd
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1")
    return False if pd.isna(value) else bool(value)


def _numbers(values: pd.Series, path: Path, column: str) -> pd.Series:
    """A rated file's column as float64 (empty cells NaN), refusing text and other non-numbers."""
    import pandas as pd
    if values.dtype.kind in "fiu":
        return values.astype(np.float64)
    numbers = pd.to_numeric(values.where(values.map(lambda v: type(v) is not bool), "?"), errors="coerce")
    bad = numbers.isna() & values.notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise PerceptError(f"rated file {path}: row {row + 1} holds {values.iloc[row]!r} in column {column!r}, "
                           "not a number: re-run 'percept rate'")
    return numbers.astype(np.float64)


def _geojson_table(path: Path) -> pd.DataFrame:
    import pandas as pd
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("features"), list):
        raise NotRatedError(f"rated file {path} is not a GeoJSON FeatureCollection")
    rows = []
    for number, feature in enumerate(data["features"]):
        feature = feature if isinstance(feature, dict) else {}
        geometry, props = feature.get("geometry"), feature.get("properties")
        if geometry is None and isinstance(props, dict):
            rows.append({**props, "lon": None, "lat": None})  # rated without a location
            continue
        geometry = geometry if isinstance(geometry, dict) else {}
        coords = geometry.get("coordinates")
        if not isinstance(props, dict) or geometry.get("type") != "Point" or not isinstance(coords, list) \
                or len(coords) < 2:
            raise NotRatedError(f"rated file {path}: feature {number} is not a Point feature with properties, "
                                "as 'percept rate' writes")
        rows.append({**props, "lon": coords[0], "lat": coords[1]})
    return pd.DataFrame(rows)
