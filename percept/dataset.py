"""Everything the drop-in CLI and ``percept evaluate`` load before modelling.

Survey GeoJSON, embeddings (read, or encoded from images), optional rating rows
with demographic filters, and optional environmental text vectors, brought
together as one :class:`Dataset`: unit vectors per image plus each category's
samples (vector row and score).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from percept.embeddings import Embeddings, default_embeddings_dir, read_embeddings
from percept.errors import PerceptError
from percept.knn import l2_normalise
from percept.rating_filters import RatingFilter, parse_age, parse_list, parse_region
from percept.survey import CORE_PROPERTIES, Samples, average_samples, load_survey, match_features

if TYPE_CHECKING:
    import pandas as pd

ENV_METHODS = ("append", "average", "slerp")
ENCODERS = ("auto", "builtin", "clip-retrieval")

Log = Callable[[str], None]


@dataclass
class Dataset:
    """Unit vectors of the survey's images and, per category, the samples that point into them."""

    names: list[str]
    vectors: np.ndarray
    samples: dict[str, Samples]
    rating_rows: dict[str, pd.DataFrame] | None = None  # per category, the rating rows behind its samples (-d)
    environment: str | None = None  # "<method>+p<style>" when environmental features were added


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The original tool's data flags (names, short forms and meanings unchanged)."""
    add = parser.add_argument
    add("--images-dir", "-i", metavar="DIRECTORY", help="Directory with images to be encoded")
    add("--embeddings-dir", "-e", metavar="DIRECTORY",
        help="Directory of embeddings in clip-retrieval layout (default: embeddings-<model name>)")
    add("--clip-model", "-M", metavar="MODELNAME", required=True,
        help="CLIP model name: open_clip:ARCH[/TAG], hf_clip:ORG/NAME, ViT-B/32, or built-in percept:tiny")
    add("--other-clip-retrieval-args", metavar="ARGS", help="Other command line args to pass to clip-retrieval")
    add("--encoder", choices=ENCODERS, default="auto",
        help="Encode with the external clip-retrieval command or the built-in encoder "
             "(default auto: clip-retrieval when it is on PATH)")
    add("--pretrained", metavar="PATH", help="Local checkpoint file or folder for the built-in encoder")
    add("--geojson", "-g", metavar="FILENAME", required=True, help="File with GeoJSON data from survey")
    add("--demographics", "-d", metavar="FILENAME", help="CSV File with demographic data per rating from survey")
    add("--environmental", action="store_true", help="Add environmental features into the model")
    add("--environmental-method", metavar="METHOD", default="append", help="One of: " + ", ".join(ENV_METHODS))
    add("--environmental-text-dir", metavar="DIR", help="Path to dir containing prompt files for environmental vars")
    add("--prompt-style", metavar="NUM", type=int, default=0, help="One of: 0, 1")
    add("--skip-cache", action="store_true", help="Do not look for or read any cached data.")
    add("--read-only", action="store_true", help="Do not write any data to disk (cache or otherwise).")
    add("--quiet", "-q", action="store_true", help="Reduce output to minimum.")
    add("--gender", metavar="GENDER,...", help="Comma-separated list of genders to include")
    add("--region", metavar="REGION", help="Include only ratings from people of this region (NL, non-NL)")
    add("--age", metavar="AGE_MIN,AGE_MAX", help="Include only ratings from people of this age range")
    add("--education", metavar="LEVEL,...", help="Comma-separated list of education levels to include")


def rating_filter(args: argparse.Namespace) -> RatingFilter:
    """The demographic filters given on the command line, validated."""
    rules = RatingFilter(parse_list(args.gender), parse_region(args.region), parse_age(args.age),
                         parse_list(args.education))
    if rules != RatingFilter() and not args.demographics:
        raise PerceptError("--gender, --region, --age and --education filter individual ratings: "
                           "give the ratings CSV with -d/--demographics")
    return rules


def check_environment_options(args: argparse.Namespace) -> None:
    if args.environmental_method not in ENV_METHODS:
        raise PerceptError(f"--environmental-method must be one of {', '.join(ENV_METHODS)}, "
                           f"got {args.environmental_method!r}")
    if args.prompt_style not in (0, 1):
        raise PerceptError(f"--prompt-style must be 0 or 1, got {args.prompt_style}")


def load_dataset(args: argparse.Namespace, log: Log = print) -> Dataset:
    """Load survey, vectors, samples and (optionally) environmental vectors as the flags say."""
    rules = rating_filter(args)
    check_environment_options(args)
    survey = load_survey(args.geojson, None if args.environmental else CORE_PROPERTIES)
    if survey.duplicates:
        log(f"warning: {survey.duplicates} survey features repeat an image name; the last one is used")
    embeddings = obtain_embeddings(args, log)
    matched, unmatched = match_features(embeddings.names, survey)
    keep = np.array([m is not None for m in matched], dtype=bool)
    if not keep.any():
        raise PerceptError(f"no embedding row matches an image of {args.geojson}: embeddings and survey "
                           "name different images (rows match by the file name after the last '/')")
    if unmatched:
        log(f"skipped {len(unmatched)} embedding rows with no survey feature (first: {unmatched[0]})")
    names = [n for n, k in zip(embeddings.names, keep) if k]
    vectors = l2_normalise(embeddings.vectors if keep.all() else embeddings.vectors[keep])
    del embeddings
    if args.demographics:
        from percept.ratings import filter_ratings, load_ratings, rating_samples

        ratings = filter_ratings(load_ratings(args.demographics, rules.columns()), rules)
        sample_set = rating_samples(names, survey, ratings)
        if sample_set.unrated:
            log(f"{sample_set.unrated} images have no rating that passes the filters")
    else:
        sample_set = average_samples(names, survey)
    environment = None
    if args.environmental:
        from percept.environment_vectors import environmental_vectors

        vectors = environmental_vectors(args, survey, names, vectors, log)
        environment = f"{args.environmental_method}+p{args.prompt_style}"
    return Dataset(names, vectors, sample_set.by_category, sample_set.rating_rows, environment)


def embeddings_dir(args: argparse.Namespace) -> Path:
    return Path(args.embeddings_dir or default_embeddings_dir(args.clip_model))


def use_external_encoder(args: argparse.Namespace) -> bool:
    """The original calls clip-retrieval; we do too when it is on PATH, else encode ourselves."""
    if args.encoder == "auto":
        from percept.encoders.external import external_available

        return external_available()
    return args.encoder == "clip-retrieval"


def obtain_embeddings(args: argparse.Namespace, log: Log) -> Embeddings:
    """Read the embeddings, encoding ``--images-dir`` first when no valid cache exists."""
    folder = embeddings_dir(args)
    if not args.images_dir:
        return read_embeddings(folder)
    images = Path(args.images_dir)
    if not images.is_dir():
        raise PerceptError(f"--images-dir {images} is not a folder of images")
    if use_external_encoder(args):
        from percept.external_encoding import encode_images_external

        return encode_images_external(images, folder, args.clip_model, args.other_clip_retrieval_args,
                                      skip_cache=args.skip_cache, read_only=args.read_only, log=log)
    from percept.encoding import encode_images

    return encode_images(images, folder, args.clip_model, pretrained=args.pretrained,
                         skip_cache=args.skip_cache, read_only=args.read_only, quiet=args.quiet)
