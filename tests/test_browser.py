"""The page in Debian's Chromium: the map's legend, basemap note and panorama markers, five scores on the
1–5 scale for a click and for a photo, readable messages that replace old results, and API docs that
load nothing from outside. Screenshots go to test-artifacts/."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser_fixtures import ARTIFACTS, chromium, needs_chromium, serving
from image_fixtures import blank_bilevel_png
from web_fixtures import CENTRE, PANORAMA, build_state, png_bytes

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serving(build_state(tmp_path_factory.mktemp("browser"), crops=4)) as url:
        yield url


@pytest.fixture(scope="module")
def page():
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(15_000)
        yield page


def test_map_click_and_image_upload(server, page, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    page.goto(server + "/")
    page.wait_for_selector("body[data-ready=true]")
    page.wait_for_function("() => /^[1-9][0-9]* rated locations shown/.test("
                           "document.getElementById('map-status').textContent)")
    legend = page.inner_text("#legend")
    assert "walkability score" in legend and "1 low" in legend and "5 high" in legend and "no score" in legend
    page.select_option("#category", "greenness")
    page.wait_for_function("() => document.getElementById('legend').textContent.includes('greenness score')")
    assert page.is_visible("#basemap-note") and "--tiles" in page.inner_text("#basemap-note")
    assert "no learned meaning" in page.inner_text("#model-note")
    page.fill("#radius", "1000")
    box = page.locator("#map").bounding_box()
    point = page.evaluate(f"() => state.map.latLngToContainerPoint([{CENTRE[0]}, {CENTRE[1]}])")
    page.mouse.click(box["x"] + point["x"], box["y"] + point["y"])
    page.wait_for_selector("#point-panel .bar-row")
    assert page.locator("#point-panel .bar-row[data-category]").count() == 5
    panel = page.inner_text("#point-panel")
    assert "64 rated images within 1000 m" in panel and "25 of 64 shown" in panel and "1 (low) to 5 (high)" in panel
    page.screenshot(path=str(ARTIFACTS / "map-explorer.png"), full_page=True)

    crops = page.evaluate("() => state.markers.filter(m => m.feature.properties.crops.length > 1)"
                          ".map(m => m.feature.geometry.coordinates)")
    assert crops == [[PANORAMA[1], PANORAMA[0]]]
    page.evaluate("() => state.markers.find(m => m.feature.properties.crops.length > 1).marker.openTooltip()")
    tooltip = page.inner_text(".leaflet-tooltip")
    assert "4 crops of one panorama" in tooltip and all(f"pano_1_x{i}.jpg" in tooltip for i in range(4))
    page.screenshot(path=str(ARTIFACTS / "map-panorama-marker.png"), full_page=True)

    page.click("#tab-demo")
    photo = tmp_path / "street.png"
    photo.write_bytes(png_bytes((120, 90), (90, 160, 70)))
    page.set_input_files("#file", str(photo))
    page.wait_for_selector("#demo-scores .bar-row")
    assert page.locator("#demo-scores .bar-row[data-category]").count() == 5
    assert page.inner_text("#demo-scores .axis").split() == ["1", "2", "3", "4", "5"]
    assert page.inner_text("#demo-scores").count("±") >= 5 and "best similarity to the survey" in \
        page.inner_text("#demo-scores")
    assert page.locator("#similar .similar-item").count() == 5
    page.wait_for_function("() => [...document.querySelectorAll('#similar img')].every(i => i.naturalWidth > 0)")
    assert page.is_visible("#model-note")
    page.screenshot(path=str(ARTIFACTS / "image-demo.png"), full_page=True)


@pytest.mark.parametrize("name,data,words", [
    ("notes.png", b"these are notes, not a picture", "Could not score notes.png. The upload is not an image"),
    ("thin.png", blank_bilevel_png(8, 4_999_999), "Could not score thin.png. The upload is 8 x 4999999 pixels"),
    ("huge.png", b"\0" * 300_000, "Could not score huge.png. It is 0.3 MB and this server accepts at most 0.2 MB"),
])
def test_failed_upload_says_why_and_clears_old_results(server, page, tmp_path, name, data, words):
    page.goto(server + "/")
    page.wait_for_selector("body[data-ready=true]")
    page.click("#tab-demo")
    good = tmp_path / "street.png"
    good.write_bytes(png_bytes((120, 90), (90, 160, 70)))
    page.set_input_files("#file", str(good))
    page.wait_for_selector("#similar .similar-item")
    bad = tmp_path / name
    bad.write_bytes(data)
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("#demo-error:not([hidden])")
    message = page.inner_text("#demo-error")
    assert message.startswith(words) and "{" not in message and "detail" not in message
    assert page.locator("#demo-scores .bar-row").count() == 0 and page.locator("#similar *").count() == 0
    page.screenshot(path=str(ARTIFACTS / f"image-demo-error-{Path(name).stem}.png"), full_page=True)


def test_failed_map_request_says_why_and_clears_markers(server, page):
    page.goto(server + "/")
    page.wait_for_selector("body[data-ready=true]")
    page.wait_for_function("() => state.markers.length > 0")
    page.route("**/api/rated?*", lambda route: route.fulfill(
        status=503, content_type="application/json", body='{"detail": "the rated locations are being reloaded"}'))
    page.select_option("#category", "safety")
    page.wait_for_selector("#map-status.error")
    assert page.inner_text("#map-status") == ("Could not load the rated locations. "
                                              "The rated locations are being reloaded.")
    assert page.evaluate("() => state.markers.length") == 0
    page.unroute("**/api/rated?*")
    page.route("**/api/point?*", lambda route: route.fulfill(
        status=422, content_type="application/json",
        body='{"detail": [{"loc": ["query", "radius"], "msg": "Input should be less than or equal to 5000"}]}'))
    page.click("#map")
    page.wait_for_selector("#point-panel .error")
    assert page.inner_text("#point-panel") == ("Could not score this point. "
                                               "radius: Input should be less than or equal to 5000.")
    page.unroute("**/api/point?*")
    page.screenshot(path=str(ARTIFACTS / "map-explorer-error.png"), full_page=True)


@pytest.mark.parametrize("path,rendered", [("/docs", ".swagger-ui .opblock"), ("/redoc", "[data-section-id]")])
def test_api_docs_load_nothing_from_outside(server, page, path, rendered):
    """Everything the docs need comes from the app; anything else (Redoc's footer logo) is blocked by the
    page's Content-Security-Policy before it leaves the browser."""
    inside = (server, "data:", "blob:")
    loaded, refused = [], []
    page.on("requestfinished", lambda r: None if r.url.startswith(inside) else loaded.append(r.url))
    page.on("requestfailed", lambda r: None if r.url.startswith(inside) else refused.append(r.failure))
    page.goto(server + path)
    page.wait_for_selector(rendered)
    assert "/api/score" in page.inner_text("body")
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(ARTIFACTS / f"api{path.replace('/', '-')}.png"))
    assert loaded == [] and set(refused) <= {"csp"}, (loaded, refused)
