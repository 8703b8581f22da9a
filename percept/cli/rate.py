"""``percept rate``: score every image of a city with an exported model into CSV, Parquet or GeoJSON."""

from __future__ import annotations

import sys

from percept.city.rating import DEFAULT_CHUNK, check_rateable, embedding_names
from percept.cli.common import add_hidden_alias, add_interval_argument, positive_int
from percept.cli.encode import add_precision_argument, add_skip_missing_argument
from percept.cli.engine_options import add_engine_arguments, engine_options
from percept.cli.predict import clip_model_name
from percept.data.embeddings import default_embeddings_dir
from percept.model.io import load_model


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "rate", help="score every image of a city (streamed, bounded memory)",
        description="Five modelled scores per image, streamed over every embedding part in bounded chunks, "
                    "each with <category>_sd (weighted sd of the K neighbours' scores), <category>_lo and "
                    "<category>_hi (a calibrated prediction interval, see --interval), best_similarity (to any "
                    "survey sample), dissimilarity (distance to the nearest survey image over the survey's mean "
                    "nearest-neighbour distance), out_of_domain (best_similarity below the survey's 5th-percentile "
                    "nearest-neighbour similarity over distinct images) and in_survey (survey images are scored "
                    "without their own samples unless --include-self). "
                    "Output by extension: .csv, .parquet, or .geojson / GeoParquet (.parquet) with --locations.")
    parser.add_argument("--model", required=True, metavar="MODEL.npz", help="model exported with --export")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("-e", "--embeddings-dir", dest="embeddings", metavar="DIR",
                        help="image embeddings (clip-retrieval layout)")
    add_hidden_alias(source, "--embeddings", dest="embeddings")
    source.add_argument("--images", metavar="DIR", help="images to encode first (cached in --cache)")
    parser.add_argument("--out", required=True, metavar="FILE", help=".csv, .parquet or .geojson")
    parser.add_argument("--locations", metavar="FILE",
                        help="GeoJSON or CSV: image name → lon, lat (optionally angle, sequence)")
    parser.add_argument("--average-panoramic", action="store_true",
                        help="average the crops <image id>_x<number>.<ext> of each panorama into one feature")
    environment = parser.add_mutually_exclusive_group()
    environment.add_argument("--text-embeddings", metavar="DIR",
                             help="environmental prompt vectors, row for row with the images (environmental models)")
    environment.add_argument("--environment", metavar="FILE",
                             help="environmental variables of the images (GeoJSON/CSV from 'percept environment'), "
                                  "made into the model's prompts and encoded (environmental models)")
    parser.add_argument("-M", "--clip-model", metavar="NAME", help="CLIP model for --images (default: the model's)")
    parser.add_argument("--pretrained", metavar="PATH", help="local checkpoint for --images")
    add_precision_argument(parser)
    parser.add_argument("--cache", metavar="DIR", help="embeddings cache for --images "
                                                       "(default: embeddings-<model name>)")
    add_skip_missing_argument(parser)
    parser.add_argument("-k", type=positive_int, help="neighbours (default: the model's K)")
    add_hidden_alias(parser, "--k", dest="k", type=positive_int)
    parser.add_argument("--include-self", action="store_true",
                        help="score survey images with their own samples among the neighbours "
                             "(default: leave-one-out, their own samples left out)")
    add_interval_argument(parser)
    parser.add_argument("--chunk-size", type=positive_int, default=DEFAULT_CHUNK,
                        help=f"rows scored at once (default {DEFAULT_CHUNK})")
    add_engine_arguments(parser, "scoring threads (default: one per core)", device=True)
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")
    parser.set_defaults(run=run)


def run(args) -> int:
    from percept import engines

    model = load_model(args.model)
    engine = engine_options(args)
    locations = None
    if args.locations:
        from percept.data.locations import read_locations

        locations = read_locations(args.locations)
    with engines.session(engine, args.quiet):
        embeddings = args.embeddings
        if args.images:
            name = clip_model_name(model, args.clip_model)
            embeddings = args.cache or default_embeddings_dir(name)
            engines.encode_images(args.images, embeddings, name, engine, pretrained=args.pretrained, quiet=args.quiet,
                                  precision=args.precision, skip_missing=args.skip_missing)
        text_dir = args.text_embeddings
        if args.environment:
            text_dir = environment_text_dir(model, args, embeddings)
        summary = engines.rate(model, embeddings, args.out, engine, locations=locations,
                               average_panoramic=args.average_panoramic, chunk_size=args.chunk_size, k=args.k,
                               text_dir=text_dir, include_self=args.include_self, interval=args.interval,
                               quiet=args.quiet)
    for warning in (summary.warning(), summary.domain_warning()):
        if warning:
            print(warning, file=sys.stderr)
    if not args.quiet:
        note = f" ({summary.without_location} without a location)" if summary.without_location else ""
        print(f"rated {summary.rows} images{note} into {summary.out}", file=sys.stderr)
        how = "with" if args.include_self else "without"
        print(f"{summary.in_survey} in the survey (scored {how} their own samples); "
              f"{summary.out_of_domain} out of domain", file=sys.stderr)
        if summary.level is None:
            print("no prediction intervals: the model holds no calibration (re-export it with "
                  "'percept evaluate --export')" if model.calibration is None
                  else "no prediction intervals (--interval 0)", file=sys.stderr)
    return 0


def environment_text_dir(model, args, embeddings: str) -> str:
    """Encode the images' environmental prompts (from --environment) as the model was trained, ranked against
    the survey's quintiles it records; return the folder."""
    from percept.environment.place_prompts import place_text_embeddings

    check_rateable(model, args.environment)
    settings = model.settings
    return str(place_text_embeddings(args.environment, embeddings, embedding_names(embeddings),
                                     clip_model_name(model, args.clip_model), settings.prompt_style or 0,
                                     pretrained=args.pretrained, quiet=args.quiet,
                                     prompt_encoding=settings.prompt_encoding or "whole",
                                     reference=settings.environment_reference,
                                     log=lambda line: print(line, file=sys.stderr)))
