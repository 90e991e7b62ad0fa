"""Captions through the app's public endpoint, /detect, driven by gradio_client."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from test_app import RunningApp, app_env, shared_vod, start_app


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, checkpoint: Path):
    home = tmp_path_factory.mktemp("app-captions")
    running = start_app(app_env(tmp_path_factory, checkpoint, home), home)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(app: RunningApp, tmp_path_factory: pytest.TempPathFactory) -> Client:
    return Client(app.url, verbose=False, download_files=str(tmp_path_factory.mktemp("dl")))


def detect(client: Client, vod: Path, captions: str, cut: str = "exact"):
    return client.predict(handle_file(str(vod)), "", 2, 50.0, None, 5.0, 0.0, 0.0, cut, captions,
                          api_name="/detect")  # fmt: skip


def test_detect_returns_each_clips_text_and_its_subtitle_files(client, tmp_path_factory):
    vod = shared_vod(tmp_path_factory)
    report, archive = detect(client, vod, "files")
    highlights = report["highlights"]
    assert highlights and [h["text"] for h in highlights] == ["gg wp"] * len(highlights)
    with zipfile.ZipFile(archive) as zipped:
        names = {Path(n).name: n for n in zipped.namelist()}
        for rank in range(1, len(highlights) + 1):
            srt = zipped.read(names[f"stream vod-highlight_{rank:02d}.srt"]).decode()
            assert srt.startswith("1\n00:00:00,000 --> 00:00:0") and srt.endswith("gg wp\n\n")
            assert f"stream vod-highlight_{rank:02d}.vtt" in names
    plain, _ = detect(client, vod, "off")
    assert [h["text"] for h in plain["highlights"]] == [None] * len(plain["highlights"])


def test_detect_soft_captions_on_stream_copied_cuts(client, tmp_path_factory, tmp_path):
    import json
    import subprocess

    from highlightsense import tools

    report, archive = detect(client, shared_vod(tmp_path_factory), "soft", cut="fast")
    with zipfile.ZipFile(archive) as zipped:
        member = next(n for n in zipped.namelist() if n.endswith(report["highlights"][0]["clip"]))
        clip = tmp_path / "clip.mp4"
        clip.write_bytes(zipped.read(member))
    probe = subprocess.run(
        [tools.ffprobe_path(), "-v", "error", "-show_entries", "stream=codec_type,codec_name",
         "-of", "json", str(clip)], check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    kinds = {s["codec_type"]: s["codec_name"] for s in json.loads(probe.stdout)["streams"]}
    assert kinds.get("subtitle") == "mov_text"


def test_detect_refuses_an_unknown_captions_value_in_one_sentence(client, tmp_path_factory):
    with pytest.raises(AppError) as caught:
        detect(client, shared_vod(tmp_path_factory), "karaoke<script>")
    message = str(caught.value)
    # Gradio checks a radio's choices before the handler (which would refuse it too)
    assert "karaoke" in message and "'off', 'burn', 'soft', 'files'" in message
