"""The web app in a real browser: headless Chromium (Debian's) driven through Playwright.

Upload a VOD, press Find highlights, and wait for the gallery's clips to load in the page; then
select a table row, reload the page (the job id in the browser brings the results back) and
save a screenshot to test-artifacts/app.png.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from test_app import REPO, app_env, shared_vod, start_app

sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
INSTALL_TIMEOUT = 900  # s for apt-get
RESULTS_TIMEOUT = 240_000  # ms for an analysis to show its clips
STEP_TIMEOUT = 60_000  # ms for anything else (the CI machine may be busy)
SCREENSHOT = REPO / "test-artifacts" / "app.png"

# true once one <video> in the selector's element has loaded a playable clip
LOADED = """selector => {
    const videos = [...document.querySelectorAll(selector + ' video')];
    return videos.length > 0 && videos.every(v => v.duration > 0);
}"""
# true while the selector's element holds no <video>: a new job has cleared the old results
CLEARED = "selector => document.querySelectorAll(selector + ' video').length === 0"


def chromium() -> Path:
    """Debian's chromium (Playwright's own download does not work offline), installed on
    first use when this runs as root."""
    if CHROMIUM.exists():
        return CHROMIUM
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(f"needs Debian's chromium at {CHROMIUM}: run `apt-get install -y chromium`")
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
        if done.returncode != 0 and command[1] == "install":
            pytest.skip(f"`apt-get install chromium` failed: {done.stderr.strip()[-300:]}")
    if not CHROMIUM.exists():
        pytest.skip(f"`apt-get install chromium` did not provide {CHROMIUM}")
    return CHROMIUM


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, checkpoint: Path):
    home = tmp_path_factory.mktemp("browser-app")
    running = start_app(app_env(tmp_path_factory, checkpoint, home), home)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium()), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, app):
    """A page in a fresh context: no job id remembered from another test."""
    context = browser.new_context(viewport={"width": 1280, "height": 1400})
    page = context.new_page()
    page.set_default_timeout(STEP_TIMEOUT)
    sync_api.expect.set_options(timeout=STEP_TIMEOUT)
    page.goto(app.url)
    page.locator("#highlights-gallery").wait_for()
    yield page
    context.close()


def test_find_highlights_in_the_browser(page, tmp_path_factory: pytest.TempPathFactory) -> None:
    vod = shared_vod(tmp_path_factory)
    page.locator("input[type=file]").first.set_input_files(str(vod))
    page.get_by_text(vod.name).first.wait_for()  # the upload has reached the server
    page.get_by_role("button", name="Find highlights").click()

    page.wait_for_function(LOADED, arg="#highlights-gallery", timeout=RESULTS_TIMEOUT)
    table = page.locator("#highlights-table")
    rows = table.get_by_role("row").filter(has=page.get_by_role("gridcell"))  # not the header
    clips = page.locator("#highlights-gallery video")
    assert clips.count() >= 1
    sync_api.expect(rows).to_have_count(clips.count())
    assert f"{rows.count()} highlight" in page.locator("#status").inner_text()
    score_plot = page.locator("#score-plot .js-plotly-plot")
    score_plot.wait_for()
    assert "Highlight probability over the VOD" in score_plot.inner_text()

    # selecting a row plays that clip and explains it
    rows.first.get_by_role("gridcell").nth(1).click()
    page.wait_for_function(LOADED, arg="#clip-player", timeout=STEP_TIMEOUT)
    page.locator("#why-plot .js-plotly-plot").wait_for()

    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    # a reloaded page finds its job again through the id kept in the browser
    page.reload()
    page.wait_for_function(LOADED, arg="#highlights-gallery", timeout=STEP_TIMEOUT)
    assert page.locator("#highlights-gallery video").count() == clips.count()


def test_try_an_example_twice(page) -> None:
    """One click runs the demo VOD; a second run in the same page shows its first clip again."""
    for _ in range(2):
        page.get_by_role("button", name="Try an example").click()
        page.wait_for_function(CLEARED, arg="#highlights-gallery", timeout=RESULTS_TIMEOUT)
        page.wait_for_function(LOADED, arg="#highlights-gallery", timeout=RESULTS_TIMEOUT)
        page.wait_for_function(LOADED, arg="#clip-player", timeout=STEP_TIMEOUT)
        sync_api.expect(page.locator("#status")).to_contain_text("highlight")
    assert "highlightsense-demo" in page.locator("#vod-upload").inner_text()
