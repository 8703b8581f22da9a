"""The model's compiled kernels, or their plain-numpy equivalents: every caller of the C goes through here.

The C extensions (``_kernels``: the selection after the screen, float16 conversion, norms; ``_tiles``: the
AMX screen) run where they were built and import. Where they were not, or where the environment variable
``PERCEPT_PURE`` is ``1``, :mod:`percept.model.pure_search` gives the same results, bit for bit, in numpy
(slower), and the screen is a float32 matrix product. :func:`use_compiled` switches at run time (the tests
compare both).
"""

from __future__ import annotations

import functools
import os
from types import ModuleType
from typing import Any

import numpy as np

from percept.model import pure_search

#: The environment variable that keeps the compiled kernels out (any value but empty or 0).
PURE_VARIABLE = "PERCEPT_PURE"

_wanted = os.environ.get(PURE_VARIABLE, "") in ("", "0")


@functools.cache
def _extensions() -> tuple[ModuleType, ModuleType] | None:
    """The compiled modules (``_kernels``, ``_tiles``), or None where they were not built or do not import."""
    try:
        from percept.model import _kernels, _tiles
    except ImportError:
        return None
    return _kernels, _tiles


def _compiled_modules() -> tuple[ModuleType, ModuleType]:
    """The compiled modules (only where they were built)."""
    extensions = _extensions()
    if extensions is None:
        raise RuntimeError("the C extensions were not built here")
    return extensions


def built() -> bool:
    """Whether the C extensions were built and import here (whatever :func:`use_compiled` says)."""
    return _extensions() is not None


def compiled() -> bool:
    """Whether searches run the compiled kernels (else the pure path)."""
    return _wanted and built()


def use_compiled(enabled: bool | None = None) -> bool:
    """Whether the compiled kernels run, where they were built; returns the previous setting.

    ``False`` forces the pure path; ``True`` (or ``None``) the compiled kernels where they were built.
    """
    global _wanted
    previous = compiled()
    _wanted = enabled is not False
    return previous


def implementation() -> str:
    """The code that searches: ``pure``, or the compiled build in use (``avx512``, ``avx2`` or ``portable``)."""
    return str(_compiled_modules()[0].vector_path()) if compiled() else "pure"


def use_build(name: str) -> str:
    """Runs the compiled build ``name`` (``avx512``, ``avx2`` or ``portable``; a ValueError where the CPU does not
    run it) and returns the previous one."""
    return str(_compiled_modules()[0].vector_path(name))


def vector_extensions(enabled: bool | None = None) -> bool:
    """Whether the compiled kernels run their AVX2/AVX-512 build (where the CPU has it; False where they were not
    built); returns the previous setting. ``False`` forces their portable build (the same bits, more slowly)."""
    if not built():
        return False
    return bool(_compiled_modules()[0].vector_extensions(enabled))


def gather_float32(stored: np.ndarray, rows: np.ndarray, out: np.ndarray) -> None:
    """``out[j] = stored[rows[j]]`` as float32, for float16 or float32 rows (exact)."""
    if compiled():
        _compiled_modules()[0].gather_float32(stored, rows, out)
    else:
        pure_search.gather_float32(stored, rows, out)


def sums_of_squares(stored: np.ndarray, out: np.ndarray) -> None:
    """``out[i]`` = the float64 sum of the squares of row i, summed in the kernels' fixed order."""
    if compiled():
        _compiled_modules()[0].sums_of_squares(stored, out)
    else:
        pure_search.sums_of_squares(stored, out)


def unit_rows(stored: np.ndarray, rows: np.ndarray, norms: np.ndarray, out: np.ndarray) -> None:
    """``out[i]`` = float16 row ``rows[i]`` of ``stored`` in float64 over its norm: ``norms[i]``, or where that is
    NaN the row's float64 norm (from :func:`sums_of_squares`), written there; zero rows stay zero."""
    if compiled():
        _compiled_modules()[0].unit_rows(stored, rows, norms, out)
    else:
        pure_search.unit_rows(stored, rows, norms, out)


def quotient_vectors(numerators: np.ndarray, rows: np.ndarray, divisors: np.ndarray, out: np.ndarray) -> None:
    """``out[i]`` = quotient row ``rows[i]``: its float16 ``numerators`` over ``divisors[i]``, each element rebuilt
    as the selection rebuilds it (the compiled kernels in two parts of 1 / d, checked wherever rows are read; the
    pure path divides, correctly rounded)."""
    if compiled():
        _compiled_modules()[0].quotient_vectors(numerators, rows, divisors, out)
    else:
        pure_search.quotient_vectors(numerators, rows, divisors, out)


def quotient_rows(source: np.ndarray, rows: np.ndarray, numerators: np.ndarray, divisors: np.ndarray) -> int:
    """Float16 ``numerators`` and float64 ``divisors`` that give each float64 row ``source[rows[i]]`` back exactly
    as ``numerators[i] / divisors[i]``; -1, or the first i whose row has none (compiled kernels only)."""
    return int(_compiled_modules()[0].quotient_rows(source, rows, numerators, divisors))


#: Tables only the compiled selection reads: its groups, float16 copies of the columns and the tile screen's
#: maxima make it faster and leave its results as they are.
COMPILED_ONLY = ("block_starts", "block_stops", "block_patterns", "widths", "groups", "group_offsets", "refine",
                 "refine_eps", "refine_scales", "tile_maxima", "tile_patterns")


def select_neighbours(**tables: Any) -> None:
    """Each category's K nearest samples of a block of screened queries, written to the ``index`` and
    ``similarity`` arrays: the keywords of :func:`percept.model.pure_search.select_neighbours`, and
    ``COMPILED_ONLY``."""
    if compiled():
        _compiled_modules()[0].select_neighbours(**tables)
    else:
        pure_search.select_neighbours(**{name: table for name, table in tables.items() if name not in COMPILED_ONLY})


def tiles_available() -> bool:
    """Whether the AMX tile screen can run: compiled kernels in use, and a CPU (and kernel) that grant the tiles."""
    return compiled() and bool(_compiled_modules()[1].available())


def tiles() -> ModuleType:
    """The AMX tile module (only where :func:`tiles_available`)."""
    if not tiles_available():
        raise RuntimeError("AMX tiles are not available here")
    return _compiled_modules()[1]
