"""The house's rules hold: import-linter contracts, no import circle, argparse only in the CLI."""

from __future__ import annotations

import os
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import percept

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(root))
    return subprocess.run([str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_contracts_are_kept():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_upward_import_breaks_the_layers(tmp_path):
    shutil.copytree(ROOT / "percept", tmp_path / "percept", ignore=shutil.ignore_patterns("__pycache__", "static"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    knn = tmp_path / "percept" / "model" / "knn.py"
    knn.write_text(knn.read_text() + "\nfrom percept.encoders.options import EncodingOptions  # noqa\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "percept.model.knn -> percept.encoders.options" in result.stdout


def test_every_module_imports_on_its_own():
    """Each module imports in a fresh interpreter, so no import circle hides behind import order."""
    names = [m.name for m in pkgutil.walk_packages(percept.__path__, "percept.")]
    assert "percept.model.knn" in names and "percept.cli.dropin" in names
    code = ("import importlib, sys\nfor name in sys.argv[1:]:\n"
            "    for loaded in [m for m in sys.modules if m == 'percept' or m.startswith('percept.')]:\n"
            "        del sys.modules[loaded]\n"
            "    importlib.import_module(name)\n")
    result = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def test_argparse_only_in_the_cli():
    offenders = []
    for path in (ROOT / "percept").rglob("*.py"):
        if "cli" in path.relative_to(ROOT / "percept").parts:
            continue
        text = path.read_text()
        if "argparse" in text or "args." in text:
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders

