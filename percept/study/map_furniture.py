"""What a printed map carries around its cells: a north arrow placed where it covers no cell, and
beneath the map a scale bar, the key to greyed and outlined cells and the notes (CRS, attribution)."""

from __future__ import annotations

import math

import numpy as np
from pyproj import CRS, Transformer

from percept.data.crs import WGS84

#: Where the north arrow's base may go (axes fractions), in order: upper right, upper left, lower right,
#: lower left.
ARROW_CORNERS = ((0.93, 0.80), (0.07, 0.80), (0.93, 0.05), (0.07, 0.05))
ARROW_LENGTH = 0.10
#: Clearance kept between the arrow (with its N) and any cell, in axes fractions.
CLEARANCE = 0.015


def nice_length(span: float) -> float:
    """A round length (1, 2 or 5 × 10^n) near a fifth of ``span``."""
    target = max(span / 5.0, 1e-9)
    power = 10 ** math.floor(math.log10(target))
    return max(m * power for m in (1, 2, 5) if m * power <= target)


def scale_bar(ax, crs: CRS, y: float):
    """A scale bar whose top left lies at (0, ``y``) in axes fractions, beneath the map where it covers no
    cell (None for a CRS not measured in metres)."""
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    unit = crs.axis_info[0].unit_name if crs.axis_info else ""
    if unit not in ("metre", "meter"):
        return None
    x0, x1 = ax.get_xlim()
    length = nice_length(x1 - x0)
    label = f"{length / 1000:g} km" if length >= 1000 else f"{length:g} m"
    bar = AnchoredSizeBar(ax.transData, length, label, loc="upper left", bbox_to_anchor=(0.0, y),
                          bbox_transform=ax.transAxes, pad=0.0, borderpad=0.0, sep=3, frameon=False,
                          size_vertical=(ax.get_ylim()[1] - ax.get_ylim()[0]) / 250, fontproperties={"size": 8})
    bar.set_gid("scale-bar")
    ax.add_artist(bar)
    return bar


def cell_boxes(shapes: list[np.ndarray]) -> np.ndarray:
    """(cells, 4) bounding boxes (xmin, ymin, xmax, ymax) of outlines, in their coordinates."""
    if not shapes:
        return np.zeros((0, 4))
    return np.array([[s[:, 0].min(), s[:, 1].min(), s[:, 0].max(), s[:, 1].max()] for s in shapes])


def boxes_in_axes(ax, boxes: np.ndarray) -> np.ndarray:
    """Data-coordinate boxes as fractions of the axes' current limits."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    return (boxes - [x0, y0, x0, y0]) / [x1 - x0, y1 - y0, x1 - x0, y1 - y0]


def north_angle(crs: CRS, x: float, y: float) -> float:
    """Clockwise angle (radians) from grid north to true north at (x, y) in ``crs`` (grid convergence)."""
    lon, lat = Transformer.from_crs(crs, WGS84, always_xy=True).transform(x, y)
    nx, ny = Transformer.from_crs(WGS84, crs, always_xy=True).transform(lon, min(lat + 0.01, 89.99))
    return math.atan2(nx - x, ny - y)


def add_north_arrow(ax, crs: CRS, boxes: np.ndarray) -> None:
    """An arrow to true north, labelled N, in the first corner where it covers none of ``boxes`` (the
    cells' bounding boxes in data coordinates); where every corner has cells, the map grows upwards
    until the data ends below the arrow."""
    from matplotlib import patheffects

    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    angle = north_angle(crs, (x0 + x1) / 2, (y0 + y1) / 2)
    direction = np.array([math.sin(angle), math.cos(angle)])
    halo = [patheffects.withStroke(linewidth=3, foreground="white")]
    arrow = ax.annotate("", xy=(0, 0), xytext=(0, 0), xycoords="axes fraction", gid="north-arrow",
                        arrowprops={"arrowstyle": "-|>", "color": "black", "lw": 1.5, "mutation_scale": 16,
                                    "path_effects": halo})
    label = ax.text(0, 0, "N", transform=ax.transAxes, ha="center", va="center", fontsize=11,
                    fontweight="bold", gid="north-label", path_effects=halo)

    def place(base) -> np.ndarray:
        base = np.asarray(base)
        tip = base + ARROW_LENGTH * direction
        arrow.xyann, arrow.xy = tuple(base), tuple(tip)
        label.set_position(tuple(tip + 0.035 * direction))
        return footprint(ax, (arrow, label))

    for _ in range(4):
        for corner in ARROW_CORNERS:
            box = place(corner)
            if not overlaps(box, boxes_in_axes(ax, boxes)):
                return
        box = place(ARROW_CORNERS[0])
        top = float(boxes[:, 3].max())
        y0, y1 = ax.get_ylim()
        ax.set_ylim(y0, y0 + (top - y0) / max(box[1] - CLEARANCE, 0.3))  # the data now ends below the arrow


def footprint(ax, artists) -> np.ndarray:
    """(xmin, ymin, xmax, ymax) in axes fractions covered by ``artists`` as they will be drawn."""
    ax.apply_aspect()
    renderer = ax.figure.canvas.get_renderer()
    inverse = ax.transAxes.inverted()
    corners = np.vstack([inverse.transform(a.get_window_extent(renderer).get_points()) for a in artists])
    return np.concatenate([corners.min(axis=0), corners.max(axis=0)])


def overlaps(box: np.ndarray, boxes: np.ndarray, clearance: float = CLEARANCE) -> bool:
    """Whether ``box`` widened by ``clearance`` meets any of ``boxes`` (all xmin, ymin, xmax, ymax)."""
    if len(boxes) == 0:
        return False
    low, high = box[:2] - clearance, box[2:] + clearance
    return bool(np.any((boxes[:, 0] < high[0]) & (boxes[:, 2] > low[0]) & (boxes[:, 1] < high[1])
                       & (boxes[:, 3] > low[1])))


def add_notes(ax, crs: CRS, key_handles: list, lines: list[tuple[str, str]]) -> None:
    """Beneath the map, one under the other: the scale bar, the key to the cells' looks (a legend, gid
    ``cell-key``) and each ``(gid, text)`` line."""
    renderer = ax.figure.canvas.get_renderer()
    ax.apply_aspect()
    inverse = ax.transAxes.inverted()
    bottom = lambda artist: inverse.transform(artist.get_window_extent(renderer))[0][1]
    y = -0.02
    bar = scale_bar(ax, crs, y)
    if bar is not None:
        y = bottom(bar) - 0.015
    if key_handles:
        key = ax.legend(handles=key_handles, loc="upper left", bbox_to_anchor=(0.0, y), bbox_transform=ax.transAxes,
                        ncol=len(key_handles), frameon=False, fontsize=8, borderaxespad=0.0, borderpad=0.0,
                        handlelength=1.8, handleheight=1.2, columnspacing=1.5)
        key.set_gid("cell-key")
        y = bottom(key) - 0.012
    for gid, text in lines:
        note = ax.text(0.0, y, text, transform=ax.transAxes, fontsize=7, va="top", color="#444444", gid=gid)
        y = bottom(note) - 0.006
