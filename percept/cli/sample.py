"""``percept sample``: write the built-in sample survey (drawn street scenes) or a vector-level one."""

from __future__ import annotations

import argparse

from percept.categories import CATEGORIES
from percept.cli.common import add_hidden_alias, positive_int
from percept.errors import PerceptError
from percept.synthetic.simulation import SampleInfo

DEFAULT_IMAGES = {False: 200, True: 20000}
DEFAULT_DIM = 1024


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "sample", help="write the built-in sample survey (drawn street scenes, simulated ratings)",
        description="Write a sample survey into DIR: images/ of procedurally drawn street scenes whose drawn "
                    "elements set the five scores, data.geojson (points in Amsterdam, the 76 environmental keys), "
                    "demo.csv (ratings by simulated raters), locations.csv and scenes.csv (true scores). "
                    "The same seed gives the same files. DIR must be new or empty, unless --force.")
    parser.add_argument("dir", metavar="DIR", help="folder to write the survey into")
    parser.add_argument("--images", type=positive_int, default=None, metavar="N",
                        help=f"number of images (default {DEFAULT_IMAGES[False]}; "
                             f"{DEFAULT_IMAGES[True]} with --synthetic)")
    parser.add_argument("--random-seed", type=seed, default=0, metavar="INT", help="random seed (default 0)")
    add_hidden_alias(parser, "--seed", dest="random_seed", type=seed)
    parser.add_argument("--synthetic", action="store_true",
                        help="no images: write vectors in embeddings/ (clip-retrieval layout) for benchmarks")
    parser.add_argument("--dim", type=positive_int, default=None, metavar="D",
                        help=f"vector dimension with --synthetic (default {DEFAULT_DIM})")
    parser.add_argument("--force", action="store_true",
                        help="write into a folder that is not empty: an earlier sample's files are replaced, "
                             "other files are kept")
    parser.add_argument("--bbox", type=bbox, metavar="W,S,E,N",
                        help="place the drawn images inside this box (WGS84 degrees) instead of Amsterdam")
    parser.add_argument("--quiet", "-q", action="store_true", help="print nothing")
    parser.set_defaults(run=run)


def seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"the seed must be a whole number of 0 or more, got {text!r}")
    return value


def bbox(text: str) -> tuple[float, float, float, float]:
    """``W,S,E,N`` in degrees, west of east and south of north."""
    try:
        west, south, east, north = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"give the box as four numbers W,S,E,N, got {text!r}") from None
    if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
        raise argparse.ArgumentTypeError(f"the box {text!r} needs -180 <= W < E <= 180 and -90 <= S < N <= 90")
    return west, south, east, north


def run(args) -> int:
    n_images = args.images or DEFAULT_IMAGES[args.synthetic]
    if args.synthetic:
        if args.bbox is not None:
            raise PerceptError("--bbox applies to drawn sample surveys only, not --synthetic")
        from percept.synthetic.vectors import generate_synthetic_survey

        info = generate_synthetic_survey(args.dir, n_images, dim=args.dim or DEFAULT_DIM, seed=args.random_seed,
                                         force=args.force)
    else:
        if args.dim is not None:
            raise PerceptError("--dim applies to --synthetic surveys only: drawn images are encoded later")
        from percept.synthetic.sample import generate_sample

        info = generate_sample(args.dir, n_images, seed=args.random_seed, force=args.force, bbox=args.bbox)
    if not args.quiet:
        print(summary(info))
    return 0


def summary(info: SampleInfo) -> str:
    """A few lines: what was written, and the samples per category with and without demographics."""
    what = f"{info.images} vectors of dimension {info.dim}" if info.kind == "vectors" else f"{info.images} images"
    lines = [f"sample survey in {info.root}: {what} from {info.panoramas} panoramas, "
             f"{info.ratings} ratings by {info.raters} raters",
             f"{'category':<14}{'rated images':>14}{'ratings':>10}"]
    lines += [f"{c:<14}{info.rated_images[c]:>14}{info.category_ratings[c]:>10}" for c in CATEGORIES]
    return "\n".join(lines)
