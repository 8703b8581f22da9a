"""Maps worth printing: scored places as hexagons, H3 cells or given polygons, with legend, scale and north.

:func:`build_layer` turns :class:`~percept.study.places.Places` into the cells to draw (in a
projected CRS: the input's own when it is projected, so RD New stays RD New; else the UTM
zone of the data; or one given) with their mean score and count, hiding cells with fewer
than ``min_count`` images. :func:`render` draws them with a colour-blind-safe sequential
palette on a fixed colour range (1–5 by default), a colour bar, a scale bar, a north arrow
and the CRS, optionally over basemap lines; :func:`save_figure` writes PNG, SVG or PDF.
:func:`layer_geojson` gives the cells as GeoJSON with their counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pyproj import CRS, Transformer

from percept.errors import PerceptError
from percept.study.hexgrid import WGS84, aggregate, to_lonlat, utm_crs

DEFAULT_HEX = 150.0
DEFAULT_RANGE = (1.0, 5.0)
DEFAULT_CMAP = "viridis"
FIGURE_FORMATS = ("png", "svg", "pdf")
#: Palettes that are hard to read with colour-blindness (red–green diverging and rainbows).
NOT_COLOUR_BLIND_SAFE = {"RdYlGn", "RdYlGn_r", "jet", "jet_r", "rainbow", "rainbow_r", "hsv", "hsv_r", "RdGn"}


@dataclass(frozen=True)
class MapOptions:
    """How to aggregate and draw a map."""

    category: str
    grid: str = "hex"  # "hex" or "h3"
    hex_size: float | None = None  # metres; None: DEFAULT_HEX for points, polygons drawn as given
    h3_resolution: int | None = None
    crs: CRS | None = None  # the map's projected CRS (default: the input's when projected, else UTM)
    cmap: str = DEFAULT_CMAP
    value_range: tuple[float, float] | None = DEFAULT_RANGE  # None: the data's range
    min_count: int = 1
    dpi: int = 300

    def __post_init__(self):
        if self.min_count < 1:
            raise PerceptError(f"--min-count must be at least 1, got {self.min_count}")
        if self.dpi < 50 or self.dpi > 2400:
            raise PerceptError(f"--dpi takes 50 to 2400, got {self.dpi}")
        if self.grid == "h3" and self.hex_size is not None:
            raise PerceptError("--hex sets the size of hexagons of --grid hex; H3 cells take theirs from "
                               "the resolution in --grid h3:RES")


def parse_range(text: str) -> tuple[float, float] | None:
    """``data`` (None: the data's range) or ``LOW,HIGH`` with LOW < HIGH."""
    if text.strip().lower() == "data":
        return None
    low, comma, high = text.partition(",")
    try:
        values = (float(low), float(high)) if comma else None
    except ValueError:
        values = None
    if values is None or not all(map(math.isfinite, values)) or values[0] >= values[1]:
        raise PerceptError(f"--range takes data or LOW,HIGH with LOW < HIGH (e.g. 1,5), got {text!r}")
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


def check_cmap(name: str) -> str:
    """A matplotlib colour map name; red–green and rainbow palettes are refused (not colour-blind safe)."""
    import matplotlib

    if name in NOT_COLOUR_BLIND_SAFE:
        raise PerceptError(f"--cmap {name} is hard to read for colour-blind readers: use viridis, cividis, "
                           "magma or another sequential palette")
    if name not in matplotlib.colormaps:
        raise PerceptError(f"--cmap {name!r} is not a matplotlib colour map (e.g. viridis, cividis, magma)")
    return name


@dataclass
class MapLayer:
    """The cells to draw: outlines in ``crs`` (projected), mean score, image count, GeoJSON properties."""

    crs: CRS
    shapes: list[np.ndarray]
    values: np.ndarray
    counts: np.ndarray | None
    properties: list[dict]
    geojson_crs: CRS
    note: str
    hidden: int = 0

    def bounds(self) -> tuple[float, float, float, float]:
        stacked = np.concatenate(self.shapes)
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
    lon, lat = to_lonlat(*places.centroids(), places.crs)
    return utm_crs(float(np.mean(lon)), float(np.mean(lat)))


def build_layer(places, options: MapOptions) -> MapLayer:
    """Aggregate or take the places' shapes, in the map CRS, hiding cells with too few images."""
    crs = map_crs(places, options)
    to_map = Transformer.from_crs(places.crs, crs, always_xy=True)
    cx, cy = places.centroids()
    name = options.category
    if options.grid == "h3":
        from percept.study.h3grid import aggregate_h3

        lon, lat = to_lonlat(cx, cy, places.crs)
        cells = aggregate_h3(lon, lat, places.values, options.h3_resolution)
        shapes = [_transform(Transformer.from_crs(WGS84, crs, always_xy=True), r) for r in cells.outlines_lonlat()]
        values, counts = cells.mean, cells.count
        properties = [{"h3": i, name: float(m), "count": int(c)} for i, m, c in zip(cells.ids, values, counts)]
        note = f"{len(places.values)} places in {len(values)} H3 cells (resolution {options.h3_resolution})"
    elif places.polygons is not None and options.hex_size is None:
        shapes = [_transform(to_map, ring) for ring in places.polygons]
        values, counts = places.values, places.counts
        properties = [{name: float(v), **({} if counts is None else {"count": int(c)})}
                      for v, c in zip(values, counts if counts is not None else values)]
        note = f"{len(values)} polygons"
    else:
        size = DEFAULT_HEX if options.hex_size is None else options.hex_size
        x, y = to_map.transform(cx, cy)
        grid = aggregate(np.asarray(x), np.asarray(y), places.values, size, crs)
        shapes, values, counts = list(grid.corners()), grid.mean, grid.count
        properties = [{"q": int(q), "r": int(r), name: float(m), "count": int(c)}
                      for q, r, m, c in zip(grid.q, grid.r, values, counts)]
        note = f"{len(places.values)} places in {len(values)} hexagons of {size:g} m"
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
        note += f"; {hidden} with fewer than {options.min_count} images hidden"
    geojson_crs = WGS84 if places.crs.is_geographic else crs
    return MapLayer(crs, [s for s, k in zip(shapes, kept) if k], np.asarray(values)[kept],
                    None if counts is None else np.asarray(counts)[kept], [p for p, k in zip(properties, kept) if k],
                    geojson_crs, note, hidden)


def _transform(transformer: Transformer, ring: np.ndarray) -> np.ndarray:
    x, y = transformer.transform(ring[:, 0], ring[:, 1])
    return np.column_stack([x, y])


def layer_geojson(layer: MapLayer) -> dict:
    """The drawn cells as a FeatureCollection with mean score and count, in ``layer.geojson_crs``.

    WGS84 output follows RFC 7946 (no ``crs`` member, 7 decimals); a projected CRS is named
    in a ``crs`` member (as the survey tools' exports do), coordinates to the millimetre.
    """
    to_out = Transformer.from_crs(layer.crs, layer.geojson_crs, always_xy=True)
    decimals = 7 if layer.geojson_crs.is_geographic else 3
    features = [{"type": "Feature", "properties": props,
                 "geometry": {"type": "Polygon", "coordinates": [_transform(to_out, ring).round(decimals).tolist()]}}
                for ring, props in zip(layer.shapes, layer.properties)]
    collection = {"type": "FeatureCollection", "features": features}
    if not layer.geojson_crs.is_geographic:
        code = layer.geojson_crs.to_epsg()
        name = f"urn:ogc:def:crs:EPSG::{code}" if code else layer.geojson_crs.to_wkt()
        collection = {"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": name}},
                      "features": features}
    return collection


def colour_range(layer: MapLayer, value_range: tuple[float, float] | None) -> tuple[float, float]:
    """The colour scale's (low, high): fixed, or the data's range (widened when all values are equal)."""
    if value_range is not None:
        return value_range
    low, high = float(np.min(layer.values)), float(np.max(layer.values))
    return (low, high) if high > low else (low - 0.5, high + 0.5)


def render(layer: MapLayer, options: MapOptions, basemap: list[np.ndarray] | None = None, title: str = ""):
    """The map figure: cells, colour bar (gid ``legend``), scale bar, north arrow, CRS note."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection, PolyCollection
    from matplotlib.colors import Normalize

    low, high = colour_range(layer, options.value_range)
    xmin, ymin, xmax, ymax = layer.bounds()
    aspect = (ymax - ymin) / max(xmax - xmin, 1e-9)
    fig, ax = plt.subplots(figsize=(8.5, float(np.clip(7.0 * aspect + 1.0, 4.0, 11.0))))
    if basemap:
        ax.add_collection(LineCollection(basemap, colors="#9a9a9a", linewidths=0.35, zorder=1, gid="basemap"))
    cells = PolyCollection(layer.shapes, array=layer.values, cmap=options.cmap, norm=Normalize(low, high),
                           edgecolors="white", linewidths=0.2, alpha=0.85 if basemap else 1.0, zorder=2)
    cells.set_gid("cells")
    ax.add_collection(cells)
    pad = 0.04 * max(xmax - xmin, ymax - ymin, 1.0)
    ax.set_xlim(xmin - pad, xmax + pad)
    ax.set_ylim(ymin - pad, ymax + pad)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    extend = {(False, False): "neither", (True, False): "min", (False, True): "max", (True, True): "both"}[
        (bool(np.min(layer.values) < low), bool(np.max(layer.values) > high))]
    bar = fig.colorbar(cells, ax=ax, shrink=0.9, extend=extend, pad=0.02)
    bar.set_label(f"mean {options.category} score" + (" (1–5 scale)" if (low, high) == DEFAULT_RANGE else ""))
    if (low, high) == DEFAULT_RANGE:
        bar.set_ticks([1, 2, 3, 4, 5])
    bar.ax.set_gid("legend")
    add_scale_bar(ax, layer.crs)
    add_north_arrow(ax, layer.crs)
    ax.set_title(title or f"{options.category.capitalize()}", fontsize=13, loc="left")
    ax.text(0.0, -0.02, f"{layer.note}. {_crs_label(layer.crs)}", transform=ax.transAxes, fontsize=7,
            va="top", color="#444444", gid="crs-note")
    fig.tight_layout()
    return fig


def _crs_label(crs: CRS) -> str:
    code = crs.to_epsg()
    return f"{crs.name} (EPSG:{code})" if code else crs.name


def nice_length(span: float) -> float:
    """A round length (1, 2 or 5 × 10^n) near a fifth of ``span``."""
    target = max(span / 5.0, 1e-9)
    power = 10 ** math.floor(math.log10(target))
    return max(m * power for m in (1, 2, 5) if m * power <= target)


def add_scale_bar(ax, crs: CRS) -> None:
    """A scale bar in the lower left (only for CRSs measured in metres)."""
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    unit = crs.axis_info[0].unit_name if crs.axis_info else ""
    if unit not in ("metre", "meter"):
        return
    x0, x1 = ax.get_xlim()
    length = nice_length(x1 - x0)
    label = f"{length / 1000:g} km" if length >= 1000 else f"{length:g} m"
    bar = AnchoredSizeBar(ax.transData, length, label, loc="lower left", pad=0.6, borderpad=0.8, sep=4,
                          frameon=True, size_vertical=(ax.get_ylim()[1] - ax.get_ylim()[0]) / 250)
    bar.patch.set_alpha(0.8)
    bar.set_gid("scale-bar")
    ax.add_artist(bar)


def add_north_arrow(ax, crs: CRS) -> None:
    """An arrow to true north (grid convergence taken into account) in the upper right, labelled N."""
    from matplotlib import patheffects

    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    lon, lat = Transformer.from_crs(crs, WGS84, always_xy=True).transform(cx, cy)
    nx, ny = Transformer.from_crs(WGS84, crs, always_xy=True).transform(lon, min(lat + 0.01, 89.99))
    angle = math.atan2(nx - cx, ny - cy)  # clockwise from grid north
    base = np.array([0.93, 0.80])
    tip = base + 0.10 * np.array([math.sin(angle), math.cos(angle)])
    halo = [patheffects.withStroke(linewidth=3, foreground="white")]
    ax.annotate("", xy=tuple(tip), xytext=tuple(base), xycoords="axes fraction", gid="north-arrow",
                arrowprops={"arrowstyle": "-|>", "color": "black", "lw": 1.5, "mutation_scale": 16,
                            "path_effects": halo})
    ax.text(*(tip + 0.03 * np.array([math.sin(angle), math.cos(angle)])), "N", transform=ax.transAxes,
            ha="center", va="center", fontsize=11, fontweight="bold", gid="north-label", path_effects=halo)


def save_figure(fig, path: Path, dpi: int) -> None:
    """Write ``fig`` as PNG, SVG (text kept as text) or PDF (TrueType fonts), by the path's suffix."""
    import matplotlib.pyplot as plt

    from percept.atomic import atomic_path

    kind = path.suffix.lower().lstrip(".")
    if kind not in FIGURE_FORMATS:
        raise PerceptError(f"{path}: maps are written as {', '.join(FIGURE_FORMATS)}")
    with plt.rc_context({"svg.fonttype": "none", "pdf.fonttype": 42}), atomic_path(path) as tmp:
        fig.savefig(tmp, format=kind, dpi=dpi, bbox_inches="tight", pad_inches=0.15)
