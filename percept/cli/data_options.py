"""The original tool's data flags, and the typed :class:`DataSelection` built from them."""

from __future__ import annotations

import argparse
from pathlib import Path

from percept.data.filters import RatingFilter, parse_age, parse_list, parse_region
from percept.encoders.options import ENCODERS, EncodingOptions
from percept.encoders.precision import PRECISIONS
from percept.environment.combining import COMBINE_METHODS
from percept.environment.options import PROMPT_ENCODINGS, EnvironmentOptions
from percept.study.dataset import DataSelection


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The original tool's data flags (names, short forms and meanings unchanged), and ours beside them."""
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
    add("--precision", choices=PRECISIONS, default="auto",
        help="Arithmetic of the built-in encoder: auto (default: fp16 on CUDA, bf16 on a CPU with AMX or "
             "AVX512-BF16, else fp32), fp32, bf16 or fp16")
    add("--geojson", "-g", metavar="FILENAME", required=True, help="File with GeoJSON data from survey")
    add("--demographics", "-d", metavar="FILENAME", help="CSV File with demographic data per rating from survey")
    add("--environmental", action="store_true", help="Add environmental features into the model")
    add("--environmental-method", metavar="METHOD", default="append", help="One of: " + ", ".join(COMBINE_METHODS))
    add("--environmental-text-dir", metavar="DIR", help="Path to dir containing prompt files for environmental vars")
    add("--prompt-style", metavar="NUM", type=int, default=0, help="One of: 0, 1")
    add("--prompt-encoding", choices=PROMPT_ENCODINGS, default="whole",
        help="Encode each environmental prompt whole (a CLIP window of 77 tokens cuts long prompts; the default, "
             "as the original tool and every percept command) or each '<variable> is <value>' clause on its own, "
             "averaged")
    add("--allow-missing", action="store_true",
        help="go on when more than 5 %% of a category's rated survey images have no embedding (failed downloads); "
             "the dropped images and ratings are always reported")
    add("--skip-cache", action="store_true", help="Do not look for or read any cached data.")
    add("--skip-missing", action="store_true",
        help="Go on without images that cannot be reached (gone since they were listed, no permission), with a "
             "warning, instead of failing with exit status 1; the next run reads them again (built-in encoder)")
    add("--read-only", action="store_true", help="Do not write any data to disk (cache or otherwise).")
    add("--quiet", "-q", action="store_true", help="Reduce output to minimum.")
    add("--gender", metavar="GENDER,...", help="Comma-separated list of genders to include")
    add("--region", metavar="REGION", help="Include only ratings from people of this region (NL, non-NL)")
    add("--age", metavar="AGE_MIN,AGE_MAX", help="Include only ratings from people of this age range")
    add("--education", metavar="LEVEL,...", help="Comma-separated list of education levels to include")


def data_selection(args: argparse.Namespace) -> DataSelection:
    """The data flags as a validated :class:`DataSelection`."""
    filters = RatingFilter(parse_list(args.gender), parse_region(args.region), parse_age(args.age),
                           parse_list(args.education))
    demographics = _path(args.demographics)
    environment = EnvironmentOptions(args.environmental_method, args.prompt_style,
                                     _path(args.environmental_text_dir), args.prompt_encoding)
    encoding = EncodingOptions(
        clip_model=args.clip_model, images_dir=_path(args.images_dir), embeddings_dir=_path(args.embeddings_dir),
        encoder=args.encoder, pretrained=args.pretrained, other_clip_retrieval_args=args.other_clip_retrieval_args,
        precision=args.precision,
        skip_cache=args.skip_cache, read_only=args.read_only, quiet=args.quiet, skip_missing=args.skip_missing)
    return DataSelection(Path(args.geojson), encoding, demographics, filters,
                         environment if args.environmental else None)


def _path(text: str | None) -> Path | None:
    return Path(text) if text else None
