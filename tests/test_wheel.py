"""The wheel stands alone: built from the source as a clean checkout has it (the web assets vendored at build
time from npm's tarballs, the C kernels compiled by ``$CC``), installed in a fresh virtual environment, it passes
the exact-search tests on the C and the pure path, and its own ``percept serve`` serves the page, Leaflet and the
API docs from the installed package. Nothing is downloaded: the tarballs are the ones ``make setup`` keeps in
``build/web-assets``, and the fresh environment borrows this one's dependencies through a ``.pth`` file."""

from __future__ import annotations

import ast
import email
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import threading
import zipfile
from pathlib import Path

import httpx
import pytest
from web_fixtures import write_model

ROOT = Path(__file__).resolve().parent.parent
TARBALLS = ROOT / "build" / "web-assets"
VENDOR = "percept/web/static/vendor"
#: Files the page and the API docs load, and the tarball member each is a copy of.
ASSETS = {
    "leaflet/leaflet.js": ("leaflet-1.9.4.tgz", "package/dist/leaflet.js"),
    "leaflet/leaflet.css": ("leaflet-1.9.4.tgz", "package/dist/leaflet.css"),
    "leaflet/images/marker-icon.png": ("leaflet-1.9.4.tgz", "package/dist/images/marker-icon.png"),
    "swagger-ui/swagger-ui-bundle.js": ("swagger-ui-dist-5.35.0.tgz", "package/swagger-ui-bundle.js"),
    "swagger-ui/swagger-ui.css": ("swagger-ui-dist-5.35.0.tgz", "package/swagger-ui.css"),
    "redoc/redoc.standalone.js": ("redoc-2.5.4.tgz", "package/bundles/redoc.standalone.js"),
}


def clean_env(**extra: str) -> dict:
    """This environment without anything that would put the source tree on the path."""
    env = {name: value for name, value in os.environ.items() if name not in ("PYTHONPATH", "PYTHONHOME")}
    return {**env, **extra}


def source_version() -> str:
    tree = ast.parse((ROOT / "percept" / "__init__.py").read_text())
    return next(node.value.value for node in tree.body if isinstance(node, ast.Assign)
                and any(getattr(target, "id", None) == "__version__" for target in node.targets))


def tarball_member(tarball: str, member: str) -> bytes:
    with tarfile.open(TARBALLS / tarball) as archive:
        return archive.extractfile(member).read()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built (``pip wheel . --no-deps``) from a copy of the files git does not ignore, with npm's
    tarballs beside them as ``make setup`` leaves them, and no vendored assets."""
    missing = [t for t, _ in ASSETS.values() if not (TARBALLS / t).is_file()]
    if missing:
        pytest.fail(f"{TARBALLS} lacks {', '.join(sorted(set(missing)))}: run make setup")
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("dist")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    assert not (source / VENDOR).exists()
    shutil.copytree(TARBALLS, source / "build" / "web-assets")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                            "--no-index", "-w", str(out)], capture_output=True, text=True, env=clean_env(),
                           timeout=900, check=False)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    [path] = out.glob("percept-*.whl")
    return path


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment holding the wheel; its dependencies come from this environment's
    site-packages (a ``.pth`` line: the editable install's own path hooks there are not run)."""
    folder = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=300)
    python = folder / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                                "--no-index", str(wheel)], capture_output=True, text=True, timeout=600,
                               check=False)
    assert installed.returncode == 0, installed.stderr[-3000:]
    return folder


def test_the_wheel_carries_the_assets_the_license_and_the_one_version(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = f"percept-{source_version()}.dist-info"
        metadata = email.message_from_bytes(archive.read(f"{info}/METADATA"))
        license_text = archive.read(f"{info}/licenses/LICENSE").decode()
        for asset, (tarball, member) in ASSETS.items():
            assert archive.read(f"{VENDOR}/{asset}") == tarball_member(tarball, member), asset
        for notice in ("leaflet/LICENSE", "swagger-ui/LICENSE", "swagger-ui/NOTICE", "redoc/LICENSE"):
            assert f"{info}/licenses/{VENDOR}/{notice}" in names
    assert metadata["Version"] == source_version()
    assert metadata["License-Expression"] == "MIT AND BSD-2-Clause AND Apache-2.0"
    assert license_text.startswith("MIT License") and "Percept KNN contributors" in license_text
    core = [r for r in metadata.get_all("Requires-Dist") if "extra ==" not in r]
    assert not [r for r in core if re.match(r"(matplotlib|h3|torch|scikit-learn|fastapi|ray|psycopg)\b", r)]
    assert any(name.startswith("percept/model/_kernels.") for name in names)
    assert not [name for name in names if name.startswith(("tools/", "tests/")) or name == "percept/legacy.py"]


def test_the_fresh_environment_imports_the_wheel_not_the_source(venv, tmp_path):
    shown = subprocess.run([str(venv / "bin" / "python"), "-c", "import percept; print(percept.__file__)"],
                           cwd=tmp_path, env=clean_env(), capture_output=True, text=True, check=True)
    assert Path(shown.stdout.strip()).is_relative_to(venv)


@pytest.mark.parametrize("pure", ["0", "1"], ids=["c", "pure"])
def test_the_exact_search_tests_pass_on_the_installed_wheel(venv, tmp_path, pure):
    tests = [str(ROOT / "tests" / name) for name in ("test_exact_search.py", "test_kernels.py")]
    result = subprocess.run([str(venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
                            cwd=tmp_path, env=clean_env(PERCEPT_PURE=pure), capture_output=True, text=True,
                            timeout=900, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert re.search(r"\d+ passed", result.stdout)


def test_the_installed_serve_serves_the_page_leaflet_and_the_docs(venv, tmp_path):
    model = write_model(tmp_path / "model.npz")
    server = subprocess.Popen([str(venv / "bin" / "percept"), "serve", "--model", str(model), "--port", "0"],
                              cwd=tmp_path, env=clean_env(), stderr=subprocess.PIPE, text=True)
    try:
        line = server.stderr.readline()
        threading.Thread(target=server.stderr.read, daemon=True).start()
        assert line.startswith("serving on http://127.0.0.1:"), line
        url = line.split()[2].rstrip("/")
        loaded = {}
        for page in ("/", "/docs", "/redoc"):
            response = httpx.get(url + page, timeout=60)
            assert response.status_code == 200, page
            vendored = re.findall(r'(?:src|href)="/static/vendor/([^"]+)"', response.text)
            assert vendored, page
            loaded.update({asset: httpx.get(f"{url}/static/vendor/{asset}", timeout=60) for asset in vendored})
        assert {"leaflet/leaflet.js", "swagger-ui/swagger-ui-bundle.js", "redoc/redoc.standalone.js"} <= set(loaded)
        loaded["leaflet/images/marker-icon.png"] = httpx.get(f"{url}/static/vendor/leaflet/images/marker-icon.png",
                                                             timeout=60)
        for asset, response in loaded.items():
            assert response.status_code == 200, asset
            if asset in ASSETS:
                assert response.content == tarball_member(*ASSETS[asset]), asset
    finally:
        server.terminate()
        server.wait(timeout=60)
