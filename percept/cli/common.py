"""What every command-line tool shares: one-line errors (exit status 2, or 1 for a run left incomplete), a
quiet end when the reader of stdout goes away, the library's log messages as notes on stderr, and argument types."""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import NoReturn

from percept.errors import PerceptError
from percept.model.conformal import check_level

USAGE_ERROR = 2
#: Exit status of a program whose output pipe closed early (killed by SIGPIPE, as the shell reports it).
CLOSED_PIPE = 141


def exit_with(status: int) -> NoReturn:
    """End the process with ``status`` (a command's console script ends so). Whatever the run left in memory is
    frozen first, so that the interpreter's last collection does not walk it (numpy's, pandas' and pyarrow's
    objects: about 0.1 s at every exit); the process frees it all at once."""
    gc.freeze()
    sys.exit(status)


def report_errors(main: Callable[[], int | None]) -> int:
    """Run ``main``; turn a PerceptError into one ``error:`` line on stderr and its exit status (2; 1 for a run
    left incomplete, :class:`percept.errors.IncompleteRun`), and end quietly with status 141 when stdout is
    closed early (``percept evaluate ... | head -1``). The library's log messages show on stderr meanwhile
    (:func:`library_messages`)."""
    try:
        with library_messages():
            status = int(main() or 0)
        sys.stdout.flush()  # a closed pipe shows here rather than at exit, where it could not be caught
        return status
    except BrokenPipeError:
        if not _stdout_reader_gone():
            raise  # another pipe or socket broke: not the reader of our output
        _silence_stdout()
        return CLOSED_PIPE
    except PerceptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


class StderrNotes(logging.Handler):
    """Log records as the tools print their own notes: the message alone on stderr, a warning (or worse) after
    ``warning:`` (its level's name). The stream is looked up at each record, so a replaced stderr gets them."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            prefix = f"{record.levelname.lower()}: " if record.levelno >= logging.WARNING else ""
            print(prefix + record.getMessage(), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging reports its own failures
            self.handleError(record)


@contextlib.contextmanager
def library_messages(logger_name: str = "percept") -> Iterator[None]:
    """While a command runs: the package's notes (INFO) and warnings on stderr through :class:`StderrNotes`,
    and nowhere else; the logger's settings are restored afterwards."""
    logger = logging.getLogger(logger_name)
    handler, level, propagate = StderrNotes(), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reading end has been closed (poll reports an error on it)."""
    import select

    if not hasattr(select, "poll"):  # no poll on this platform: a broken pipe is most likely stdout's
        return True
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
    except (OSError, ValueError):  # stdout is no file
        return False
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def _silence_stdout() -> None:
    """Point stdout at the null device, so the flush at exit finds no closed pipe to complain about."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is no file (captured, or already closed)
        pass


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports bad flags as one line and exit status 2 (no usage dump on stderr noise)."""

    def error(self, message: str):  # noqa: D401 - argparse hook
        self.exit(USAGE_ERROR, f"error: {self.prog}: {message} (see --help)\n")


def add_version_argument(parser: argparse.ArgumentParser) -> None:
    """``--version``: the program's name and the toolkit's version."""
    from percept import __version__

    parser.add_argument("--version", action="version", version=f"{parser.prog} (Percept KNN) {__version__}")


def add_hidden_alias(parser, *flags: str, dest: str, **options) -> None:
    """An old spelling of a flag: still accepted, not shown in --help, never overriding the default."""
    parser.add_argument(*flags, dest=dest, help=argparse.SUPPRESS, default=argparse.SUPPRESS, **options)


def positive_number(text: str) -> float:
    """A finite number above zero (seconds, megabytes ...)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def interval_level(text: str) -> float:
    """A prediction interval's level, by the model's rule (:func:`percept.model.conformal.check_level`)."""
    try:
        return check_level(float(text))
    except (ValueError, PerceptError):
        raise argparse.ArgumentTypeError(f"expected a coverage level between 0 and 1 (e.g. 0.9), or 0 for none, "
                                         f"got {text!r}") from None


def add_interval_argument(parser) -> None:
    """``--interval LEVEL``: the calibrated prediction intervals' coverage."""
    parser.add_argument("--interval", type=interval_level, default=None, metavar="LEVEL",
                        help="coverage of the calibrated prediction intervals <category>_lo/_hi (default 0.9 where "
                             "the model holds a calibration; 0 turns them off)")


def k_list(text: str) -> list[int]:
    """``10`` or ``5,10,20`` → a list of positive K values."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"K must be a positive whole number or a comma list of them, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"K must be at least 1, got {text!r}")
    return values


def progress_bar(quiet: bool, unit: str):
    """A wrapper showing a tqdm bar on stderr over a list of work items (nothing when quiet)."""
    if quiet:
        return iter
    from tqdm import tqdm

    return lambda items: tqdm(items, unit=unit, disable=quiet, file=sys.stderr, leave=False)


def stderr_messages(quiet: bool):
    """Where a command's progress messages go: stderr, or nowhere with --quiet."""
    return (lambda message: None) if quiet else (lambda message: print(message, file=sys.stderr))
