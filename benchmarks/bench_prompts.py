"""Time to build style-1 (quintile) prompts for 20,000 survey features with all 76 environmental keys."""

from __future__ import annotations

import time

import numpy as np

from percept.environment.keys import ENV_KEYS
from percept.environment.prompts import build_prompts

FEATURES = 20_000
TARGET_SECONDS = 5.0


def make_features(count: int = FEATURES, seed: int = 0) -> list[dict]:
    """Survey feature properties as JSON would decode them: counts as int, measures as float."""
    rng = np.random.default_rng(seed)
    columns = {}
    for key in ENV_KEYS:
        if "count" in key or "num_" in key:
            columns[key] = rng.poisson(8, count).tolist()
        else:
            columns[key] = rng.gamma(2.0, 10.0, count).tolist()
    return [{"image_id": i, "url": f"https://example.org/img/{i}.jpg",
             **{key: columns[key][i] for key in ENV_KEYS}} for i in range(count)]


def main() -> float:
    """Print and return the seconds taken by build_prompts(style=1)."""
    features = make_features()
    start = time.perf_counter()
    prompt_set = build_prompts(features, 1)
    seconds = time.perf_counter() - start
    assert len(prompt_set.prompts) == FEATURES and prompt_set.incomplete == 0
    verdict = "ok" if seconds < TARGET_SECONDS else "SLOW"
    print(f"prompts: style-1 prompts for {FEATURES:,} features x {len(ENV_KEYS)} keys in {seconds:.3f} s "
          f"({seconds / FEATURES * 1e6:.1f} us per feature; target < {TARGET_SECONDS:.0f} s) {verdict}")
    return seconds


if __name__ == "__main__":
    main()
