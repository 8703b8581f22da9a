"""The console scripts end the process with their command's status, after freezing what the run left in memory
(so that the interpreter's last collection does not walk it)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("module", ["percept.cli.main", "percept.cli.dropin"])
def test_a_console_script_ends_with_its_commands_status(module, tmp_path):
    missing = tmp_path / "missing.npz"
    argv = (["percept", "rate", "--model", str(missing), "-e", str(tmp_path), "--out", str(tmp_path / "r.csv")]
            if module == "percept.cli.main" else
            ["clip_retrieval_knn", "-g", str(tmp_path / "missing.geojson"), "-e", str(tmp_path), "-M", "ViT-B-32"])
    done = python(f"import sys; sys.argv = {argv!r}; from {module} import console; console()")
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and "missing" in done.stderr and "Traceback" not in done.stderr


def test_exit_with_freezes_the_heap_and_keeps_the_status():
    done = python("import atexit, gc; from percept.cli.common import exit_with; "
                  "atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0)); exit_with(3)")
    assert (done.returncode, done.stdout.strip()) == (3, "frozen True")
