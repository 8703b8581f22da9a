"""``percept predict``: score image files with an exported model (the Image Demo on the command line)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from percept.cli.common import add_hidden_alias, add_interval_argument, positive_int, positive_number
from percept.data.decode import ImageLimits, open_image
from percept.data.vector_checks import Where, refuse_unusable
from percept.errors import PerceptError
from percept.model.estimates import Estimates, Estimator
from percept.model.io import ExportedModel, load_model
from percept.model.knn import l2_normalise
from percept.model.scoring import MultiScorer, check_encoder

BATCH = 32
ENCODER_FAILED = "the encoder cannot score this image; check the image and the model's weights (--pretrained)"


def add_model_arguments(parser) -> None:
    """--model, --clip-model, --pretrained and --k, shared by predict and serve."""
    parser.add_argument("--model", required=True, metavar="MODEL.npz", help="model exported with --export")
    parser.add_argument("-M", "--clip-model", metavar="NAME",
                        help="CLIP model (default: the one recorded in the model; required for files without "
                             "settings, such as the published Amsterdam data.npz)")
    parser.add_argument("--pretrained", metavar="PATH", help="local checkpoint file or folder for the CLIP model")
    parser.add_argument("-k", type=positive_int, help="neighbours (default: the model's K, 40 for bare files)")
    add_hidden_alias(parser, "--k", dest="k", type=positive_int)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict", help="score images with an exported model",
        description="Five modelled perception scores per image, each with the weighted sd of its K neighbours' "
                    "scores and a calibrated prediction interval, the image's best similarity to the survey, its "
                    "dissimilarity index and out_of_domain (that similarity below the survey's 5th-percentile "
                    "nearest-neighbour similarity).")
    add_model_arguments(parser)
    add_interval_argument(parser)
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    style = parser.add_mutually_exclusive_group()
    style.add_argument("--json", action="store_true", help="print JSON")
    style.add_argument("--csv", action="store_true", help="print CSV")
    parser.add_argument("--max-image-mb", type=positive_number, default=10, metavar="MB",
                        help="largest image file read (default 10, as percept serve); images are also refused "
                             "above 40 megapixels, a side of 20,000 pixels or an aspect ratio of 20:1")
    parser.set_defaults(run=run)


def load_scoring(args):
    """The model, its scorer and a matching image encoder (refusing a mismatched one)."""
    model = load_model(args.model)
    name = clip_model_name(model, args.clip_model)
    scorer = MultiScorer(model, k=args.k)
    from percept.encoders import load_encoder

    encoder = load_encoder(name, args.pretrained)
    check_encoder(model.settings, model.dim, name, encoder.dim, encoder.weights_id)
    return model, scorer, encoder


def clip_model_name(model: ExportedModel, option: str | None) -> str:
    recorded = model.settings.clip_model if model.settings else None
    if recorded and option and option != recorded:
        raise PerceptError(f"the model was built with CLIP model {recorded!r}, not {option!r}: "
                           "drop --clip-model or give the model's own")
    name = option or recorded
    if not name:
        raise PerceptError("this model file records no CLIP model (a bare <category>_vecs/_scores file): "
                           "give --clip-model NAME, the model its vectors came from")
    return name


def run(args) -> int:
    from percept.encoders import encode_pil_images

    model, scorer, encoder = load_scoring(args)
    estimator = Estimator(model, scorer=scorer, interval=args.interval)
    limits = ImageLimits(max_bytes=int(args.max_image_mb * 1024 * 1024))
    rows = []
    for start in range(0, len(args.images), BATCH):
        paths = args.images[start:start + BATCH]
        vectors = encode_pil_images(encoder, [open_image(p, limits) for p in paths])
        refuse_unusable(vectors, image_vectors(paths), ENCODER_FAILED)
        found = estimator.estimate(l2_normalise(vectors))
        rows += [image_record(path, found, i, scorer.categories) for i, path in enumerate(paths)]
    print_scores(rows, scorer.categories, estimator.level, "json" if args.json else "csv" if args.csv else "table")
    return 0


def image_vectors(paths: list[str]) -> Where:
    """Names the vector of each of ``paths`` for a message."""
    return lambda row: f"the vector of image {paths[row]}"


def image_record(path: str, found: Estimates, row: int, categories: list[str]) -> dict:
    """One image's scores, spreads, interval, similarity and domain flag."""
    def by_category(values) -> dict[str, float]:
        return dict(zip(categories, map(float, values[row])))

    record = {"image": path, "scores": by_category(found.scores), "sd": by_category(found.sd)}
    if found.level is not None:
        record["interval"] = {"level": found.level, "lo": by_category(found.lo), "hi": by_category(found.hi)}
    return {**record, "best_similarity": float(found.best_similarity[row]),
            "dissimilarity": float(found.dissimilarity[row]), "out_of_domain": bool(found.out_of_domain[row])}


def print_scores(rows: list[dict], categories: list[str], level: float | None, style: str) -> None:
    """Image records (:func:`image_record`) as JSON, CSV or a table."""
    if style == "json":
        print(json.dumps(rows, indent=2))
        return
    bounds = [(f"{c}_lo", f"{c}_hi") for c in categories] if level is not None else []
    if style == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["image", *categories, *(f"{c}_sd" for c in categories), *(b for pair in bounds for b in pair),
                         "best_similarity", "dissimilarity", "out_of_domain"])
        for row in rows:
            interval = [row["interval"][side][c] for c in categories for side in ("lo", "hi")] if bounds else []
            numbers = (*row["scores"].values(), *row["sd"].values(), *interval, row["best_similarity"],
                       row["dissimilarity"])
            writer.writerow([row["image"], *(repr(float(v)) for v in numbers), row["out_of_domain"]])
        return
    width = max(len("image"), *(len(Path(row["image"]).name) for row in rows))
    cell = 24 if bounds else 14
    print(f"{'image':<{width}}  " + "  ".join(f"{c:>{cell}}" for c in categories)
          + "  best_similarity  out_of_domain")
    for row in rows:
        cells = []
        for c in categories:
            text = f"{row['scores'][c]:.2f} ± {row['sd'][c]:.2f}"
            if bounds:
                text += f" [{row['interval']['lo'][c]:.2f}, {row['interval']['hi'][c]:.2f}]"
            cells.append(f"{text:>{cell}}")
        print(f"{Path(row['image']).name:<{width}}  {'  '.join(cells)}  {row['best_similarity']:15.3f}  "
              f"{'yes' if row['out_of_domain'] else 'no':>13}")
    if bounds:
        print(f"score ± sd of the neighbours' scores [{level:.0%} prediction interval]")
