"""Street networks as osmnx builds and simplifies them, from an extract's nodes and segments.

Direction follows osmnx's rule: on a bidirectional network (``walk``) every street runs both
ways; otherwise a street is one-way when its ``oneway`` tag says so or it is a roundabout
(``-1``/``reverse``/``T`` run against the node order), and a two-way street becomes two
directed edges. Every connected piece is kept; :func:`osmnx.simplify_graph` then keeps nodes
only at intersections and dead ends. Street counts come from
:func:`osmnx.stats.count_streets_per_node` on the whole network, undirected edges from
:func:`osmnx.convert.to_undirected`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from percept.environment.maxspeed import speed_kmh

# osmnx's values of the oneway tag meaning one-way, and those meaning against the node order.
ONEWAY_VALUES = frozenset({"yes", "true", "1", "-1", "reverse", "T", "F"})
REVERSED_VALUES = frozenset({"-1", "reverse", "T"})
BIDIRECTIONAL = frozenset({"walk"})


@dataclass
class StreetNetwork:
    """A simplified network in EPSG:4326: nodes with their street counts, directed and undirected edges."""

    node_lon: np.ndarray
    node_lat: np.ndarray
    street_count: np.ndarray  # int, per node
    directed: np.ndarray  # LineStrings, one per directed edge
    undirected: np.ndarray  # LineStrings, one per undirected edge (reciprocal pairs merged)
    self_loop: np.ndarray  # bool, per undirected edge: does it start and end at one node
    speed: np.ndarray  # float km/h per undirected edge, NaN where it carries no maxspeed

    @classmethod
    def empty(cls) -> StreetNetwork:
        nothing = np.empty(0, dtype=object)
        return cls(np.empty(0), np.empty(0), np.empty(0, dtype=np.int64), nothing, nothing,
                   np.empty(0, dtype=bool), np.empty(0))


def is_one_way(oneway, junction, bidirectional: bool) -> bool:
    """osmnx's rule: may a street with these ``oneway`` and ``junction`` tags be travelled one way only."""
    if bidirectional:
        return False
    return (isinstance(oneway, str) and oneway in ONEWAY_VALUES) or junction == "roundabout"


def directed_graph(nodes, segments, bidirectional: bool):
    """An unsimplified ``networkx.MultiDiGraph`` (osmnx's attributes) of node-to-node segments."""
    import networkx as nx

    graph = nx.MultiDiGraph(crs="EPSG:4326")
    lon, lat = nodes.geometry.x.to_numpy(), nodes.geometry.y.to_numpy()
    graph.add_nodes_from((int(i), {"x": float(x), "y": float(y)}) for i, x, y in zip(nodes["id"], lon, lat))
    edges = []
    columns = [segments[c].tolist() for c in ("u", "v", "id", "length", "oneway", "junction", "maxspeed", "highway")]
    for u, v, way, length, oneway, junction, maxspeed, highway in zip(*columns):
        one_way = is_one_way(oneway, junction, bidirectional)
        attrs = {"osmid": int(way), "length": float(length), "oneway": one_way, "reversed": False,
                 "highway": _tag(highway), "maxspeed": _tag(maxspeed)}
        u, v = int(u), int(v)
        if one_way and oneway in REVERSED_VALUES:
            u, v = v, u
        edges.append((u, v, attrs))
        if not one_way:
            edges.append((v, u, {**attrs, "reversed": True}))
    graph.add_edges_from(edges)
    return graph


def _tag(value):
    return value if isinstance(value, str) and value else None


def build_street_network(nodes, segments, name: str) -> StreetNetwork:
    """Simplify the network ``name`` (``all``, ``walk`` or ``bike``) and gather what the measures need."""
    import osmnx as ox

    if not len(segments):
        return StreetNetwork.empty()
    graph = ox.simplify_graph(directed_graph(nodes, segments, name in BIDIRECTIONAL))
    counts = ox.stats.count_streets_per_node(graph)
    node_ids = list(graph.nodes)
    node_data = graph.nodes
    directed = [_geometry(graph, u, v, data) for u, v, data in graph.edges(data=True)]
    undirected_graph = ox.convert.to_undirected(graph)
    undirected, loops, speeds = [], [], []
    for u, v, data in undirected_graph.edges(data=True):
        undirected.append(_geometry(undirected_graph, u, v, data))
        loops.append(u == v)
        speed = speed_kmh(_maxspeed(data.get("maxspeed")))
        speeds.append(np.nan if speed is None else speed)
    return StreetNetwork(
        node_lon=np.array([node_data[n]["x"] for n in node_ids], dtype=np.float64),
        node_lat=np.array([node_data[n]["y"] for n in node_ids], dtype=np.float64),
        street_count=np.array([counts[n] for n in node_ids], dtype=np.int64),
        directed=np.array(directed, dtype=object), undirected=np.array(undirected, dtype=object),
        self_loop=np.array(loops, dtype=bool), speed=np.array(speeds, dtype=np.float64))


def _maxspeed(value):
    """Simplification lists the differing values of a merged street; drop the missing ones."""
    if isinstance(value, list):
        return [v for v in value if v is not None]
    return value


def _geometry(graph, u, v, data):
    """The edge's geometry, or the straight line between its nodes (osmnx leaves those unsimplified)."""
    from shapely import LineString

    if "geometry" in data:
        return data["geometry"]
    a, b = graph.nodes[u], graph.nodes[v]
    return LineString([(a["x"], a["y"]), (b["x"], b["y"])])
