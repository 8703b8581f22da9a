"""``percept evaluate``: repeated K-fold cross-validation with baselines, best K, group comparison, report."""

from __future__ import annotations

import argparse
import math

from percept.cli.common import add_hidden_alias, k_list, positive_int, progress_bar
from percept.errors import PerceptError
from percept.model.weighting import DEFAULT_WEIGHTING, check_weighting
from percept.study.crossval import METRICS, CategoryResult, CVPlan, cross_validate
from percept.study.folds import default_group_by, parse_group_by

DEFAULT_KS = "10,20,30,40,50"


def register(subparsers) -> None:
    from percept.cli.data_options import add_data_arguments

    parser = subparsers.add_parser(
        "evaluate", help="cross-validate the KNN model against baselines and pick K",
        description="Repeated K-fold cross-validation per category and K (MSE, RMSE, MAE, R², Pearson, "
                    "Spearman as mean ± standard deviation over folds) beside a training-mean and a ridge "
                    "baseline on the same folds; the best K (lowest mean MSE) is marked with *.")
    add_data_arguments(parser, prompt_encoding="clauses")
    parser.add_argument("-k", type=k_list, default=k_list(DEFAULT_KS), metavar="K[,K...]",
                        help=f"K values to compare (default {DEFAULT_KS})")
    parser.add_argument("--normalization-method", default=DEFAULT_WEIGHTING,
                        help=f"neighbour weighting (default {DEFAULT_WEIGHTING})")
    parser.add_argument("--cv", type=positive_int, default=5, metavar="N", help="folds (default 5)")
    parser.add_argument("--repeats", type=positive_int, default=1, metavar="R",
                        help="repeat the K-fold split R times with fresh shuffles (default 1)")
    parser.add_argument("--stratified", action="store_true", help="balance int(score) over the folds")
    parser.add_argument("--random-seed", type=int, default=0, metavar="INT", help="seed of the fold shuffles (default 0)")
    add_hidden_alias(parser, "--seed", dest="random_seed", type=int)
    parser.add_argument("--group-by", default=None, metavar="none|image|location|block:METRES",
                        help="keep groups of samples in one fold so nothing leaks from training to test: image "
                             "(all ratings of an image), location (all images at the same coordinates, e.g. the "
                             "crops of a panorama), block:METRES (square spatial blocks of that size, in the UTM "
                             "zone of the survey) or none (default: image with -d, else none)")
    parser.add_argument("--group-by-image", dest="group_by", action="store_const", const="image",
                        help=argparse.SUPPRESS)
    parser.add_argument("--no-baselines", action="store_true", help="skip the training-mean and ridge baselines")
    parser.add_argument("--report", metavar="DIR",
                        help="write report.html (summary, settings, captioned figures), report.json, report.csv, "
                             "oof_predictions.csv and every figure as 200 dpi PNG and SVG")
    parser.add_argument("--compare-groups", metavar="SPEC",
                        help="train on each rater group, test on each, over the same repeated folds (mean ± sd of "
                             "MSE and R²): gender, education, region, or age[:18-29,30-49,50-120] (needs -d)")
    parser.add_argument("--equalise", "--equalize", action="store_true",
                        help="with --compare-groups: subsample every group's training part to the smallest "
                             "group's, so group size does not confound the comparison")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from percept.cli.data_options import data_selection
    from percept.study.dataset import load_dataset

    check_weighting(args.normalization_method)
    if args.report and args.read_only:
        raise PerceptError("--read-only writes nothing to disk, so it cannot be combined with --report")
    spec = None
    if args.compare_groups:
        from percept.study.groups import parse_group_spec

        spec = parse_group_spec(args.compare_groups)
        if not args.demographics:
            raise PerceptError("--compare-groups splits individual ratings by rater: give -d/--demographics")
    if args.equalise and not args.compare_groups:
        raise PerceptError("--equalise subsamples the rater groups of --compare-groups: add --compare-groups")
    group_by = parse_group_by(args.group_by) if args.group_by else default_group_by(bool(args.demographics))
    plan = CVPlan(args.cv, args.repeats, args.stratified, group_by, args.random_seed)
    log = (lambda message: None) if args.quiet else print
    dataset = load_dataset(data_selection(args), log)
    results = cross_validate(dataset.vectors, dataset.samples, args.k, plan, args.normalization_method,
                             baselines=not args.no_baselines, progress=progress_bar(args.quiet, "category"),
                             lonlat=dataset.lonlat)
    print(format_table(results))
    print(f"{group_by.describe()} (--group-by {group_by.label}"
          f"{'' if args.group_by else ', the default ' + ('with -d' if args.demographics else 'without -d')})")
    matrices = []
    if spec is not None:
        matrices = _compare(args, dataset, spec, results, plan)
        for matrix in matrices:
            print(format_group_matrix(matrix))
    if args.report:
        from percept.study.report import write_report

        write_report(args.report, results, settings(args, plan), matrices, dataset.names)
        log(f"report written to {args.report}")
    return 0


def _compare(args, dataset, spec, results: list[CategoryResult], plan: CVPlan):
    from percept.study.groups import compare_groups, group_labels

    matrices = []
    for result in results:
        samples = dataset.samples[result.category]
        frame = dataset.rating_rows[result.category]
        matrices.append(compare_groups(dataset.vectors, samples, group_labels(frame, spec), result.best_k,
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
            "compare_groups": args.compare_groups, "equalise": args.equalise}


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
