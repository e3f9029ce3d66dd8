"""The report page of the committed results in a real browser (chromium via Playwright): findings first.

The first screen at 1400x900 holds every headline claim's verdict and the findings figure; no table, folded
or opened, makes the page or its own box scroll sideways. The screenshot is kept under the test's temp dir."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_check_browser import CHROMIUM, MISSING, REQUIRE_BROWSER

from fracbench.paths import REPO_ROOT

RESULTS = REPO_ROOT / "results"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(bool(MISSING) and not REQUIRE_BROWSER, reason=f"{MISSING} — the browser test needs it"),
    pytest.mark.skipif(not (RESULTS / "multiregion" / "runs").is_dir(), reason="no committed results"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

OVERFLOWING_TABLES = """[...document.querySelectorAll('table')].filter(t => t.getClientRects().length &&
  (t.scrollWidth > t.parentElement.clientWidth + 1 || t.getBoundingClientRect().right > window.innerWidth))
  .map(t => t.rows[0].textContent.slice(0, 80))"""


@pytest.fixture(scope="module", autouse=True)
def _browser_present() -> None:
    if MISSING:
        pytest.fail(f"FRACBENCH_REQUIRE_BROWSER=1 but {MISSING}: the browser tests cannot run", pytrace=False)


def _headline_count() -> int:
    from fracbench.claims.tables import load_claims

    return sum(1 for c in load_claims() if c.headline)


def test_report_first_screen_holds_the_verdicts_and_the_figure(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    from fracbench.claims.report import write_reports

    page = write_reports([RESULTS / "fracatlas", RESULTS / "multiregion"], tmp_path / "report.html")
    shot = tmp_path / "report_first_screen.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run"])
        try:
            tab = browser.new_page(viewport={"width": 1400, "height": 900})
            tab.route("http*://**", lambda route: route.abort())  # offline: the page needs nothing from outside
            tab.goto(page.as_uri())
            tab.screenshot(path=str(shot))
            cards = tab.locator("#verdicts .claim")
            assert cards.count() == _headline_count() > 0
            for k in range(cards.count()):
                box = cards.nth(k).bounding_box()
                assert box and box["y"] + box["height"] <= 900, (k, box)
                assert "reproduced" in cards.nth(k).inner_text() or "reached" in cards.nth(k).inner_text()
            fig = tab.locator("img#figure").bounding_box()
            assert fig and fig["y"] + fig["height"] <= 900 and fig["width"] > 300, fig
            assert tab.evaluate("document.querySelector('img#figure').naturalWidth") > 0  # the embedded PNG decodes
            why = tab.locator(".why").bounding_box()
            assert why and why["y"] + why["height"] <= 900, why
            # the detail is folded: nothing of the provenance on the first screen
            assert tab.locator("details.fold").count() >= 5 and tab.locator("details.fold[open]").count() == 0
            assert tab.locator("details.fold summary").last.inner_text().startswith("Provenance")
            assert tab.evaluate("document.documentElement.scrollWidth") <= 1400
            assert tab.evaluate(OVERFLOWING_TABLES) == []
            tab.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
            assert tab.evaluate("document.documentElement.scrollWidth") <= 1400
            assert tab.evaluate(OVERFLOWING_TABLES) == []  # every table opened: none wider than its box
            assert tab.locator(".pair img").count() > 0  # the audit's copy-pair thumbnails
        finally:
            browser.close()
    assert shot.stat().st_size > 20_000
