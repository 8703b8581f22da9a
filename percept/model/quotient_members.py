"""A model file's float64 vectors held a second time as quotient rows, so that loading skips inflating them.

A model's vectors are unit rows normalised from float16 embeddings: each float64 element is exactly a float16
numerator over a float64 divisor of its row (:func:`percept.model.exact_search.quotient_rows` finds them, checking
every element). :func:`quotient_members` gives the distinct rows of all categories that way:
``percept_numerators`` (float16, a quarter of the bytes), ``percept_divisors`` and, per category,
``percept_rows_<category>`` (each sample's distinct row). :func:`stored_quotients` reads them back as
:class:`QuotientRows`, which rebuilds them as the search reads them
(:func:`percept.model.kernels.quotient_vectors`) into the very float64 vectors; the loader keeps a category's
rebuilt vectors only where their ``.npy`` bytes have the CRC-32 and size its ``<category>_vecs`` member records
(:func:`percept.model.npz.same_bytes`), and else reads that member. Where every category's match, the model keeps
them, and its scorer lays out its search from them without looking for its distinct rows or their quotients again.
The members are a copy made for speed: a file without them, or with ones that no longer match, loads as it always
did.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from percept.model import kernels
from percept.model.distinct import distinct_rows
from percept.model.exact_search import quotient_rows

NUMERATORS_KEY = "percept_numerators"
DIVISORS_KEY = "percept_divisors"
ROWS_PREFIX = "percept_rows_"


def quotient_members(vectors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The members that hold ``vectors`` (per category, float64 rows) as quotient rows; none where a row is not
    one, or the compiled kernels that find them are not in use."""
    categories = list(vectors)
    if not categories or not kernels.compiled():
        return {}
    distinct, positions = distinct_rows([vectors[c] for c in categories])
    found = quotient_rows(distinct, np.arange(len(distinct))) if len(distinct) else None
    if found is None:
        return {}
    numerators, divisors = found
    members = {NUMERATORS_KEY: numerators, DIVISORS_KEY: divisors}
    for category, rows in zip(categories, positions):
        members[ROWS_PREFIX + category] = rows.astype(np.int64)
    return members


@dataclass(frozen=True)
class QuotientRows:
    """Distinct float64 rows as float16 ``numerators`` over ``divisors``, and each category's sample rows."""

    numerators: np.ndarray  # (distinct rows, dim) float16
    divisors: np.ndarray  # (distinct rows,) float64
    rows: dict[str, np.ndarray]  # per category, each sample's distinct row (int64)

    def vectors(self, picked: np.ndarray | None = None) -> np.ndarray:
        """The float64 rows ``picked`` (all by default), each element n / d rebuilt as the search rebuilds it."""
        picked = np.arange(len(self.numerators)) if picked is None else picked
        out = np.empty((len(picked), self.numerators.shape[1]))
        kernels.quotient_vectors(self.numerators, picked, self.divisors[picked], out)
        return out


def stored_quotients(arrays: dict[str, np.ndarray], categories: list[str]) -> QuotientRows | None:
    """The quotient rows the members of ``arrays`` hold for ``categories`` (None where they are missing or do not
    fit together)."""
    numerators, divisors = arrays.get(NUMERATORS_KEY), arrays.get(DIVISORS_KEY)
    rows = {c: arrays.get(ROWS_PREFIX + c) for c in categories}
    if numerators is None or divisors is None or numerators.dtype != np.float16 or numerators.ndim != 2 \
            or divisors.dtype != np.float64 or divisors.shape != (len(numerators),):
        return None
    if not all(picked is not None and picked.dtype == np.int64 and picked.ndim == 1
               and (not len(picked) or 0 <= picked.min() <= picked.max() < len(numerators))
               for picked in rows.values()):
        return None
    return QuotientRows(np.ascontiguousarray(numerators), divisors, rows)  # type: ignore[arg-type]
