"""Hostile uploads against ``percept serve`` (percept:tiny, default limits) in its own process: how fast
tiny files declaring huge images and a 2 GB chunked body are refused, and the server's peak resident
memory while 16 maximal uploads (10 MB, 40 megapixels) are scored in parallel. Then, on a fresh server:
how soon a 10 MB JPEG marker followed by zeros is refused and how long an ordinary photo sent meanwhile
takes, and how long ordinary photos take beside eight 40-megapixel float TIFFs (224 kB each), with the
server's peak resident memory."""

from __future__ import annotations

import io
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from benchmarks.common import BENCH_DIR
from percept.categories import CATEGORIES
from percept.model.io import ModelSettings, save_model
from tests.upload_attacks import junk_jpeg, photo_jpeg, read_answer, send_whole

CAP = 10 * 1024 * 1024
PIECE = 256 * 1024
REPEATS = 5


def write_model(path: Path) -> Path:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(200, 64))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    save_model(path, {c: vectors for c in CATEGORIES}, {c: rng.uniform(1, 5, 200) for c in CATEGORIES},
               ModelSettings(clip_model="percept:tiny", k=5))
    return path


def png(size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("1", size).save(out, "PNG", optimize=True)
    return out.getvalue()


def maximal_jpeg() -> bytes:
    gradient = Image.linear_gradient("L")
    image = Image.merge("RGB", [gradient.resize((8000, 5000)), gradient.rotate(90).resize((8000, 5000)),
                                Image.new("L", (8000, 5000), 90)])
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue() + b"\0" * (CAP - out.tell())


def peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def chunked_refusal(port: int) -> tuple[float, int]:
    """Seconds until a 2 GB chunked upload is answered, and the bytes sent by then."""
    head = b'--b\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n\r\n'
    sent, start = 0, time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /api/score HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Type: multipart/form-data; boundary=b\r\n\r\n")
        piece = head + b"\0" * PIECE
        while sent < 2 * 1024**3:
            sock.settimeout(0)
            try:
                if sock.recv(1, socket.MSG_PEEK):
                    break
            except BlockingIOError:
                pass
            sock.settimeout(60)
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            except OSError:
                break
            sent += len(piece)
        sock.settimeout(60)
        answer = sock.recv(64)
    assert answer.startswith(b"HTTP/1.1 413"), answer
    return time.perf_counter() - start, sent


def float_tiff() -> bytes:
    """A legal 40-megapixel 32-bit float TIFF of 224 kB: its decoding needs the most memory per pixel."""
    out = io.BytesIO()
    Image.new("F", (8000, 5000), 0.5).save(out, "TIFF", compression="tiff_deflate")
    return out.getvalue()


def start_server(model: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    server = subprocess.Popen([sys.executable, "-m", "percept.cli.main", "serve", "--model", str(model),
                               "--port", "0"], env=env, stderr=subprocess.PIPE, text=True)
    url = server.stderr.readline().split()[2]
    threading.Thread(target=server.stderr.read, daemon=True).start()
    return server, url


def post_timed(url: str, data: bytes, name: str) -> tuple[int, float]:
    start = time.perf_counter()
    status = httpx.post(url + "api/score", files={"image": (name, data)}, timeout=600).status_code
    return status, time.perf_counter() - start


def slow_headers_and_large_images(model: Path) -> None:
    """A junk JPEG beside an ordinary photo, then ordinary photos beside eight 40-megapixel TIFFs."""
    server, url = start_server(model)
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    try:
        photo = photo_jpeg()
        for _ in range(3):  # the encoder's first call is slow; measure afterwards
            post_timed(url, photo, "street.jpg")
        start = time.perf_counter()
        junk = send_whole(port, junk_jpeg(CAP - 1024))
        status, photo_seconds = post_timed(url, photo, "street.jpg")
        junk_status, _ = read_answer(junk, 600)
        print(f"10 MB JPEG marker + zeros: {junk_status} after {time.perf_counter() - start:.2f} s; an ordinary photo "
              f"sent meanwhile: {status} in {photo_seconds:.2f} s")
        junk.close()

        tiff, answers, small = float_tiff(), [], []
        threads = [threading.Thread(target=lambda: answers.append(post_timed(url, tiff, "big.tif")[0]))
                   for _ in range(8)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        while any(thread.is_alive() for thread in threads):
            small.append(post_timed(url, photo, "street.jpg"))
        for thread in threads:
            thread.join()
        print(f"8 parallel 40-megapixel float TIFFs ({len(tiff) / 1024:.0f} kB each): {sorted(set(answers))}; "
              f"{len(small)} ordinary photos sent one after another meanwhile: {sorted({s for s, _ in small})} in "
              f"at most {max((t for _, t in small), default=0):.2f} s; server peak resident memory "
              f"{peak_mb(server.pid):.0f} MB")
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    folder = BENCH_DIR / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    model = write_model(folder / "model.npz")
    server, url = start_server(model)
    try:
        client = httpx.Client(timeout=60)
        for size in ((8, 4_999_999), (39_000_000, 1)):
            data, times = png(size), []
            for _ in range(REPEATS):
                start = time.perf_counter()
                status = client.post(url + "api/score", files={"image": ("x.png", data)}).status_code
                times.append(time.perf_counter() - start)
            print(f"{size[0]} x {size[1]} px PNG ({len(data)} bytes): {status} in "
                  f"{statistics.median(times) * 1000:.0f} ms (median of {REPEATS})")
        seconds, sent = chunked_refusal(int(url.rstrip("/").rsplit(":", 1)[1]))
        print(f"2 GB chunked upload: 413 after {seconds * 1000:.0f} ms, {sent / 2**20:.1f} MB sent by then")
        print(f"server peak resident memory so far: {peak_mb(server.pid):.0f} MB")
        data, answers = maximal_jpeg(), []
        threads = [threading.Thread(target=lambda: answers.append(httpx.post(
            url + "api/score", files={"image": ("big.jpg", data)}, timeout=600).status_code)) for _ in range(16)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print(f"16 parallel maximal uploads (10 MB, 40 megapixels): {sorted(set(answers))} in "
              f"{time.perf_counter() - start:.1f} s; server peak resident memory {peak_mb(server.pid):.0f} MB")
    finally:
        server.terminate()
        server.wait(timeout=30)
    slow_headers_and_large_images(model)


if __name__ == "__main__":
    main()
