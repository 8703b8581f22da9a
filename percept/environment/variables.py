"""The environmental variables of places: 38 measures per buffer size, from an OpenStreetMap extract.

:func:`build_environment_index` does the per-extract work once (street networks simplified,
everything projected to the metric CRS, spatial indexes built); :func:`environmental_variables`
then measures any number of places, vectorised over all of them per buffer size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from percept.environment.buffers import Buffers
from percept.environment.keys import BUFFER_SIZES, ENV_MEASURES
from percept.environment.network_measures import (
    NetworkIndex,
    build_network_index,
    clip_edges,
    directed_edge_count,
    edge_measures,
    node_measures,
    street_length_total,
)
from percept.environment.osm_extract import NETWORK_TYPES, OsmExtract
from percept.environment.poi_categories import category_membership, sub_types
from percept.environment.poi_measures import PoiIndex, build_poi_index, poi_measures
from percept.environment.projection import Projection
from percept.environment.street_network import build_street_network
from percept.errors import PerceptError


@dataclass
class EnvironmentIndex:
    """An extract ready to measure places: points of interest and the three networks, in one metric CRS."""

    projection: Projection
    pois: PoiIndex
    networks: dict[str, NetworkIndex]  # "all", "walk", "bike"


def build_environment_index(extract: OsmExtract, projection: Projection) -> EnvironmentIndex:
    """Simplify the extract's networks and project and index everything in ``projection``."""
    features = extract.features
    pois = build_poi_index(projection.geometries(features.geometry.to_numpy()), category_membership(features),
                           sub_types(features))
    networks = {}
    for name in NETWORK_TYPES:
        network = build_street_network(*extract.networks[name], name)
        networks[name] = build_network_index(
            projection.points(network.node_lon, network.node_lat), network.street_count,
            projection.geometries(network.directed), projection.geometries(network.undirected),
            network.self_loop, network.speed, projection.to_lonlat)
    return EnvironmentIndex(projection, pois, networks)


def parse_buffer_sizes(text: str) -> tuple[int, ...]:
    """``100,300`` → (100, 300): distinct positive whole metres, in the order given."""
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or any(s <= 0 for s in sizes) or len(set(sizes)) != len(sizes):
        raise PerceptError(f"--buffers {text!r}: give distinct positive whole metres separated by commas, "
                           f"e.g. {','.join(map(str, BUFFER_SIZES))}")
    return sizes


def variable_names(buffer_sizes: tuple[int, ...] = BUFFER_SIZES) -> list[str]:
    """``<measure>_<size>`` for every size, measures in the order of the survey's keys."""
    return [f"{measure}_{size}" for size in buffer_sizes for measure in ENV_MEASURES]


def environmental_variables(index: EnvironmentIndex, lon: np.ndarray, lat: np.ndarray,
                            buffer_sizes: tuple[int, ...] = BUFFER_SIZES) -> pd.DataFrame:
    """One row per place (WGS84 ``lon``/``lat``), one column per ``<measure>_<size>``."""
    points = index.projection.points(np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64))
    columns = {}
    for size in buffer_sizes:
        measured = measures_within(index, Buffers.around(points, size))
        columns.update({f"{measure}_{size}": measured[measure] for measure in ENV_MEASURES})
    return pd.DataFrame(columns, columns=variable_names(buffer_sizes))


def measures_within(index: EnvironmentIndex, buffers: Buffers) -> dict[str, np.ndarray]:
    """The 38 measures for each buffer."""
    n = len(buffers)
    streets = index.networks["all"]
    out = poi_measures(index.pois, buffers)
    out.update(node_measures(streets, buffers))
    out["num_edges"] = directed_edge_count(streets, buffers)
    out.update(edge_measures(streets, clip_edges(streets, buffers, index.projection.to_lonlat), n))
    for name in ("walk", "bike"):
        out[f"{name}_network_length"] = street_length_total(clip_edges(index.networks[name], buffers), n)
    return out
