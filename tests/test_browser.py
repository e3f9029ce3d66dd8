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

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"{CHROMIUM} not installed (apt-get install chromium) — the browser test needs it"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:.*:Warning:gradio.queueing"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    from fracbench.checkpoint import save_checkpoint
    from fracbench.demo import launch
    from fracbench.models import create_model

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
    from fracbench.checkpoint import save_checkpoint
    from fracbench.demo import launch
    from fracbench.models import create_model

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
