"""The chat in a real browser: a chat replay uploaded beside the VOD draws its curve and the
fused score on the plot, and the Chat weight slider at 0 re-selects with the audio alone."""

from __future__ import annotations

import json
import re

import pytest
from app_server import shared_vod
from test_app_browser import RESULTS_TIMEOUT, open_page, set_slider, upload, wait_results
from test_app_browser import browser as chromium_browser  # noqa: F401  (a fixture)

pytestmark = pytest.mark.browser

CHAT_WEIGHT_LABEL = "Chat weight (with a chat replay; 0: the audio alone)"


def test_a_chat_upload_draws_its_curve_and_weight_0_removes_it(request, app, tmp_path_factory):
    browser = request.getfixturevalue("chromium_browser")  # test_app_browser's
    folder = tmp_path_factory.mktemp("chat-browser")
    rows = [{"time_in_seconds": float(t), "author": {"name": f"v{t % 5}"}, "message": "hi"}
            for t in range(1, 60, 3)]  # fmt: skip
    rows += [{"time_in_seconds": 34.0 + i / 6, "author": {"name": f"f{i}"}, "message": "KEKW",
              "emotes": [{"name": "KEKW"}]} for i in range(40)]  # fmt: skip
    chat_path = folder / "stream chat.json"
    chat_path.write_text(json.dumps(sorted(rows, key=lambda r: r["time_in_seconds"])))

    context, page = open_page(browser, app.url)
    upload(page, shared_vod(tmp_path_factory))
    page.locator("#chat-upload input[type=file]").set_input_files(str(chat_path))
    page.locator("#chat-upload").get_by_text("stream chat").first.wait_for(timeout=RESULTS_TIMEOUT)
    page.locator("#find-highlights").click()
    wait_results(page)
    plot = page.locator("#score-plot")
    plot.get_by_text("fused score").first.wait_for()
    assert plot.get_by_text(re.compile(r"^chat$")).count() >= 1

    page.get_by_text("Settings").first.click()
    set_slider(page, CHAT_WEIGHT_LABEL, 0)
    plot.get_by_text("fused score").first.wait_for(state="detached")
    context.close()
