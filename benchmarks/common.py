"""Shared by the benchmarks: the 20,000-image synthetic survey and timing of a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(os.environ.get("PERCEPT_BENCH_DIR", "bench-output")).resolve()
SURVEY_IMAGES = 20_000
SURVEY_DIM = 1024

# Runs the command as its only child, so RUSAGE_CHILDREN's ru_maxrss is that command's peak.
_MEASURE = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
seconds = time.perf_counter() - start
peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"rc": proc.returncode, "seconds": seconds, "peak_mb": peak_kb / 1024,
                  "stdout": proc.stdout, "stderr": proc.stderr}))
"""


def benchmark_survey() -> Path:
    """The benchmark survey (20,000 images x 1024 dims, ~3 ratings per image), generated once."""
    from percept.synthetic.vectors import generate_synthetic_survey

    folder = BENCH_DIR / f"survey-{SURVEY_IMAGES}x{SURVEY_DIM}"
    if not (folder / "demo.csv").exists():
        generate_synthetic_survey(folder, n_images=SURVEY_IMAGES, dim=SURVEY_DIM, ratings_per_image=3.0, seed=0,
                                  force=True)
    return folder


def measure(command: list[str], cwd: Path) -> tuple[float, float, str]:
    """Run a command; return (seconds, peak resident memory in MB, stdout). Exits loudly on failure."""
    out = subprocess.run([sys.executable, "-c", _MEASURE, *command], cwd=cwd, capture_output=True, text=True,
                         check=True)
    result = json.loads(out.stdout)
    if result["rc"] != 0:
        sys.exit(f"benchmark command failed ({result['rc']}): {' '.join(command)}\n{result['stderr']}")
    return result["seconds"], result["peak_mb"], result["stdout"]


def console_script(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def best_seconds(run, repeats: int, warm_up: bool = False) -> float:
    """The shortest of ``repeats`` timed calls of ``run`` (after one untimed call with ``warm_up``)."""
    if warm_up:
        run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best
