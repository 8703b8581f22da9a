"""``percept fetch-images`` throughput against a loopback server that answers each image after 20 ms."""

from __future__ import annotations

import io
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

from benchmarks.common import BENCH_DIR

IMAGES = 400
LATENCY_S = 0.02


def jpeg() -> bytes:
    pixels = (np.random.default_rng(0).random((480, 640, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def serve(body: bytes) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):  # noqa: N802 - http.server hook
            time.sleep(LATENCY_S)
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


def main() -> None:
    from percept.city.fetch import FetchOptions, fetch_images

    body = jpeg()
    server = serve(body)
    host, port = server.server_address[:2]
    urls = [f"http://{host}:{port}/img/{i:05d}.jpg" for i in range(IMAGES)]
    try:
        for connections in (1, 8, 32):
            folder = BENCH_DIR / "fetch-images"
            shutil.rmtree(folder, ignore_errors=True)
            start = time.perf_counter()
            summary = fetch_images(urls, folder, FetchOptions(connections=connections, quiet=True))
            seconds = time.perf_counter() - start
            assert summary.downloaded == IMAGES and not summary.failed
            print(f"fetch-images: {IMAGES} images of {len(body) // 1024} KiB, {LATENCY_S * 1000:.0f} ms latency, "
                  f"{connections:2d} connections: {IMAGES / seconds:7.1f} images/s")
    finally:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    main()
