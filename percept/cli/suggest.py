"""``percept suggest``: which images of a city people should rate next, as a ranked CSV."""

from __future__ import annotations

import sys

from percept.cli.common import add_interval_argument, positive_int
from percept.errors import PerceptError


def register(subparsers) -> None:
    from percept.city.suggest import DEFAULT_DUPLICATE_SIMILARITY, DEFAULT_NEIGHBOURS, DEFAULT_STRATEGY, STRATEGIES
    from percept.city.suggest_io import DEFAULT_POOL

    parser = subparsers.add_parser(
        "suggest", help="pick the images whose ratings would most improve the model where it is used",
        description="Pick N images of a city's imagery to rate next: far from what the survey covers, standing "
                    "for many other images (never outliers), spread over the embedding space and, with "
                    "--per-cell, over the map; never a survey image, another crop of a survey or picked "
                    "panorama, or a near-duplicate of a pick. Writes a CSV of rank, image, lon, lat, angle, "
                    "dissimilarity, best_similarity, out_of_domain, represents (the other candidates it brings "
                    "nearer to a rated image), width (the mean prediction-interval width) and reason.")
    parser.add_argument("--model", required=True, metavar="MODEL.npz", help="model exported with --export")
    parser.add_argument("-e", "--embeddings-dir", dest="embeddings", required=True, metavar="DIR",
                        help="the city's image embeddings (clip-retrieval layout, e.g. from 'percept collect' "
                             "and 'percept encode')")
    parser.add_argument("--locations", metavar="FILE",
                        help="GeoJSON or CSV: image name → lon, lat (optionally angle), written into the CSV")
    parser.add_argument("-n", type=positive_int, required=True, metavar="N", help="how many images to suggest")
    parser.add_argument("-o", "--out", required=True, metavar="FILE.csv", help="the suggestions (CSV)")
    parser.add_argument("--strategy", choices=STRATEGIES, default=DEFAULT_STRATEGY,
                        help="coverage: of the embedding space, weighted by density; uncertainty: weighted by the "
                             "model's interval width; mixed (default): coverage weighted by the interval width "
                             "where the model has intervals")
    parser.add_argument("--per-cell", metavar="h3:RES",
                        help="at most --max-per-cell picks per H3 cell of resolution RES (needs --locations; "
                             "images without a location are then not picked)")
    parser.add_argument("--max-per-cell", type=positive_int, default=1, metavar="N",
                        help="picks allowed per cell with --per-cell (default 1)")
    parser.add_argument("--random-seed", type=int, default=0, metavar="SEED",
                        help="breaks ties and draws the --pool sample; the same seed gives the same picks (default 0)")
    parser.add_argument("--pool", type=positive_int, default=DEFAULT_POOL, metavar="N",
                        help=f"consider a random sample of N of the city's images when it has more "
                             f"(default {DEFAULT_POOL})")
    parser.add_argument("--neighbours", type=positive_int, default=DEFAULT_NEIGHBOURS, metavar="K",
                        help=f"nearest candidates each candidate lists, which a pick can stand for "
                             f"(default {DEFAULT_NEIGHBOURS})")
    parser.add_argument("--duplicate-similarity", type=float, default=DEFAULT_DUPLICATE_SIMILARITY, metavar="S",
                        help=f"cosine similarity at or above which an image is a near-duplicate of a pick or a survey "
                             f"image (default {DEFAULT_DUPLICATE_SIMILARITY:g})")
    parser.add_argument("--text-embeddings", metavar="DIR",
                        help="environmental prompt vectors, row for row with the images (environmental models)")
    add_interval_argument(parser)
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")
    parser.set_defaults(run=run)


def parse_cells(text: str | None) -> int | None:
    """``h3:RES`` → RES (0–15); None stays None."""
    if text is None:
        return None
    kind, _, res = text.strip().partition(":")
    if kind != "h3" or not res.strip().isdigit() or not 0 <= int(res) <= 15:
        raise PerceptError(f"--per-cell takes h3:RES with RES from 0 to 15 (e.g. h3:9, cells of ~0.1 km²), "
                           f"got {text!r}")
    return int(res)


def run(args) -> int:
    from percept.city.suggest import SuggestOptions
    from percept.city.suggest_io import suggest_images
    from percept.model.io import load_model

    resolution = parse_cells(args.per_cell)
    options = SuggestOptions(args.n, args.strategy, args.random_seed,
                             args.max_per_cell if resolution is not None else None, args.duplicate_similarity,
                             args.neighbours)
    model = load_model(args.model)
    locations = None
    if args.locations:
        from percept.data.locations import read_locations

        locations = read_locations(args.locations)
    summary = suggest_images(model, args.embeddings, args.out, options, locations=locations, resolution=resolution,
                             pool=args.pool, interval=args.interval, text_dir=args.text_embeddings, quiet=args.quiet)
    for note in summary.notes():
        print(note, file=sys.stderr)
    if not args.quiet:
        how = summary.strategy
        if how != args.strategy:
            how += " (the model holds no prediction intervals: re-export it with 'percept evaluate --export' to " \
                   "weigh them in)"
        print(f"suggested {summary.picked} images of {summary.pool} candidates ({summary.in_survey} survey images "
              f"left out) by {how} into {summary.out}", file=sys.stderr)
    return 0
