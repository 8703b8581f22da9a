"""How far each number can be trusted, in Debian's Chromium: tooltips and the click panel give the interval,
spread, similarity, the out-of-domain mark and each image's weight; markers use the printed maps' viridis;
the Image Demo's bars end at their score on the axis; the upload works by keyboard alone; the page fits
375 px and runs under a Content-Security-Policy without 'unsafe-inline'. Screenshots go to test-artifacts/."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from browser_fixtures import ARTIFACTS, chromium, needs_chromium, serving
from web_fixtures import CENTRE, build_state, png_bytes

from percept.categories import CATEGORIES

pytestmark = needs_chromium

#: What the server's Content-Security-Policy allows at most: nothing inline.
STRICT_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
                 "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
STATIC = Path(__file__).resolve().parent.parent / "percept" / "web" / "static"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser_trust")
    with serving(build_state(tmp, crops=3, calibrated=True)) as url:
        yield url, pd.read_csv(tmp / "rated.csv").set_index("image")


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


@pytest.fixture
def open_page(browser, served):
    """A fresh page of the given width (of the ``served`` app, or another at ``url``) under STRICT_POLICY;
    after the test, no policy violation was reported."""
    contexts, refused = [], []

    def open_at(width: int = 1280, url: str = served[0]):
        context = browser.new_context(viewport={"width": width, "height": 860})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)

        def with_policy(route):
            response = route.fetch()
            route.fulfill(response=response, headers={**response.headers, "content-security-policy": STRICT_POLICY})

        page.route(url + "/", with_policy)
        page.goto(url + "/")
        page.wait_for_selector("body[data-ready=true]")
        page.wait_for_load_state("networkidle")  # the map's first markers are drawn
        return page

    yield open_at
    for context in contexts:
        context.close()
    assert refused == []


def viridis(value: float) -> tuple[int, int, int]:
    import matplotlib

    red, green, blue, _ = matplotlib.colormaps["viridis"]((value - 1) / 4)
    return round(red * 255), round(green * 255), round(blue * 255)


def rgb(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.fullmatch(r"rgb\((\d+), (\d+), (\d+)\)", text).groups())


def interval_pattern(value: float, lo: float, hi: float) -> str:
    """The text of a score with its interval, with or without the interval's level."""
    return rf"{value:.2f} \((?:[0-9.]+ %:|interval) {lo:.2f}–{hi:.2f}\)"


def test_marker_colours_are_the_printed_maps_viridis(open_page, served):
    page = open_page()
    for value in (1.0, 1.37, 2.5, 3.3, 4.01, 4.95, 5.0):
        found = rgb(page.evaluate(f"() => colour({value})"))
        assert max(abs(a - b) for a, b in zip(found, viridis(value))) <= 4, (value, found)
    page.wait_for_function("() => state.markers.length > 0")
    markers = page.evaluate("() => state.markers.map(m => [m.feature.properties.value, m.marker.options.fillColor])")
    for value, fill in markers:
        assert max(abs(a - b) for a, b in zip(rgb(fill), viridis(value))) <= 4


def test_tooltips_give_interval_spread_similarity_and_the_domain_mark(open_page, served):
    _, table = served
    page = open_page()
    page.wait_for_function("() => state.markers.length > 0")
    legend = page.inner_text("#legend")
    assert "outside the survey's domain" in legend and "hollow" in legend
    for image in ("img_1.jpg", "img_3.jpg"):  # in and out of the survey's domain
        row = table.loc[image]
        page.evaluate(f"() => state.markers.find(m => m.feature.properties.image === '{image}').marker.openTooltip()")
        tooltip = page.inner_text(".leaflet-tooltip")
        assert re.search(interval_pattern(row.walkability, row.walkability_lo, row.walkability_hi), tooltip), tooltip
        assert f"± {row.walkability_sd:.2f}" in tooltip and f"best similarity {row.best_similarity:.3f}" in tooltip
        assert ("outside the survey's domain" in tooltip) is bool(row.out_of_domain)
        style = page.evaluate(f"() => state.markers.find(m => m.feature.properties.image === '{image}').marker.options")
        assert (style.get("dashArray") is not None) is bool(row.out_of_domain)
        assert (style["fillOpacity"] < 0.5) is bool(row.out_of_domain)
        page.evaluate("() => state.markers.forEach(m => m.marker.closeTooltip())")
        page.wait_for_function("() => !document.querySelector('.leaflet-tooltip')")
    page.select_option("#category", "safety")
    page.wait_for_function("() => state.markers.some(m => m.feature.properties.crops.length > 1 && "
                           "m.marker.getTooltip().getContent().textContent.includes('mean safety'))")
    page.evaluate("() => state.markers.find(m => m.feature.properties.crops.length > 1).marker.openTooltip()")
    tooltip = page.inner_text(".leaflet-tooltip")
    crop = table.loc["pano_1_x1.jpg"]
    assert "3 crops of one panorama" in tooltip and "1 of 3 crops outside the survey's domain" in tooltip
    assert re.search(interval_pattern(crop.safety, crop.safety_lo, crop.safety_hi), tooltip), tooltip
    page.screenshot(path=str(ARTIFACTS / "map-trust-tooltip.png"))


def test_click_panel_gives_each_nearby_images_weight_and_interval(open_page, served):
    _, table = served
    page = open_page()
    page.fill("#radius", "150")
    box = page.locator("#map").bounding_box()
    point = page.evaluate(f"() => state.map.latLngToContainerPoint([{CENTRE[0]}, {CENTRE[1]}])")
    with page.expect_response("**/api/point?*") as answered:
        page.mouse.click(box["x"] + point["x"], box["y"] + point["y"])
    data = answered.value.json()
    page.wait_for_selector("#point-panel .nearby li")
    items = page.locator("#point-panel .nearby li")
    assert items.count() == len(data["points"]) > 1
    for number, nearby in enumerate(data["points"]):
        text = items.nth(number).inner_text()
        row = table.loc[nearby["image"]]
        assert nearby["image"] in text and f"{nearby['distance_m']} m" in text
        assert f"weight {round(nearby['weight'] * 100, 1):g} %" in text
        assert re.search(interval_pattern(row.walkability, row.walkability_lo, row.walkability_hi), text), text
        assert ("outside the survey's domain" in text) is bool(row.out_of_domain)
    assert sum(p["weight"] for p in data["points"]) == pytest.approx(1.0, abs=1e-5)
    assert "weight each has in these scores" in page.inner_text("#point-panel")
    page.screenshot(path=str(ARTIFACTS / "map-trust-panel.png"), full_page=True)


def bar_geometry(page, category: str) -> dict:
    """Pixel positions in the Image Demo: the bar's fill and interval whisker, and the axis ticks' centres."""
    return page.evaluate("""(category) => {
        const row = document.querySelector(`#demo-scores .bar-row[data-category="${category}"]`);
        const box = (node) => node.getBoundingClientRect();
        const centre = (n) => {
            const r = box(document.querySelector(`#demo-scores .axis .tick[data-value="${n}"]`));
            return r.left + r.width / 2;
        };
        const whisker = row.querySelector(".whisker");
        return {start: box(row.querySelector(".fill")).left, end: box(row.querySelector(".fill")).right,
                lo: whisker ? box(whisker).left : null, hi: whisker ? box(whisker).right : null,
                ticks: [1, 2, 3, 4, 5].map(centre), text: row.innerText};
    }""", category)


def upload_photo(page, tmp_path, colour=(90, 160, 70)) -> dict:
    photo = tmp_path / "street.png"
    photo.write_bytes(png_bytes((120, 90), colour))
    with page.expect_response("**/api/score") as answered:
        page.set_input_files("#file", str(photo))
    page.wait_for_selector("#demo-scores .bar-row")
    return answered.value.json()


def on_axis(ticks: list[float], value: float) -> float:
    """The pixel position of ``value`` on an axis whose ticks 1 and 5 are centred at ``ticks[0]`` and ``ticks[-1]``."""
    return ticks[0] + (value - 1) / 4 * (ticks[-1] - ticks[0])


def check_bars_on_the_axis(page, data: dict) -> None:
    """Each bar starts at 1 and ends at its score, and its whisker spans its interval, on the axis (1 px)."""
    for category in CATEGORIES:
        found = bar_geometry(page, category)
        ticks = found["ticks"]
        assert ticks == pytest.approx([on_axis(ticks, n) for n in range(1, 6)], abs=1)
        assert abs(found["start"] - ticks[0]) <= 1
        assert abs(found["end"] - on_axis(ticks, data["scores"][category])) <= 1, (category, found, data["scores"])
        assert abs(found["lo"] - on_axis(ticks, data["interval"]["lo"][category])) <= 1
        assert abs(found["hi"] - on_axis(ticks, data["interval"]["hi"][category])) <= 1
        lo, hi = data["interval"]["lo"][category], data["interval"]["hi"][category]
        assert f"{data['scores'][category]:.2f} (90 %: {lo:.2f}–{hi:.2f})" in found["text"]


def test_demo_bars_end_at_their_score_on_the_axis(open_page, tmp_path):
    page = open_page()
    page.click("#tab-demo")
    data = upload_photo(page, tmp_path)
    check_bars_on_the_axis(page, data)
    text = page.inner_text("#demo-scores")
    assert f"dissimilarity {data['dissimilarity']:.2f}" in text and "90 % prediction interval" in text
    assert ("outside the survey's domain" in text) is data["out_of_domain"]
    similar = page.locator("#similar .similar-item .weight")
    assert similar.count() == len(data["similar"]) == 5
    for number, item in enumerate(data["similar"]):
        assert similar.nth(number).inner_text() == f"weight {round(item['weights']['walkability'] * 100, 1):g} %"
    page.screenshot(path=str(ARTIFACTS / "image-demo-trust.png"), full_page=True)


def test_demo_marks_a_photo_outside_the_domain(open_page, tmp_path):
    state = build_state(tmp_path, calibrated=True)
    state.estimator.threshold = 1.0  # every photo is less like the survey than this
    with serving(state) as url:
        page = open_page(url=url)
        page.click("#tab-demo")
        data = upload_photo(page, tmp_path)
        assert data["out_of_domain"] is True
        flag = page.inner_text("#demo-scores .domain-flag")
        assert "outside the survey's domain" in flag and "extrapolate" in flag
        page.screenshot(path=str(ARTIFACTS / "image-demo-out-of-domain.png"), full_page=True)


@pytest.mark.parametrize("key", ["Enter", " "])
def test_keyboard_alone_uploads_a_photo(open_page, tmp_path, key):
    page = open_page()
    photo = tmp_path / "street.png"
    photo.write_bytes(png_bytes((120, 90), (90, 160, 70)))
    chosen = []
    # listening from the start: Playwright intercepts choosers only once the page knows it listens
    page.on("filechooser", lambda chooser: (chosen.append(chooser), chooser.set_files(str(photo))))
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.id") == "tab-demo":
            break
    page.keyboard.press("Enter")
    assert page.is_visible("#view-demo") and page.get_attribute("#tab-demo", "aria-pressed") == "true"
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.id") == "choose":
            break
    assert page.get_by_role("button", name="Choose a street photo").evaluate("node => node === document.activeElement")
    assert page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle") != "none"
    page.screenshot(path=str(ARTIFACTS / "image-demo-keyboard-focus.png"))
    page.keyboard.press(key)
    page.wait_for_selector("#demo-scores .bar-row[data-category]")
    assert len(chosen) == 1
    assert page.locator("#demo-scores .bar-row[data-category]").count() == 5


def test_the_page_fits_375_pixels(open_page, tmp_path):
    page = open_page(375)
    width = "() => document.documentElement.scrollWidth"
    page.wait_for_function("() => state.markers.length > 0")
    assert page.evaluate(width) <= 375
    box = page.locator("#map").bounding_box()
    with page.expect_response("**/api/point?*"):
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_selector("#point-panel h3")
    assert page.evaluate(width) <= 375
    page.screenshot(path=str(ARTIFACTS / "map-375px.png"), full_page=True)
    page.click("#tab-demo")
    data = upload_photo(page, tmp_path)
    page.wait_for_function("() => [...document.querySelectorAll('#similar img')].every(i => i.complete)")
    assert page.evaluate(width) <= 375
    check_bars_on_the_axis(page, data)
    page.screenshot(path=str(ARTIFACTS / "image-demo-375px.png"), full_page=True)


def test_page_has_nothing_inline():
    """No inline script, style block, style attribute or event handler: the page needs no 'unsafe-inline'."""
    page = (STATIC / "index.html").read_text()
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", page) == []
    assert "<style" not in page and not re.search(r"\sstyle=", page)
    assert not re.search(r"\son[a-z]+\s*=", page)
    assert "setAttribute(\"style\"" not in (STATIC / "app.js").read_text()
