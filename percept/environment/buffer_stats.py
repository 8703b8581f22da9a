"""Per-buffer sums over (buffer, item) pairs, as the spatial index's query returns them."""

from __future__ import annotations

import numpy as np


def count_per_buffer(buffer_of_pair: np.ndarray, n_buffers: int, weights: np.ndarray | None = None) -> np.ndarray:
    """How many pairs (or the sum of ``weights`` over the pairs) each buffer has."""
    return np.bincount(buffer_of_pair, weights=weights, minlength=n_buffers)


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0."""
    out = np.zeros(len(numerator), dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=np.asarray(denominator) > 0)
    return out


def entropy_per_buffer(buffer_of_pair: np.ndarray, label_of_pair: np.ndarray, n_buffers: int,
                       n_labels: int) -> np.ndarray:
    """Shannon entropy (natural log) of each buffer's labels; 0 for a buffer with one label or none."""
    counts = np.bincount(buffer_of_pair * n_labels + label_of_pair, minlength=n_buffers * n_labels)
    return entropy_of_rows(counts.reshape(n_buffers, n_labels).astype(np.float64))


def entropy_of_rows(counts: np.ndarray) -> np.ndarray:
    """−Σ p·ln p of each row of counts (scipy.stats.entropy per row), 0 for an empty row."""
    totals = counts.sum(axis=1, keepdims=True)
    p = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    terms = np.zeros_like(p)
    np.multiply(p, np.log(p, out=np.zeros_like(p), where=p > 0), out=terms)
    return np.abs(-terms.sum(axis=1))
