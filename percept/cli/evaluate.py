"""``percept evaluate``: repeated K-fold cross-validation with baselines, best K, group comparison, report."""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path

from percept.cli.common import add_hidden_alias, k_list, positive_int, progress_bar
from percept.errors import PerceptError
from percept.extras import require
from percept.model.weighting import DEFAULT_WEIGHTING, check_weighting
from percept.study.crossval import METRICS, CategoryResult, CVPlan, cross_validate
from percept.study.fold_sizes import fold_size_warnings, format_fold_sizes
from percept.study.folds import default_group_by, parse_group_by
from percept.study.publish import card_path, check_missing
from percept.study.score_intervals import score_intervals

DEFAULT_KS = "10,20,30,40,50"


def register(subparsers) -> None:
    from percept.cli.data_options import add_data_arguments

    parser = subparsers.add_parser(
        "evaluate", help="cross-validate the KNN model against baselines and pick K",
        description="Repeated K-fold cross-validation per category and K (MSE, RMSE, MAE, R², Pearson, "
                    "Spearman as mean ± standard deviation over folds) beside a training-mean and a ridge "
                    "baseline on the same folds; the best K (lowest mean MSE) is marked with *.")
    add_data_arguments(parser)
    parser.add_argument("-k", type=k_list, default=k_list(DEFAULT_KS), metavar="K[,K...]",
                        help=f"K values to compare (default {DEFAULT_KS})")
    parser.add_argument("--normalization-method", default=DEFAULT_WEIGHTING,
                        help=f"neighbour weighting (default {DEFAULT_WEIGHTING})")
    parser.add_argument("--cv", type=positive_int, default=5, metavar="N", help="folds (default 5)")
    parser.add_argument("--repeats", type=positive_int, default=1, metavar="R",
                        help="repeat the K-fold split R times with fresh shuffles (default 1)")
    parser.add_argument("--stratified", action="store_true", help="balance int(score) over the folds")
    parser.add_argument("--random-seed", type=int, default=0, metavar="INT",
                        help="seed of the fold shuffles (default 0)")
    add_hidden_alias(parser, "--seed", dest="random_seed", type=int)
    parser.add_argument("--group-by", default=None, metavar="none|image|location|block:METRES|column:NAME",
                        help="keep groups of samples in one fold so nothing leaks from training to test: image "
                             "(all ratings of an image), location (all images at the same coordinates, e.g. the "
                             "crops of a panorama), block:METRES (square spatial blocks of that size, in the UTM "
                             "zone of the survey), column:NAME (all images with the same value of survey "
                             "feature property NAME, e.g. column:city) or none (default: image with -d, else none)")
    parser.add_argument("--group-by-image", dest="group_by", action="store_const", const="image",
                        help=argparse.SUPPRESS)
    parser.add_argument("--no-baselines", action="store_true", help="skip the training-mean and ridge baselines")
    parser.add_argument("--no-nested", action="store_true",
                        help="skip the nested cross-validation that scores choosing K without peeking (it runs "
                             "when more than one K is compared)")
    parser.add_argument("--report", metavar="DIR",
                        help="write report.html (summary, settings, captioned figures), report.json, report.csv, "
                             "oof_predictions.csv and every figure as 200 dpi PNG and SVG")
    parser.add_argument("--export", metavar="FILE",
                        help="write the model of exactly this configuration (filters, environment, prompt encoding, "
                             "weighting, the K with the lowest mean MSE over the categories) to FILE (model.npz, "
                             "the drop-in's format), with prediction intervals calibrated on folds grouped as "
                             "--group-by, and its model card (in the file and as FILE.card.md)")
    parser.add_argument("--test-survey", metavar="OTHER.geojson",
                        help="train on this survey and score another (another city): MSE, R², interval coverage and "
                             "the share outside the training survey's domain, per category")
    parser.add_argument("--test-demographics", metavar="CSV",
                        help="with --test-survey: the other survey's individual ratings (the -d filters apply)")
    parser.add_argument("--test-embeddings", metavar="DIR",
                        help="with --test-survey: the other survey's embeddings (default: those of -e)")
    parser.add_argument("--compare-groups", metavar="SPEC",
                        help="train on each rater group, test on each, over the same repeated folds (mean ± sd of "
                             "MSE and R²): gender, education, region, or age[:18-29,30-49,50-120] (needs -d)")
    parser.add_argument("--equalise", "--equalize", action="store_true",
                        help="with --compare-groups: subsample every group's training part to the smallest "
                             "group's, so group size does not confound the comparison")
    parser.add_argument("--min-group", type=positive_int, metavar="N",
                        help="with --compare-groups gender or education: merge the answers given in fewer than N "
                             "ratings into 'other' (more than 12 groups are refused)")
    parser.add_argument("--home-country", metavar="CODE[,NAME...]",
                        help="with --compare-groups region: the home group (default NL, by the --region rule); "
                             "a rating is from CODE when its country reads CODE or one of the NAMEs, e.g. "
                             "DE,Germany,Deutschland; the other group is non-CODE")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from percept.cli.data_options import data_selection
    from percept.study.dataset import load_dataset

    check_weighting(args.normalization_method)
    if args.report:
        require("maps", "matplotlib", "evaluate --report")
    if (args.report or args.export) and args.read_only:
        raise PerceptError("--read-only writes nothing to disk, so it cannot be combined with --report or --export")
    spec = None
    if args.compare_groups:
        from percept.study.groups import parse_group_spec

        spec = parse_group_spec(args.compare_groups, args.home_country, args.min_group)
        if not args.demographics:
            raise PerceptError("--compare-groups splits individual ratings by rater: give -d/--demographics")
    for flag, given in (("--equalise", args.equalise), ("--min-group", args.min_group is not None),
                        ("--home-country", args.home_country is not None)):
        if given and not args.compare_groups:
            raise PerceptError(f"{flag} shapes the rater groups of --compare-groups: add --compare-groups")
    group_by = parse_group_by(args.group_by) if args.group_by else default_group_by(bool(args.demographics))
    log = (lambda message: None) if args.quiet else print
    selection = data_selection(args)
    column = group_by.column if group_by.kind == "column" else None
    if column is not None:
        selection = dataclasses.replace(selection, properties=(column,))
    dataset = load_dataset(selection, log)
    check_missing(dataset.missing, args.allow_missing)
    if column is not None:
        group_by = group_by.with_values(dataset.properties(column))
    plan = CVPlan(args.cv, args.repeats, args.stratified, group_by, args.random_seed)
    results = cross_validate(dataset.vectors, dataset.samples, args.k, plan, args.normalization_method,
                             baselines=not args.no_baselines, progress=progress_bar(args.quiet, "category"),
                             lonlat=dataset.lonlat)
    print(format_table(results))
    print(format_fold_sizes({r.category: r.folds for r in results}))
    fold_warnings = [w for r in results for w in fold_size_warnings(r.folds, r.category)]
    for warning in fold_warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{group_by.describe()} (--group-by {group_by.label}"
          f"{'' if args.group_by else ', the default ' + ('with -d' if args.demographics else 'without -d')})")
    intervals = score_intervals(results, plan, dataset.lonlat)
    print(format_intervals(results, intervals))
    nested = None
    if len(set(args.k)) > 1 and not args.no_nested:
        from percept.study.nested import nested_cross_validate

        try:
            nested = nested_cross_validate(dataset.vectors, dataset.samples, args.k, plan, args.normalization_method,
                                           dataset.lonlat, progress=progress_bar(args.quiet, "nested"))
            print(format_nested(nested))
        except PerceptError as exc:  # too few groups to split a training part again: the rest still stands
            print(f"warning: {exc}; nested cross-validation skipped", file=sys.stderr)
    reliability = _reliability(args, dataset, spec) if args.demographics else None
    matrices = []
    if spec is not None:
        matrices = _compare(args, dataset, spec, results, plan)
        for matrix in matrices:
            print(format_group_matrix(matrix))
    published = None
    if args.export:
        published = _export(args, dataset, results, plan, intervals)
        log(f"model written to {args.export} (K={published.card['model']['k']}; model card {published.card['id']}: "
            f"{card_path(args.export)})")
    transfer = None
    if args.test_survey:
        transfer = _transfer(args, selection, dataset, results, plan, published, log)
        print(format_transfer(transfer, args.test_survey))
    if args.report:
        from percept.study.publish import calibrate_dataset, evaluated_k
        from percept.study.report import write_report
        from percept.study.report_sections import (
            card_section,
            coverage_section,
            dropped_section,
            folds_section,
            nested_section,
            reliability_section,
            scores_section,
            transfer_section,
        )

        k = published.card["model"]["k"] if published else evaluated_k(results)
        calibrated = published.calibration if published else calibrate_dataset(
            dataset, k, args.normalization_method, plan, progress=progress_bar(args.quiet, "calibrating"))
        column = plan.group_by.column if plan.group_by.kind == "column" else None
        sections = [scores_section(intervals, plan.group_by.describe()), coverage_section(calibrated, k),
                    folds_section(results, dataset.properties(column) if column else None, column)]
        if nested is not None:
            sections.append(nested_section(nested))
        if reliability is not None:
            sections.append(reliability_section(reliability))
        if dataset.missing is not None:
            sections.append(dropped_section(dataset.missing))
        if published:
            sections.append(card_section(published.card, args.export))
        if transfer is not None:
            sections.append(transfer_section(transfer, args.test_survey))

        write_report(args.report, results, settings(args, plan) | {"warnings": fold_warnings}, matrices,
                     dataset.names, sections)
        log(f"report written to {args.report}")
    return 0


def _export(args, dataset, results: list[CategoryResult], plan: CVPlan, intervals: dict):
    """Publish the evaluated configuration with the K that did best over all categories."""
    from percept.study.publish import ModelRecipe, evaluated_k, evaluation_summary, publish_model

    k = evaluated_k(results)
    recipe = ModelRecipe(args.clip_model, k, args.normalization_method, plan,
                         k_choice=f"lowest mean MSE over the categories in {plan.repeats}x{plan.folds}-fold "
                                  f"cross-validation, from K = {', '.join(map(str, sorted(set(args.k))))}",
                         evaluation=evaluation_summary(results, plan, k, intervals))
    if k in (min(args.k), max(args.k)) and len(set(args.k)) > 1:
        print(f"warning: the chosen K = {k} sits at the edge of the grid {sorted(set(args.k))}: try K beyond it",
              file=sys.stderr)
    return publish_model(args.export, dataset, recipe, progress_bar(args.quiet, "calibrating"))


def _reliability(args, dataset, spec):
    """Inter-rater reliability of the (filtered) ratings, with rater groups' offsets under --compare-groups."""
    import pandas as pd

    from percept.study.reliability import survey_reliability

    frames = [frame for frame in dataset.rating_rows.values() if len(frame)]
    if not frames:
        return None
    ratings = pd.concat(frames, ignore_index=True)
    rater = next((c for c in ("rater", "session_id") if c in ratings.columns), None)
    labels = None
    if spec is not None:
        from percept.study.groups import group_labels

        labels = group_labels(ratings, spec)
    found = survey_reliability(ratings, rater, labels, seed=args.random_seed,
                               progress=progress_bar(args.quiet, "reliability"))
    print(format_reliability(found))
    return found


def format_intervals(results: list[CategoryResult], intervals: dict) -> str:
    """The best K's pooled MSE and R² with their 95 % intervals, per category."""
    lines = []
    for result in results:
        found = intervals[result.category][result.best_k]
        lines.append(f"{result.category:<13} K={result.best_k:<4} "
                     + _scores_with_intervals(found["mse"], found["mse_ci"], found["r2"], found["r2_ci"]))
    return "\n".join(lines + ["pooled out-of-fold scores of the best K, 95 % intervals resampling the fold groups"])


def _scores_with_intervals(mse: float, mse_ci, r2: float, r2_ci) -> str:
    """``MSE 1.2345 [1.1, 1.4]  R2 0.3 [0.2, 0.4]``."""
    return f"MSE {mse:.4f} [{mse_ci[0]:.4f}, {mse_ci[1]:.4f}]  R2 {r2:.4f} [{r2_ci[0]:.4f}, {r2_ci[1]:.4f}]"


def format_nested(nested) -> str:
    """Nested cross-validation per category: outer scores, intervals and the K each outer fold chose."""
    lines = []
    for result in nested:
        chosen = ", ".join(f"{k}:{n}" for k, n in result.k_counts.items())
        edge = "  (at the edge of the grid: widen it)" if result.edge_majority else ""
        scores = _scores_with_intervals(result.pooled["mse"], result.intervals["mse"], result.pooled["r2"],
                                        result.intervals["r2"])
        lines.append(f"{result.category:<13} nested {scores}  K chosen {chosen}{edge}")
    return "\n".join(lines + ["nested cross-validation: K chosen inside each outer training part (K:folds)"])


def format_reliability(found) -> str:
    """Alpha, ICC(2,k) and the R² ceiling per category."""
    lines = []
    for r in found:
        lines.append(f"{r.category:<13} alpha {r.alpha.value:.3f} [{r.alpha.low:.3f}, {r.alpha.high:.3f}]  "
                     f"ICC(2,k) {r.icc2k.value:.3f} [{r.icc2k.low:.3f}, {r.icc2k.high:.3f}]  "
                     f"R2 ceiling {r.ceiling.value:.3f}")
    return "\n".join(lines + ["inter-rater reliability (ordinal Krippendorff alpha, ICC(2,k) of image means; "
                               "95 % bootstrap intervals over images)"])


def _transfer(args, selection, dataset, results, plan: CVPlan, published, log):
    """Scores of the evaluated configuration, trained on all of this survey, on the survey of --test-survey."""
    from percept.data.filters import RatingFilter
    from percept.study.dataset import load_dataset
    from percept.study.publish import ModelRecipe, assemble_model, evaluated_k
    from percept.study.transfer import score_other_survey

    encoding = dataclasses.replace(selection.encoding, images_dir=None,
                                   embeddings_dir=args.test_embeddings or selection.encoding.embeddings_dir)
    other = load_dataset(dataclasses.replace(
        selection, geojson=Path(args.test_survey), encoding=encoding,
        demographics=Path(args.test_demographics) if args.test_demographics else None,
        filters=selection.filters if args.test_demographics else RatingFilter(), properties=()), log)
    check_missing(other.missing, args.allow_missing)
    model = published.model if published else assemble_model(
        dataset, ModelRecipe(args.clip_model, evaluated_k(results), args.normalization_method, plan),
        progress_bar(args.quiet, "calibrating")).model
    return score_other_survey(model, other)


def format_transfer(transfer: dict, path: str) -> str:
    """One line per category of the scores on another survey."""
    lines = [f"trained on this survey, scored on {path}:",
             f"{'category':<13} {'n':>6} {'MSE':>8} {'R2':>8} {'coverage':>9} {'outside domain':>15}"]
    for category, found in transfer.items():
        coverage = "n/a" if not math.isfinite(found.coverage) else f"{found.coverage:.1%}"
        lines.append(f"{category:<13} {found.samples:>6} {found.mse:>8.4f} {found.r2:>8.4f} {coverage:>9} "
                     f"{found.out_of_domain:>15.1%}")
    return "\n".join(lines)


def _compare(args, dataset, spec, results: list[CategoryResult], plan: CVPlan):
    from percept.study.groups import compare_groups, rater_groups

    labels = rater_groups({r.category: dataset.rating_rows[r.category] for r in results}, spec)
    matrices = []
    for result in results:
        samples = dataset.samples[result.category]
        matrices.append(compare_groups(dataset.vectors, samples, labels[result.category], result.best_k,
                                       result.category, args.normalization_method, plan, args.equalise,
                                       dataset.lonlat))
    return matrices


def settings(args: argparse.Namespace, plan: CVPlan) -> dict:
    """The options that shaped the results, for the report."""
    return {"geojson": args.geojson, "demographics": args.demographics, "clip_model": args.clip_model,
            "k": args.k, "normalization_method": args.normalization_method, "folds": plan.folds,
            "repeats": plan.repeats, "stratified": plan.stratified, "group_by": plan.group_by.label,
            "grouping": plan.group_by.describe(), "seed": plan.seed,
            "filters": {f: getattr(args, f) for f in ("gender", "region", "age", "education")},
            "environmental": f"{args.environmental_method}+p{args.prompt_style}" if args.environmental else None,
            "prompt_encoding": args.prompt_encoding if args.environmental else None,
            "compare_groups": args.compare_groups, "equalise": args.equalise, "min_group": args.min_group,
            "home_country": args.home_country}


def _pm(mean: float, std: float) -> str:
    return "n/a" if not math.isfinite(mean) else f"{mean:.4f} ± {std:.4f}"


def format_table(results: list[CategoryResult]) -> str:
    """One line per category and model; the best K marked with ``*``."""
    names = {"mse": "MSE", "rmse": "RMSE", "mae": "MAE", "r2": "R2", "pearson": "Pearson", "spearman": "Spearman"}
    header = f"{'category':<13} {'model':<12} {'n':>6}  " + "  ".join(f"{names[m]:>17}" for m in METRICS)
    lines = [header, "-" * len(header)]
    for result in results:
        for row in result.rows:
            label = row.label + (" *" if row.best else "")
            lines.append(f"{result.category:<13} {label:<12} {result.n_samples:>6}  "
                         + "  ".join(f"{_pm(row.mean(m), row.std(m)):>17}" for m in METRICS))
    folds = len(results[0].rows[0].folds["mse"]) if results else 0
    lines.append(f"mean ± standard deviation over {folds} folds; * = best K (lowest mean MSE)")
    return "\n".join(lines)


def format_group_matrix(matrix) -> str:
    """MSE and R² (mean ± sd over folds) of training on each group (rows) and testing on each (columns)."""
    width = max(19, *(len(g) + 2 for g in matrix.groups))
    how = "training parts equalised to the smallest group, " if matrix.equalised else ""
    lines = [(f"{matrix.category}: by rater group (K={matrix.k}; rows: trained on, columns: tested on; "
              f"mean ± sd over {matrix.n_folds} folds, {how}--group-by {matrix.group_by})"),
             f"{'':<{width}} {'train n':>8} " + " ".join(f"{g:>{width}}" for g in matrix.groups),
             f"{'test n':<{width}} {'':>8} " + " ".join(f"{n:>{width}.0f}" for n in matrix.test_size())]
    for metric, name in (("r2", "R²"), ("mse", "MSE")):
        mean, std = matrix.mean(metric), matrix.std(metric)
        for group, n, means, stds in zip(matrix.groups, matrix.train_size(), mean, std):
            cells = " ".join(f"{_pm(m, s):>{width}}" for m, s in zip(means, stds))
            lines.append(f"{name + ' ' + group:<{width}} {n:>8.0f} {cells}")
    lines.append("train n, test n: mean samples per fold")
    return "\n".join(lines)
