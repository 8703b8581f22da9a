"""The build step that vendors the web page's assets: the listed files of each pinned npm tarball, checked
against its SHA-512 before anything is unpacked, recorded so a second build does nothing."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import json
import shutil
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TARBALLS = ROOT / "build" / "web-assets"


def load_web_assets():
    spec = importlib.util.spec_from_file_location("web_assets", ROOT / "tools" / "web_assets.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


web_assets = load_web_assets()


def vendor_dir(root: Path) -> Path:
    return root / "percept" / "web" / "static" / "vendor"


def sha512(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def member(tarball: Path, name: str) -> bytes:
    with tarfile.open(tarball) as archive:
        return archive.extractfile(f"package/{name}").read()


@pytest.fixture
def root(tmp_path) -> Path:
    """A project folder holding npm's tarballs as ``make setup`` leaves them."""
    missing = [p.tarball for p in web_assets.PACKAGES if not (TARBALLS / p.tarball).is_file()]
    if missing:
        pytest.fail(f"{TARBALLS} lacks {', '.join(missing)}: run make setup")
    shutil.copytree(TARBALLS, tmp_path / "build" / "web-assets")
    return tmp_path


def test_each_listed_file_is_copied_from_its_tarball_and_a_second_build_does_nothing(root):
    assert web_assets.vendor(root) is True
    vendored = vendor_dir(root)
    for package in web_assets.PACKAGES:
        tarball = root / "build" / "web-assets" / package.tarball
        assert sha512(tarball.read_bytes()) == package.integrity
        for inside, dest in package.files.items():
            if (vendored / dest).is_dir():
                copied = sorted(p.name for p in (vendored / dest).iterdir())
                with tarfile.open(tarball) as archive:
                    listed = sorted(Path(m.name).name for m in archive.getmembers()
                                    if m.isfile() and m.name.startswith(f"package/{inside}/"))
                assert copied == listed and copied
            else:
                assert (vendored / dest).read_bytes() == member(tarball, inside), dest
    recorded = json.loads((vendored / web_assets.RECORD).read_text())
    assert recorded == {p.name: p.integrity for p in web_assets.PACKAGES}
    stamp = (vendored / "leaflet" / "leaflet.js").stat().st_mtime_ns
    assert web_assets.vendor(root) is False
    assert (vendored / "leaflet" / "leaflet.js").stat().st_mtime_ns == stamp


def test_a_lost_file_or_a_changed_pin_vendors_again(root):
    web_assets.vendor(root)
    (vendor_dir(root) / "redoc" / "redoc.standalone.js").unlink()
    assert web_assets.vendor(root) is True
    assert (vendor_dir(root) / "redoc" / "redoc.standalone.js").is_file()
    (vendor_dir(root) / web_assets.RECORD).write_text(json.dumps({"leaflet": "sha512-older"}))
    assert web_assets.vendor(root) is True


def test_a_tarball_unlike_the_published_one_is_refused_before_anything_is_unpacked(root):
    tarball = root / "build" / "web-assets" / "leaflet-1.9.4.tgz"
    tarball.write_bytes(tarball.read_bytes() + b"\0")
    with pytest.raises(web_assets.AssetError,
                       match=r"leaflet-1\.9\.4\.tgz is not leaflet@1\.9\.4 as published.*delete it"):
        web_assets.vendor(root)
    assert not vendor_dir(root).exists()


def test_without_npm_a_missing_tarball_is_one_clear_error(root, monkeypatch):
    (root / "build" / "web-assets" / "redoc-2.5.4.tgz").unlink()
    monkeypatch.setattr(web_assets.shutil, "which", lambda name: None)
    with pytest.raises(web_assets.AssetError, match=r"npm, which is not installed.*redoc@2\.5\.4.*source distribution"):
        web_assets.vendor(root)
    assert not vendor_dir(root).exists()


def test_only_the_listed_paths_are_written_whatever_the_archive_holds(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in (("package/lib/a.js", b"a"), ("package/lib/../../../escaped.txt", b"x"),
                           ("package/other.js", b"o")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    cache = tmp_path / "build" / "web-assets"
    cache.mkdir(parents=True)
    (cache / "made-1.0.0.tgz").write_bytes(buffer.getvalue())
    package = web_assets.NpmPackage("made", "1.0.0", sha512(buffer.getvalue()), {"lib": "made/lib"})
    assert web_assets.vendor(tmp_path, (package,)) is True
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == ["build/web-assets/made-1.0.0.tgz", "percept/web/static/vendor/VENDORED.json",
                       "percept/web/static/vendor/made/lib/a.js"]
