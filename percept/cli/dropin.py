"""``clip_retrieval_knn``: the drop-in replacement for the original research script.

Same flags, same printed lines, same results log and export; clear one-line
errors instead of tracebacks.
"""

from __future__ import annotations

import random
from typing import NoReturn

from percept.categories import CATEGORIES
from percept.cli.common import (
    ArgumentParser,
    add_version_argument,
    exit_with,
    k_list,
    progress_bar,
    report_errors,
    stderr_messages,
)
from percept.cli.data_options import add_data_arguments, data_selection
from percept.errors import PerceptError
from percept.model.weighting import DEFAULT_WEIGHTING, check_weighting
from percept.study.dataset import load_dataset
from percept.study.holdout import check_training_split, holdout_evaluation
from percept.study.results_log import append_rows, columns_help, log_row, randomness_label


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="clip_retrieval_knn", description="K-nearest neighbour on CLIP encoded vectors")
    add_version_argument(parser)
    add_data_arguments(parser)
    parser.add_argument("-k", type=k_list, default=[10], metavar="K",
                        help="Value of K (number of nearest neighbours to include in cluster) "
                             "or comma-separated list of k-values to try.")
    parser.add_argument("--training-split", type=float, default=0.8, metavar="FLOAT",
                        help="Portion of data to use for 'training', value between 0 and 1 (default: 0.8)")
    parser.add_argument("--randomize", action="store_true",
                        help="Randomly shuffle the data before splitting into training and testing sets.")
    parser.add_argument("--random-seed", type=int, default=0, metavar="INT", help="Seed for random number generator.")
    parser.add_argument("--stratified", action="store_true", help="Use stratified sampling (stratified by rating).")
    parser.add_argument("--results-log", "-L", metavar="FILENAME",
                        help="Append the results to this file (CSV format, no header; one row per category and K, "
                             f"columns: {columns_help()})")
    parser.add_argument("--normalization-method", metavar="METHOD", default=DEFAULT_WEIGHTING,
                        help="softmax10** (default), softmax, divbysum, softmax**8 or fixed")
    parser.add_argument("--extra-assertions", action="store_true",
                        help="Run additional assertions for testing purposes.")
    parser.add_argument("--export", metavar="FILENAME",
                        help="Instead of running KNN, export numpy arrays with CLIP vectors and scores to the given "
                             "file.")
    return parser


def check_arguments(args) -> None:
    """Flag combinations and values that the parser alone cannot check."""
    check_training_split(args.training_split)
    check_weighting(args.normalization_method)
    if args.read_only and (args.results_log or args.export):
        raise PerceptError("--read-only writes nothing to disk, so it cannot be combined with "
                           "--results-log or --export: drop one of them")


def run(args) -> int:
    check_arguments(args)
    say = stderr_messages(args.quiet)
    data = load_dataset(data_selection(args), say)
    if all(len(s) == 0 for s in data.samples.values()):
        raise PerceptError("no category has any sample after filtering: relax the demographic filters "
                           "or check that the survey holds ratings for these images")
    if args.export:
        export(args, data, say)
        return 0
    rng = random.Random(args.random_seed)
    results = holdout_evaluation(data.vectors, {c: data.samples[c] for c in CATEGORIES}, args.k,
                                 args.training_split, rng if args.randomize else None, args.stratified,
                                 args.normalization_method, say, args.extra_assertions,
                                 progress_bar(args.quiet, "category"))
    for result in results:
        print(f"category = {result.category}; k = {result.k}; mse = {result.mse:.5f}; r2  = {result.r2:.5f}",
              flush=True)
    if args.results_log:
        randomness = randomness_label(args.randomize, args.random_seed)
        append_rows(args.results_log, [log_row(r, args.clip_model, randomness, args.stratified,
                                               args.normalization_method, data.environment) for r in results])
    return 0


def export(args, data, say) -> None:
    """Write every sample's vector and score per category (no split, no KNN), calibrated on folds grouped by image."""
    from percept.study.crossval import CVPlan  # scipy.stats and the publishing code: only an export needs them
    from percept.study.folds import GroupBy
    from percept.study.publish import ModelRecipe, card_path, check_missing, publish_model

    check_missing(data.missing, args.allow_missing)
    recipe = ModelRecipe(args.clip_model, max(args.k), args.normalization_method,
                         CVPlan(group_by=GroupBy("image"), seed=args.random_seed), k_choice="given by -k")
    published = publish_model(args.export, data, recipe, progress_bar(args.quiet, "calibrating"))
    total = sum(row["samples"] for row in published.card["data"].values())
    say(f"exported {total} samples of {len(published.card['data'])} categories to {args.export} "
        f"(model card {published.card['id']}: {card_path(args.export)})")


def main(argv: list[str] | None = None) -> int:
    return report_errors(lambda: run(build_parser().parse_args(argv)))  # --help, too, may meet a closed pipe


def console() -> NoReturn:
    """The ``clip_retrieval_knn`` console script: :func:`main` on the command line, ending the process with its
    status."""
    exit_with(main())


if __name__ == "__main__":
    console()
