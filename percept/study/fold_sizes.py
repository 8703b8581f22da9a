"""How many samples each cross-validation fold holds, and a warning when folds are too small or too uneven.

Grouped folds (``--group-by``) deal out whole groups, so a few large groups, say big
spatial blocks, can leave one fold with a handful of samples and another with hundreds;
the metrics of such folds are noise. :func:`fold_size_warnings` names the fold that shows it.
"""

from __future__ import annotations

import numpy as np

#: A fold with fewer test samples than this gives a warning.
MIN_FOLD_SAMPLES = 30
#: Folds whose largest holds more than this many times the samples of the smallest give a warning.
MAX_FOLD_RATIO = 5.0


def fold_sizes(folds: np.ndarray, n_folds: int | None = None) -> np.ndarray:
    """(repeats, folds) samples per fold, from the fold of each sample: (samples,) or (repeats, samples)."""
    folds = np.atleast_2d(np.asarray(folds, dtype=np.int64))
    n_folds = int(folds.max()) + 1 if n_folds is None else n_folds
    return np.array([np.bincount(fold_of, minlength=n_folds) for fold_of in folds], dtype=np.int64)


def format_fold_sizes(folds: dict[str, np.ndarray]) -> str:
    """One compact line: samples per fold of each category (``folds``: category → fold of each sample) in the
    first repeat, e.g. ``walkability 255/526/11/2/204, bikeability ...``; once when every category has the same."""
    sizes = {category: "/".join(str(n) for n in fold_sizes(fold_of)[0]) for category, fold_of in folds.items()}
    if len(sizes) > 1 and len(set(sizes.values())) == 1:
        return f"samples per fold (repeat 1): {next(iter(sizes.values()))} in every category"
    return "samples per fold (repeat 1): " + ", ".join(f"{c} {s}" for c, s in sizes.items())


def fold_size_warnings(folds: np.ndarray, category: str) -> list[str]:
    """One warning line (no ``warning:`` prefix) when a fold holds fewer than ``MIN_FOLD_SAMPLES`` samples or
    the largest fold more than ``MAX_FOLD_RATIO`` times the smallest, naming the category and the smallest fold.

    ``folds``: the fold of each sample, (samples,) for one repeat or (repeats, samples) for all.
    """
    sizes = fold_sizes(folds)
    for repeat in np.argsort(sizes.min(axis=1), kind="stable"):  # the repeat with the smallest fold first
        smallest, largest = int(sizes[repeat].min()), int(sizes[repeat].max())
        problems = [f"fewer than {MIN_FOLD_SAMPLES}"] if smallest < MIN_FOLD_SAMPLES else []
        if largest > MAX_FOLD_RATIO * smallest:
            problems.append(f"the largest fold holds {largest}, over {MAX_FOLD_RATIO:g} times as many")
        if problems:
            fold = int(np.argmin(sizes[repeat]))
            where = f"fold {fold + 1}" + (f" of repeat {repeat + 1}" if len(sizes) > 1 else "")
            return [(f"{category}: {where} holds {smallest} samples ({'; '.join(problems)}), so its "
                     "metrics are noisy: lower --cv, group in smaller units (--group-by) or use more data")]
    return []
