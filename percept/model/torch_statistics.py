"""What :mod:`percept.model.estimates` computes from the neighbours, on a torch device: the same formulas in
float64, for rows whose neighbour counts may differ (``counts``: the valid leading columns of each row).

Weights (:mod:`percept.model.weighting`), weighted mean and sd (:func:`percept.model.estimates.neighbour_statistics`),
leaving a survey image's own samples out (:func:`percept.model.leave_one_out.leave_out`), the best similarity
(:mod:`percept.model.uncertainty`), the dissimilarity index (:mod:`percept.model.domain`) and the prediction
intervals (:mod:`percept.model.conformal`). Sums run in torch's order, so results agree with the CPU's to
float64 rounding, not bit for bit.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from percept.categories import SCORE_RANGE
from percept.model.weighting import check_weighting


def valid_columns(counts: Tensor, width: int) -> Tensor:
    """(rows, width) mask of each row's first ``counts`` columns."""
    return torch.arange(width, device=counts.device)[None, :] < counts[:, None]


def neighbour_weights(similarity: Tensor, counts: Tensor, method: str) -> Tensor:
    """Each row's weights over its first ``counts`` neighbours (0 past them; NaN for rows with none)."""
    valid = valid_columns(counts, similarity.shape[1])
    method = check_weighting(method)
    if method == "divbysum":
        values = torch.where(valid, similarity, 0.0)
        return values / values.sum(dim=1, keepdim=True)
    if method == "fixed":  # softmax of the ranks K-1, ..., 0 of each row's own K
        logits = (counts[:, None] - 1 - torch.arange(similarity.shape[1], device=counts.device)).double()
    elif method == "softmax10**":
        logits = 10.0 ** similarity
    elif method == "softmax**8":
        logits = similarity ** 8
    else:
        logits = similarity
    logits = torch.where(valid, logits, -torch.inf)
    shifted = torch.exp(logits - logits.amax(dim=1, keepdim=True))
    return shifted / shifted.sum(dim=1, keepdim=True)


def neighbour_statistics(index: Tensor, similarity: Tensor, counts: Tensor, scores: Tensor,
                         method: str) -> tuple[Tensor, Tensor]:
    """Weighted mean and sd of ``scores`` over each row's first ``counts`` neighbours (NaN for none)."""
    weights = neighbour_weights(similarity, counts, method)
    values = torch.where(valid_columns(counts, index.shape[1]), scores[index.clamp(min=0)], 0.0)
    mean = (weights * values).sum(dim=1)
    total = weights.sum(dim=1, keepdim=True)
    centre = (weights * values).sum(dim=1, keepdim=True) / total
    variance = (weights * (values - centre) ** 2).sum(dim=1) / total[:, 0]
    sd = torch.sqrt(torch.clamp(variance, min=0.0))
    none = counts == 0
    return mean.masked_fill(none, math.nan), sd.masked_fill(none, math.nan)


def leave_out(index: Tensor, similarity: Tensor, excluded: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per row, the first ``k`` neighbours not marked in ``excluded``, in order (index -1 and similarity NaN past
    a row's end), and each row's count."""
    keep = ~excluded
    rank = torch.cumsum(keep, dim=1)
    take = keep & (rank <= k)
    counts = torch.clamp(rank[:, -1], max=k) if rank.shape[1] else torch.zeros(len(rank), dtype=torch.int64,
                                                                               device=rank.device)
    slots = torch.where(take, rank - 1, k)  # column k collects what is not taken, then is dropped
    rows = len(index)
    out_index = torch.full((rows, k + 1), -1, dtype=torch.int64, device=index.device)
    out_similarity = torch.full((rows, k + 1), math.nan, dtype=torch.float64, device=index.device)
    out_index.scatter_(1, slots, torch.where(take, index, -1))
    out_similarity.scatter_(1, slots, torch.where(take, similarity, math.nan))
    return out_index[:, :k], out_similarity[:, :k], counts


def nearest(similarity: Tensor, counts: Tensor, missing: float) -> Tensor:
    """Each row's best similarity (its first neighbour's), ``missing`` for rows with no neighbours."""
    if not similarity.shape[1]:
        return torch.full((len(similarity),), missing, dtype=torch.float64, device=similarity.device)
    return torch.where(counts > 0, similarity[:, 0], missing)


def best_similarity(firsts: list[Tensor]) -> Tensor:
    """The largest of several per-category best similarities (each -inf where unknown), NaN where none is known."""
    best = torch.stack(firsts, dim=1).amax(dim=1)
    return torch.where(torch.isneginf(best), math.nan, best)


def dissimilarity(similarity: Tensor, mean_distance: float | None) -> Tensor:
    """Chord distance to the nearest survey vector over the survey's mean nearest-other distance (NaN if unknown)."""
    if mean_distance is None or not math.isfinite(mean_distance) or mean_distance <= 0:
        return torch.full_like(similarity, math.nan)
    return torch.sqrt(torch.clamp(2.0 - 2.0 * similarity, min=0.0)) / mean_distance


def out_of_domain(similarity: Tensor, threshold: float | None) -> Tensor:
    """True where ``similarity`` lies below ``threshold`` (never for NaN similarity or an unknown threshold)."""
    if threshold is None or math.isnan(threshold):
        return torch.zeros_like(similarity, dtype=torch.bool)
    return similarity < threshold


def interval(predicted: Tensor, sd: Tensor, far: Tensor, quantile: float, beta: float) -> tuple[Tensor, Tensor]:
    """The prediction interval ``predicted ± quantile (sd + beta far)``, clipped to the rating scale (NaN where
    the prediction is unknown)."""
    half = quantile * (sd + beta * torch.nan_to_num(far, nan=0.0))
    low, high = SCORE_RANGE
    lo = torch.clamp(predicted - half, low, high)
    hi = torch.clamp(predicted + half, low, high)
    unknown = ~torch.isfinite(predicted)
    return lo.masked_fill(unknown, math.nan), hi.masked_fill(unknown, math.nan)
