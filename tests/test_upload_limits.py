"""Hostile uploads against a real server process: refused early, nothing spooled, memory bounded, and
ordinary uploads served beside stalled, trickled, junk and half-sent ones.

The server is ``percept serve`` (default limits: 10 MB uploads, 40 megapixels) in a subprocess on
127.0.0.1, with an empty TMPDIR of its own; its resident memory is read from /proc. The attack tests
use a second one with a 2 s read timeout, 4 upload places and 64 MB of upload memory.
"""

from __future__ import annotations

import io
import os
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from image_fixtures import blank_bilevel_png
from PIL import Image
from upload_attacks import (
    NormalClients,
    StalledUpload,
    closed_by_server,
    half_sent_request,
    junk_jpeg,
    photo_jpeg,
    read_answer,
    send_whole,
    trickled_upload,
)
from web_fixtures import write_model

from percept.web.upload import FORM_ALLOWANCE

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CAP = 10 * 1024 * 1024
RSS_LIMIT_KB = 1536 * 1024
TWO_GB = 2 * 1024**3
PIECE = 256 * 1024

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads memory from /proc")


def memory_kb(pid: int, field: str) -> int:
    """VmRSS (resident now) or VmHWM (the peak so far) of a process, in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for process {pid}")


class Server:
    def __init__(self, process: subprocess.Popen, url: str, tmpdir: Path):
        self.process, self.url, self.tmpdir = process, url, tmpdir
        self.port = int(url.rstrip("/").rsplit(":", 1)[1])

    def received(self) -> list[dict]:
        return httpx.get(self.url + "__received", timeout=30).json()

    def spooled(self) -> list[str]:
        return [str(p) for p in self.tmpdir.rglob("*")]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("server")
    tmpdir = folder / "tmp"
    tmpdir.mkdir()
    model = write_model(folder / "model.npz")
    env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)])}
    process = subprocess.Popen([sys.executable, str(HERE / "web_server.py"), "--model", str(model), "--port", "0"],
                               cwd=folder, env=env, stderr=subprocess.PIPE, text=True)
    line = process.stderr.readline()
    assert line.startswith("serving on http://127.0.0.1:"), line + process.stderr.read()
    threading.Thread(target=process.stderr.read, daemon=True).start()  # keep the pipe drained
    yield Server(process, line.split()[2], tmpdir)
    process.terminate()
    process.wait(timeout=30)


def post_image(server: Server, data: bytes, name: str = "upload.png") -> httpx.Response:
    return httpx.post(server.url + "api/score", files={"image": (name, data, "application/octet-stream")},
                      timeout=600)


def test_tiny_files_declaring_huge_images_are_refused_from_the_header(server):
    thin, line = blank_bilevel_png(8, 4_999_999), blank_bilevel_png(39_000_000, 1)
    assert len(thin) < 10_000 and len(line) < 10_000
    for data, size in ((thin, "8 x 4999999"), (line, "39000000 x 1")):
        response = post_image(server, data)
        assert response.status_code in (413, 415), response.text
        assert f"the upload is {size} pixels" in response.json()["detail"]
    assert memory_kb(server.process.pid, "VmHWM") < RSS_LIMIT_KB
    assert server.spooled() == []


def chunked_upload(port: int, total: int) -> tuple[int, bytes]:
    """Send a multipart body of ``total`` bytes with chunked transfer encoding from a generator,
    stopping as soon as the server answers; returns (bytes sent, the answer)."""
    head = (b'--b\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n'
            b"Content-Type: image/png\r\n\r\n\x89PNG\r\n\x1a\n")
    pieces = (head if i == 0 else b"\0" * PIECE for i in range(total // PIECE))
    sent = 0
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /api/score HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Type: multipart/form-data; boundary=b\r\n\r\n")
        for piece in pieces:
            if select.select([sock], [], [], 0)[0]:
                break  # the server has answered
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            except OSError:
                break  # the server closed the connection after answering
            sent += len(piece)
        sock.settimeout(60)
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    return sent, answer


def test_two_gigabyte_chunked_upload_stops_at_the_cap(server):
    sent, answer = chunked_upload(server.port, TWO_GB)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < TWO_GB / 20
    record = [r for r in server.received() if r["path"] == "/api/score"][-1]
    assert record["received"] <= CAP + FORM_ALLOWANCE + record["largest"]
    assert server.spooled() == []
    print(f"\n2 GB chunked upload: {sent} bytes sent before the answer, {record['received']} received by the "
          f"app (cap {CAP} + {FORM_ALLOWANCE} form allowance, largest piece {record['largest']})")


def test_declared_length_over_the_cap_is_refused_unread(server):
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /api/score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n"
                     b"Content-Type: multipart/form-data; boundary=b\r\n\r\n" % TWO_GB)
        sock.settimeout(60)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413")
    assert [r for r in server.received() if r["path"] == "/api/score"][-1]["received"] == 0


def maximal_jpeg() -> bytes:
    """A 40-megapixel JPEG padded after its end marker to just under the 10 MB cap."""
    gradient = Image.linear_gradient("L")
    image = Image.merge("RGB", [gradient.resize((8000, 5000)), gradient.rotate(90).resize((8000, 5000)),
                                Image.new("L", (8000, 5000), 90)])
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    data = out.getvalue()
    return data + b"\0" * (CAP - len(data))


def test_sixteen_parallel_maximal_uploads_stay_under_one_and_a_half_gigabytes(server):
    data = maximal_jpeg()
    assert len(data) == CAP
    answers: list[int] = []

    def upload():
        answers.append(post_image(server, data, "big.jpg").status_code)

    threads = [threading.Thread(target=upload) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [200] * 16
    peak = memory_kb(server.process.pid, "VmHWM")
    assert peak < RSS_LIMIT_KB, f"peak resident memory {peak / 1024:.0f} MB"
    assert server.spooled() == []
    print(f"\npeak resident memory of the server: {peak / 1024:.0f} MB")


GUARDED_TIMEOUT = 2.0
GUARDED_PLACES = 4  # and a queue of 16: 30 stalled uploads are more than both


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """``percept serve`` with a short read timeout and few upload places, as the attack tests need."""
    folder = tmp_path_factory.mktemp("guarded")
    model = write_model(folder / "model.npz")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "percept.cli.main", "serve", "--model", str(model), "--port", "0",
                                "--read-timeout", str(GUARDED_TIMEOUT), "--max-uploads", str(GUARDED_PLACES),
                                "--upload-memory-mb", "64"], cwd=folder, env=env, stderr=subprocess.PIPE, text=True)
    line = process.stderr.readline()
    assert line.startswith("serving on http://127.0.0.1:"), line + process.stderr.read()
    threading.Thread(target=process.stderr.read, daemon=True).start()
    server = Server(process, line.split()[2], folder)
    assert post_image(server, photo_jpeg(), "warm.jpg").status_code == 200  # the encoder's first call
    yield server
    process.terminate()
    process.wait(timeout=30)


def test_ordinary_uploads_are_scored_beside_stalled_and_trickled_ones(guarded):
    stalled = [StalledUpload(guarded.port, 2_000_000, 64_000) for _ in range(30)]
    time.sleep(0.6)  # the admitted ones have now been silent long enough to be dropped for others
    clients = NormalClients(guarded.url, photo_jpeg(), 10)
    clients.run(requests_each=3)
    trickled = trickled_upload(guarded.port)
    clients.join()
    assert [status for status, _ in clients.results] == [200] * 30
    assert trickled[0] == 408
    answers = [upload.answer(60) for upload in stalled]
    assert set(answers) == {408, 503}, answers
    busy = [upload for upload in stalled if upload.status == 503]
    assert all(int(upload.headers["retry-after"]) >= 1 for upload in busy)
    for upload in stalled:
        upload.close()


def test_a_junk_jpeg_does_not_hold_up_an_ordinary_upload(guarded):
    finished = []
    junk = send_whole(guarded.port, junk_jpeg(CAP - 1024))

    def junk_answer():
        finished.append(("junk", read_answer(junk, 120)[0]))

    waiting = threading.Thread(target=junk_answer)
    waiting.start()
    finished.append(("photo", post_image(guarded, photo_jpeg(), "street.jpg").status_code))
    waiting.join()
    junk.close()
    assert finished == [("photo", 200), ("junk", 415)]


def test_half_sent_requests_are_closed_and_the_server_still_answers(guarded):
    halves = [half_sent_request(guarded.port) for _ in range(50)]
    assert all(closed_by_server(sock, 30 * GUARDED_TIMEOUT) for sock in halves)
    for sock in halves:
        sock.close()
    assert httpx.get(guarded.url + "api/health", timeout=30).status_code == 200


def test_memory_of_stalled_uploads_is_capped_and_handed_back(guarded):
    before = memory_kb(guarded.process.pid, "VmRSS")
    stalled = [StalledUpload(guarded.port, CAP, CAP - 1024 * 1024) for _ in range(20)]
    answers = [upload.answer(60) for upload in stalled]
    peak = memory_kb(guarded.process.pid, "VmHWM")
    for upload in stalled:
        upload.close()
    assert set(answers) <= {408, 503, None}
    after = memory_kb(guarded.process.pid, "VmRSS")
    print(f"\n20 stalled 10 MB uploads (64 MB of upload memory): answers {sorted(set(answers), key=str)}, "
          f"{(peak - before) / 1024:.0f} MB more at the peak, {(after - before) / 1024:.0f} MB more afterwards")
    assert peak - before < (64 + 160) * 1024, f"{(peak - before) / 1024:.0f} MB more at the peak"
    assert after - before < 48 * 1024, f"{(after - before) / 1024:.0f} MB kept after the uploads ended"
