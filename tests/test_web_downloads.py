"""File links given to the app (API and MCP callers): fetched within the upload limit, and
nothing half-downloaded left behind (highlightsense/web/downloads.py). In-process here, against
the local stand-in for the web (tests/link_server.py); through the running app in test_app.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import gradio as gr
import pytest
from gradio import processing_utils
from link_server import BIG, HOST, SMALL, LinkServer, content

from highlightsense.web import config, downloads

LIMIT = 1024**2  # bytes, the tests' app's 1 MB


@pytest.fixture
def through(link_server: LinkServer, monkeypatch: pytest.MonkeyPatch) -> LinkServer:
    for name, value in link_server.env().items():
        monkeypatch.setenv(name, value)
    return link_server


def fetch(name: str, cache: Path) -> str:
    return asyncio.run(downloads.download(f"http://{HOST}/{name}", str(cache), max_bytes=LIMIT))


def files_in(cache: Path) -> list[Path]:
    return [path for path in cache.rglob("*") if path.is_file()]


def test_a_file_within_the_limit_arrives_whole_where_gradio_looks_and_once(
    through: LinkServer, tmp_path: Path
) -> None:
    path = Path(fetch("small.bin", tmp_path))
    assert path.read_bytes() == content(SMALL)
    url = f"http://{HOST}/small.bin"
    assert path == tmp_path / processing_utils.hash_url(url) / "small.bin"  # Gradio's own place
    asked = through.requests.count(url)
    assert fetch("small.bin", tmp_path) == str(path)
    assert through.requests.count(url) == asked  # the complete file is reused, not fetched again
    assert files_in(tmp_path) == [path]


@pytest.mark.parametrize("name", ["declared.bin", "undeclared.bin"])
def test_a_file_over_the_limit_is_refused_in_one_sentence_and_nothing_is_left(
    through: LinkServer, tmp_path: Path, name: str
) -> None:
    with pytest.raises(gr.Error) as refused:
        fetch(name, tmp_path)
    assert refused.value.message == (
        "The file at that link is larger than this app's limit of 1 MB; "
        "give a shorter or smaller file."
    )
    assert files_in(tmp_path) == []
    # Stopped early: the limit and what both sockets buffer (a few MB on loopback), of 64 MB.
    assert through.sent[name] < BIG // 4


def test_a_redirect_to_a_private_address_is_refused(through: LinkServer, tmp_path: Path) -> None:
    with pytest.raises(gr.Error, match="not a public address"):
        fetch("to-private", tmp_path)
    assert files_in(tmp_path) == []
    assert not any("secret" in path for path in through.requests)


def test_a_missing_file_says_what_the_link_answered(through: LinkServer, tmp_path: Path) -> None:
    with pytest.raises(gr.Error, match="answered HTTP 404"):
        fetch("nothing-here.mp4", tmp_path)
    assert files_in(tmp_path) == []


def test_the_app_puts_the_limited_download_in_gradios_place(monkeypatch) -> None:
    monkeypatch.setattr(processing_utils, "async_ssrf_protected_download", None)
    downloads.limit_link_downloads(LIMIT)
    installed = processing_utils.async_ssrf_protected_download
    assert installed.func is downloads.download and installed.keywords == {"max_bytes": LIMIT}


@pytest.mark.parametrize(
    ("text", "size"), [("1mb", 1024**2), ("8gb", 8 * 1024**3), ("500 MB", 500 * 1024**2)]
)
def test_the_upload_limit_is_read_as_gradio_reads_it(monkeypatch, text: str, size: int) -> None:
    monkeypatch.setenv(config.MAX_UPLOAD_ENV, text)
    assert config.size_in_bytes(config.upload_limit()) == size


@pytest.mark.parametrize("text", ["8", "lots", "0gb", "-1mb", "1.5gb", "8 pb"])
def test_an_upload_limit_that_is_not_a_size_stops_the_app_with_one_sentence(
    monkeypatch, text: str
) -> None:
    monkeypatch.setenv(config.MAX_UPLOAD_ENV, text)
    with pytest.raises(SystemExit, match="must be a size such as 500mb or 8gb"):
        config.upload_limit()
