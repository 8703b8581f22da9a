"""The C extensions built by each C compiler here (GCC, clang) with the project's build settings (setup.py):
they compile, and every build of their loops (AVX-512, AVX2, portable) gives the pure path's bits."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_kernels import same_bits

from percept.model import kernels, screens
from percept.model.knn import KNNRegressor
from percept.model.unit_rows import UnitRows, row_norms

ROOT = Path(__file__).resolve().parent.parent
COMPILERS = [name for name in ("gcc", "clang") if shutil.which(name)]


def load(path: Path, name: str, compiler: str):
    """An extension module from its file, under a name of its own (``<compiler>_build._kernels``: loading it
    puts it in ``sys.modules``, where it must not stand for the installed build), then taken out again."""
    spec = importlib.util.spec_from_file_location(f"{compiler}_build.{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules.pop(spec.name, None)
    return module


@pytest.fixture(scope="module", params=COMPILERS or [pytest.param(None, marks=pytest.mark.skip(reason="no cc"))])
def extensions(request, tmp_path_factory):
    """(kernels, tiles) built by one compiler into a temporary folder, as pip builds them."""
    if not (ROOT / "setup.py").exists():
        pytest.skip("the project's build files are not here (an installed copy of the tests)")
    where = tmp_path_factory.mktemp(request.param)
    done = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--build-lib", str(where / "lib"),
                           "--build-temp", str(where / "temp")], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "CC": request.param}, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    built = where / "lib" / "percept" / "model"
    return tuple(load(next(built.glob(f"{name}.*")), name, request.param) for name in ("_kernels", "_tiles"))


def pure_results(rows: np.ndarray, queries: np.ndarray):
    """Norms and neighbours of float16 rows (and of their float64 unit rows) by the pure path."""
    previous = kernels.use_compiled(False)
    try:
        return searched(rows, queries)
    finally:
        kernels.use_compiled(previous)


def searched(rows: np.ndarray, queries: np.ndarray):
    """The rows' norms, and the neighbours of the queries among the float16 rows and among their float64 unit
    rows, by the kernels in use."""
    norms = row_norms(rows)
    unit = UnitRows(rows)
    found = [KNNRegressor(20, block_size=64).fit(source, np.ones(len(rows))).kneighbors(queries)
             for source in (unit, np.asarray(unit))]
    return norms, found


def test_each_compiler_builds_the_kernels_that_give_the_pure_bits(extensions, monkeypatch):
    compiled, tiles = extensions
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(3000, 1030)).astype(np.float16)
    queries = np.asarray(UnitRows(rng.normal(size=(200, 1030))))
    want_norms, want = pure_results(rows, queries)
    installed = kernels.built()
    monkeypatch.setattr(kernels, "_extensions", lambda: (compiled, tiles))
    previous = kernels.use_compiled(True), screens.use_tiles(), compiled.vector_extensions()
    paths = []
    try:
        for use_tiles in sorted({False, bool(tiles.available())}):
            screens.use_tiles(use_tiles)
            for vector in (True, False):
                compiled.vector_extensions(vector)
                paths.append(compiled.vector_path())
                norms, found = searched(rows, queries)
                same_bits(norms, want_norms)
                for got, expected in zip(found, want):
                    np.testing.assert_array_equal(got.index, expected.index)
                    same_bits(got.similarity, expected.similarity)
    finally:
        kernels.use_compiled(previous[0])
        screens.use_tiles(previous[1])
        compiled.vector_extensions(previous[2])
    assert paths[1] == "portable"
    if installed:  # the same instructions as the installed build finds on this CPU, and the tiles with them
        from percept.model import _kernels, _tiles

        was = _kernels.vector_extensions(True)
        best = _kernels.vector_path()
        _kernels.vector_extensions(was)
        assert paths[0] == best
        assert tiles.available() == _tiles.available()
