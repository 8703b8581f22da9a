"""Write a cross-validation report: JSON, CSV, out-of-fold predictions, figures and one HTML page.

Files in the report folder (each written atomically):

- ``report.json``: title, date, tool version, settings, every fold's metrics, group matrices;
- ``report.csv``: one row per category and model, mean and standard deviation of each metric;
- ``oof_predictions.csv``: every out-of-fold KNN prediction (sample, fold, repeat, category,
  K, observed, predicted, and the sample's image), to re-plot or re-score;
- ``metrics``, ``calibration`` and (with rater groups) ``groups`` figures, each as a
  200 dpi PNG and an SVG;
- ``report.html``: title, date, version, a plain-language summary per category, a settings
  table, the result tables and the figures with captions, self-contained (PNGs inline).
"""

from __future__ import annotations

import base64
import csv
import datetime
import html
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from percept import __version__
from percept.atomic import atomic_open, atomic_write_text
from percept.data.survey import image_name
from percept.study.crossval import METRICS, CategoryResult
from percept.study.groups import GroupMatrix
from percept.study.report_figures import METRIC_NAMES, calibration_figure, groups_figure, metrics_figure
from percept.study.report_sections import ReportSection, json_ready
from percept.study.report_summary import category_summary

TITLE = "Percept KNN cross-validation report"
#: Resolution of the PNG figures.
DPI = 200
SETTING_LABELS = {
    "geojson": "Survey GeoJSON (-g)", "demographics": "Individual ratings (-d)", "clip_model": "CLIP model",
    "k": "K values compared", "normalization_method": "Neighbour weighting", "folds": "Folds per repeat",
    "repeats": "Repeats", "stratified": "Folds stratified by score", "group_by": "Fold grouping (--group-by)",
    "grouping": "What the grouping means", "seed": "Random seed", "filters": "Rating filters",
    "environmental": "Environmental features", "compare_groups": "Rater groups compared",
    "equalise": "Group training parts equalised",
}
OOF_COLUMNS = ("sample", "fold", "repeat", "category", "K", "observed", "predicted", "image")


def _number(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def fold_counts(results: list[CategoryResult]) -> tuple[int, int]:
    """(folds per repeat, repeats) of the cross-validation behind ``results``."""
    first = results[0]
    return int(first.folds.max()) + 1, int(first.folds.shape[0])


def report_data(results: list[CategoryResult], settings: dict, groups: Sequence[GroupMatrix] = (),
                created: str = "") -> dict:
    """Everything the report holds, as JSON-ready data (NaN becomes null)."""
    categories = []
    for result in results:
        rows = []
        for row in result.rows:
            entry: dict[str, object] = {"model": row.model, "k": row.k, "best": row.best, "metrics": {
                m: {"mean": _number(row.mean(m)), "std": _number(row.std(m)),
                    "folds": [_number(v) for v in row.folds[m]]} for m in METRICS}}
            if row.alphas:
                entry["alphas"] = row.alphas
            rows.append(entry)
        categories.append({"category": result.category, "samples": result.n_samples, "best_k": result.best_k,
                           "summary": category_summary(result), "rows": rows})
    return {"title": TITLE, "created": created, "version": __version__, "settings": settings,
            "categories": categories, "groups": [_group_data(g) for g in groups]}


def _group_data(g: GroupMatrix) -> dict:
    def grid(values):
        return [[_number(v) for v in line] for line in values]

    return {"category": g.category, "k": g.k, "groups": g.groups, "group_by": g.group_by, "equalised": g.equalised,
            "folds": g.n_folds, "train_size": g.train_size().tolist(), "test_size": g.test_size().tolist(),
            "r2_mean": grid(g.mean("r2")), "r2_std": grid(g.std("r2")), "mse_mean": grid(g.mean("mse")),
            "mse_std": grid(g.std("mse"))}


def csv_rows(results: list[CategoryResult]) -> list[list[object]]:
    """Header, then one row per category and model."""
    header: list[object] = ["category", "model", "k", "best", "samples", "folds"]
    header += [f"{m}_{s}" for m in METRICS for s in ("mean", "std")]
    rows = [header]
    for result in results:
        for row in result.rows:
            rows.append([result.category, row.model, "" if row.k is None else row.k, row.best, result.n_samples,
                         len(row.folds["mse"])] + [row.mean(m) if s == "mean" else row.std(m)
                                                   for m in METRICS for s in ("mean", "std")])
    return rows


def oof_frame(results: list[CategoryResult], names: list[str] | None = None) -> pd.DataFrame:
    """Every out-of-fold KNN prediction: one row per sample, repeat, category and K."""
    frames = []
    for result in results:
        n = result.n_samples
        image = [image_name(names[r]) for r in result.sample_rows] if names is not None else [""] * n
        for k, predicted in result.predicted.items():
            for repeat, values in enumerate(np.atleast_2d(predicted)):
                frames.append(pd.DataFrame({
                    "sample": np.arange(n), "fold": result.folds[repeat] if result.folds is not None else -1,
                    "repeat": repeat, "category": result.category, "K": k, "observed": result.observed,
                    "predicted": values, "image": image}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(OOF_COLUMNS))


def _save(fig) -> dict[str, bytes]:
    import matplotlib.pyplot as plt

    out = {}
    for kind in ("png", "svg"):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=kind, dpi=DPI)
        out[kind] = buffer.getvalue()
    plt.close(fig)
    return out


def _cell(value) -> str:
    return "" if isinstance(value, float) and not math.isfinite(value) else (
        f"{value:.4f}" if isinstance(value, float) else html.escape(str(value)))


def _setting_value(value) -> str:
    if value is None or value is False:
        return "no" if value is False else "—"
    if value is True:
        return "yes"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    if isinstance(value, dict):
        active = [f"{k} = {v}" for k, v in value.items() if v not in (None, "", False)]
        return "; ".join(active) or "none"
    return str(value)


def settings_table(settings: dict) -> str:
    rows = "".join(f"<tr><th scope='row'>{html.escape(SETTING_LABELS.get(key, key))}</th>"
                   f"<td>{html.escape(_setting_value(value))}</td></tr>" for key, value in settings.items())
    return f"<table class='settings'>{rows}</table>"


def results_table(results: list[CategoryResult]) -> str:
    """Mean ± sd of every metric per category and model; the best K in bold."""
    head = "".join(f"<th>{h}</th>" for h in ("category", "model", "K", "samples", "folds")) + "".join(
        f"<th>{METRIC_NAMES[m]}</th>" for m in METRICS)
    lines = [f"<table class='results'><tr>{head}</tr>"]
    for result in results:
        for row in result.rows:
            shown = [result.category, row.model + (" (best K)" if row.best else ""),
                     "" if row.k is None else row.k, result.n_samples, len(row.folds["mse"])]
            cells = "".join(f"<td>{html.escape(str(c))}</td>" for c in shown)
            cells += "".join(f"<td>{_pm(row.mean(m), row.std(m))}</td>" for m in METRICS)
            mark = " class='best'" if row.best else ""
            lines.append(f"<tr{mark}>{cells}</tr>")
    lines.append("</table><p class='note'>mean ± standard deviation over folds; MSE in squared score points, "
                 "RMSE and MAE in score points (1–5 scale); R², Pearson r and Spearman ρ have no unit.</p>")
    return "\n".join(lines)


def _pm(mean: float, std: float) -> str:
    return "n/a" if not math.isfinite(mean) else f"{mean:.4f} ± {std:.4f}"


def group_table(matrix: GroupMatrix) -> str:
    mean, std, mse, mse_sd = matrix.mean("r2"), matrix.std("r2"), matrix.mean("mse"), matrix.std("mse")
    head = "".join(f"<th>{html.escape(g)}<br>(test n={n:.0f})</th>" for g, n in zip(matrix.groups, matrix.test_size()))
    lines = [(f"<table class='groups'><caption>{html.escape(matrix.category)} (K={matrix.k}): R² and MSE, mean ± sd "
              f"over {matrix.n_folds} folds; rows trained on, columns tested on</caption>"
              f"<tr><th>trained on</th><th>train n</th>{head}</tr>")]
    for i, (group, n) in enumerate(zip(matrix.groups, matrix.train_size())):
        cells = "".join(f"<td>R² {_pm(mean[i, j], std[i, j])}<br>MSE {_pm(mse[i, j], mse_sd[i, j])}</td>"
                        for j in range(len(matrix.groups)))
        lines.append(f"<tr><th scope='row'>{html.escape(group)}</th><td>{n:.0f}</td>{cells}</tr>")
    lines.append("</table>")
    return "\n".join(lines)


STYLE = ("body{font-family:sans-serif;margin:2em auto;max-width:1200px;line-height:1.4}"
         "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px}"
         "table.results td,table.groups td{text-align:right;white-space:nowrap}tr.best{font-weight:bold}"
         "table.settings th{text-align:left;background:#f4f4f4}figure{margin:2em 0}img{max-width:100%}"
         "figcaption{font-size:0.92em;color:#333;max-width:60em}.meta,.note{color:#555}")


def html_page(data: dict, results: list[CategoryResult], groups: Sequence[GroupMatrix],
              figures: list[tuple[str, dict[str, bytes], str]], sections: Sequence[ReportSection] = ()) -> str:
    """The report page; ``figures`` are (file stem, {"png": ..., "svg": ...}, caption)."""
    title = html.escape(data["title"])
    parts = [(f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
              f"<style>{STYLE}</style></head><body>"), f"<h1>{title}</h1>",
             (f"<p class='meta'>Created {html.escape(data['created'])} with Percept KNN version "
              f"{html.escape(data['version'])}.</p>"), "<h2>Summary</h2>"]
    parts += [f"<p>{html.escape(c['summary'])}</p>" for c in data["categories"]]
    parts += ["<h2>Settings</h2>", settings_table(data["settings"]), "<h2>Results</h2>", results_table(results)]
    if groups:
        parts.append("<h2>Rater groups</h2>")
        parts += [group_table(g) for g in groups]
    parts += [section.html() for section in sections]
    parts.append("<h2>Figures</h2>")
    for number, (stem, files, caption) in enumerate(figures, 1):
        encoded = base64.b64encode(files["png"]).decode("ascii")
        parts.append(f"<figure id='{stem}'><img alt='Figure {number}: {html.escape(caption[:80])}…' "
                     f"src='data:image/png;base64,{encoded}'><figcaption><b>Figure {number}.</b> "
                     f"{html.escape(caption)} Files: <a href='{stem}.png'>{stem}.png</a> ({DPI} dpi), "
                     f"<a href='{stem}.svg'>{stem}.svg</a>.</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(folder: str | Path, results: list[CategoryResult], settings: dict,
                 groups: Sequence[GroupMatrix] = (), names: list[str] | None = None,
                 sections: Sequence[ReportSection] = ()) -> list[Path]:
    """Write every report file into ``folder``; return their paths. ``names``: image name of each vector row;
    ``sections``: further sections (page and ``report.json``)."""
    folder = Path(folder)
    written = []

    def put_bytes(name: str, data: bytes) -> None:
        with atomic_open(folder / name, "wb") as handle:
            handle.write(data)
        written.append(folder / name)

    folds, repeats = fold_counts(results)
    figures = [("metrics", *metrics_figure(results, folds, repeats)),
               ("calibration", *calibration_figure(results, repeats))]
    if groups:
        figures.append(("groups", *groups_figure(list(groups))))
    figures = [(stem, _save(fig), caption) for stem, fig, caption in figures]
    created = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z").strip()
    data = report_data(results, settings, groups, created)
    data["sections"] = {section.key: json_ready(section.data) for section in sections}
    atomic_write_text(folder / "report.json", json.dumps(data, indent=2, allow_nan=False) + "\n")
    written.append(folder / "report.json")
    with atomic_open(folder / "report.csv", "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(csv_rows(results))
    written.append(folder / "report.csv")
    with atomic_open(folder / "oof_predictions.csv", "w", encoding="utf-8", newline="") as handle:
        oof_frame(results, names).to_csv(handle, index=False, float_format="%.6g", lineterminator="\n")
    written.append(folder / "oof_predictions.csv")
    for stem, files, _ in figures:
        for kind, content in files.items():
            put_bytes(f"{stem}.{kind}", content)
    atomic_write_text(folder / "report.html", html_page(data, results, list(groups), figures, list(sections)))
    written.append(folder / "report.html")
    return written
