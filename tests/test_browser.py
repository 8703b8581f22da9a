"""The page in Debian's Chromium: click a rated area and see five scores; upload a photo and see five bars."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest
from web_fixtures import CENTRE, build_state, png_bytes

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's Chromium (/usr/bin/chromium) is not installed"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import uvicorn

    from percept.web.app import create_app

    port = free_port()
    config = uvicorn.Config(create_app(build_state(tmp_path_factory.mktemp("browser"))), host="127.0.0.1",
                            port=port, log_level="warning")
    app_server = uvicorn.Server(config)
    thread = threading.Thread(target=app_server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not app_server.started:
        assert time.monotonic() < deadline, "the app did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    app_server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def page():
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(15_000)
        yield page
        browser.close()


def test_map_click_and_image_upload(server, page, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    page.goto(server + "/")
    page.wait_for_selector("body[data-ready=true]")
    page.wait_for_function("() => /^[1-9][0-9]* rated locations shown/.test("
                           "document.getElementById('map-status').textContent)")
    box = page.locator("#map").bounding_box()
    point = page.evaluate(f"() => state.map.latLngToContainerPoint([{CENTRE[0]}, {CENTRE[1]}])")
    page.mouse.click(box["x"] + point["x"], box["y"] + point["y"])
    page.wait_for_selector("#point-panel .bar-row")
    assert page.locator("#point-panel .bar-row").count() == 5
    assert "rated images within" in page.inner_text("#point-panel")
    page.screenshot(path=str(ARTIFACTS / "map-explorer.png"), full_page=True)

    page.click("#tab-demo")
    photo = tmp_path / "street.png"
    photo.write_bytes(png_bytes((120, 90), (90, 160, 70)))
    page.set_input_files("#file", str(photo))
    page.wait_for_selector("#demo-scores .bar-row")
    assert page.locator("#demo-scores .bar-row").count() == 5
    assert page.inner_text("#demo-scores").count("±") >= 5 and "best similarity to the survey" in \
        page.inner_text("#demo-scores")
    assert page.locator("#similar .similar-item").count() == 5
    page.wait_for_function("() => [...document.querySelectorAll('#similar img')].every(i => i.naturalWidth > 0)")
    page.screenshot(path=str(ARTIFACTS / "image-demo.png"), full_page=True)
