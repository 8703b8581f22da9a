"""Both console scripts end quietly when the reader of their output goes away (``... | head -1``)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tool_env

BIN = Path(sys.executable).parent
#: The smallest pipe buffer Linux allows; every command below prints more than this.
PIPE_BYTES = 4096


def first_line_then_close(command: list[str], cwd: Path) -> tuple[bytes, int, str]:
    """Run ``command`` with stdout into a small pipe; read one line, close the pipe (as ``head -1`` does)
    and return that line, the exit status and stderr."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    process = subprocess.Popen(command, cwd=cwd, env=tool_env(), stdout=write_end, stderr=subprocess.PIPE)
    os.close(write_end)
    line = b""
    while not line.endswith(b"\n"):
        byte = os.read(read_end, 1)
        if not byte:
            break
        line += byte
    os.close(read_end)
    _, err = process.communicate(timeout=600)
    return line, process.returncode, err.decode()


def script(name: str) -> str:
    return str(BIN / name)


@pytest.mark.skipif(not hasattr(fcntl, "F_SETPIPE_SZ"), reason="needs Linux pipes, whose size can be set")
@pytest.mark.parametrize("command", [
    [script("percept"), "evaluate", "-g", "data.geojson", "-e", "embeddings", "-M", "ViT-B/32",
     "-k", "1,2,3,4,5,6,7,8,9,10", "--cv", "3", "-q"],
    [script("clip_retrieval_knn"), "-g", "data.geojson", "-e", "embeddings", "-M", "ViT-B/32",
     "-k", ",".join(str(k) for k in range(1, 41)), "-q"],
], ids=["evaluate", "dropin"])
def test_a_closed_pipe_ends_the_command_quietly(command, reference_dir):
    full = subprocess.run(command, cwd=reference_dir / "survey", env=tool_env(), capture_output=True, timeout=600,
                          check=False)
    assert full.returncode == 0 and len(full.stdout) > 2 * PIPE_BYTES  # more than the pipe holds
    line, status, err = first_line_then_close(command, reference_dir / "survey")
    assert line == full.stdout.splitlines(keepends=True)[0]
    assert status == 141, err  # the status of a program stopped by SIGPIPE, so the pipe did close on it
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err
