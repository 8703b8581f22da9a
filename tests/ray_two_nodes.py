"""A two-node Ray cluster on this machine, started as an operator starts one (``ray start``).

The head and a second node each get 1 CPU and are started from their own folders, so a Ray
worker's working directory differs from the test's (as on separate machines). The cluster
uses token authentication with a fresh token; :attr:`TwoNodes.env` carries it (and the address)
to the commands a test runs. The second node runs in its own process group, so a test can
kill it, raylet and workers at once, as a lost machine.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

OBJECT_STORE_BYTES = 200 * 1024**2
START_TIMEOUT_S = 90


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _ray_executable() -> str:
    found = Path(sys.executable).with_name("ray")
    return str(found) if found.exists() else shutil.which("ray") or "ray"


@dataclass
class TwoNodes:
    """The running cluster: its address, the environment its clients need, and the second node's process."""

    address: str
    env: dict[str, str]
    folders: dict[str, Path]
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start_node(self, name: str, *args: str) -> None:
        """Start a node (``ray start --block`` in its own session and folder) and wait until it has joined."""
        folder = self.folders[name]
        folder.mkdir(parents=True, exist_ok=True)
        before = self.alive_nodes() if self.processes else 0
        command = [_ray_executable(), "start", "--block", "--num-cpus=1", "--disable-usage-stats",
                   f"--object-store-memory={OBJECT_STORE_BYTES}", *args]
        self.processes[name] = subprocess.Popen(command, cwd=folder, env=self.env, start_new_session=True,
                                                stdout=open(folder / "ray-start.log", "ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while self.alive_nodes() <= before:
            if self.processes[name].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Ray node {name} did not start: see {folder / 'ray-start.log'}")
            time.sleep(0.5)

    def kill(self, name: str) -> None:
        """Kill a node's whole process group at once (SIGKILL): a lost machine, not a clean shutdown."""
        process = self.processes.pop(name, None)
        if process is None:
            return
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()

    def alive_nodes(self) -> int:
        """How many nodes the head counts as alive (0 before the head is up)."""
        probe = (f"import ray; ray.init(address={self.address!r}, log_to_driver=False, logging_level='ERROR'); "
                 "print(sum(node['Alive'] for node in ray.nodes()))")
        result = subprocess.run([sys.executable, "-c", probe], env=self.env, capture_output=True, text=True)
        lines = result.stdout.split()
        return int(lines[-1]) if result.returncode == 0 and lines else 0

    def stop(self) -> None:
        for name in list(self.processes)[::-1]:
            self.kill(name)


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory) -> TwoNodes:
    """A head and a second node (1 CPU each, started in their own folders), stopped after the module."""
    pytest.importorskip("ray")
    root = tmp_path_factory.mktemp("cluster")
    port = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "RAY_ADDRESS": f"127.0.0.1:{port}", "RAY_USAGE_STATS_ENABLED": "0"}
    cluster = TwoNodes(f"127.0.0.1:{port}", env, {"head": root / "head", "second": root / "second"})
    try:
        cluster.start_node("head", "--head", f"--port={port}", "--include-dashboard=false",
                           f"--dashboard-agent-listen-port={_free_port()}")
        cluster.start_node("second", f"--address=127.0.0.1:{port}")
        yield cluster
    finally:
        cluster.stop()
