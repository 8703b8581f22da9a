"""Join image vectors with the text vectors of their environmental prompts: append, average or slerp."""

from __future__ import annotations

import numpy as np

from percept.errors import PerceptError
from percept.model.knn import l2_normalise

COMBINE_METHODS = ("append", "average", "slerp")


def combine(image_vectors: np.ndarray, text_vectors: np.ndarray, method: str) -> np.ndarray:
    """Join each image vector with its text vector (same row), both L2-normalised first (float64)."""
    if method not in COMBINE_METHODS:
        raise PerceptError(f"unknown environmental method {method!r}: use one of {', '.join(COMBINE_METHODS)}")
    images, texts = _unit_rows(image_vectors), _unit_rows(text_vectors)
    if images.shape[0] != texts.shape[0]:
        raise PerceptError(f"{images.shape[0]} image vectors but {texts.shape[0]} text vectors: "
                           "every image needs exactly one prompt vector")
    if method == "append":
        return np.concatenate([images, texts], axis=1)
    if images.shape[1] != texts.shape[1]:
        raise PerceptError(f"image vectors have {images.shape[1]} dimensions but text vectors "
                           f"{texts.shape[1]}: '{method}' needs the same encoder for both (or use append)")
    if method == "average":
        return (images + texts) / 2
    return slerp_midpoint(images, texts)


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows as float64, scaled to length 1 (all-zero rows stay zero)."""
    rows = np.asarray(vectors)
    if rows.ndim != 2:
        raise PerceptError(f"expected rows of vectors, got an array of shape {rows.shape}")
    return l2_normalise(rows)


def slerp_midpoint(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spherical interpolation at t = 0.5 of unit rows: (a+b)/|a+b|.

    Identical rows give the row itself. For antipodal rows every great circle
    through them qualifies; we take the unit vector orthogonal to ``a`` nearest the
    axis on which ``a`` is smallest, so the result is still a unit vector.
    """
    total = a + b
    norms = np.linalg.norm(total, axis=1)
    opposite = norms <= 1e-12
    if opposite.any():
        total[opposite] = _orthogonal_unit(a[opposite])
        norms[opposite] = 1.0
    return total / norms[:, None]


def _orthogonal_unit(a: np.ndarray) -> np.ndarray:
    """For each unit row, a unit vector orthogonal to it."""
    axis = np.argmin(np.abs(a), axis=1)
    rows = np.arange(len(a))
    ortho = -a * a[rows, axis][:, None]
    ortho[rows, axis] += 1.0
    return ortho / np.linalg.norm(ortho, axis=1, keepdims=True)
