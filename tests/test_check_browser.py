"""The check page in a real browser (Debian's chromium driven by Playwright): the answer on the first screen."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from _check_trees import radiograph_png

CHROMIUM = "/usr/bin/chromium"
SCREENSHOT_COPY = Path("/tmp/check_screenshot.png")  # the first screen, kept to look at
REQUIRE_BROWSER = os.environ.get("FRACBENCH_REQUIRE_BROWSER", "") == "1"
try:
    import playwright.sync_api  # noqa: F401
    MISSING = "" if Path(CHROMIUM).exists() else f"{CHROMIUM} not installed (apt-get install chromium)"
except ImportError:
    MISSING = "playwright is not installed (pip install -e '.[dev]')"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(bool(MISSING) and not REQUIRE_BROWSER, reason=f"{MISSING} — the browser test needs it"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


@pytest.fixture(scope="module", autouse=True)
def _browser_present() -> None:
    if MISSING:
        pytest.fail(f"FRACBENCH_REQUIRE_BROWSER=1 but {MISSING}: the browser tests cannot run", pytrace=False)


def test_check_page_first_screen(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    from fracbench.cli import main

    root = tmp_path / "data"
    for k in range(12):  # 12 training radiographs, 6 of them byte-copied into test/, 2 new test ones
        cls = "fractured" if k % 2 else "not fractured with a long folder name to wrap"
        radiograph_png(root / "train" / cls / f"a_rather_long_file_name_without_spaces_{k:03d}.png", 7000 + k)
        if k < 6:
            (root / "test" / cls).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / "train" / cls / f"a_rather_long_file_name_without_spaces_{k:03d}.png",
                            root / "test" / cls / f"copy_{k}.png")
    radiograph_png(root / "test" / "fractured" / "new.png", 7100)
    radiograph_png(root / "test" / "not fractured with a long folder name to wrap" / "new.png", 7101)
    out = tmp_path / "out"
    assert main(["check", str(root), "--claim", "accuracy=0.998", "--claim", "auroc=0.99", "--out", str(out),
                 "--quiet"]) == 0
    page = out / "check.html"
    shot = tmp_path / "first_screen.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run"])
        try:
            tab = browser.new_page(viewport={"width": 1400, "height": 900})
            tab.route("http*://**", lambda route: route.abort())  # offline: the page needs nothing from outside
            tab.goto(page.as_uri())
            tab.screenshot(path=str(shot))
            verdicts = tab.locator("#verdicts .claim")
            assert verdicts.count() == 2
            for k in range(2):
                box = verdicts.nth(k).bounding_box()
                assert box and box["y"] + box["height"] <= 900, box
            assert "explained by copies" in verdicts.nth(0).inner_text() or "no evidence" in verdicts.nth(0).inner_text()
            fig = tab.locator("#figure").bounding_box()
            assert fig and fig["y"] + fig["height"] <= 900 and fig["width"] > 300, fig
            assert tab.evaluate("document.querySelector('#figure').naturalWidth") > 0  # the embedded PNG decodes
            assert tab.evaluate("document.documentElement.scrollWidth") <= 1400
            tab.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
            assert tab.evaluate("document.documentElement.scrollWidth") <= 1400  # details open: still no sideways scroll
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    shutil.copyfile(shot, SCREENSHOT_COPY)
