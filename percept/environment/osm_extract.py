"""Read what the environmental variables need from a local OpenStreetMap extract (``.osm.pbf``) with pyrosm.

Points of interest: nodes and ways read with ``keep_relations=False`` (so a way that is also a
relation member still counts on its own tags), plus multipolygon relations read apart; other
relation types (routes, streets, stop areas) are not features. Street networks: the ``all``,
``walk`` and ``bike`` networks (pyrosm ``all``, ``walking``, ``cycling``) as nodes and
node-to-node segments, with the tags that direct and limit them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from percept.environment.poi_categories import SUB_TYPE_KEYS, tag_filter
from percept.errors import PerceptError
from percept.extras import require

if TYPE_CHECKING:
    import geopandas as gpd

NETWORK_TYPES = {"all": "all", "walk": "walking", "bike": "cycling"}  # our name: pyrosm's
SEGMENT_TAGS = ("oneway", "junction", "maxspeed", "highway")
WHOLE_FILE_BYTES = 32 * 2**20  # smaller extracts are read whole: quicker than cutting out a box


@dataclass
class OsmExtract:
    """Features with their tag columns and, per network, its nodes and segments (all in EPSG:4326)."""

    features: gpd.GeoDataFrame  # columns SUB_TYPE_KEYS + geometry
    networks: dict[str, tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]]  # nodes (id), segments (u, v)
    source: str


def read_osm_extract(path: str | Path, bounding_box: tuple[float, float, float, float] | None = None,
                     progress: bool = False) -> OsmExtract:
    """Read features and networks from ``path``; from an extract over ``WHOLE_FILE_BYTES`` only what lies
    within ``bounding_box`` (W, S, E, N) when given. ``progress``: pyrosm's progress bar on stderr."""
    path = Path(path)
    if not path.is_file():
        raise PerceptError(f"OpenStreetMap extract {path} does not exist: give an .osm.pbf file "
                           "(e.g. from download.geofabrik.de or extract.bbbike.org)")
    pyrosm = _import_pyrosm()
    try:
        box = list(bounding_box) if bounding_box is not None and not read_whole(path) else None
        osm = pyrosm.OSM(str(path), bounding_box=box, complete_relations=box is not None,
                         progress=progress)
        features = _features(osm)
        networks = {name: _network(osm, kind) for name, kind in NETWORK_TYPES.items()}
    except PerceptError:
        raise
    except Exception as exc:  # noqa: BLE001 - pyrosm reports a damaged file with assorted exception types
        raise PerceptError(f"cannot read {path} as an OpenStreetMap .osm.pbf extract ({type(exc).__name__}: "
                           f"{exc}): give an intact .osm.pbf file") from None
    return OsmExtract(features, networks, str(path))


def read_whole(path: Path) -> bool:
    """Whether :func:`read_osm_extract` reads this extract whole, whatever box it is given."""
    return path.stat().st_size <= WHOLE_FILE_BYTES


def _import_pyrosm():
    return require("osm", "pyrosm", "reading OpenStreetMap extracts")


def _features(osm) -> gpd.GeoDataFrame:
    """Nodes and ways with any category tag, and multipolygon relations, with their tag columns."""
    wanted = tag_filter()
    columns = list(SUB_TYPE_KEYS)
    plain = osm.get_data_by_custom_criteria(custom_filter=wanted, tags_as_columns=columns, keep_relations=False)
    relations = osm.get_data_by_custom_criteria(custom_filter=wanted, tags_as_columns=columns + ["type"],
                                                keep_nodes=False, keep_ways=False, keep_relations=True)
    if relations is not None and "type" in relations.columns:
        relations = relations[relations["type"] == "multipolygon"]
    else:
        relations = None
    frames = [frame for frame in (plain, relations) if frame is not None and len(frame)]
    return _tag_frame(frames)


def _tag_frame(frames: list) -> gpd.GeoDataFrame:
    import geopandas as gpd

    columns = list(SUB_TYPE_KEYS)
    parts = [frame.reindex(columns=columns + ["geometry"]) for frame in frames]
    if not parts:
        return gpd.GeoDataFrame({c: pd.Series(dtype=object) for c in columns}, geometry=gpd.GeoSeries(crs=4326))
    table = pd.concat(parts, ignore_index=True)
    table = table[table.geometry.notna() & ~table.geometry.is_empty]
    return gpd.GeoDataFrame(table.reset_index(drop=True), geometry="geometry", crs=4326)


def _network(osm, kind: str):
    """(nodes with id and geometry, segments with u, v, length, SEGMENT_TAGS and geometry) of one network."""
    import geopandas as gpd

    found = osm.get_network(network_type=kind, nodes=True, extra_attributes=list(SEGMENT_TAGS))
    nodes, segments = found if found is not None else (None, None)
    if nodes is None or segments is None or not len(segments):
        empty_nodes = gpd.GeoDataFrame({"id": pd.Series(dtype="int64")}, geometry=gpd.GeoSeries(crs=4326))
        empty_edges = gpd.GeoDataFrame({c: pd.Series(dtype=object) for c in ("u", "v", "id", "length",
                                                                             *SEGMENT_TAGS)},
                                       geometry=gpd.GeoSeries(crs=4326))
        return empty_nodes, empty_edges
    segments = segments.reindex(columns=["u", "v", "id", "length", *SEGMENT_TAGS, "geometry"])
    return nodes[["id", "geometry"]].reset_index(drop=True), segments.reset_index(drop=True)
