"""``percept evaluate``: repeated K-fold cross-validation with baselines, best K, group comparison, report."""

from __future__ import annotations

import argparse
import math

from percept.cli.common import k_list, positive_int, progress_bar
from percept.errors import PerceptError
from percept.model.weighting import DEFAULT_WEIGHTING, check_weighting
from percept.study.crossval import METRICS, CategoryResult, CVPlan, cross_validate

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
    parser.add_argument("--seed", type=int, default=0, help="seed of the fold shuffles (default 0)")
    parser.add_argument("--group-by-image", action="store_true",
                        help="keep all ratings of an image in one fold (matters with -d, where an image is "
                             "rated many times; default: folds over individual samples, as the drop-in splits)")
    parser.add_argument("--no-baselines", action="store_true", help="skip the training-mean and ridge baselines")
    parser.add_argument("--report", metavar="DIR", help="write report.json, report.csv, PNG plots and report.html")
    parser.add_argument("--compare-groups", metavar="SPEC",
                        help="train on each rater group, test on each: gender, education, region, or "
                             "age[:18-29,30-49,50-120] (needs -d)")
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
    plan = CVPlan(args.cv, args.repeats, args.stratified, args.group_by_image, args.seed)
    log = (lambda message: None) if args.quiet else print
    dataset = load_dataset(data_selection(args), log)
    results = cross_validate(dataset.vectors, dataset.samples, args.k, plan, args.normalization_method,
                             baselines=not args.no_baselines, progress=progress_bar(args.quiet, "category"))
    print(format_table(results))
    matrices = []
    if spec is not None:
        matrices = _compare(args, dataset, spec, results)
        for matrix in matrices:
            print(format_group_matrix(matrix))
    if args.report:
        from percept.study.report import write_report

        write_report(args.report, results, settings(args, plan), matrices)
        log(f"report written to {args.report}")
    return 0


def _compare(args, dataset, spec, results: list[CategoryResult]):
    from percept.study.groups import compare_groups, group_labels

    matrices = []
    for result in results:
        samples = dataset.samples[result.category]
        frame = dataset.rating_rows[result.category]
        matrices.append(compare_groups(dataset.vectors, samples, group_labels(frame, spec), result.best_k,
                                       result.category, args.normalization_method, args.seed,
                                       args.group_by_image))
    return matrices


def settings(args: argparse.Namespace, plan: CVPlan) -> dict:
    """The options that shaped the results, for the report."""
    return {"geojson": args.geojson, "demographics": args.demographics, "clip_model": args.clip_model,
            "k": args.k, "normalization_method": args.normalization_method, "folds": plan.folds,
            "repeats": plan.repeats, "stratified": plan.stratified, "group_by_image": plan.group_by_image,
            "seed": plan.seed, "filters": {f: getattr(args, f) for f in ("gender", "region", "age", "education")},
            "environmental": f"{args.environmental_method}+p{args.prompt_style}" if args.environmental else None,
            "compare_groups": args.compare_groups}


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
    """R² of training on each group (rows) and testing on each group (columns), with counts."""
    width = max(12, *(len(g) + 2 for g in matrix.groups))
    lines = [f"{matrix.category}: R² by rater group (K={matrix.k}; rows: trained on, columns: tested on)",
             f"{'':<{width}} {'train n':>8} " + " ".join(f"{g:>{width}}" for g in matrix.groups),
             f"{'test n':<{width}} {'':>8} " + " ".join(f"{n:>{width}}" for n in matrix.n_test)]
    for group, n, line in zip(matrix.groups, matrix.n_train, matrix.r2):
        cells = " ".join(f"{('n/a' if not math.isfinite(v) else f'{v:.4f}'):>{width}}" for v in line)
        lines.append(f"{group:<{width}} {n:>8} {cells}")
    return "\n".join(lines)
