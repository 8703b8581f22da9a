"""The page and the API docs in Debian's Chromium under their Content-Security-Policy: the basemap's
tiles (from a tile server of another origin) load, nothing the page or the docs need is refused, and
a page of another site cannot post an upload to the app."""

from __future__ import annotations

import base64
import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from browser_fixtures import chromium, needs_chromium, serving
from PIL import Image
from web_fixtures import build_state, png_bytes

pytestmark = needs_chromium


def tile_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (256, 256), (200, 220, 200)).save(out, "PNG")
    return out.getvalue()


class Tiles(BaseHTTPRequestHandler):
    """A tile server of its own origin; it also serves a page that tries to post to the app."""

    body = tile_png()
    app_url = ""

    def do_GET(self):
        if self.path == "/attack.html":
            photo = base64.b64encode(png_bytes()).decode()
            page = ("<!doctype html><body><script>"
                    f"const bytes = Uint8Array.from(atob('{photo}'), c => c.charCodeAt(0));"
                    "const form = new FormData(); form.append('image', new Blob([bytes]), 'street.png');"
                    f"fetch('{Tiles.app_url}/api/score', {{method: 'POST', mode: 'no-cors', body: form}})"
                    ".then(() => document.title = 'sent').catch(() => document.title = 'failed')"
                    "</script></body>").encode()
            return self.send(page, "text/html")
        self.send(Tiles.body, "image/png")

    def send(self, body: bytes, kind: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def tiles():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Tiles)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://localhost:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


#: How long a page may take to fall quiet after it has drawn: its last requests can wait many seconds on a busy
#: shared machine, so longer than the pages' default wait of 15 s.
IDLE_MS = 60_000


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiles):
    from percept.data.decode import ImageLimits
    from percept.web.app import AppOptions

    options = AppOptions(max_upload_bytes=200_000, image_limits=ImageLimits(max_pixels=4_000_000),
                         tile_url=tiles + "/{z}/{x}/{y}.png", tile_attribution="test tiles")
    state = build_state(tmp_path_factory.mktemp("policy"), options=options)
    with serving(state) as url:
        Tiles.app_url = url
        yield state, url


@pytest.fixture
def browser_page():
    """A page, and the Content-Security-Policy refusals it reports on its console."""
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(15_000)
        refused = []
        page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
        yield page, refused


def test_the_page_loads_its_tiles_and_nothing_is_refused(app, browser_page):
    (_, url), (page, refused) = app, browser_page
    page.goto(url + "/")
    page.wait_for_selector("body[data-ready=true]")
    page.wait_for_function("() => [...document.querySelectorAll('img.leaflet-tile')].some(i => i.naturalWidth > 0)")
    page.wait_for_load_state("networkidle", timeout=IDLE_MS)
    assert refused == []


@pytest.mark.parametrize("path,rendered,allowed", [("/docs", ".swagger-ui .opblock", ()),
                                                   ("/redoc", "[data-section-id]", ("cdn.redoc.ly",))])
def test_the_docs_work_under_their_policy(app, browser_page, path, rendered, allowed):
    (_, url), (page, refused) = app, browser_page
    page.goto(url + path)
    page.wait_for_selector(rendered)
    page.wait_for_load_state("networkidle", timeout=IDLE_MS)
    assert [text for text in refused if not any(host in text for host in allowed)] == []


def test_another_site_cannot_post_an_upload(app, browser_page, tiles):
    (state, _), (page, _) = app, browser_page
    answers = []
    page.on("response", lambda r: answers.append(r.status) if r.url.endswith("/api/score") else None)
    calls = []
    encode = state.encode
    state.encode = lambda images: calls.append(len(images)) or encode(images)
    try:
        page.goto(tiles + "/attack.html")
        page.wait_for_function("() => document.title !== ''")
    finally:
        state.encode = encode
    assert answers == [403] and calls == []
