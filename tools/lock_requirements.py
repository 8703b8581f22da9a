"""Write requirements.lock: the exact versions installed in this environment of every package that
``percept[all,test]`` needs, directly or not (``make lock``, after changing a dependency).

The project's own requirements are read from pyproject.toml (the floors); every other package's from its
installed metadata. A package needed only on some of the platforms wheels are built for (CUDA libraries,
say) gets a marker naming them, so ``pip install -r requirements.lock`` works on each; a package this
platform does not need is not installed here, so pip resolves it where it is needed.
"""

from __future__ import annotations

import sys
import tomllib
from collections import deque
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from percept.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent
EXTRAS = ("all", "test")
#: The platforms wheels are built for, as marker environments (the rest, such as the Python version, is ours).
PLATFORMS = {
    ("linux", "x86_64"): {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix"},
    ("linux", "aarch64"): {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix"},
    ("darwin", "arm64"): {"sys_platform": "darwin", "platform_system": "Darwin", "os_name": "posix"},
    ("darwin", "x86_64"): {"sys_platform": "darwin", "platform_system": "Darwin", "os_name": "posix"},
    ("win32", "AMD64"): {"sys_platform": "win32", "platform_system": "Windows", "os_name": "nt"},
}
HEADER = """\
# Exact versions of percept[all,test]'s dependency tree, installed by `make setup`
# (floors are in pyproject.toml). Written by tools/lock_requirements.py (`make lock`): do not edit.
"""


def project_requirements(pyproject: dict, extras: tuple[str, ...]) -> list[Requirement]:
    """The project's requirements with these extras, its ``percept[...]`` extras expanded."""
    project = pyproject["project"]
    name = canonicalize_name(project["name"])
    found, wanted, seen = [Requirement(text) for text in project["dependencies"]], list(extras), set()
    while wanted:
        extra = wanted.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in project["optional-dependencies"][extra]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == name:
                wanted.extend(requirement.extras)
            else:
                found.append(requirement)
    return found


def applies(requirement: Requirement, platform: tuple[str, str], extra: str) -> bool:
    if requirement.marker is None:
        return True
    environment = {**PLATFORMS[platform], "platform_machine": platform[1], "extra": extra}
    return requirement.marker.evaluate(environment)


def dependency_platforms(roots: list[Requirement]) -> dict[str, set[tuple[str, str]]]:
    """Every installed package the roots need, with the platforms that need it."""
    reached: dict[tuple[str, str], set] = {}  # (package, extra or "") → platforms
    queue = deque((requirement, "", set(PLATFORMS)) for requirement in roots)
    while queue:
        requirement, extra, platforms = queue.popleft()
        on = {platform for platform in platforms if applies(requirement, platform, extra)}
        name = canonicalize_name(requirement.name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # not needed on this platform
        for wanted in ("", *sorted(requirement.extras)):
            new = on - reached.get((name, wanted), set())
            if not new:
                continue
            reached.setdefault((name, wanted), set()).update(new)
            queue.extend((Requirement(text), wanted, new) for text in dist.requires or [])
    packages: dict[str, set] = {}
    for (name, _), platforms in reached.items():
        packages.setdefault(name, set()).update(platforms)
    return packages


def platform_marker(platforms: set[tuple[str, str]]) -> str:
    """A marker true on exactly these platforms ('' for all of them)."""
    if platforms == set(PLATFORMS):
        return ""
    clauses = []
    for system in sorted({system for system, _ in platforms}):
        machines = sorted(machine for s, machine in platforms if s == system)
        if len(machines) == sum(1 for s, _ in PLATFORMS if s == system):
            clauses.append(f'sys_platform == "{system}"')
        else:
            clauses.extend(f'(sys_platform == "{system}" and platform_machine == "{m}")' for m in machines)
    return " or ".join(clauses)


def lock_lines(pyproject: dict) -> list[str]:
    lines = []
    for name, platforms in dependency_platforms(project_requirements(pyproject, EXTRAS)).items():
        dist = metadata.distribution(name)
        marker = platform_marker(platforms)
        lines.append(f"{dist.metadata['Name']}=={dist.version}" + (f"; {marker}" if marker else ""))
    return sorted(lines, key=str.lower)


def main() -> int:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    atomic_write_text(ROOT / "requirements.lock", HEADER + "\n".join(lock_lines(pyproject)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
