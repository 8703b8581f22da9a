"""``percept serve`` as a process: it announces only a bound port, answers HEAD / and /favicon.ico,
and refuses requests for other hosts (DNS rebinding) unless --allow-host names them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from web_fixtures import write_model

ROOT = Path(__file__).resolve().parent.parent


def serve(model: Path, *flags: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "percept.cli.main", "serve", "--model", str(model), *flags],
                            env=env, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return write_model(tmp_path_factory.mktemp("serve") / "model.npz")


@pytest.fixture(scope="module")
def server(model):
    process = serve(model, "--port", "0", "--allow-host", "percept.example")
    line = process.stderr.readline()
    threading.Thread(target=process.stderr.read, daemon=True).start()
    yield process, line
    process.terminate()
    process.wait(timeout=30)


def test_announced_only_once_bound(server):
    _, line = server
    assert line.startswith("serving on http://127.0.0.1:") and line.rstrip().endswith("(API docs at /docs)")
    url = line.split()[2]
    assert httpx.get(url + "api/health", timeout=60).json()["status"] == "ok"  # the first request, at once


def test_a_taken_port_is_one_error_line_and_no_announcement(model):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = serve(model, "--port", str(port))
        _, err = process.communicate(timeout=120)
    assert process.returncode == 2
    assert err.startswith(f"error: cannot serve on 127.0.0.1:{port}") and "choose another --port" in err
    assert "serving on" not in err and len(err.splitlines()) == 1


def test_head_favicon_and_hosts(server):
    url = server[1].split()[2]
    head = httpx.head(url, timeout=30)
    assert head.status_code == 200 and head.content == b"" and head.headers["content-type"].startswith("text/html")
    icon = httpx.get(url + "favicon.ico", timeout=30)
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/x-icon"
    assert icon.content[:4] == b"\0\0\1\0"
    assert httpx.head(url + "favicon.ico", timeout=30).status_code == 200
    port = url.rstrip("/").rsplit(":", 1)[1]
    for host in ("localhost", f"localhost:{port}", f"127.0.0.1:{port}", "[::1]", "percept.example"):
        assert httpx.get(url + "api/health", headers={"Host": host}, timeout=30).status_code == 200, host
    rebound = httpx.get(url + "api/health", headers={"Host": f"attacker.example:{port}"}, timeout=30)
    assert rebound.status_code == 421
    assert "--allow-host attacker.example" in rebound.json()["detail"]
    assert httpx.get(url, headers={"Host": "10.0.0.5"}, timeout=30).status_code == 421
