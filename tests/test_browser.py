"""The demo page in a real browser (Debian's chromium driven by Playwright): upload, result, heatmap, screenshot."""

from __future__ import annotations

import os
import re
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

CHROMIUM = "/usr/bin/chromium"
SCREENSHOT_COPY = Path("/tmp/demo_screenshot.png")

# CI sets FRACBENCH_REQUIRE_BROWSER=1: there a missing chromium or playwright fails the tests instead of skipping them
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
    pytest.mark.filterwarnings("ignore:.*:Warning:gradio.queueing"),
]


@pytest.fixture(scope="module", autouse=True)
def _browser_present() -> None:
    """Under FRACBENCH_REQUIRE_BROWSER=1 a missing browser is a failure, not a skip (runs before the servers)."""
    if MISSING:
        pytest.fail(f"FRACBENCH_REQUIRE_BROWSER=1 but {MISSING}: the browser tests cannot run", pytrace=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    from fracbench.app.demo import launch
    from fracbench.models import create_model
    from fracbench.serving.checkpoint import save_checkpoint

    results = tmp_path_factory.mktemp("results")
    torch.manual_seed(0)
    save_checkpoint(results / "runs" / "paper_honest" / "seed0" / "checkpoints" / "best",
                    create_model("paper_cnn", image_size=64), model_name="paper_cnn", model_kwargs={},
                    image_size=64, channels=3, threshold=0.5,
                    extra={"experiment": "paper_honest", "dataset": "synthetic", "protocol": "honest"})
    demo = launch(results=results, port=_free_port(), prevent_thread_lock=True, progress=False,
                  echo=lambda line: None)
    yield demo
    demo.close()


def _browser(p):
    return p.chromium.launch(executable_path=CHROMIUM, args=[
        "--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"])


def test_upload_shows_probability_and_heatmap(served, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    from fracbench.data.synthetic import render_case

    image = tmp_path / "forearm.png"
    Image.fromarray(render_case(np.random.default_rng([4, 2]), 320, True, 0.5).pixels).save(image)
    shot = tmp_path / "demo.png"
    with sync_playwright() as p:
        browser = _browser(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            external: list[str] = []
            page.on("request", lambda r: None if r.url.startswith(served.local_url.rstrip("/"))
                    or r.url.startswith(("data:", "blob:")) else external.append(r.url))
            page.goto(served.local_url, wait_until="domcontentloaded")
            expect(page.get_by_text("Research software, not a medical device")).to_be_visible(timeout=60_000)
            page.locator("#upload input[type=file]").set_input_files(str(image))
            decision = page.locator("#decision textarea")
            expect(decision).to_have_value(re.compile("threshold 0.500"), timeout=60_000)
            expect(page.locator("#p-fracture")).to_contain_text("fractured", timeout=10_000)
            heat = page.locator("#gradcam img")
            expect(heat).to_be_visible(timeout=30_000)
            page.wait_for_function("el => el.complete && el.naturalWidth > 0", arg=heat.element_handle(),
                                   timeout=30_000)
            assert heat.evaluate("el => el.naturalWidth") == 320
            expect(page.locator("#status")).to_contain_text("forearm.png")
            expect(page.locator("#model-panel")).to_contain_text("paper_cnn")
            page.screenshot(path=str(shot), full_page=True)
            assert not external, f"the page fetched from outside: {external[:5]}"

            # a bad file gives a sentence on the page, not a stack trace
            bad = tmp_path / "broken.png"
            bad.write_bytes(b"not a png at all")
            page.reload(wait_until="domcontentloaded")  # a gr.File holding a file shows no file input
            page.locator("#upload input[type=file]").set_input_files(str(bad))
            expect(page.locator("#status")).to_contain_text("Could not analyse this file", timeout=60_000)
            expect(page.locator("#status")).to_contain_text("not a recognised image")
            expect(page.locator("[data-testid*=toast]").first).to_contain_text("not a recognised image",
                                                                              timeout=10_000)  # gr.Warning
            assert "Traceback" not in page.content()
            page.screenshot(path=str(tmp_path / "demo_error.png"), full_page=True)
            shutil.copyfile(tmp_path / "demo_error.png", "/tmp/demo_screenshot_error.png")
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    shutil.copyfile(shot, SCREENSHOT_COPY)


@pytest.fixture(scope="module")
def served_with_findings(tmp_path_factory: pytest.TempPathFactory):
    """A demo whose results folder holds a claims table, so the findings tab has something to render."""
    from fracbench.app.demo import launch
    from fracbench.models import create_model
    from fracbench.serving.checkpoint import save_checkpoint

    results = tmp_path_factory.mktemp("results-findings")
    torch.manual_seed(0)
    save_checkpoint(results / "runs" / "paper_honest" / "seed0" / "checkpoints" / "best",
                    create_model("paper_cnn", image_size=64), model_name="paper_cnn", model_kwargs={},
                    image_size=64, channels=3, threshold=0.5)
    (results / "synthetic" / "tables").mkdir(parents=True)
    (results / "synthetic" / "tables" / "claims.md").write_text(
        "| claim | paper | ours |\n|---|---|---|\n| accuracy | 99.8% | 71.0% |\n")
    demo = launch(results=results, port=_free_port(), prevent_thread_lock=True, progress=False,
                  echo=lambda line: None)
    yield demo
    demo.close()


def test_findings_tab_renders_the_claims_table(served_with_findings) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = _browser(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(served_with_findings.local_url, wait_until="domcontentloaded")
            page.get_by_role("tab", name="Findings and training-set lookup").click(timeout=60_000)
            table = page.locator(".findings-table table").first
            expect(table).to_be_visible(timeout=30_000)
            expect(table).to_contain_text("99.8%")
            expect(table.locator("th").first).to_have_text("claim")
            expect(page.get_by_text("No dataset is loaded for lookup")).to_be_visible()
            page.screenshot(path="/tmp/demo_screenshot_findings.png", full_page=True)
        finally:
            browser.close()


# every word of every findings-table cell (and of the headline) on one line: a word whose Range has two
# client rectangles was broken across lines
_BROKEN_WORDS_JS = """
(root) => {
  const broken = [], styles = new Set();
  const cells = [...root.querySelectorAll('.findings-table th, .findings-table td, #headline p')];
  for (const cell of cells) {
    const cs = getComputedStyle(cell);
    styles.add(`${cs.wordBreak}|${cs.overflowWrap}|${cs.hyphens}`);
    const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      // a word may end a line at its own hyphen or slash ("majority-|class"): pieces between them must not break
      const re = /[^\\s\\-\\u2010-\\u2014\\/]+/g;
      let m;
      while ((m = re.exec(node.data)) !== null) {
        const r = document.createRange();
        r.setStart(node, m.index);
        r.setEnd(node, m.index + m[0].length);
        const lines = new Set([...r.getClientRects()].filter(q => q.width > 0).map(q => Math.round(q.top)));
        if (lines.size > 1) broken.push(m[0]);
      }
    }
  }
  return {cells: cells.length, broken: broken.slice(0, 20), styles: [...styles]};
}
"""


@pytest.fixture(scope="module")
def served_with_committed_claims(tmp_path_factory: pytest.TempPathFactory):
    """A demo showing the repository's own claims table (long cells, 14 columns) and its headline."""
    from fracbench.app.demo import launch
    from fracbench.models import create_model
    from fracbench.serving.checkpoint import save_checkpoint

    repo_tables = Path(__file__).resolve().parents[1] / "results" / "tables"
    results = tmp_path_factory.mktemp("results-committed")
    torch.manual_seed(0)
    save_checkpoint(results / "runs" / "paper_honest" / "seed0" / "checkpoints" / "best",
                    create_model("paper_cnn", image_size=64), model_name="paper_cnn", model_kwargs={},
                    image_size=64, channels=3, threshold=0.5)
    (results / "tables").mkdir()
    for name in ("claims.md", "claims.csv", "leak_splits.md"):
        shutil.copyfile(repo_tables / name, results / "tables" / name)
    demo = launch(results=results, port=_free_port(), prevent_thread_lock=True, progress=False,
                  echo=lambda line: None)
    yield demo
    demo.close()


def test_findings_tab_at_1400px_breaks_no_word_and_does_not_overflow(served_with_committed_claims) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = _browser(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(served_with_committed_claims.local_url, wait_until="domcontentloaded")
            expect(page.locator("#headline")).to_contain_text("99.8% test accuracy: not reproduced", timeout=60_000)
            page.get_by_role("tab", name="Findings and training-set lookup").click(timeout=60_000)
            table = page.locator(".findings-table table").first
            expect(table).to_be_visible(timeout=30_000)
            expect(page.locator("#findings-tab")).to_contain_text("local run (not committed)")
            found = page.evaluate(_BROKEN_WORDS_JS, page.locator("body").element_handle())
            assert found["cells"] > 100, found
            assert found["styles"] == ["normal|normal|none"], found["styles"]
            assert not found["broken"], f"words broken across lines: {found['broken']}"
            # the page itself never scrolls sideways: a wide table scrolls inside its own box
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
            assert table.evaluate("t => getComputedStyle(t).overflowX") == "auto"
            assert table.evaluate("t => t.getBoundingClientRect().right <= window.innerWidth + 1")
            page.screenshot(path="/tmp/demo_screenshot_findings_1400.png", full_page=True)
        finally:
            browser.close()
