"""How the K neighbour similarities become weights (the original's normalisation methods)."""

from __future__ import annotations

import numpy as np

from percept.errors import PerceptError


def softmax(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """exp(values) / sum(exp(values)) along ``axis``, shifted by the maximum for stability."""
    shifted = np.exp(values - np.max(values, axis=axis, keepdims=True))
    return shifted / np.sum(shifted, axis=axis, keepdims=True)


def _softmax_pow10(sims: np.ndarray) -> np.ndarray:
    return softmax(10.0 ** sims, axis=-1)


def _softmax(sims: np.ndarray) -> np.ndarray:
    return softmax(sims, axis=-1)


def _divbysum(sims: np.ndarray) -> np.ndarray:
    return sims / sims.sum(axis=-1, keepdims=True)


def _softmax_pow8(sims: np.ndarray) -> np.ndarray:
    return softmax(sims ** 8, axis=-1)


def _fixed(sims: np.ndarray) -> np.ndarray:
    k = sims.shape[-1]
    ranks = np.arange(k - 1, -1, -1, dtype=np.float64)
    return np.broadcast_to(softmax(ranks), sims.shape)


WEIGHTINGS = {
    "softmax10**": _softmax_pow10,
    "softmax": _softmax,
    "divbysum": _divbysum,
    "softmax**8": _softmax_pow8,
    "fixed": _fixed,
}
DEFAULT_WEIGHTING = "softmax10**"


def check_weighting(name: str) -> str:
    """Return ``name`` if it is a known weighting, else raise a PerceptError listing them."""
    if name not in WEIGHTINGS:
        known = ", ".join(WEIGHTINGS)
        raise PerceptError(f"unknown normalization method {name!r}: use one of {known}")
    return name


def neighbour_weights(sims: np.ndarray, method: str = DEFAULT_WEIGHTING) -> np.ndarray:
    """Weights for neighbours whose similarities ``sims`` (..., K) are sorted, most similar first."""
    return WEIGHTINGS[check_weighting(method)](np.asarray(sims, dtype=np.float64))
