"""Write a cross-validation report: JSON, CSV, PNG plots and one self-contained HTML page.

Files in the report folder (each written atomically):
``report.json`` (settings, every fold's metrics, group matrices), ``report.csv``
(one row per category and model: mean and standard deviation of each metric),
``metrics.png`` (each metric against K per category, error bars = standard
deviation over folds, baselines as dashed lines), ``predicted.png`` (out-of-fold
prediction against observed score at the best K, first repeat), ``residuals.png``
(residual against prediction at the best K), ``groups.png`` (R² matrices, when
groups were compared) and ``report.html`` with the tables and the PNGs embedded
as base64 data URIs.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from percept.atomic import atomic_open, atomic_write_text  # noqa: E402
from percept.study.crossval import METRICS, CategoryResult  # noqa: E402
from percept.study.groups import GroupMatrix  # noqa: E402

METRIC_NAMES = {"mse": "MSE", "rmse": "RMSE", "mae": "MAE", "r2": "R²", "pearson": "Pearson r",
                "spearman": "Spearman ρ"}


def _number(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def report_data(results: list[CategoryResult], settings: dict, groups: list[GroupMatrix] = ()) -> dict:
    """Everything the report holds, as JSON-ready data (NaN becomes null)."""
    categories = []
    for result in results:
        rows = []
        for row in result.rows:
            entry = {"model": row.model, "k": row.k, "best": row.best, "metrics": {
                m: {"mean": _number(row.mean(m)), "std": _number(row.std(m)),
                    "folds": [_number(v) for v in row.folds[m]]} for m in METRICS}}
            if row.alphas:
                entry["alphas"] = row.alphas
            rows.append(entry)
        categories.append({"category": result.category, "samples": result.n_samples,
                           "best_k": result.best_k, "rows": rows})
    return {"settings": settings, "categories": categories, "groups": [{
        "category": g.category, "k": g.k, "groups": g.groups, "n_train": g.n_train.tolist(),
        "n_test": g.n_test.tolist(), "r2": [[_number(v) for v in line] for line in g.r2]} for g in groups]}


def csv_rows(results: list[CategoryResult]) -> list[list]:
    """Header, then one row per category and model."""
    header = ["category", "model", "k", "best", "samples", "folds"]
    header += [f"{m}_{s}" for m in METRICS for s in ("mean", "std")]
    rows = [header]
    for result in results:
        for row in result.rows:
            rows.append([result.category, row.model, "" if row.k is None else row.k, row.best, result.n_samples,
                         len(row.folds["mse"])] + [row.mean(m) if s == "mean" else row.std(m)
                                                   for m in METRICS for s in ("mean", "std")])
    return rows


def metrics_figure(results: list[CategoryResult]):
    """Each metric against K, one line per category, error bars over folds; baselines dashed."""
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric in zip(axes.ravel(), METRICS):
        for i, result in enumerate(results):
            colour = colours[i % len(colours)]
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
        ax.set_xlabel("K")
        ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    handles += [plt.Line2D([], [], color="grey", linestyle="--"), plt.Line2D([], [], color="grey", linestyle=":"),
                plt.Line2D([], [], color="grey", marker="*", linestyle="", markersize=12)]
    labels += ["ridge baseline", "training-mean baseline", "best K"]
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 8))
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def _grid(count: int):
    cols = min(count, 3)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 4.5 * rows), squeeze=False)
    for ax in axes.ravel()[count:]:
        ax.set_visible(False)
    return fig, axes.ravel()


def predicted_figure(results: list[CategoryResult]):
    """Out-of-fold prediction against observed score at each category's best K."""

    def draw(ax, observed, predicted):
        ax.scatter(observed, predicted, s=6, alpha=0.35)
        low = float(np.nanmin([observed.min(), np.nanmin(predicted)]))
        high = float(np.nanmax([observed.max(), np.nanmax(predicted)]))
        ax.plot([low, high], [low, high], color="black", linewidth=1)
        ax.set_xlabel("observed")
        ax.set_ylabel("predicted")

    return _best_k_figure(results, draw)


def residuals_figure(results: list[CategoryResult]):
    """Residual (observed - predicted) against prediction at each category's best K."""

    def draw(ax, observed, predicted):
        ax.scatter(predicted, observed - predicted, s=6, alpha=0.35)
        ax.axhline(0, color="black", linewidth=1)
        ax.set_xlabel("predicted")
        ax.set_ylabel("observed - predicted")

    return _best_k_figure(results, draw)


def _best_k_figure(results: list[CategoryResult], draw):
    """One panel per category, drawn from its out-of-fold predictions at the best K."""
    fig, axes = _grid(len(results))
    for ax, result in zip(axes, results):
        draw(ax, result.observed, result.predicted[result.best_k])
        ax.set_title(f"{result.category} (K={result.best_k})")
    fig.tight_layout()
    return fig


def groups_figure(groups: list[GroupMatrix]):
    """R² matrices as heat maps, each cell labelled with its value."""
    fig, axes = _grid(len(groups))
    for ax, matrix in zip(axes, groups):
        image = ax.imshow(matrix.r2, cmap="viridis")
        labels = [f"{g}\n(train {a}, test {b})" for g, a, b in zip(matrix.groups, matrix.n_train, matrix.n_test)]
        ax.set_xticks(range(len(labels)), [g for g in matrix.groups], rotation=30)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set_xlabel("tested on")
        ax.set_ylabel("trained on")
        for (i, j), value in np.ndenumerate(matrix.r2):
            ax.text(j, i, "—" if not math.isfinite(value) else f"{value:.2f}", ha="center", va="center",
                    color="white")
        ax.set_title(f"{matrix.category} R² (K={matrix.k})")
        fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return fig


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def _cell(value) -> str:
    return "" if isinstance(value, float) and not math.isfinite(value) else (
        f"{value:.4f}" if isinstance(value, float) else html.escape(str(value)))


def html_page(title: str, tables: list[list[list]], images: dict[str, bytes], settings: dict) -> str:
    """A page with the settings, the tables and the PNGs inline (no other files needed)."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}tr.best{font-weight:bold}"
             "img{max-width:100%}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
             "<pre>" + html.escape(json.dumps(settings, indent=2)) + "</pre>"]
    for table in tables:
        header, *rows = table
        best = header.index("best") if "best" in header else None
        parts.append("<table><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
        for row in rows:
            mark = " class='best'" if best is not None and row[best] is True else ""
            parts.append(f"<tr{mark}>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>")
        parts.append("</table>")
    for name, data in images.items():
        encoded = base64.b64encode(data).decode("ascii")
        parts.append(f"<h2>{html.escape(name)}</h2><img alt='{html.escape(name)}' "
                     f"src='data:image/png;base64,{encoded}'>")
    parts.append("</body></html>")
    return "\n".join(parts)


def group_table(matrix: GroupMatrix) -> list[list]:
    header = [f"{matrix.category}: trained on \\ tested on", "train samples"] + [
        f"{g} ({n} test)" for g, n in zip(matrix.groups, matrix.n_test)]
    return [header] + [[g, int(n)] + [float(v) for v in line]
                       for g, n, line in zip(matrix.groups, matrix.n_train, matrix.r2)]


def write_report(folder: str | Path, results: list[CategoryResult], settings: dict,
                 groups: list[GroupMatrix] = ()) -> list[Path]:
    """Write every report file into ``folder``; return their paths."""
    folder = Path(folder)
    written = []

    def put_bytes(name: str, data: bytes) -> None:
        with atomic_open(folder / name, "wb") as handle:
            handle.write(data)
        written.append(folder / name)

    images = {"metrics.png": _png(metrics_figure(results)), "predicted.png": _png(predicted_figure(results)),
              "residuals.png": _png(residuals_figure(results))}
    if groups:
        images["groups.png"] = _png(groups_figure(groups))
    data = report_data(results, settings, groups)
    atomic_write_text(folder / "report.json", json.dumps(data, indent=2, allow_nan=False) + "\n")
    written.append(folder / "report.json")
    table = csv_rows(results)
    with atomic_open(folder / "report.csv", "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(table)
    written.append(folder / "report.csv")
    for name, png in images.items():
        put_bytes(name, png)
    page = html_page("Percept KNN cross-validation", [table] + [group_table(g) for g in groups], images, settings)
    atomic_write_text(folder / "report.html", page)
    written.append(folder / "report.html")
    return written
