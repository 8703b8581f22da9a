"""``percept prompts``: show or write the environmental prompts the text encoder sees."""

from __future__ import annotations

import argparse
import sys

from percept.cli.common import positive_int
from percept.data.survey import Survey, load_survey
from percept.environment.prompt_files import prompt_stem, write_prompts
from percept.environment.prompts import (
    DEFAULT_PROMPT_STYLE,
    PROMPT_STYLES,
    build_prompts,
)
from percept.errors import PerceptError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "prompts", help="show or write the environmental prompts of a survey's images",
        description="Build each image's environmental prompt from the survey GeoJSON. Without --out, "
                    "print one line per image: its name, a tab, its prompt. With --out, write "
                    "DIR/<image stem>.txt files (usable as --environmental-text-dir).")
    parser.add_argument("-g", "--geojson", required=True, metavar="FILENAME", help="survey GeoJSON")
    parser.add_argument("--prompt-style", type=int, choices=PROMPT_STYLES, default=DEFAULT_PROMPT_STYLE,
                        help=f"0: raw values, 1: quintile words (default: {DEFAULT_PROMPT_STYLE})")
    parser.add_argument("--out", metavar="DIR", help="write the prompt files into DIR instead of printing")
    parser.add_argument("--image", nargs="+", action="extend", metavar="NAME",
                        help="only these images (file name, with or without extension)")
    parser.add_argument("--limit", type=positive_int, metavar="N", help="at most N images")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    survey = load_survey(args.geojson)
    prompt_set = build_prompts(survey.features, args.prompt_style)
    chosen = select_images(survey, args.image)[:args.limit]
    prompts = {name: prompt_set.prompts[survey.by_name[name]] for name in chosen}
    warning = prompt_set.warning()
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    if args.out is None:
        for name, text in prompts.items():
            print(f"{name}\t{text}")
        return 0
    folder = write_prompts(args.out, prompts)
    print(f"{len(prompts)} prompt files (style {args.prompt_style}) in {folder}")
    return 0


def select_images(survey: Survey, wanted: list[str] | None) -> list[str]:
    """Image names of the survey, in survey order, or those named in ``wanted`` (name or stem)."""
    names = list(survey.by_name)
    if not wanted:
        return names
    lookup = {key: name for name in names for key in (name, prompt_stem(name))}
    unknown = [w for w in wanted if w not in lookup]
    if unknown:
        raise PerceptError(f"no survey image named {', '.join(unknown)}: give image file names as in "
                           "the survey's url property (e.g. from `percept prompts -g FILE --limit 5`)")
    return list(dict.fromkeys(lookup[w] for w in wanted))
