"""``percept serve`` (percept:tiny, default limits) under attack, in its own process:
50 clients score ordinary photos while 150 uploads declare 10 MB, send 9.5 MB and stop, and one upload
trickles in 100 bytes every 0.1 s. Prints the ordinary requests' latency (goal: max and p95 < 3 s),
the server's peak resident memory (goal < 1.5 GB) and its memory 10 s after the stalled uploads closed
(goal < 1.2 GB), how soon the trickled upload is refused (goal < 2 s), and how soon 1,000 connections
that sent half a request's headers are closed."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from benchmarks.bench_uploads import write_model
from benchmarks.common import BENCH_DIR
from tests.upload_attacks import (
    NormalClients,
    StalledUpload,
    closed_by_server,
    half_sent_request,
    photo_jpeg,
    trickled_upload,
)

CLIENTS = 50
STALLED = 150
DECLARED = 10 * 1024 * 1024
SENT = DECLARED - 512 * 1024
NORMAL_SECONDS = 12.0
SETTLE_SECONDS = 10.0
HALF_SENT = 1000


def memory_mb(pid: int, field: str) -> float:
    """VmRSS (now) or VmHWM (the peak so far) of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(model: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    server = subprocess.Popen([sys.executable, "-m", "percept.cli.main", "serve", "--model", str(model), "--port", "0"],
                              env=env, stderr=subprocess.PIPE, text=True)
    url = server.stderr.readline().split()[2]
    threading.Thread(target=server.stderr.read, daemon=True).start()
    return server, url


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    folder = BENCH_DIR / "upload-attack"
    folder.mkdir(parents=True, exist_ok=True)
    server, url = start_server(write_model(folder / "model.npz"))
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    try:
        photo = photo_jpeg()
        for _ in range(3):  # the encoder's first call is slow; measure afterwards
            httpx.post(url + "api/score", files={"image": ("street.jpg", photo)}, timeout=60)
        print(f"server resident memory before the attack: {memory_mb(server.pid, 'VmRSS'):.0f} MB")

        with ThreadPoolExecutor(max_workers=STALLED) as pool:
            stalled = list(pool.map(lambda _: StalledUpload(port, DECLARED, SENT), range(STALLED)))
        clients = NormalClients(url, photo, CLIENTS)
        clients.run()
        trickled: dict = {}
        trickle = threading.Thread(target=lambda: trickled.update(answer=trickled_upload(port)))
        trickle.start()
        time.sleep(NORMAL_SECONDS)
        clients.stop.set()
        clients.join()
        trickle.join()
        answers = Counter(upload.answer(30) for upload in stalled)
        for upload in stalled:
            upload.close()
        peak = memory_mb(server.pid, "VmHWM")
        time.sleep(SETTLE_SECONDS)
        settled = memory_mb(server.pid, "VmRSS")

        latencies = [seconds for _, seconds in clients.results]
        statuses = Counter(status for status, _ in clients.results)
        print(f"{CLIENTS} clients scoring photos for {NORMAL_SECONDS:g} s beside {STALLED} stalled 10 MB uploads and a "
              f"trickled one: {len(latencies)} requests, statuses {dict(statuses)}, latency p95 "
              f"{percentile(latencies, 95):.2f} s, max {max(latencies):.2f} s (goal < 3 s)")
        print(f"stalled uploads answered: {dict(answers)} (503: busy, 408: dropped for others or timed out)")
        status, seconds = trickled["answer"]
        print(f"trickled upload (1 kB/s): {status} after {seconds:.2f} s (goal < 2 s)")
        print(f"server peak resident memory: {peak:.0f} MB (goal < 1536 MB); {SETTLE_SECONDS:g} s after the stalled "
              f"uploads closed: {settled:.0f} MB (goal < 1229 MB)")

        start = time.monotonic()
        halves = [half_sent_request(port) for _ in range(HALF_SENT)]
        closed = sum(closed_by_server(sock, 30) for sock in halves)
        print(f"{HALF_SENT} half-sent requests: {closed} closed by the server within "
              f"{time.monotonic() - start:.1f} s")
        for sock in halves:
            sock.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
