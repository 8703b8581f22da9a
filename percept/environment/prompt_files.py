"""Prompt files: one ``<image stem>.txt`` per image holding its prompt on one newline-terminated line.

The drop-in CLI keeps them in ``text-prompt<style>-<embeddings dir>/text/``, and the text
vectors encoded from them in ``text-prompt<style>-<embeddings dir>/`` (clip-retrieval layout).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath

from percept.atomic import atomic_write_text
from percept.data.survey import image_name
from percept.errors import PerceptError

SUFFIX = ".txt"


def prompt_root(embeddings_dir: str | os.PathLike, style: int) -> Path:
    """``text-prompt<style>-<embeddings folder name>`` beside the embeddings folder (in the working directory
    for a bare name, as the original tool; an embeddings path with folders never nests under the working
    directory)."""
    folder = Path(os.fspath(embeddings_dir))
    return folder.parent / f"text-prompt{style}-{folder.name}"


def prompt_text_dir(embeddings_dir: str | os.PathLike, style: int) -> Path:
    """The folder of prompt files inside :func:`prompt_root`."""
    return prompt_root(embeddings_dir, style) / "text"


def prompt_stem(name: str) -> str:
    """An image path, URL or file name → its file name without extension."""
    return PurePosixPath(image_name(name)).stem


def write_prompts(folder: str | os.PathLike, prompts: Mapping[str, str]) -> Path:
    """Write ``{image name: prompt}`` as ``folder/<stem>.txt`` atomically; return ``folder``.

    Files that already hold the same prompt are left untouched.
    """
    folder = Path(folder)
    for stem, text in _by_stem(prompts).items():
        path = folder / f"{stem}{SUFFIX}"
        content = text + "\n"
        if not _holds(path, content):
            atomic_write_text(path, content)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _by_stem(prompts: Mapping[str, str]) -> dict[str, str]:
    """Prompts keyed by image stem; two images sharing a stem must share the prompt too."""
    by_stem: dict[str, str] = {}
    names: dict[str, str] = {}
    for name, text in prompts.items():
        stem = prompt_stem(name)
        if "\n" in text:
            raise PerceptError(f"the prompt for {name} spans several lines; a prompt file holds one line")
        if by_stem.get(stem, text) != text:
            raise PerceptError(f"images {names[stem]} and {name} share the prompt file {stem}{SUFFIX} "
                               "but have different prompts: give the images distinct file names")
        by_stem[stem] = text
        names.setdefault(stem, name)
    return by_stem


def _holds(path: Path, content: str) -> bool:
    try:
        return path.read_bytes() == content.encode("utf-8")
    except OSError:
        return False


def find_prompt_dir(folder: str | os.PathLike) -> Path:
    """The folder holding the prompt files: ``folder`` itself, or its ``text/`` subfolder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PerceptError(f"prompt folder {folder} does not exist: check --environmental-text-dir")
    nested = folder / "text"
    if nested.is_dir() and not any(folder.glob(f"*{SUFFIX}")):
        return nested
    return folder


def read_prompts(folder: str | os.PathLike, names: Iterable[str]) -> list[str]:
    """The prompt of each image (matched by file stem), without its line ending, in order."""
    folder = find_prompt_dir(folder)
    prompts = []
    for name in names:
        path = folder / f"{prompt_stem(name)}{SUFFIX}"
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise PerceptError(f"no prompt file {path} for image {image_name(name)}: every image needs "
                               f"<image name without extension>{SUFFIX} in the prompt folder") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise PerceptError(f"cannot read prompt file {path}: {exc}") from None
        prompts.append(text.removesuffix("\n"))
    return prompts
