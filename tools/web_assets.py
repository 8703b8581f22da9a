"""The web page's third-party assets (Leaflet, Swagger UI, Redoc), vendored into the package at build time.

Each asset comes from its npm tarball at a pinned version, checked against the tarball's pinned SHA-512
before anything is unpacked. Tarballs are kept in ``build/web-assets`` (``npm pack`` fetches a missing
one), so a rebuild needs no network. ``percept/web/static/vendor/VENDORED.json`` records what was
vendored; a build whose record matches does nothing, so a source distribution (which carries the
vendored files) builds without npm. Run as a script to vendor by hand.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class NpmPackage:
    """One npm tarball: its pinned version and SHA-512 (npm's ``integrity``), and which of its files go where
    (paths inside the tarball's ``package/`` folder → paths under the vendor folder; a folder is copied whole)."""

    name: str
    version: str
    integrity: str
    files: dict[str, str]

    @property
    def tarball(self) -> str:
        return f"{self.name}-{self.version}.tgz"


PACKAGES = (
    NpmPackage("leaflet", "1.9.4",
               "sha512-nxS1ynzJOmOlHp+iL3FyWqK89GtNL8U8rvlMOsQdTTssxZwCXh8N2NB3GDQOL+YR3XnWyZAxwQixURb+FA74PA==",
               {"dist/leaflet.js": "leaflet/leaflet.js", "dist/leaflet.css": "leaflet/leaflet.css",
                "dist/images": "leaflet/images", "LICENSE": "leaflet/LICENSE"}),
    NpmPackage("swagger-ui-dist", "5.35.0",
               "sha512-U06rpMtW9V3XPGOBeamTUSr0Z09jMX4IJuANpE/EZbAhw0G8CgwrzU4YmXkn/h0wCDNsXdGarTNNHC3sU8yVUQ==",
               {"swagger-ui-bundle.js": "swagger-ui/swagger-ui-bundle.js",
                "swagger-ui.css": "swagger-ui/swagger-ui.css",
                "swagger-ui-bundle.js.LICENSE.txt": "swagger-ui/swagger-ui-bundle.js.LICENSE.txt",
                "LICENSE": "swagger-ui/LICENSE", "NOTICE": "swagger-ui/NOTICE"}),
    NpmPackage("redoc", "2.5.4",
               "sha512-M6jWhG1qoBnH6TFmzJnstyCZ87HmOY/UzDm78mHiYihEdlV/YcS9ogOo1NlElnJMeLsyxHFe2yFc4sNjHTrABQ==",
               {"bundles/redoc.standalone.js": "redoc/redoc.standalone.js",
                "bundles/redoc.standalone.js.LICENSE.txt": "redoc/redoc.standalone.js.LICENSE.txt",
                "LICENSE": "redoc/LICENSE"}),
)
RECORD = "VENDORED.json"


class AssetError(Exception):
    """A web asset that cannot be vendored: the message names it and what to do."""


def vendor(root: Path = ROOT, packages: tuple[NpmPackage, ...] = PACKAGES) -> bool:
    """Vendor every package into ``root``'s package (``percept/web/static/vendor``); False when its record
    shows they already are."""
    target = root / "percept" / "web" / "static" / "vendor"
    wanted = {package.name: package.integrity for package in packages}
    if _recorded(target) == wanted and all((target / dest).exists() for p in packages for dest in p.files.values()):
        return False
    cache = root / "build" / "web-assets"
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        staged = Path(scratch) / "vendor"
        for package in packages:
            _unpack(_checked_tarball(package, cache), package, staged)
        (staged / RECORD).write_text(json.dumps(wanted, indent=2, sort_keys=True) + "\n")
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(staged), target)
    return True


def _recorded(target: Path) -> dict | None:
    try:
        return json.loads((target / RECORD).read_text())
    except (OSError, ValueError):
        return None


def _checked_tarball(package: NpmPackage, cache: Path) -> Path:
    """The package's tarball in ``cache`` (fetched with ``npm pack`` when missing), its SHA-512 checked."""
    path = cache / package.tarball
    if not path.is_file():
        _npm_pack(package, cache)
    digest = "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()
    if digest != package.integrity:
        raise AssetError(f"{path} is not {package.name}@{package.version} as published (its SHA-512 differs): "
                         "delete it and build again")
    return path


def _npm_pack(package: NpmPackage, cache: Path) -> None:
    npm = shutil.which("npm")
    spec = f"{package.name}@{package.version}"
    if npm is None:
        raise AssetError(f"the web page's assets come from npm, which is not installed: install Node.js and npm "
                         f"(to fetch {spec}), or build from the source distribution, which carries them")
    result = subprocess.run([npm, "pack", "--silent", spec], cwd=cache, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not (cache / package.tarball).is_file():
        reason = (result.stderr.strip().splitlines() or ["no tarball written"])[-1]
        raise AssetError(f"npm pack {spec} failed ({reason}): check the connection to the npm registry")


def _unpack(tarball: Path, package: NpmPackage, staged: Path) -> None:
    """Copy the package's listed files (a folder: its regular files) from the tarball into ``staged``; only
    the listed paths are read, so nothing in the archive can write elsewhere."""
    with tarfile.open(tarball) as archive:
        members = {m.name.removeprefix("package/"): m for m in archive.getmembers()
                   if m.isfile() and ".." not in Path(m.name).parts}
        for inside, dest in package.files.items():
            chosen = {name: member for name, member in members.items()
                      if name == inside or name.startswith(inside + "/")}
            if not chosen:
                raise AssetError(f"{package.tarball} has no {inside}: the asset list in {Path(__file__).name} "
                                 "does not fit this version")
            for name, member in chosen.items():
                copy = staged / dest / Path(name).relative_to(inside)
                copy.parent.mkdir(parents=True, exist_ok=True)
                copy.write_bytes(archive.extractfile(member).read())


def main() -> int:
    try:
        changed = vendor()
    except AssetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("web assets vendored" if changed else "web assets already vendored")
    return 0


if __name__ == "__main__":
    sys.exit(main())
