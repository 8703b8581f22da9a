"""The cross-validation report opened in Debian's Chromium: title, version, settings, captions, figures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_report import small_results

import percept
from percept.study.report import write_report

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's Chromium (/usr/bin/chromium) is not installed"),
]


def test_report_page_in_chromium(tmp_path):
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import sync_playwright

    results, groups = small_results()
    settings = {"geojson": "data.geojson", "demographics": "demo.csv", "clip_model": "percept:tiny", "k": [3, 6],
                "folds": 3, "repeats": 2, "group_by": "image", "seed": 0}
    write_report(tmp_path, results, settings, groups, [f"/img/{i}.jpg" for i in range(80)])
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto((tmp_path / "report.html").as_uri())
        assert page.title() == "Percept KNN cross-validation report"
        assert f"version {percept.__version__}" in page.locator("p.meta").inner_text()
        settings_rows = page.locator("table.settings tr")
        assert settings_rows.count() == len(settings)
        assert "Fold grouping (--group-by)" in settings_rows.nth(6).inner_text()
        captions = page.locator("figcaption")
        assert captions.count() == 3
        assert "Calibration at each category's best K" in captions.nth(1).inner_text()
        assert "± 1 standard deviation over 6 folds" in captions.nth(0).inner_text()
        widths = page.eval_on_selector_all("figure img", "images => images.map(i => i.complete && i.naturalWidth)")
        assert len(widths) == 3 and all(w >= 2000 for w in widths)  # 200 dpi figures, decoded
        assert page.locator("#calibration img").is_visible()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        browser.close()
    assert (ARTIFACTS / "report.png").stat().st_size > 50_000
