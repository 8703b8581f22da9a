"""Street network measures around places, for all buffers at once.

Nodes and edges are in a metric CRS; each buffer's share of an edge is the edge clipped to the
buffer (an edge whose bounding box lies inside the buffer is taken whole, without clipping).
The statistics follow osmnx's definitions (``osmnx.stats``, ``osmnx.bearing``) applied to the
part of the network in the buffer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import shapely

from percept.environment.buffer_stats import count_per_buffer, entropy_per_buffer, ratio
from percept.environment.buffers import Buffers

ORIENTATION_BINS = 36
LINE_TYPES = (1, 2)  # LineString, LinearRing (geometry type ids)
DEFAULT_SPEED = 50.0  # km/h, where no street in the buffer carries a maxspeed


@dataclass
class NetworkIndex:
    """A street network in a metric CRS with spatial indexes over its nodes and edges.

    ``bearing`` is each undirected edge's bearing from its first point to its last (NaN for a
    self-loop): what a buffer that holds the whole edge uses.
    """

    nodes: np.ndarray  # Points
    street_count: np.ndarray
    directed: np.ndarray  # LineStrings
    undirected: np.ndarray  # LineStrings
    self_loop: np.ndarray
    speed: np.ndarray
    bearing: np.ndarray
    bounds: np.ndarray  # (undirected edges, 4)
    length: np.ndarray
    node_tree: shapely.STRtree
    directed_tree: shapely.STRtree
    undirected_tree: shapely.STRtree


def build_network_index(nodes: np.ndarray, street_count: np.ndarray, directed: np.ndarray, undirected: np.ndarray,
                        self_loop: np.ndarray, speed: np.ndarray, to_lonlat) -> NetworkIndex:
    """Index a projected network (arrays of shapely geometries); ``to_lonlat(x, y)`` undoes the projection."""
    bearing = line_bearings(undirected, to_lonlat)
    bearing[self_loop] = np.nan
    return NetworkIndex(nodes, street_count, directed, undirected, self_loop, speed, bearing,
                        shapely.bounds(undirected).reshape(-1, 4), shapely.length(undirected),
                        shapely.STRtree(nodes), shapely.STRtree(directed), shapely.STRtree(undirected))


def line_bearings(geometries: np.ndarray, to_lonlat) -> np.ndarray:
    """Bearing in degrees (``osmnx.bearing.calculate_bearing``) from the first point of each geometry's
    first line piece to the last point of its last; NaN for a geometry without a line piece."""
    from osmnx.bearing import calculate_bearing

    out = np.full(len(geometries), np.nan)
    parts, owner = shapely.get_parts(geometries, return_index=True)
    lines = np.isin(shapely.get_type_id(parts), LINE_TYPES)  # drop the points where a line only touches
    parts, owner = parts[lines], owner[lines]
    if not len(parts):
        return out
    first = np.unique(owner, return_index=True)[1]
    last = len(owner) - 1 - np.unique(owner[::-1], return_index=True)[1]
    start = shapely.get_coordinates(shapely.get_point(parts[first], 0))
    end = shapely.get_coordinates(shapely.get_point(parts[last], -1))
    lon1, lat1 = to_lonlat(start[:, 0], start[:, 1])
    lon2, lat2 = to_lonlat(end[:, 0], end[:, 1])
    out[owner[first]] = calculate_bearing(lat1, lon1, lat2, lon2)
    return out


@dataclass
class ClippedEdges:
    """The undirected edges intersecting each buffer: pairs (buffer, edge), length inside and bearing."""

    buffer: np.ndarray
    edge: np.ndarray
    length: np.ndarray
    bearing: np.ndarray | None  # NaN where the part inside has none (self-loop, only touching the buffer)


def clip_edges(index: NetworkIndex, buffers: Buffers, to_lonlat=None) -> ClippedEdges:
    """Every (buffer, undirected edge) pair that intersects, with the edge's length inside the buffer and,
    given ``to_lonlat``, the bearing of that part."""
    pair_buffer, pair_edge = index.undirected_tree.query(buffers.polygons, predicate="intersects")
    cut = np.flatnonzero(~buffers.holds_boxes(pair_buffer, index.bounds[pair_edge]))
    inside = shapely.intersection(index.undirected[pair_edge[cut]], buffers.polygons[pair_buffer[cut]])
    length = index.length[pair_edge]
    length[cut] = shapely.length(inside)
    bearing = None
    if to_lonlat is not None:
        bearing = index.bearing[pair_edge]
        usable = ~index.self_loop[pair_edge[cut]] & (length[cut] > 0)
        bearing[cut] = np.nan
        bearing[cut[usable]] = line_bearings(inside[usable], to_lonlat)
    return ClippedEdges(pair_buffer, pair_edge, length, bearing)


def street_length_total(clipped: ClippedEdges, n_buffers: int) -> np.ndarray:
    """Metres of street inside each buffer."""
    return count_per_buffer(clipped.buffer, n_buffers, clipped.length)


def node_measures(index: NetworkIndex, buffers: Buffers) -> dict[str, np.ndarray]:
    """Nodes inside each buffer: their number, mean street count, shares with 1, 3 and 4 streets, intersections."""
    n = len(buffers)
    pair_buffer, pair_node = index.node_tree.query(buffers.polygons, predicate="intersects")
    streets = index.street_count[pair_node]
    nodes = count_per_buffer(pair_buffer, n)
    out = {"num_nodes": nodes.astype(np.int64),
           "streets_per_node_avg": ratio(count_per_buffer(pair_buffer, n, streets.astype(np.float64)), nodes)}
    for count in (1, 3, 4):
        out[f"streets_per_node_proportions{count}"] = ratio(
            count_per_buffer(pair_buffer, n, (streets == count).astype(np.float64)), nodes)
    out["intersection_count"] = count_per_buffer(pair_buffer, n, (streets >= 2).astype(np.float64)).astype(np.int64)
    return out


def directed_edge_count(index: NetworkIndex, buffers: Buffers) -> np.ndarray:
    """Directed edges (both directions of a two-way street) intersecting each buffer."""
    pair_buffer, _ = index.directed_tree.query(buffers.polygons, predicate="intersects")
    return count_per_buffer(pair_buffer, len(buffers)).astype(np.int64)


def edge_measures(index: NetworkIndex, clipped: ClippedEdges, n_buffers: int) -> dict[str, np.ndarray]:
    """Segment count, total and mean clipped length, orientation entropy and median speed per buffer."""
    segments = count_per_buffer(clipped.buffer, n_buffers)
    total = street_length_total(clipped, n_buffers)
    return {"street_segment_count": segments.astype(np.int64), "street_length_total": total,
            "street_length_avg": ratio(total, segments),
            "orientation_entropy": orientation_entropy(clipped, n_buffers),
            "median_speed": median_speed(index, clipped, n_buffers)}


def orientation_entropy(clipped: ClippedEdges, n_buffers: int) -> np.ndarray:
    """osmnx's orientation entropy of the edges' parts in each buffer (0 where none has a bearing):
    each bearing and its reverse fall into 72 half bins merged in pairs centred on 0°, 10°, …"""
    if clipped.bearing is None:
        raise ValueError("orientation entropy needs the edges' bearings: clip them with to_lonlat")
    known = ~np.isnan(clipped.bearing)
    bearing = clipped.bearing[known]
    both = np.concatenate([bearing, (bearing - 180.0) % 360.0])
    owners = np.tile(clipped.buffer[known], 2)
    return entropy_per_buffer(owners, orientation_bin(both), n_buffers, ORIENTATION_BINS)


def orientation_bin(bearing: np.ndarray) -> np.ndarray:
    """osmnx's bin (0..35) of each bearing in degrees: 10° bins centred on 0°, 10°, …, 350°."""
    split_edges = np.linspace(0, 360, ORIENTATION_BINS * 2 + 1)
    half = np.clip(np.searchsorted(split_edges, bearing, side="right") - 1, 0, ORIENTATION_BINS * 2 - 1)
    return ((half + 1) // 2) % ORIENTATION_BINS


def median_speed(index: NetworkIndex, clipped: ClippedEdges, n_buffers: int) -> np.ndarray:
    """Median maxspeed (km/h) over the streets in each buffer that carry one; ``DEFAULT_SPEED`` elsewhere."""
    speed = index.speed[clipped.edge]
    known = ~np.isnan(speed)
    medians = pd.Series(speed[known]).groupby(clipped.buffer[known]).median()
    out = np.full(n_buffers, DEFAULT_SPEED)
    out[medians.index.to_numpy(dtype=np.int64)] = medians.to_numpy()
    return out
