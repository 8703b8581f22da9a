"""Points of interest around places: per category the count, density (or green share) and sub-type entropy.

Geometries are in a metric CRS. Features and buffers are matched with one spatial index query
(``intersects``) for all buffers at once; greenspace areas come from the disjoint parts of the
union of its (repaired) polygons, clipped pair by pair (a part whose bounding box lies inside
the buffer counts whole).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

from percept.environment.buffer_stats import count_per_buffer, entropy_per_buffer, ratio
from percept.environment.buffers import Buffers
from percept.environment.poi_categories import CATEGORY_NAMES

M2_PER_KM2 = 1e6
POLYGON = 3
AREAL_TYPES = (3, 6, 7)  # Polygon, MultiPolygon, GeometryCollection (geometry type ids)


@dataclass
class PoiIndex:
    """Features in a metric CRS with their categories, sub-types and spatial indexes."""

    geometries: np.ndarray
    membership: np.ndarray  # (features, categories) bool
    sub_type: np.ndarray  # int code per feature
    n_sub_types: int
    green_parts: np.ndarray  # disjoint polygons: the union of the greenspace polygons
    green_area: np.ndarray
    green_bounds: np.ndarray  # (parts, 4)
    tree: shapely.STRtree
    green_tree: shapely.STRtree


def build_poi_index(geometries: np.ndarray, membership: np.ndarray, sub_types: np.ndarray) -> PoiIndex:
    """Index projected features (``membership`` and ``sub_types`` from :mod:`poi_categories`)."""
    geometries = np.array(geometries, dtype=object)
    areal = np.isin(shapely.get_type_id(geometries), AREAL_TYPES)
    geometries[areal] = shapely.make_valid(geometries[areal])
    codes, n_labels = _codes(sub_types)
    green = membership[:, CATEGORY_NAMES.index("greenspace")] & areal
    parts = _disjoint_polygons(geometries[green])
    return PoiIndex(geometries, membership, codes, n_labels, parts, shapely.area(parts),
                    shapely.bounds(parts).reshape(-1, 4), shapely.STRtree(geometries), shapely.STRtree(parts))


def _codes(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Integer codes of the sub-type values, and how many distinct values there are (at least 1)."""
    text = np.array(["" if v is None else str(v) for v in values], dtype=str)
    labels, codes = np.unique(text, return_inverse=True)
    return codes.astype(np.int64), max(len(labels), 1)


def _polygons(geometries: np.ndarray) -> np.ndarray:
    """The Polygon parts of (multi)polygons and collections."""
    parts = shapely.get_parts(shapely.get_parts(geometries))
    return parts[shapely.get_type_id(parts) == POLYGON]


def _disjoint_polygons(polygons: np.ndarray) -> np.ndarray:
    """The union of ``polygons`` as non-overlapping Polygon parts."""
    polygons = _polygons(polygons)
    if not len(polygons):
        return np.empty(0, dtype=object)
    return _polygons(np.array([shapely.union_all(polygons)], dtype=object))


def poi_measures(index: PoiIndex, buffers: Buffers) -> dict[str, np.ndarray]:
    """``<category>_count``, ``_density_or_proportion`` and ``_shannon_entropy`` for each buffer."""
    n = len(buffers)
    pair_buffer, pair_feature = index.tree.query(buffers.polygons, predicate="intersects")
    out: dict[str, np.ndarray] = {}
    for column, name in enumerate(CATEGORY_NAMES):
        keep = index.membership[pair_feature, column]
        buffer_of, feature_of = pair_buffer[keep], pair_feature[keep]
        count = count_per_buffer(buffer_of, n).astype(np.int64)
        out[f"{name}_count"] = count
        out[f"{name}_density_or_proportion"] = ratio(count * M2_PER_KM2, buffers.area)
        out[f"{name}_shannon_entropy"] = entropy_per_buffer(buffer_of, index.sub_type[feature_of], n,
                                                             index.n_sub_types)
    out["greenspace_density_or_proportion"] = green_share(index, buffers)
    return out


def green_share(index: PoiIndex, buffers: Buffers) -> np.ndarray:
    """The share (0–1) of each buffer's area covered by greenspace polygons."""
    pair_buffer, pair_part = index.green_tree.query(buffers.polygons, predicate="intersects")
    covered = index.green_area[pair_part]
    cut = np.flatnonzero(~buffers.holds_boxes(pair_buffer, index.green_bounds[pair_part]))
    covered[cut] = shapely.area(shapely.intersection(buffers.polygons[pair_buffer[cut]],
                                                     index.green_parts[pair_part[cut]]))
    return np.minimum(ratio(count_per_buffer(pair_buffer, len(buffers), covered), buffers.area), 1.0)
