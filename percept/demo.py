"""``make demo``: the whole job on the built-in sample survey, offline.

Makes a sample survey of drawn street scenes, encodes it with the built-in
``percept:tiny`` model, evaluates K = 5, 10, 20 with the drop-in command,
exports ``model.npz`` and scores two sample images with it.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from percept.cli import dropin
from percept.cli import main as percept_main
from percept.errors import PerceptError

MODEL = "percept:tiny"


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def run_or_exit(code: int, what: str) -> None:
    if code:
        sys.exit(f"demo stopped: {what} failed with exit status {code}")


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "demo-output").resolve()
    survey = out / "survey"
    started = time.perf_counter()
    step(f"sample survey in {survey}")
    run_or_exit(percept_main.main(["sample", str(survey), "--images", "200", "--random-seed", "0", "--force"]),
                "percept sample")
    os.chdir(survey)
    common = ["-g", "data.geojson", "-i", "images", "-e", "embeddings", "-M", MODEL, "--encoder", "builtin"]
    step(f"encode with {MODEL} and evaluate K = 5, 10, 20 (clip_retrieval_knn)")
    run_or_exit(dropin.main(common + ["-k", "5,10,20", "--randomize", "--random-seed", "1",
                                      "-L", "results.csv"]), "evaluation")
    step("same, with ratings of people aged 30 to 49 only")
    run_or_exit(dropin.main(common + ["-q", "-k", "10", "-d", "demo.csv", "--age", "30,49"]), "evaluation")
    step("export model.npz (K = 20)")
    run_or_exit(dropin.main(common + ["-k", "20", "--export", "model.npz"]), "export")
    images = sorted((survey / "images").glob("*.jpg"))[:2]
    step("score two sample images (percept predict)")
    run_or_exit(percept_main.main(["predict", "--model", "model.npz", *map(str, images)]), "percept predict")
    print(f"\ndemo finished in {time.perf_counter() - started:.1f} s; files in {survey}")
    print("Note: percept:tiny has random weights, so these scores show the pipeline, not real perception.")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except PerceptError as exc:
        sys.exit(f"error: {exc}")
