"""``percept``: one command with a subcommand per job. Each subcommand lives in its own module
``percept.cli.<name>`` exposing ``register(subparsers)``, which adds its parser and sets ``run``."""

from __future__ import annotations

import importlib
import sys

from percept.cli.common import ArgumentParser, add_version_argument, report_errors

SUBCOMMANDS = ("sample", "encode", "evaluate", "predict", "rate", "prompts", "map", "serve", "survey",
               "fetch_images", "collect")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="percept", description="Model how people perceive streets from Percept survey ratings.")
    add_version_argument(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    for name in SUBCOMMANDS:
        importlib.import_module(f"percept.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    return report_errors(lambda: args.run(args))


if __name__ == "__main__":
    sys.exit(main())
