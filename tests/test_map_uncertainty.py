"""Maps that show how far they can be trusted: ``percept map --value score|sd|width|out_of_domain`` on
every file ``percept rate`` writes, greyed out-of-domain cells, outlined sparse cells, per-cell GeoJSON
statistics, a north arrow that covers no cell and the basemap's attribution."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from matplotlib.path import Path as Outline
from pyproj import Transformer
from test_maps import run_cli, svg_texts
from test_rating import unit, write_embeddings

from percept.categories import CATEGORIES
from percept.city.rating import rate
from percept.data.crs import WGS84, utm_crs
from percept.data.locations import read_locations
from percept.data.rated_points import GEO_METADATA, read_rated
from percept.model.io import ModelSettings, load_model, save_model
from percept.study.basemap import OSM_ATTRIBUTION, attribution
from percept.study.map_values import PointValues, rated_places
from percept.study.maps import MapOptions, build_layer, render, round_up, save_figure
from percept.study.places import Places

SVG = "{http://www.w3.org/2000/svg}"
FORMATS = ("csv", "parquet", "geoparquet", "geojson")


def rated_table(n: int = 500, seed: int = 2) -> pd.DataFrame:
    """A rated city as 'percept rate' writes it, intervals and dissimilarity included; images north of
    52.368 mostly lie outside the survey's domain."""
    rng = np.random.default_rng(seed)
    lon, lat = rng.uniform(4.880, 4.900, n), rng.uniform(52.360, 52.372, n)
    table = pd.DataFrame({"image": [f"img_{i}.jpg" for i in range(n)]})
    for category in CATEGORIES:
        table[category] = rng.uniform(1, 5, n)
    for category in CATEGORIES:
        table[f"{category}_sd"] = rng.uniform(0.1, 1.4, n)
    for category in CATEGORIES:
        half = rng.uniform(0.3, 1.5, n)
        table[f"{category}_lo"] = np.clip(table[category] - half, 1, 5)
        table[f"{category}_hi"] = np.clip(table[category] + half, 1, 5)
    table.loc[rng.choice(n, 20, replace=False), "walkability_lo"] = np.nan  # intervals unknown for some images
    table["best_similarity"] = rng.uniform(0.6, 1.0, n)
    table["dissimilarity"] = rng.uniform(0.0, 2.0, n)
    table["out_of_domain"] = (lat > 52.368) & (rng.uniform(size=n) < 0.85) | (rng.uniform(size=n) < 0.05)
    table["in_survey"] = rng.uniform(size=n) < 0.1
    table["lon"], table["lat"] = lon, lat
    return table


def write_rated(table: pd.DataFrame, path: Path) -> Path:
    """``table`` in the format of ``path``'s suffix, laid out as 'percept rate' writes it; this GeoParquet
    keeps only its WKB geometry (no lon/lat columns), as other GeoParquet writers do."""
    kind = path.suffix[1:]
    if kind == "csv":
        table.to_csv(path, index=False)
    elif kind == "parquet":
        table.to_parquet(path, index=False)
    elif kind == "geoparquet":
        wkb = [b"\x01\x01\x00\x00\x00" + np.array([x, y], "<f8").tobytes() for x, y in zip(table["lon"], table["lat"])]
        arrow = pa.Table.from_pandas(table.drop(columns=["lon", "lat"]), preserve_index=False)
        arrow = arrow.append_column("geometry", pa.array(wkb, type=pa.binary()))
        pq.write_table(arrow.replace_schema_metadata({**arrow.schema.metadata,
                                                     b"geo": json.dumps(GEO_METADATA).encode()}), path)
    else:
        features = [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [row.pop("lon"), row.pop("lat")]},
                     "properties": {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}}
                    for row in table.to_dict("records")]
        path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def svg_group(path: Path, gid: str):
    root = ET.parse(path).getroot()
    return next((e for e in root.iter() if e.get("id") == gid), None)


def texts_in(path: Path, gid: str) -> list[str]:
    """The texts of the SVG group ``gid`` (none when the map has no such group)."""
    group = svg_group(path, gid)
    return [] if group is None else [t.text for t in group.iter(f"{SVG}text")]


def shapes_in(path: Path, gid: str) -> int:
    group = svg_group(path, gid)
    return 0 if group is None else len(group.findall(f"{SVG}path"))


def members(features: list[dict], lon: np.ndarray, lat: np.ndarray) -> list[np.ndarray]:
    """For each GeoJSON hexagon, the indices of the points inside it (point in polygon, in metres)."""
    to_metres = Transformer.from_crs(WGS84, utm_crs(float(np.mean(lon)), float(np.mean(lat))), always_xy=True)
    xy = np.column_stack(to_metres.transform(lon, lat))
    found = []
    for feature in features:
        ring = np.array(feature["geometry"]["coordinates"][0])
        outline = Outline(np.column_stack(to_metres.transform(ring[:, 0], ring[:, 1])))
        found.append(np.flatnonzero(outline.contains_points(xy)))
    return found


def assert_same_cells(mine: dict, theirs: dict) -> None:
    """Two map GeoJSONs hold the same cells with the same numbers (to rounding)."""
    assert mine["value"] == theirs["value"] and len(mine["features"]) == len(theirs["features"]) > 0
    for one, other in zip(mine["features"], theirs["features"]):
        assert one["geometry"] == other["geometry"] and one["properties"].keys() == other["properties"].keys()
        for key, number in one["properties"].items():
            if isinstance(number, float):
                assert other["properties"][key] == pytest.approx(number, rel=1e-12, abs=1e-12), key
            else:
                assert other["properties"][key] == number, key


def map_geojson(rated: Path, out: Path, *flags: str) -> dict:
    assert run_cli("map", "--rated", str(rated), "--category", "walkability", "--out", str(out), "-q", *flags) == 0
    return json.loads(out.read_text())


def test_read_rated_reads_every_format_with_intervals_and_dissimilarity(tmp_path):
    table = rated_table(60)
    table.loc[3, ["lon", "lat"]] = np.nan  # an image without a location
    table = table.drop(columns=["safety_lo"])  # a column missing: NaN for that category only
    located = table.drop(index=3)
    for kind in FORMATS:
        rated = read_rated(write_rated(table, tmp_path / f"rated.{kind}"))
        assert rated.names.tolist() == located["image"].tolist(), kind
        np.testing.assert_allclose(np.column_stack([rated.lon, rated.lat]), located[["lon", "lat"]])
        np.testing.assert_allclose(rated.scores, located[list(CATEGORIES)])
        np.testing.assert_allclose(rated.sd, located[[f"{c}_sd" for c in CATEGORIES]])
        np.testing.assert_allclose(rated.hi, located[[f"{c}_hi" for c in CATEGORIES]])
        np.testing.assert_allclose(rated.lo[:, :-1], located[[f"{c}_lo" for c in CATEGORIES[:-1]]])
        assert np.isnan(rated.lo[:, -1]).all()
        assert np.isnan(rated.lo[:, 0]).sum() == located["walkability_lo"].isna().sum()
        np.testing.assert_allclose(rated.dissimilarity, located["dissimilarity"])
        assert rated.out_of_domain.tolist() == located["out_of_domain"].tolist()
        assert rated.in_survey.tolist() == located["in_survey"].tolist()
    older = table.drop(columns=[c for c in table.columns if c.endswith(("_lo", "_hi")) or c == "dissimilarity"])
    rated = read_rated(write_rated(older, tmp_path / "older.csv"))
    assert rated.lo is None and rated.hi is None and rated.dissimilarity is None and rated.sd is not None


@pytest.fixture
def rate_outputs(tmp_path):
    """One model and one city rated by 'percept rate' into every format it writes."""
    rng = np.random.default_rng(0)
    vectors = unit(rng, 80)
    save_model(tmp_path / "model.npz", {c: vectors for c in CATEGORIES}, {c: rng.uniform(1, 5, 80) for c in CATEGORIES},
               ModelSettings(clip_model="percept:tiny", k=7))
    names = [f"img_{i}.jpg" for i in range(90)]
    folder = write_embeddings(tmp_path / "emb", names, unit(rng, 90).astype(np.float16), 40)
    lon, lat = rng.uniform(4.88, 4.90, 90), rng.uniform(52.36, 52.37, 90)
    (tmp_path / "locations.csv").write_text("image,lon,lat\n" + "".join(
        f"{n},{a},{b}\n" for n, a, b in zip(names, lon, lat)))
    locations = read_locations(tmp_path / "locations.csv")
    model = load_model(tmp_path / "model.npz")
    return [rate(model, folder, tmp_path / f"rated.{kind}", locations=locations, chunk_size=32, quiet=True).out
            for kind in FORMATS]


def test_percept_map_reads_every_format_percept_rate_writes_with_equal_results(tmp_path, rate_outputs):
    for value in ("score", "sd", "out_of_domain"):
        maps = [map_geojson(path, tmp_path / f"{path.suffix[1:]}-{value}.geojson", "--value", value, "--hex", "200")
                for path in rate_outputs]
        assert sum(f["properties"]["count"] for f in maps[0]["features"]) == 90
        for other in maps[1:]:
            assert_same_cells(maps[0], other)


def test_the_interval_width_reads_alike_from_every_format(tmp_path):
    table = rated_table(300)
    maps = [map_geojson(write_rated(table, tmp_path / f"rated.{kind}"), tmp_path / f"{kind}.geojson",
                        "--value", "width", "--hex", "250") for kind in FORMATS]
    assert all(f["properties"]["mean_width"] is not None for f in maps[0]["features"])
    for other in maps[1:]:
        assert_same_cells(maps[0], other)


def test_the_map_geojson_holds_each_cells_numbers(tmp_path):
    table = rated_table(500)
    rated = write_rated(table, tmp_path / "rated.csv")
    lon, lat = table["lon"].to_numpy(), table["lat"].to_numpy()
    width = (table["walkability_hi"] - table["walkability_lo"]).to_numpy()
    ood = table["out_of_domain"].to_numpy()
    for value, per_point in (("score", table["walkability"].to_numpy()), ("sd", table["walkability_sd"].to_numpy()),
                             ("width", width), ("out_of_domain", ood.astype(float))):
        data = map_geojson(rated, tmp_path / f"{value}.geojson", "--value", value, "--hex", "150")
        assert data["value"] == {"score": "walkability", "sd": "walkability_sd", "width": "walkability_width",
                                 "out_of_domain": "out_of_domain"}[value]
        known = np.isfinite(per_point)
        inside = members(data["features"], lon, lat)
        assert sum(len(m[known[m]]) for m in inside) == known.sum()  # every point with a value is in one cell
        for feature, points in zip(data["features"], inside):
            points = points[known[points]]
            cell = feature["properties"]
            assert cell["count"] == len(points)
            assert cell["mean"] == pytest.approx(per_point[points].mean())
            assert cell["spread"] == pytest.approx(np.std(per_point[points]), abs=1e-12)
            widths = width[points][np.isfinite(width[points])]
            assert cell["mean_width"] == (pytest.approx(widths.mean()) if len(widths) else None)
            assert cell["out_of_domain_share"] == pytest.approx(ood[points].mean())
            assert cell["outside_domain"] == (value != "out_of_domain" and ood[points].mean() > 0.5)


MAP_TEXT = {
    "score": ("Walkability", "mean walkability score (1–5 scale)"),
    "sd": ("Walkability: spread of neighbours' scores", "mean sd of the neighbours' walkability scores (score points)"),
    "width": ("Walkability: width of the 90 % interval", "mean width of the 90 % prediction interval (score points)"),
    "out_of_domain": ("Share outside the survey's domain", "images outside the survey's domain (% per cell)"),
}


def test_each_value_has_its_own_title_legend_colours_and_range(tmp_path):
    rated = write_rated(rated_table(500), tmp_path / "rated.csv")
    for value, (title, legend) in MAP_TEXT.items():
        svg = tmp_path / f"{value}.svg"
        data = map_geojson(rated, tmp_path / f"{value}.geojson", "--value", value, "--hex", "150")
        assert run_cli("map", "--rated", str(rated), "--category", "walkability", "--value", value, "--hex", "150",
                       "--out", str(svg), "-q") == 0
        assert svg_texts(svg, "title") == [title]
        texts = svg_texts(svg, "legend")
        assert texts[-1] == legend
        ticks = [float(t) for t in texts[:-1]]
        coloured = [f["properties"]["mean"] for f in data["features"] if not f["properties"]["outside_domain"]]
        if value == "score":
            assert ticks == [1, 2, 3, 4, 5]
        elif value == "out_of_domain":
            assert ticks == [0, 20, 40, 60, 80, 100]
        else:  # spreads and widths: from 0 to a round number above the largest, in score points
            assert ticks[0] == 0 and ticks[-1] <= round_up(max(coloured)) < max(coloured) * 1.5
    legacy = tmp_path / "legacy.svg"
    assert run_cli("map", "--rated", str(rated), "--category", "walkability", "--value", "walkability_sd",
                   "--out", str(legacy), "-q") == 0
    assert svg_texts(legacy, "title") == [MAP_TEXT["sd"][0]]


def test_colour_ranges_follow_the_value(tmp_path):
    table = rated_table(400)
    rated = read_rated(write_rated(table, tmp_path / "rated.csv"))
    colour_maps = set()
    for value, expected in (("score", (1, 5)), ("out_of_domain", (0, 100)), ("sd", None), ("width", None)):
        options = MapOptions("walkability", value=value, hex_size=150.0)
        places, points = rated_places(rated.lon, rated.lat, PointValues.of_rated(rated, "walkability", "t"), value, "t")
        layer = build_layer(places, options, points)
        fig = render(layer, options)
        cells = next(c for c in fig.axes[0].collections if c.get_gid() == "cells")
        drawn = layer.values[~layer.outside] * (100 if value == "out_of_domain" else 1)
        np.testing.assert_allclose(cells.get_array(), drawn)
        low, high = expected or (0, round_up(drawn.max()))
        assert (cells.norm.vmin, cells.norm.vmax) == pytest.approx((low, high))
        colour_maps.add(cells.cmap.name)
    assert len(colour_maps) == 4


def test_cells_mostly_outside_the_domain_are_greyed_and_named_in_the_legend(tmp_path):
    table = rated_table(500)
    rated = write_rated(table, tmp_path / "rated.csv")
    inside = members(map_geojson(rated, tmp_path / "all.geojson", "--hex", "150")["features"],
                     table["lon"].to_numpy(), table["lat"].to_numpy())
    shares = np.array([table["out_of_domain"].to_numpy()[m].mean() for m in inside])
    for max_ood in (0.5, 0.2, 1.0):
        svg = tmp_path / f"grey-{max_ood}.svg"
        assert run_cli("map", "--rated", str(rated), "--category", "walkability", "--hex", "150", "--max-ood",
                       str(max_ood), "--out", str(svg), "-q") == 0
        greyed = int((shares > max_ood).sum())
        assert shapes_in(svg, "outside-cells") == greyed and shapes_in(svg, "cells") == len(shares) - greyed
        assert svg_texts(svg, "cell-key") == [f"outside the survey's domain (over {max_ood * 100:g} % of images)"]
        if greyed:
            assert "url(#" in svg_group(svg, "outside-cells").find(f"{SVG}path").get("style")  # hatched
    assert 0 < (shares > 0.5).sum() < (shares > 0.2).sum()
    share_map = tmp_path / "share.svg"
    assert run_cli("map", "--rated", str(rated), "--category", "walkability", "--value", "out_of_domain", "--hex",
                   "150", "--out", str(share_map), "-q") == 0
    assert shapes_in(share_map, "outside-cells") == 0 and shapes_in(share_map, "cells") == len(shares)
    assert texts_in(share_map, "cell-key") == []


def test_cells_with_too_few_images_are_outlined_unlike_empty_ones(tmp_path):
    table = rated_table(300)
    rated = write_rated(table, tmp_path / "rated.csv")
    every = map_geojson(rated, tmp_path / "all.geojson", "--hex", "120")["features"]
    counts = np.array([f["properties"]["count"] for f in every])
    svg, geojson = tmp_path / "sparse.svg", tmp_path / "sparse.geojson"
    assert run_cli("map", "--rated", str(rated), "--category", "walkability", "--hex", "120", "--min-count", "4",
                   "--out", str(svg), str(geojson), "-q") == 0
    sparse = int((counts < 4).sum())
    assert 0 < sparse < len(counts)
    assert shapes_in(svg, "sparse-cells") == sparse
    assert shapes_in(svg, "cells") + shapes_in(svg, "outside-cells") == len(counts) - sparse  # empty: not drawn
    style = svg_group(svg, "sparse-cells").find(f"{SVG}path").get("style")
    assert "fill: none" in style and "stroke-dasharray" in style and "stroke:" in style
    assert "fill: none" not in svg_group(svg, "cells").find(f"{SVG}path").get("style")
    assert "fewer than 4 images (value not shown)" in svg_texts(svg, "cell-key")
    kept = json.loads(geojson.read_text())["features"]
    assert len(kept) == len(counts) - sparse and min(f["properties"]["count"] for f in kept) >= 4


def test_a_value_needs_its_columns(tmp_path, capsys):
    table = rated_table(50)
    older = write_rated(table.drop(columns=[c for c in table.columns if c.endswith(("_lo", "_hi"))]),
                        tmp_path / "older.csv")
    plain = tmp_path / "plain.csv"
    table[["lon", "lat", "walkability"]].to_csv(plain, index=False)
    without_flags = write_rated(table.drop(columns=["out_of_domain"]), tmp_path / "flags.csv")
    only_walkability = write_rated(table[["image", "walkability", "lon", "lat"]], tmp_path / "one.csv")
    out = ["--out", str(tmp_path / "x.png")]
    cases = [
        (["--rated", str(older), "--value", "width"], "no walkability_lo and walkability_hi columns"),
        (["--rated", str(plain), "--value", "sd"], "needs a file written by 'percept rate'"),
        (["--rated", str(without_flags), "--value", "out_of_domain"], "no out_of_domain column"),
        (["--rated", str(only_walkability), "--value", "sd"], "no walkability_sd column"),
        (["--rated", str(older), "--max-ood", "1.5"], "--max-ood takes a share from 0 to 1"),
        (["--rated", str(older), "--interval", "90"], "--interval takes"),
    ]
    for flags, message in cases:
        assert run_cli("map", "--category", "walkability", *flags, *out) == 2, flags
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and error[0].startswith("error: ") and message in error[0], error
    assert run_cli("map", "--rated", str(only_walkability), "--category", "safety", *out) == 2
    assert "has no safety scores" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
    assert run_cli("map", "--rated", str(plain), "--category", "walkability", "--out", str(tmp_path / "p.geojson"),
                   "-q") == 0  # a plain scored table still maps its scores


def rendered_extents(fig) -> tuple[np.ndarray, np.ndarray]:
    """After drawing: (the north arrow's and its N's box, every cell's box), in axes fractions."""
    fig.canvas.draw()
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    to_axes = ax.transAxes.inverted()
    arrow = [a for a in ax.get_children() if a.get_gid() in ("north-arrow", "north-label")]
    assert len(arrow) == 2
    corners = np.vstack([to_axes.transform(a.get_window_extent(renderer).get_points()) for a in arrow])
    cells = []
    for collection in ax.collections:
        if collection.get_gid() in ("cells", "outside-cells", "sparse-cells"):
            for path in collection.get_paths():
                xy = to_axes.transform(ax.transData.transform(path.vertices))
                cells.append(np.concatenate([xy.min(axis=0), xy.max(axis=0)]))
    return np.concatenate([corners.min(axis=0), corners.max(axis=0)]), np.array(cells)


def test_the_north_arrow_covers_no_cell(tmp_path):
    rng = np.random.default_rng(5)
    crs = utm_crs(4.9, 52.37)
    filled = rng.uniform(0, 3000, (3000, 2))  # cells in every corner of the map
    corner_free = filled[~((filled[:, 0] > 2000) & (filled[:, 1] > 2000))]  # upper right left empty
    tall = rng.uniform(0, 1, (1500, 2)) * [800, 4000]
    for name, xy in (("filled", filled), ("corner-free", corner_free), ("tall", tall)):
        options = MapOptions("walkability", hex_size=100.0)
        layer = build_layer(Places(crs, rng.uniform(1, 5, len(xy)), xy[:, 0] + 600000, xy[:, 1] + 5800000), options)
        fig = render(layer, options)
        arrow, boxes = rendered_extents(fig)
        assert len(boxes) == len(layer.shapes)
        clear = (boxes[:, 2] <= arrow[0]) | (boxes[:, 0] >= arrow[2]) | (boxes[:, 3] <= arrow[1]) \
            | (boxes[:, 1] >= arrow[3])
        assert clear.all(), name  # no cell's bounding box meets the arrow or its N
        assert (arrow[:2] >= 0).all() and (arrow[2:] <= 1).all(), name  # and the arrow stays on the map
        if name == "corner-free":
            xmin, ymin, xmax, ymax = layer.bounds()
            assert arrow[0] > 0.5 and arrow[1] > 0.5  # in the empty upper right, the map not enlarged
            assert fig.axes[0].get_ylim()[1] == pytest.approx(ymax + 0.04 * max(xmax - xmin, ymax - ymin), abs=1e-6)
        if name == "filled":
            assert boxes[:, 3].max() < arrow[1]  # every corner holds cells: the map grew to leave room above
        fig.savefig(tmp_path / f"{name}.png", dpi=60)


def test_maps_over_openstreetmap_data_carry_its_attribution(tmp_path):
    assert attribution("helsinki.osm.pbf") == OSM_ATTRIBUTION == "© OpenStreetMap contributors"
    assert attribution("roads.gpkg") is None and attribution(None) is None
    assert attribution("roads.gpkg", "© City of Amsterdam") == "© City of Amsterdam"
    rated = write_rated(rated_table(100), tmp_path / "rated.csv")
    svg = tmp_path / "map.svg"
    assert run_cli("map", "--rated", str(rated), "--category", "walkability", "--out", str(svg), "-q") == 0
    assert svg_group(svg, "attribution") is None  # no basemap, nothing to credit
    options = MapOptions("walkability", hex_size=150.0)
    layer = build_layer(Places(WGS84, np.full(3, 3.0), np.array([4.88, 4.89, 4.90]), np.full(3, 52.37)), options)
    fig = render(layer, options, basemap=[np.array([[630000.0, 5803000.0], [632000.0, 5804000.0]])],
                 attribution=OSM_ATTRIBUTION)
    save_figure(fig, tmp_path / "credited.svg", 100)
    assert svg_texts(tmp_path / "credited.svg", "attribution") == ["Basemap © OpenStreetMap contributors"]
