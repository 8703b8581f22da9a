"""Maps worth printing: scored places as hexagons, H3 cells or given polygons, with legend, scale and north.

:func:`build_layer` turns :class:`~percept.study.places.Places` into the cells to draw (in a
projected CRS: the input's own when it is projected, so RD New stays RD New; else the UTM
zone of the data; or one given) with, per cell, the count, mean and spread of the mapped value
(a score, its spread, its interval width or the out-of-domain share: :mod:`percept.study.map_values`),
the mean interval width and the out-of-domain share. Cells with fewer than ``min_count`` images
are hidden (drawn as a light outline, without their value); cells where more than ``max_ood`` of
the images lie outside the survey's domain are greyed and hatched. :func:`render` draws them with a
colour-blind-safe sequential palette on the value's colour range, a colour bar, a north arrow that
covers no cell and, beneath the map, a scale bar, a key to the greyed and outlined cells, the CRS
and the basemap's attribution; :func:`save_figure` writes PNG, SVG or PDF. :func:`layer_geojson` gives the cells
as GeoJSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pyproj import CRS, Transformer

from percept.data.crs import WGS84, to_lonlat, utm_crs
from percept.errors import PerceptError
from percept.study.cell_stats import cell_stats
from percept.study.hexgrid import aggregate
from percept.study.map_furniture import add_north_arrow, add_notes, cell_boxes
from percept.study.map_values import DEFAULT_LEVEL, PointValues, ValueSpec, value_spec

DEFAULT_HEX = 150.0
DEFAULT_MAX_OOD = 0.5
FIGURE_FORMATS = ("png", "svg", "pdf")
#: Palettes that are hard to read with colour-blindness (red–green diverging and rainbows).
NOT_COLOUR_BLIND_SAFE = {"RdYlGn", "RdYlGn_r", "jet", "jet_r", "rainbow", "rainbow_r", "hsv", "hsv_r", "RdGn"}
#: ``value_range`` choices besides a fixed (low, high): the value's own range, or this map's data.
OWN_RANGE, DATA_RANGE = "own", "data"
OUTSIDE_FILL, OUTSIDE_EDGE, OUTSIDE_HATCH = "#c4c4c4", "#7a7a7a", "////"
SPARSE_EDGE = "#9a9a9a"
#: How images suggested for rating are drawn over the cells: white discs with black rims show on any palette.
SUGGESTION_MARKER, SUGGESTION_AREA = "o", 22
SUGGESTION_FACE, SUGGESTION_EDGE, SUGGESTION_EDGE_WIDTH = "white", "black", 1.0


@dataclass(frozen=True)
class MapOptions:
    """How to aggregate and draw a map."""

    category: str
    value: str = "score"  # score, sd, width or out_of_domain (map_values.VALUES)
    column: str | None = None  # a column or property holding the scores (value "score" only)
    grid: str = "hex"  # "hex" or "h3"
    hex_size: float | None = None  # metres; None: DEFAULT_HEX for points, polygons drawn as given
    h3_resolution: int | None = None
    crs: CRS | None = None  # the map's projected CRS (default: the input's when projected, else UTM)
    cmap: str | None = None  # None: the value's own colour map
    value_range: tuple[float, float] | str = OWN_RANGE  # (low, high), OWN_RANGE or DATA_RANGE
    min_count: int = 1
    max_ood: float = DEFAULT_MAX_OOD  # cells with a larger out-of-domain share are greyed
    interval_level: float = DEFAULT_LEVEL  # the coverage of the rated file's intervals
    dpi: int = 300

    def __post_init__(self):
        if self.min_count < 1:
            raise PerceptError(f"--min-count must be at least 1, got {self.min_count}")
        if self.dpi < 50 or self.dpi > 2400:
            raise PerceptError(f"--dpi takes 50 to 2400, got {self.dpi}")
        if self.grid == "h3" and self.hex_size is not None:
            raise PerceptError("--hex sets the size of hexagons of --grid hex; H3 cells take theirs from "
                               "the resolution in --grid h3:RES")
        if not 0.0 <= self.max_ood <= 1.0:
            raise PerceptError(f"--max-ood takes a share from 0 to 1 (e.g. 0.5 greys cells where over half the "
                               f"images lie outside the survey's domain), got {self.max_ood:g}")
        if not 0.0 < self.interval_level < 1.0:
            raise PerceptError(f"--interval takes the intervals' coverage level between 0 and 1 (e.g. 0.9), "
                               f"got {self.interval_level:g}")

    def spec(self) -> ValueSpec:
        return value_spec(self.value, self.category, self.interval_level, self.column)


def parse_range(text: str | None) -> tuple[float, float] | str:
    """``data`` (this map's range), ``LOW,HIGH`` with LOW < HIGH, or None/``auto`` (the value's own range)."""
    if text is None or text.strip().lower() == "auto":
        return OWN_RANGE
    if text.strip().lower() == "data":
        return DATA_RANGE
    low, comma, high = text.partition(",")
    try:
        values = (float(low), float(high)) if comma else None
    except ValueError:
        values = None
    if values is None or not all(map(math.isfinite, values)) or values[0] >= values[1]:
        raise PerceptError(f"--range takes auto, data or LOW,HIGH with LOW < HIGH (e.g. 1,5), got {text!r}")
    return values


def parse_grid(text: str) -> tuple[str, int | None]:
    """``hex`` or ``h3:RES`` (RES 0–15)."""
    kind, colon, res = text.strip().partition(":")
    if kind == "hex" and not colon:
        return "hex", None
    if kind == "h3" and res.strip().isdigit():
        from percept.study.h3grid import check_resolution

        return "h3", check_resolution(int(res))
    raise PerceptError(f"--grid takes hex or h3:RES with RES from 0 to 15 (e.g. h3:9), got {text!r}")


def check_cmap(name: str | None) -> str | None:
    """A matplotlib colour map name (None: the value's own); red–green and rainbow palettes are refused."""
    import matplotlib

    if name is None:
        return None
    if name in NOT_COLOUR_BLIND_SAFE:
        raise PerceptError(f"--cmap {name} is hard to read for colour-blind readers: use viridis, cividis, "
                           "magma or another sequential palette")
    if name not in matplotlib.colormaps:
        raise PerceptError(f"--cmap {name!r} is not a matplotlib colour map (e.g. viridis, cividis, magma)")
    return name


@dataclass
class MapLayer:
    """The cells to draw, in ``crs`` (projected): outlines, mean value, image count, whether each lies
    outside the survey's domain, GeoJSON properties; and the outlines of the cells hidden for too few images."""

    crs: CRS
    shapes: list[np.ndarray]
    values: np.ndarray
    counts: np.ndarray | None
    properties: list[dict]
    geojson_crs: CRS
    note: str
    spec: ValueSpec
    outside: np.ndarray  # bool per cell: greyed, its out-of-domain share is over max_ood
    domain_known: bool = False  # whether the input says which images lie outside the survey's domain
    hidden_shapes: list[np.ndarray] = field(default_factory=list)

    @property
    def hidden(self) -> int:
        return len(self.hidden_shapes)

    def bounds(self) -> tuple[float, float, float, float]:
        stacked = np.concatenate(self.shapes + self.hidden_shapes)
        return (float(stacked[:, 0].min()), float(stacked[:, 1].min()), float(stacked[:, 0].max()),
                float(stacked[:, 1].max()))


def map_crs(places, options: MapOptions) -> CRS:
    """The projected CRS to draw in: ``options.crs``, else the input's when projected, else its UTM zone."""
    if options.crs is not None:
        if not options.crs.is_projected:
            raise PerceptError(f"--crs {options.crs.to_string()} is not a projected CRS in metres: maps and "
                               "hexagon sizes need one (e.g. EPSG:28992 or a UTM zone)")
        return options.crs
    if places.crs.is_projected:
        return places.crs
    x, y = places.centroids()
    lon, lat = to_lonlat(x, y, places.crs)
    return utm_crs(float(np.mean(lon)), float(np.mean(lat)))


def build_layer(places, options: MapOptions, points: PointValues | None = None) -> MapLayer:
    """Aggregate or take the places' shapes, in the map CRS, hiding cells with too few images.

    ``places.values`` are the mapped values; ``points`` (aligned with the places) add each cell's mean
    interval width and out-of-domain share.
    """
    spec = options.spec()
    crs = map_crs(places, options)
    if places.polygons is not None and options.hex_size is None and options.grid != "h3":
        shapes, properties, counts, note = _given_polygons(places, crs)
        values, share = np.asarray(places.values, dtype=np.float64), None
    else:
        shapes, ids, cell_of_point, note = _cells(places, options, crs)
        stats = cell_stats(cell_of_point, len(shapes), places.values, _width(points),
                           None if points is None else points.out_of_domain)
        values, counts, share = stats.mean, stats.count, stats.out_of_domain_share
        properties = [{**cell, "count": int(stats.count[i]), "mean": float(stats.mean[i]),
                       "spread": float(stats.spread[i]), "mean_width": _number(stats.mean_width, i),
                       "out_of_domain_share": _number(share, i)} for i, cell in enumerate(ids)]
    outside = np.zeros(len(values), dtype=bool)
    if share is not None and spec.value != "out_of_domain":
        outside = share > options.max_ood
    for cell, out in zip(properties, outside):
        cell["outside_domain"] = bool(out)
    kept = np.ones(len(values), dtype=bool)
    if options.min_count > 1:
        if counts is None:
            raise PerceptError("--min-count needs image counts, but these polygons carry no count property: "
                               "aggregate points (or polygons with --hex/--grid) instead")
        kept = np.asarray(counts) >= options.min_count
        if not kept.any():
            raise PerceptError(f"no cell holds at least {options.min_count} images (the most is "
                               f"{int(np.max(counts))}): lower --min-count or use larger cells")
    hidden = int((~kept).sum())
    if hidden:
        note += f"; {hidden} with fewer than {options.min_count} images outlined, their values not shown"
    if (outside & kept).any():
        note += f"; {int((outside & kept).sum())} greyed, over {options.max_ood * 100:g} % outside the survey's domain"
    geojson_crs = WGS84 if places.crs.is_geographic else crs
    pick = lambda items: [item for item, k in zip(items, kept) if k]
    return MapLayer(crs, pick(shapes), values[kept], None if counts is None else np.asarray(counts)[kept],
                    pick(properties), geojson_crs, note, spec, outside[kept], share is not None,
                    [s for s, k in zip(shapes, kept) if not k])


def _cells(places, options: MapOptions, crs: CRS) -> tuple[list[np.ndarray], list[dict], np.ndarray, str]:
    """Cells holding the places (H3 or hexagons): outlines in ``crs``, ids, each place's cell, a note."""
    cx, cy = places.centroids()
    if options.grid == "h3":
        from percept.study.h3grid import aggregate_h3

        if options.h3_resolution is None:
            raise PerceptError("an H3 map needs a resolution: give --grid h3:RES (RES from 0 to 15)")
        lon, lat = to_lonlat(cx, cy, places.crs)
        cells = aggregate_h3(lon, lat, places.values, options.h3_resolution)
        to_map = Transformer.from_crs(WGS84, crs, always_xy=True)
        shapes = [_transform(to_map, ring) for ring in cells.outlines_lonlat()]
        return (shapes, [{"h3": i} for i in cells.ids], cells.cell_of_point,
                f"{len(places.values)} places in {len(shapes)} H3 cells (resolution {options.h3_resolution})")
    size = DEFAULT_HEX if options.hex_size is None else options.hex_size
    x, y = Transformer.from_crs(places.crs, crs, always_xy=True).transform(cx, cy)
    grid = aggregate(np.asarray(x), np.asarray(y), places.values, size, crs)
    return (list(grid.corners()), [{"q": int(q), "r": int(r)} for q, r in zip(grid.q, grid.r)], grid.cell_of_point,
            f"{len(places.values)} places in {len(grid.q)} hexagons of {size:g} m")


def _given_polygons(places, crs: CRS) -> tuple[list[np.ndarray], list[dict], np.ndarray | None, str]:
    """Polygons drawn as given: outlines in ``crs``, their value (and count where known), a note."""
    to_map = Transformer.from_crs(places.crs, crs, always_xy=True)
    shapes = [_transform(to_map, ring) for ring in places.polygons]
    counts = places.counts
    properties = [{"mean": float(v), **({} if counts is None else {"count": int(counts[i])})}
                  for i, v in enumerate(places.values)]
    return shapes, properties, counts, f"{len(shapes)} polygons"


def _width(points: PointValues | None) -> np.ndarray | None:
    return None if points is None else points.width()


def _number(values: np.ndarray | None, index: int) -> float | None:
    """A GeoJSON number: None for an unknown (missing or NaN) value."""
    if values is None or not np.isfinite(values[index]):
        return None
    return float(values[index])


def _transform(transformer: Transformer, ring: np.ndarray) -> np.ndarray:
    x, y = transformer.transform(ring[:, 0], ring[:, 1])
    return np.column_stack([x, y])


def layer_geojson(layer: MapLayer, model_card: str | None = None) -> dict:
    """The drawn cells as a FeatureCollection, in ``layer.geojson_crs``; ``value`` names what ``mean`` and
    ``spread`` are of, ``model_card`` (where known) the card of the model that made the scores.

    WGS84 output follows RFC 7946 (no ``crs`` member, 7 decimals); a projected CRS is named
    in a ``crs`` member (as the survey tools' exports do), coordinates to the millimetre.
    """
    to_out = Transformer.from_crs(layer.crs, layer.geojson_crs, always_xy=True)
    decimals = 7 if layer.geojson_crs.is_geographic else 3
    features = [{"type": "Feature", "properties": props,
                 "geometry": {"type": "Polygon", "coordinates": [_transform(to_out, ring).round(decimals).tolist()]}}
                for ring, props in zip(layer.shapes, layer.properties)]
    collection: dict[str, object] = {"type": "FeatureCollection", "value": layer.spec.name}
    if model_card:
        collection["percept"] = {"model_card": model_card}
    if not layer.geojson_crs.is_geographic:
        code = layer.geojson_crs.to_epsg()
        name = f"urn:ogc:def:crs:EPSG::{code}" if code else layer.geojson_crs.to_wkt()
        collection["crs"] = {"type": "name", "properties": {"name": name}}
    collection["features"] = features
    return collection


def colour_range(layer: MapLayer, value_range: tuple[float, float] | str) -> tuple[float, float]:
    """The colour scale's (low, high), in the drawn units (per cent for shares): fixed; the value's own
    (1–5 for scores, 0–100 % for shares, 0 to a round step above the largest for spreads and widths);
    or the data's range (widened when all values are equal)."""
    if not isinstance(value_range, str):
        return value_range
    values = drawn_values(layer)
    if len(values) == 0:
        return layer.spec.fixed_range or (0.0, 1.0)
    if value_range == OWN_RANGE:
        return layer.spec.fixed_range or (0.0, round_up(float(np.max(values))))
    low, high = float(np.min(values)), float(np.max(values))
    return (low, high) if high > low else (low - 0.5, high + 0.5)


def drawn_values(layer: MapLayer) -> np.ndarray:
    """The values of the coloured cells (not the greyed ones), in per cent for shares."""
    return layer.values[~layer.outside] * (100.0 if layer.spec.percent else 1.0)


def round_up(value: float) -> float:
    """A round number (a multiple of half a power of ten) at or above ``value`` (1 for nothing above 0)."""
    if not value > 0:
        return 1.0
    step = 0.5 * 10 ** math.floor(math.log10(value))
    return round(math.ceil(value / step - 1e-9) * step, 10)


def colour_map(options: MapOptions, spec: ValueSpec):
    """The chosen colour map; the value's own leaves out the near-white end of a light sequential map."""
    import matplotlib
    from matplotlib.colors import ListedColormap

    if options.cmap is not None:
        return matplotlib.colormaps[options.cmap]
    own = matplotlib.colormaps[spec.cmap]
    if spec.value == "score":
        return own
    return ListedColormap(own(np.linspace(0.25, 1.0, 256)), name=f"{spec.cmap}-from-25")


def render(layer: MapLayer, options: MapOptions, basemap: list[np.ndarray] | None = None, title: str = "",
           attribution: str | None = None, model_card: str | None = None, suggestions: np.ndarray | None = None):
    """The map figure: cells (greyed where outside the survey's domain, outlined where hidden), colour bar
    (gid ``legend``), north arrow and, beneath the map, scale bar, key (gid ``cell-key``), CRS note,
    the model card's id (gid ``model-card``) and attribution; ``suggestions`` (WGS84 lon, lat rows), the
    images suggested for rating, are drawn on top as points (gid ``suggestions``) with their key entry."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection, PolyCollection
    from matplotlib.colors import Normalize

    spec = layer.spec
    low, high = colour_range(layer, options.value_range)
    xmin, ymin, xmax, ymax = layer.bounds()
    points = suggestion_points(layer, suggestions)
    if len(points):
        xmin, ymin = min(xmin, points[:, 0].min()), min(ymin, points[:, 1].min())
        xmax, ymax = max(xmax, points[:, 0].max()), max(ymax, points[:, 1].max())
    aspect = (ymax - ymin) / max(xmax - xmin, 1e-9)
    fig, ax = plt.subplots(figsize=(8.5, float(np.clip(7.0 * aspect + 1.5, 4.5, 11.0))))
    if basemap:
        ax.add_collection(LineCollection(basemap, colors="#9a9a9a", linewidths=0.35, zorder=1, gid="basemap"))
    shown = [s for s, out in zip(layer.shapes, layer.outside) if not out]
    values = drawn_values(layer)
    cells = PolyCollection(shown, array=values, cmap=colour_map(options, spec), norm=Normalize(low, high),
                           edgecolors="white", linewidths=0.2, alpha=0.85 if basemap else 1.0, zorder=2)
    cells.set_gid("cells")
    ax.add_collection(cells)
    outside = [s for s, out in zip(layer.shapes, layer.outside) if out]
    if outside:
        ax.add_collection(PolyCollection(outside, facecolors=OUTSIDE_FILL, edgecolors=OUTSIDE_EDGE, hatch=OUTSIDE_HATCH,
                                         linewidths=0.3, zorder=2, gid="outside-cells"))
    if layer.hidden_shapes:
        ax.add_collection(PolyCollection(layer.hidden_shapes, facecolors="none", edgecolors=SPARSE_EDGE,
                                         linewidths=0.6, linestyles=(0, (2.0, 1.5)), zorder=2, gid="sparse-cells"))
    pad = 0.04 * max(xmax - xmin, ymax - ymin, 1.0)
    ax.set_xlim(xmin - pad, xmax + pad)
    ax.set_ylim(ymin - pad, ymax + pad)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    extend = {(False, False): "neither", (True, False): "min", (False, True): "max", (True, True): "both"}[
        (bool(len(values) and np.min(values) < low), bool(len(values) and np.max(values) > high))]
    bar = fig.colorbar(cells, ax=ax, shrink=0.9, extend=extend, pad=0.02)
    bar.set_label(spec.legend)
    if (low, high) == spec.fixed_range:
        bar.set_ticks([0, 20, 40, 60, 80, 100] if spec.percent else [1, 2, 3, 4, 5])
    bar.ax.set_gid("legend")
    ax.set_title(title or spec.title, fontsize=13, loc="left", gid="title")
    fig.tight_layout()
    if len(points):
        ax.scatter(points[:, 0], points[:, 1], gid="suggestions", zorder=4, marker=SUGGESTION_MARKER, s=SUGGESTION_AREA,
                   facecolors=SUGGESTION_FACE, edgecolors=SUGGESTION_EDGE, linewidths=SUGGESTION_EDGE_WIDTH)
    add_north_arrow(ax, layer.crs, np.vstack([cell_boxes(layer.shapes + layer.hidden_shapes),
                                              np.hstack([points, points])]))
    lines = [("crs-note", f"{layer.note}. {_crs_label(layer.crs)}")]
    if model_card:
        lines.append(("model-card", f"Scores from the model with card {model_card} ('percept card MODEL.npz')"))
    if attribution:
        lines.append(("attribution", f"Basemap {attribution}"))
    add_notes(ax, layer.crs, cell_key(layer, options) + suggestion_key(len(points)), lines)
    return fig


def cell_key(layer: MapLayer, options: MapOptions) -> list:
    """Legend entries for the cells drawn without a colour: greyed (outside the domain) and outlined (hidden)."""
    from matplotlib.patches import Patch

    handles = []
    if layer.domain_known and layer.spec.value != "out_of_domain":
        handles.append(Patch(facecolor=OUTSIDE_FILL, edgecolor=OUTSIDE_EDGE, hatch=OUTSIDE_HATCH, linewidth=0.3,
                             label=f"outside the survey's domain (over {options.max_ood * 100:g} % of images)"))
    if layer.hidden_shapes:
        handles.append(Patch(facecolor="none", edgecolor=SPARSE_EDGE, linewidth=0.6, linestyle=(0, (2.0, 1.5)),
                             label=f"fewer than {options.min_count} images (value not shown)"))
    return handles


def suggestion_points(layer: MapLayer, suggestions: np.ndarray | None) -> np.ndarray:
    """(n, 2) suggested images' points in the map's CRS (none without suggestions)."""
    if suggestions is None or not len(suggestions):
        return np.zeros((0, 2))
    lonlat = np.asarray(suggestions, dtype=np.float64)
    return _transform(Transformer.from_crs(WGS84, layer.crs, always_xy=True), lonlat)


def suggestion_key(count: int) -> list:
    """The key entry of the suggested images (none when there are none)."""
    from matplotlib.lines import Line2D

    if not count:
        return []
    return [Line2D([], [], linestyle="none", markersize=6, label=f"suggested for rating ({count} images)",
                   marker=SUGGESTION_MARKER, markerfacecolor=SUGGESTION_FACE, markeredgecolor=SUGGESTION_EDGE,
                   markeredgewidth=SUGGESTION_EDGE_WIDTH)]


def _crs_label(crs: CRS) -> str:
    code = crs.to_epsg()
    return f"{crs.name} (EPSG:{code})" if code else crs.name


def save_figure(fig, path: Path, dpi: int) -> None:
    """Write ``fig`` as PNG, SVG (text kept as text) or PDF (TrueType fonts), by the path's suffix."""
    import matplotlib.pyplot as plt

    from percept.atomic import atomic_path

    kind = path.suffix.lower().lstrip(".")
    if kind not in FIGURE_FORMATS:
        raise PerceptError(f"{path}: maps are written as {', '.join(FIGURE_FORMATS)}")
    with plt.rc_context({"svg.fonttype": "none", "pdf.fonttype": 42}), atomic_path(path) as tmp:
        fig.savefig(tmp, format=kind, dpi=dpi, bbox_inches="tight", pad_inches=0.15)
