"""The external ``clip-retrieval inference`` command, called the way the original tool calls it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from percept.errors import PerceptError

COMMAND = "clip-retrieval"


def external_available() -> bool:
    """Whether ``clip-retrieval`` is on PATH."""
    return shutil.which(COMMAND) is not None


def clip_retrieval_command(input_dir, output_dir, model_name: str, extra_flags: str | None) -> list[str]:
    """The command line: fixed flags, then ``extra_flags`` split on spaces."""
    command = [COMMAND, "inference", "--input_dataset", str(input_dir), "--output_folder", str(output_dir),
               "--clip_model", model_name]
    if extra_flags:
        command += [part for part in extra_flags.split(" ") if part]
    return command


def run_clip_retrieval(input_dir, output_dir, model_name: str, extra_flags: str | None) -> None:
    """Encode ``input_dir`` into ``output_dir`` with clip-retrieval; its output goes to the terminal."""
    executable = shutil.which(COMMAND)
    if executable is None:
        raise PerceptError(f"the {COMMAND} command is not on PATH: install it (pip install clip-retrieval) "
                           "or encode with the built-in encoder (--encoder builtin)")
    command = clip_retrieval_command(input_dir, output_dir, model_name, extra_flags)
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    try:
        result = subprocess.run([executable, *command[1:]], check=False)
    except OSError as exc:
        raise PerceptError(f"cannot run {executable} ({exc})") from None
    if result.returncode != 0:
        raise PerceptError(f"{COMMAND} inference failed with exit status {result.returncode} "
                           f"(command: {' '.join(command)}); see its messages above")
