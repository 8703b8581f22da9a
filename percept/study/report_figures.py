"""The report's figures (matplotlib): metrics against K, calibration, and rater-group matrices.

Each function returns a figure and its caption; the caller saves it (PNG and SVG).
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from percept.study.crossval import METRICS, CategoryResult
from percept.study.groups import GroupMatrix
from percept.study.report_summary import CALIBRATION_BIN, calibration_bins

METRIC_NAMES = {"mse": "MSE", "rmse": "RMSE", "mae": "MAE", "r2": "R²", "pearson": "Pearson r",
                "spearman": "Spearman ρ"}
METRIC_UNITS = {"mse": "squared score points", "rmse": "score points", "mae": "score points",
                "r2": "no unit", "pearson": "no unit", "spearman": "no unit"}
#: A palette that colour-blind readers can tell apart (Okabe & Ito).
COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


def axis_label(metric: str) -> str:
    return f"{METRIC_NAMES[metric]} ({METRIC_UNITS[metric]})"


def folds_phrase(folds: int, repeats: int) -> str:
    total = folds * repeats
    return f"{total} folds ({folds}-fold cross-validation × {repeats} repeats)" if repeats > 1 else f"{total} folds"


def metrics_figure(results: list[CategoryResult], folds: int, repeats: int):
    """Each metric against K, one line per category, error bars ± 1 sd over folds; baselines dashed."""
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    for ax, metric in zip(axes.ravel(), METRICS):
        for i, result in enumerate(results):
            colour = COLOURS[i % len(COLOURS)]
            ks = [r.k for r in result.knn]
            ax.errorbar(ks, [r.mean(metric) for r in result.knn], yerr=[r.std(metric) for r in result.knn],
                        marker="o", capsize=3, color=colour, label=result.category)
            best = next(r for r in result.knn if r.best)
            ax.plot([best.k], [best.mean(metric)], marker="*", markersize=14, color=colour)
            for baseline, style in (("ridge", "--"), ("mean", ":")):
                row = result.baseline(baseline)
                if row is not None and math.isfinite(row.mean(metric)):
                    ax.axhline(row.mean(metric), linestyle=style, color=colour, linewidth=1)
        ax.set_title(METRIC_NAMES[metric])
        ax.set_xlabel("K (neighbours)")
        ax.set_ylabel(axis_label(metric))
        ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    handles += [plt.Line2D([], [], color="grey", linestyle="--"), plt.Line2D([], [], color="grey", linestyle=":"),
                plt.Line2D([], [], color="grey", marker="*", linestyle="", markersize=12)]
    labels += ["ridge baseline", "training-mean baseline", "best K"]
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 8))
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    caption = (f"Cross-validated error and agreement of the KNN model against K, per category. Points: mean over "
               f"{folds_phrase(folds, repeats)}; error bars: ± 1 standard deviation over {folds * repeats} folds. "
               "Dashed and dotted lines: the ridge linear probe and the training-mean baseline on the same folds. "
               "Stars: the best K (lowest mean MSE). Scores are on the survey's 1–5 scale.")
    return fig, caption


def _grid(count: int, width: float = 5.0, height: float = 4.5, layout: str | None = None):
    cols = min(count, 3)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False, layout=layout)
    for ax in axes.ravel()[count:]:
        ax.set_visible(False)
    return fig, axes.ravel()


def calibration_figure(results: list[CategoryResult], repeats: int):
    """Binned out-of-fold predictions at the best K against the mean observed score, with counts."""
    fig, axes = _grid(len(results))
    for ax, result in zip(axes, results):
        predicted = result.predicted[result.best_k]
        observed = np.broadcast_to(result.observed, predicted.shape)
        bins = calibration_bins(observed, predicted)
        ax.plot([1, 5], [1, 5], color="grey", linewidth=1, linestyle="--", label="perfect calibration")
        ax.errorbar(bins.predicted, bins.observed, yerr=bins.standard_error, marker="o", capsize=3,
                    color=COLOURS[0], label="mean observed ± 1 SE")
        for x, y, n in zip(bins.predicted, bins.observed, bins.count):
            ax.annotate(f"{n}", (x, y), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=7,
                        color="#444444")
        ax.set_xlim(0.8, 5.2)
        ax.set_ylim(0.8, 5.2)
        ax.set_aspect("equal")
        ax.set_xlabel("predicted score (1–5)")
        ax.set_ylabel("mean observed score (1–5)")
        ax.set_title(f"{result.category} (K={result.best_k})")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    pooled = f"pooled over {repeats} repeats (each sample predicted once per repeat)" if repeats > 1 else \
        "each sample predicted once"
    caption = (f"Calibration at each category's best K: out-of-fold predictions, {pooled}, binned by predicted "
               f"score in bins of {CALIBRATION_BIN:g} score points. Points: mean predicted (x) and mean observed "
               "(y) score of a bin; error bars: ± 1 standard error of the observed mean; numbers: predictions in "
               "the bin. On the dashed diagonal predictions are calibrated; a flatter curve means predictions "
               "are too extreme, a steeper one that they shrink towards the mean.")
    return fig, caption


def groups_figure(groups: list[GroupMatrix]):
    """Mean R² matrices as heat maps on one shared colour scale, each cell with its mean ± sd."""
    fig, axes = _grid(len(groups), 5.5, 4.8, layout="constrained")
    means = [g.mean("r2") for g in groups]
    finite = np.concatenate([m[np.isfinite(m)] for m in means] + [np.array([0.0])])
    low = float(min(0.0, finite.min()))
    high = float(max(finite.max(), low + 1e-9))
    cmap = plt.get_cmap("viridis")
    image = None
    for ax, matrix, mean in zip(axes, groups, means):
        std = matrix.std("r2")
        image = ax.imshow(mean, cmap=cmap, vmin=low, vmax=high)
        train = matrix.train_size()
        ax.set_xticks(range(len(matrix.groups)), [f"{g}\n(test n={n:.0f})" for g, n in
                                                  zip(matrix.groups, matrix.test_size())], fontsize=8)
        ax.set_yticks(range(len(matrix.groups)), [f"{g}\n(train n={n:.0f})" for g, n in zip(matrix.groups, train)],
                      fontsize=8)
        ax.set_xlabel("tested on")
        ax.set_ylabel("trained on")
        for (i, j), value in np.ndenumerate(mean):
            shade = cmap((value - low) / (high - low)) if math.isfinite(value) else (1, 1, 1, 1)
            text = "—" if not math.isfinite(value) else f"{value:.2f}\n± {std[i, j]:.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="black" if _luminance(shade) > 0.5 else "white")
        ax.set_title(f"{matrix.category} (K={matrix.k})")
    fig.colorbar(image, ax=list(axes[:len(groups)]), shrink=0.8, label="R² (no unit), mean over folds")
    folds = groups[0].n_folds
    equalised = " Every group's training part was subsampled to the smallest group's in each fold." \
        if groups[0].equalised else ""
    caption = (f"R² of a KNN model trained on one rater group (rows) and tested on another (columns), mean ± 1 "
               f"standard deviation over {folds} folds (folds grouped by {groups[0].group_by}); n: mean training "
               f"and test samples per fold. All panels share one colour scale.{equalised}")
    return fig, caption


def _luminance(rgba) -> float:
    r, g, b = rgba[:3]
    return 0.2126 * r + 0.7152 * g + 0.0722 * b
