"""``percept fetch-images`` against a loopback server that injects faults, and a run killed halfway."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from http_standin import Reply, Scripted, StandIn
from PIL import Image

from percept.city.fetch import plan_fetch
from percept.city.retry import RetryPolicy, backoff_delay, parse_retry_after
from percept.cli.main import main as percept_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ["--retries", "2", "--backoff", "0.01", "--timeout", "0.2", "--quiet"]


def image_bytes(seed: int, fmt: str = "JPEG") -> bytes:
    pixels = (np.random.default_rng(seed).random((24, 32, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


def write_survey(path, urls):
    features = [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [4.9, 52.37]},
                 "properties": {"image_id": i, "url": url}} for i, url in enumerate(urls)]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def failures(path) -> dict[str, str]:
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert list(table.columns) == ["url", "reason"]
    return dict(zip(table["url"].str.rsplit("/", n=1).str[-1], table["reason"]))


def test_faults_good_images_arrive_intact_and_bad_ones_are_listed(tmp_path, capsys):
    good = {f"good_{i}.jpg": image_bytes(i) for i in range(6)}
    good["good.png"] = image_bytes(99, "PNG")
    recovering = {"flaky.jpg": image_bytes(10), "limited.jpg": image_bytes(11), "slow_once.jpg": image_bytes(12)}
    cut = image_bytes(13)
    routes = {f"/img/{name}": [Reply(body=body)] for name, body in good.items()}
    routes.update({
        "/img/flaky.jpg": [Reply(500, b"oops", "text/plain"), Reply(body=recovering["flaky.jpg"])],
        "/img/limited.jpg": [Reply(429, b"", "text/plain", {"Retry-After": "0.3"}),
                             Reply(body=recovering["limited.jpg"])],
        "/img/slow_once.jpg": [Reply(body=recovering["slow_once.jpg"], delay=0.6),
                               Reply(body=recovering["slow_once.jpg"])],
        "/img/slow.jpg": [Reply(body=image_bytes(14), delay=0.6)],
        "/img/unavailable.jpg": [Reply(503, b"busy", "text/plain")],
        "/img/cut.jpg": [Reply(body=cut[:len(cut) // 2], declared_length=len(cut))],
        "/img/short.jpg": [Reply(body=cut[:len(cut) * 3 // 4])],
        "/img/page.jpg": [Reply(body=b"<html><body>Sorry, try later</body></html>", content_type="text/html")],
    })
    server_script = Scripted(routes)
    with StandIn(server_script) as server:
        names = [*good, *recovering, "slow.jpg", "unavailable.jpg", "cut.jpg", "short.jpg", "page.jpg", "missing.jpg"]
        survey = write_survey(tmp_path / "data.geojson", [f"{server.url}/img/{n}" for n in names])
        out = tmp_path / "images"
        status = percept_main(["fetch-images", "-g", str(survey), "-o", str(out), "--connections", "4", *FAST])
        requests = {name: server.count(f"/img/{name}") for name in names}
        limited = [r.time for r in server.requests if r.path == "/img/limited.jpg"]

    assert status == 0
    for name, body in {**good, **recovering}.items():
        assert (out / name).read_bytes() == body
    failed = failures(out / "failed.csv")
    assert set(failed) == {"slow.jpg", "unavailable.jpg", "cut.jpg", "short.jpg", "page.jpg", "missing.jpg"}
    assert failed["missing.jpg"] == "HTTP 404"
    assert failed["slow.jpg"] == "timed out (tried 3 times)"
    assert failed["unavailable.jpg"] == "HTTP 503 (tried 3 times)"
    assert failed["cut.jpg"].startswith("connection broke off")
    assert failed["short.jpg"].startswith("broken or truncated image")
    assert failed["page.jpg"] == "not an image (content type text/html)"
    assert sorted(p.name for p in out.iterdir()) == sorted([*good, *recovering, "failed.csv"])
    assert requests["missing.jpg"] == requests["page.jpg"] == requests["short.jpg"] == 1
    assert requests["flaky.jpg"] == requests["limited.jpg"] == requests["slow_once.jpg"] == 2
    assert requests["slow.jpg"] == requests["unavailable.jpg"] == requests["cut.jpg"] == 3
    assert limited[1] - limited[0] >= 0.3  # Retry-After honoured


def test_rerun_fetches_only_what_is_missing(tmp_path):
    bodies = {f"a_{i}.jpg": image_bytes(i) for i in range(5)}
    routes = {f"/{name}": [Reply(body=body)] for name, body in bodies.items()}
    routes["/late.jpg"] = [Reply(404, b"", "text/plain")]
    with StandIn(Scripted(routes)) as server:
        survey = write_survey(tmp_path / "data.geojson", [f"{server.url}/{n}" for n in [*bodies, "late.jpg"]])
        out = tmp_path / "images"
        assert percept_main(["fetch-images", "-g", str(survey), "-o", str(out), *FAST]) == 0
        assert set(failures(out / "failed.csv")) == {"late.jpg"}
        server.respond.routes["/late.jpg"] = [Reply(body=image_bytes(50))]
        assert percept_main(["fetch-images", "-g", str(survey), "-o", str(out), *FAST]) == 0
        counts = {name: server.count(f"/{name}") for name in [*bodies, "late.jpg"]}
    assert counts == {**{name: 1 for name in bodies}, "late.jpg": 2}
    assert (out / "late.jpg").read_bytes() == image_bytes(50)
    assert failures(out / "failed.csv") == {}


def test_nothing_usable_exits_one(tmp_path, capsys):
    with StandIn(Scripted({})) as server:
        survey = write_survey(tmp_path / "data.geojson", [f"{server.url}/gone_{i}.jpg" for i in range(3)])
        failed_csv = tmp_path / "failures.csv"
        status = percept_main(["fetch-images", "-g", str(survey), "-o", str(tmp_path / "images"),
                               "--failed", str(failed_csv), *FAST])
    assert status == 1
    assert failures(failed_csv) == {f"gone_{i}.jpg": "HTTP 404" for i in range(3)}
    assert "none of the 3 images could be downloaded" in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    ("{not json", "is not valid JSON"),
    ('{"type": "FeatureCollection", "features": [{"properties": {}}]}', "feature 0 has no 'url'"),
    ('{"type": "FeatureCollection", "features": []}', "has no features"),
])
def test_bad_survey_is_one_line_and_exit_two(tmp_path, capsys, content, message):
    survey = tmp_path / "data.geojson"
    if content is not None:
        survey.write_text(content)
    assert percept_main(["fetch-images", "-g", str(survey), "-o", str(tmp_path / "images")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_plan_names_dedupes_and_skips_present():
    plan = plan_fetch(["http://h/a/1.jpg", "http://h/a/1.jpg", "http://h/b/1.jpg", "http://h/2.jpg",
                       "ftp://h/3.jpg", "http://h/dir/"], present={"2.jpg"})
    assert [(t.url, t.name) for t in plan.tasks] == [("http://h/a/1.jpg", "1.jpg")]
    assert plan.present == ["2.jpg"]
    assert [url for url, _ in plan.rejected] == ["http://h/b/1.jpg", "ftp://h/3.jpg", "http://h/dir/"]
    assert "also that of http://h/a/1.jpg" in plan.rejected[0][1]


def test_backoff_doubles_honours_retry_after_and_is_capped():
    policy = RetryPolicy(first_delay=0.5, max_delay=10)
    assert [backoff_delay(policy, n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert backoff_delay(policy, 1, jitter=0.5) == 0.25
    assert backoff_delay(policy, 1, retry_after=3) == 3
    assert backoff_delay(policy, 3, retry_after=1) == 2.0
    assert backoff_delay(policy, 10) == backoff_delay(policy, 1, retry_after=60) == 10
    assert parse_retry_after("7") == 7 and parse_retry_after("garbage") is None and parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10


def test_killed_run_resumes_without_downloading_finished_files(tmp_path):
    names = [f"k_{i:02d}.jpg" for i in range(18)]
    bodies = {name: image_bytes(100 + i) for i, name in enumerate(names)}
    script = Scripted({f"/{name}": [Reply(body=body, stall=0.2)] for name, body in bodies.items()})
    out = tmp_path / "images"
    with StandIn(script) as server:
        survey = write_survey(tmp_path / "data.geojson", [f"{server.url}/{n}" for n in names])
        command = [sys.executable, "-m", "percept.cli.main", "fetch-images", "-g", str(survey), "-o", str(out),
                   "--connections", "3", "--quiet"]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
        first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (len(list(out.glob("k_*.jpg"))) < 5 or not list(out.glob(".*.tmp"))):
            time.sleep(0.01)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        finished = sorted(p.name for p in out.glob("k_*.jpg"))
        leftovers = list(out.glob(".*.tmp"))
        assert 5 <= len(finished) < len(names) and leftovers  # killed halfway, with downloads in flight
        before = {name: server.count(f"/{name}") for name in names}

        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        after = {name: server.count(f"/{name}") for name in names}

    assert second.returncode == 0, second.stderr
    assert all(after[name] == before[name] == 1 for name in finished)
    assert all(after[name] >= 1 for name in names)
    assert sorted(p.name for p in out.iterdir()) == sorted([*names, "failed.csv"])
    assert all((out / name).read_bytes() == body for name, body in bodies.items())
