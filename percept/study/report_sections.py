"""Optional sections of the cross-validation report: each one titled table in the page and one entry in
``report.json``. Every number a reader sees says how far it can be trusted, so the sections cover what
was dropped, the prediction intervals' coverage, the published model's card and further checks.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

from percept.data.missing import MissingImages
from percept.study.calibration import CalibrationResult


@dataclass(frozen=True)
class ReportSection:
    """One section: its key in ``report.json``, title, lead paragraph, table (header, rows) and data."""

    key: str
    title: str
    lead: str
    header: list[str]
    rows: list[list]
    data: dict | list

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(_text(v))}</td>" for v in row) + "</tr>" for row in self.rows)
        table = f"<table class='results'><tr>{head}</tr>{body}</table>" if self.rows else ""
        return f"<h2 id='{self.key}'>{html.escape(self.title)}</h2><p>{html.escape(self.lead)}</p>{table}"


def json_ready(value):
    """``value`` with every non-finite float replaced by None (report.json allows no NaN)."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _text(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _share(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.1%}"


def dropped_section(missing: MissingImages) -> ReportSection:
    """Survey images and ratings dropped for lack of an embedding, per category."""
    rows = [[c, d.images, d.dropped_images, _share(d.share), d.ratings, d.dropped_ratings]
            for c, d in missing.by_category.items()]
    lead = ("Rated survey images without an embedding (a failed download, say) cannot be used. "
            + ("None were dropped." if not missing.any else f"The first one missing: {missing.first}."))
    return ReportSection("dropped", "Survey images dropped", lead,
                         ["category", "rated images", "dropped images", "share", "ratings", "dropped ratings"],
                         rows, missing.as_dict())


def coverage_section(calibrated: CalibrationResult, k: int) -> ReportSection:
    """Empirical coverage of the calibrated intervals on the folds, in and out of the survey's domain."""
    rows, data = [], {}
    for category, coverage in calibrated.coverage.items():
        found = coverage.as_dict()
        data[category] = found
        rows.append([category, _share(found["coverage"]), found["samples"], _share(found["coverage_in_domain"]),
                     found["samples_in_domain"], _share(found["coverage_out_of_domain"]),
                     found["samples_out_of_domain"], found["mean_width"]])
    level = next(iter(calibrated.coverage.values())).level if calibrated.coverage else 0.9
    plan = calibrated.plan
    lead = (f"Prediction intervals at {level:.0%} for K = {k}, calibrated by conformal prediction on out-of-fold "
            f"predictions ({plan.folds} folds, {plan.group_by.describe()}). Each fold's intervals are calibrated "
            "on the other folds only and checked against the fold's scores; 'outside the domain' are samples less "
            "like their training part than 95 % of the survey's images are like each other.")
    return ReportSection("intervals", "Prediction intervals: coverage on the folds", lead,
                         ["category", "coverage", "samples", "in the domain", "samples", "outside it", "samples",
                          "mean width"], rows, {"level": level, "k": k, "categories": data})


def card_section(card: dict, path: str) -> ReportSection:
    """The published model and its card."""
    lead = (f"The model of this configuration was written to {path} with model card {card['id']} "
            f"(K = {card['model']['k']}: {card['model']['k_choice']}).")
    return ReportSection("model_card", "Published model", lead, [], [], {"id": card["id"], "path": path})


def transfer_section(transfer: dict, path: str) -> ReportSection:
    """Scores of the model trained on this survey on another survey's images and ratings."""
    rows = [[c, t.samples, t.mse, t.r2, _share(t.coverage), t.mean_width, _share(t.out_of_domain)]
            for c, t in transfer.items()]
    lead = (f"The evaluated configuration, trained on all of this survey, scored on {path}: how well a model "
            "carries to another city, how often its intervals covered the other survey's scores, and how much of "
            "the other survey lies outside this survey's domain.")
    return ReportSection("test_survey", "Another survey", lead,
                         ["category", "samples", "MSE", "R²", "coverage", "mean width", "outside the domain"],
                         rows, {"survey": path, "categories": {c: t.as_dict() for c, t in transfer.items()}})


def folds_section(results: list, values=None, column: str | None = None) -> ReportSection:
    """Each fold's size and the best K's MSE and R² on it; with ``values`` (a survey property per vector
    row, e.g. the city of --group-by column:city), the values each fold holds: leave-one-city-out scores."""
    rows, data = [], []
    for result in results:
        best = next(r for r in result.knn if r.best)
        n_folds = int(result.folds.max()) + 1
        for repeat, fold_of in enumerate(result.folds):
            for fold in range(n_folds):
                members = fold_of == fold
                held = "" if values is None else ", ".join(sorted({str(v) for v in values[result.sample_rows[members]]}))
                number = repeat * n_folds + fold
                entry = {"category": result.category, "repeat": repeat + 1, "fold": fold + 1, "held_out": held,
                         "samples": int(members.sum()), "k": best.k, "mse": best.folds["mse"][number],
                         "r2": best.folds["r2"][number]}
                data.append(entry)
                rows.append([entry[key] for key in ("category", "repeat", "fold", "held_out", "samples", "k", "mse",
                                                    "r2")])
    what = f"the values of {column!r} it holds (trained on the others)" if column else "its size"
    lead = f"The best K's scores on each test fold, with {what}."
    return ReportSection("folds", "Scores per fold", lead,
                         ["category", "repeat", "fold", column or "held out", "samples", "K", "MSE", "R²"], rows, data)
