"""Kick VOD links through the command line and the app's handlers, with yt-dlp replaced by the
fake extractor answer of test_sources.py (never the network): accepted like Twitch links, under
the same limits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_sources import KICK, KICK_ID, FakeYoutubeDL

from highlightsense import cli, sources
from highlightsense.errors import SourceError

HOUR = 3600.0  # s


@pytest.fixture
def cli_env(tmp_path: Path, checkpoint: Path, tiny_separator, monkeypatch) -> None:
    repo, name = tiny_separator
    for key, value in {
        "HIGHLIGHTSENSE_CACHE": str(tmp_path / "cache"),
        "HIGHLIGHTSENSE_WEIGHTS": str(checkpoint),
        "HIGHLIGHTSENSE_SEPARATOR": name,
        "HIGHLIGHTSENSE_SEPARATOR_REPO": str(repo),
        "HIGHLIGHTSENSE_MAX_HOURS": "2",
    }.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def kick_vod(monkeypatch: pytest.MonkeyPatch, short_vod: Path) -> type[FakeYoutubeDL]:
    """yt-dlp answering for a finished 40 s Kick VOD, and 'downloading' ``short_vod``."""

    class Fake(FakeYoutubeDL):
        info = {"id": KICK_ID, "title": "Kick stream", "duration": 40.0, "live_status": "was_live"}
        source = short_vod
        statuses = [{"status": "finished", "downloaded_bytes": 200, "total_bytes": 200}]
        seen: list[FakeYoutubeDL] = []

    monkeypatch.setattr(sources.yt_dlp, "YoutubeDL", Fake)
    return Fake


def test_the_command_line_analyses_a_kick_vod(cli_env, kick_vod, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    pasted = f"https://www.kick.com/SomeStreamer/videos/{KICK_ID.upper()}?t=10"
    code = cli.main(["detect", pasted, "-o", str(out), "--top-n", "2", "--copy", "-q"])
    assert code == 0, capsys.readouterr().err
    [ydl] = kick_vod.seen
    assert ydl.url == KICK and ydl.downloaded  # the canonical link, and only it
    assert ydl.params["allowed_extractors"] == sources.EXTRACTORS
    assert ydl.params["max_filesize"] == sources.MAX_BYTES
    summary = json.loads((out / "highlights.json").read_text())
    assert 1 <= len(summary["highlights"]) <= 2
    assert len(list((out / "clips").iterdir())) == len(summary["highlights"])


def test_the_command_line_refuses_a_kick_vod_over_the_length_limit(
    cli_env, kick_vod, tmp_path, capsys
) -> None:
    kick_vod.info = {**kick_vod.info, "duration": 3 * HOUR}
    out = tmp_path / "out"
    code = cli.main(["detect", KICK, "-o", str(out), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "lasts 3 h, more than the 2 h limit" in err
    assert not kick_vod.seen[0].downloaded and not out.exists()


def test_the_app_takes_kick_links_as_twitch_ones(tmp_path: Path) -> None:
    """The handler behind the page's Find highlights and /detect: a Kick VOD is a link to
    fetch; a Kick channel page is refused with the sentence naming what is accepted."""
    from highlightsense.web.service import Config, Service

    app = Service(Config(tmp_path, 3600.0, 600.0, 1e9, "1gb", 5, 60.0, 600.0, "cpu"))
    pasted = f"kick.com/somestreamer/videos/{KICK_ID}/"
    assert app.source({"job": ""}, None, pasted) == (KICK, True, "")
    with pytest.raises(SourceError) as caught:
        app.source({"job": ""}, None, "https://kick.com/somestreamer")
    assert "https://kick.com/<channel>/videos/<id>" in str(caught.value)
