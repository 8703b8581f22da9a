"""``percept``: one command with a subcommand per job. Each subcommand lives in its own module
``percept.cli.<name>`` exposing ``register(subparsers)``, which adds its parser and sets ``run``.

Only the module of the subcommand being run is imported (every one for the overview of
``percept --help``), so a command starts without loading what the others need."""

from __future__ import annotations

import importlib
import sys
from typing import NoReturn

from percept.cli.common import ArgumentParser, add_version_argument, exit_with, report_errors

SUBCOMMANDS = ("sample", "encode", "evaluate", "card", "predict", "rate", "prompts", "map", "serve", "survey",
               "fetch_images", "collect", "environment", "suggest")


def build_parser(argv: list[str] | None = None) -> ArgumentParser:
    """The parser, with only the subcommand ``argv`` names (all of them when it names none)."""
    parser = ArgumentParser(prog="percept",
                            description="Model how people perceive streets from Percept survey ratings.")
    add_version_argument(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    for name in _needed(argv or []):
        importlib.import_module(f"percept.cli.{name}").register(subparsers)
    return parser


def _needed(argv: list[str]) -> tuple[str, ...]:
    command = next((word for word in argv if not word.startswith("-")), None)
    module = command.replace("-", "_") if command else None
    return (module,) if module in SUBCOMMANDS else SUBCOMMANDS


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return report_errors(lambda: _run(argv))  # parsing inside too: --help may meet a closed pipe


def console() -> NoReturn:
    """The ``percept`` console script: :func:`main` on the command line, ending the process with its status."""
    exit_with(main())


def _run(argv: list[str]) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    return args.run(args)


if __name__ == "__main__":
    console()
