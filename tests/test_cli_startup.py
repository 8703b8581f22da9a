"""What the command-line front ends set before numpy loads."""

from __future__ import annotations

import os
import subprocess
import sys


def blas_timeout(environment: dict[str, str]) -> str:
    """OPENBLAS_THREAD_TIMEOUT as a process sees it once the front ends are imported and numpy has loaded."""
    code = "import percept.cli, numpy, os; print(os.environ['OPENBLAS_THREAD_TIMEOUT'])"
    return subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_openblas_threads_sleep_when_idle_unless_the_user_says_otherwise():
    environment = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    assert blas_timeout(environment) == "4"
    assert blas_timeout({**environment, "OPENBLAS_THREAD_TIMEOUT": "20"}) == "20"
