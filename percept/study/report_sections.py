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
        body = "".join("<tr>" + "".join(f"<td>{html.escape(_text(v))}</td>" for v in row) + "</tr>"
                       for row in self.rows)
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
                held = "" if values is None else ", ".join(
                    sorted({str(v) for v in values[result.sample_rows[members]]}))
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


def _interval(pair) -> str:
    return "n/a" if pair is None or not all(math.isfinite(v) for v in pair) else f"{pair[0]:.4f} – {pair[1]:.4f}"


def scores_section(intervals: dict[str, dict[int, dict]], grouping: str) -> ReportSection:
    """Each category's and K's pooled out-of-fold MSE and R² with 95 % cluster-bootstrap intervals."""
    rows, data = [], {}
    for category, by_k in intervals.items():
        data[category] = {str(k): v for k, v in by_k.items()}
        for k, found in by_k.items():
            rows.append([category, k, found["mse"], _interval(found["mse_ci"]), found["r2"], _interval(found["r2_ci"])])
    lead = ("MSE and R² of the pooled out-of-fold predictions (averaged over repeats) with 95 % intervals from a "
            f"bootstrap that resamples the cross-validation groups ({grouping}), not single ratings.")
    return ReportSection("scores", "Scores with 95 % intervals", lead,
                         ["category", "K", "MSE", "95 % interval", "R²", "95 % interval"], rows, data)


def nested_section(nested: list) -> ReportSection:
    """K chosen without peeking: nested cross-validation's outer scores and how often each K was chosen."""
    rows, data = [], {}
    for result in nested:
        counts = result.k_counts
        edge = ("at the edge of the grid in most folds: widen the grid" if result.edge_majority
                else "at the edge in some folds" if result.edge_chosen else "inside the grid")
        rows.append([result.category, result.pooled["mse"], _interval(result.intervals["mse"]), result.pooled["r2"],
                     _interval(result.intervals["r2"]), ", ".join(f"K={k}: {n}" for k, n in counts.items()), edge])
        data[result.category] = {"mse": result.pooled["mse"], "mse_ci": list(result.intervals["mse"]),
                                 "r2": result.pooled["r2"], "r2_ci": list(result.intervals["r2"]),
                                 "outer_mse": result.outer_mse.tolist(), "outer_r2": result.outer_r2.tolist(),
                                 "chosen_k": result.chosen_k.tolist(),
                                 "k_counts": {str(k): n for k, n in counts.items()},
                                 "edge_chosen": result.edge_chosen, "edge_majority": result.edge_majority}
    lead = ("K chosen inside each outer training part by an inner cross-validation, then scored on the outer test "
            "fold: the honest score of choosing K this way (ordinary cross-validation reports the best K on the "
            "same folds it chose it on).")
    return ReportSection("nested", "Nested cross-validation", lead,
                         ["category", "MSE", "95 % interval", "R²", "95 % interval", "K chosen (folds)", "choice"],
                         rows, data)


def reliability_section(reliability: list) -> ReportSection:
    """Inter-rater reliability per category, the R² ceiling it implies, and rater groups' offsets."""
    rows, data = [], {}
    for found in reliability:
        def estimate(e):
            return {"value": e.value, "low": e.low, "high": e.high}

        rows.append([found.category, found.ratings, found.repeated_images, found.alpha.value,
                     _interval((found.alpha.low, found.alpha.high)), found.icc2k.value,
                     _interval((found.icc2k.low, found.icc2k.high)), found.ceiling.value,
                     "; ".join(f"{o.group}: {o.offset.value:+.2f} ({o.offset.low:+.2f} to {o.offset.high:+.2f})"
                               for o in found.offsets)])
        data[found.category] = {"ratings": found.ratings, "images": found.images,
                                "repeated_images": found.repeated_images, "raters": found.raters,
                                "alpha": estimate(found.alpha), "icc2k": estimate(found.icc2k),
                                "icc21": estimate(found.icc21), "r2_ceiling": estimate(found.ceiling),
                                "offsets": {o.group: {**estimate(o.offset), "ratings": o.ratings, "images": o.images}
                                            for o in found.offsets}}
    lead = ("How much raters agree: Krippendorff's alpha (ordinal) and ICC(2,k) of image means, with 95 % bootstrap "
            "intervals over images; the R² a perfect model could reach against the noisy image means (the noise "
            "ceiling); and each rater group's mean offset from the other raters of the same images.")
    return ReportSection("reliability", "Raters", lead,
                         ["category", "ratings", "images rated twice+", "alpha", "95 % interval", "ICC(2,k)",
                          "95 % interval", "R² ceiling", "group offsets"], rows, data)
