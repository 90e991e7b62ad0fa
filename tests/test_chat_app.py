"""The chat through the app's /detect endpoint: a real ``python app.py`` with the learned model
on the planted VOD, a chat file uploaded with gradio_client."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from test_app import detect

from highlightsense import chat

QUIET = 30.0  # s: between the planted shouts (12-16 s and 57-61 s), where the chat bursts


def chat_json(folder: Path) -> Path:
    """chat-downloader items: a message every 2 s, and a KEKW burst about the quiet moment."""
    rows = [{"time_in_seconds": float(t), "author": {"name": f"v{t % 7}"}, "message": "hi"}
            for t in range(1, 120, 2)]  # fmt: skip
    rows += [{"time_in_seconds": QUIET + chat.CHAT_LAG_SEC + i / 8, "author": {"name": f"f{i}"},
              "message": "KEKW", "emotes": [{"name": "KEKW"}]} for i in range(60)]  # fmt: skip
    path = folder / "chat.json"
    path.write_text(json.dumps(sorted(rows, key=lambda r: r["time_in_seconds"])))
    return path


@pytest.fixture(scope="module")
def learned_client(learned_app, tmp_path_factory) -> Client:
    """A client of the session's app with the learned model (conftest's, shared with
    test_app.py: SHARED_PROCESS puts both files in one process)."""
    downloads = tmp_path_factory.mktemp("chat-app-downloads")
    return Client(learned_app.url, verbose=False, download_files=str(downloads))


def test_detect_fuses_an_uploaded_chat(learned_client, planted_vod, tmp_path):
    client = learned_client
    chat_file = handle_file(str(chat_json(tmp_path)))
    vod = handle_file(str(planted_vod.path))
    alone = detect(client, vod, top_n=3, percentile=50.0, gap=10.0, cut="fast")[0]
    assert "chat" not in alone
    assert not any(h["start_sec"] <= QUIET < h["end_sec"] for h in alone["highlights"][:1])
    # the chat alone (weight 1): the burst's window comes first
    only = detect(client, vod, top_n=3, percentile=50.0, gap=10.0, cut="fast",
                     chat=chat_file, chat_weight=1.0)[0]  # fmt: skip
    first = only["highlights"][0]
    assert first["start_sec"] <= QUIET and first["end_sec"] >= QUIET + 8.0, only
    assert only["chat"]["messages"] == 120 and only["chat"]["format"] == "chat-downloader JSON"
    for h in only["highlights"]:
        parts = h["signals"]
        assert parts["audio"]["weight"] == 0.0 and parts["chat"]["weight"] == 1.0
        assert parts["chat"]["contribution"] == pytest.approx(h["confidence"], abs=2e-6)
    # the default weight: every highlight's parts add up to its score
    fused = detect(client, vod, top_n=3, percentile=50.0, gap=10.0, cut="fast", chat=chat_file,
                      chat_weight=chat.CHAT_WEIGHT)[0]  # fmt: skip
    for h in fused["highlights"]:
        total = sum(part["contribution"] for part in h["signals"].values())
        assert total == pytest.approx(h["confidence"], abs=2e-6)


@pytest.mark.parametrize(
    ("content", "weight", "message"),
    [
        ("not a chat at all", chat.CHAT_WEIGHT, "neither JSON nor"),
        ('{"comments": [{"content_offset_seconds": -1}]}', chat.CHAT_WEIGHT, "not a time"),
        ("[0:00:01] a: hi\n", 1.5, "The chat weight must be a number between 0 and 1."),
    ],
)
def test_detect_refuses_a_bad_chat_in_one_sentence(learned_client, planted_vod, tmp_path, content,
                                                   weight, message):  # fmt: skip
    client = learned_client
    path = tmp_path / "chat.txt"
    path.write_text(content)
    with pytest.raises(AppError) as err:
        detect(client, handle_file(str(planted_vod.path)), cut="fast",
               chat=handle_file(str(path)), chat_weight=weight)  # fmt: skip
    assert message in str(err.value) and "Traceback" not in str(err.value)


def test_the_page_reads_the_chat_once_and_its_weight_reselects(
    tmp_path, monkeypatch, learned_checkpoint, tiny_separator, planted_vod, features_cache
):
    """The page's handlers in-process: Find highlights with a chat upload, then the Chat weight
    slider's re-tune (1 → 0 → 1) re-selects from the chat read once, with the audio alone at 0."""
    from gradio.utils import get_upload_folder

    from highlightsense.web import controls
    from highlightsense.web.service import PAGE, Config, Service

    repo, name = tiny_separator
    monkeypatch.setenv("HIGHLIGHTSENSE_WEIGHTS", str(learned_checkpoint))
    monkeypatch.setenv("HIGHLIGHTSENSE_SEPARATOR", name)
    monkeypatch.setenv("HIGHLIGHTSENSE_SEPARATOR_REPO", str(repo))
    monkeypatch.setenv("HIGHLIGHTSENSE_CACHE", str(features_cache))  # the planted VOD's, run-wide
    uploads = Path(get_upload_folder()) / "chat-page-test"
    uploads.mkdir(parents=True, exist_ok=True)
    vod = shutil.copy(planted_vod.path, uploads / "planted.mp4")
    chat_path = chat_json(uploads)
    reads = []
    real_load = chat.load
    monkeypatch.setattr(chat, "load", lambda *a, **k: reads.append(a) or real_load(*a, **k))

    app = Service(Config(tmp_path / "work", 3600.0, 3600.0, 1e10, "1gb", 5, 60.0, 600.0, "cpu"))
    app.models.load_once()
    assert app.models.error is None

    def tuning(weight: float) -> tuple:
        return controls.Picks(top_n=3, percentile=50.0, gap=10.0, cut="fast",
                              chat_weight=weight).values()  # fmt: skip

    answers = list(app.run({}, str(vod), "", str(chat_path), 30.0, *tuning(1.0)))
    shown = dict(zip(PAGE, answers[-1], strict=True))
    state = shown["state"]
    job = app.jobs.find(state["job"])
    assert job is not None and job.state == "done", shown["status"]
    first = job.result.highlights[0]
    start, end, _ = job.analysis.windows[first.window]
    assert start <= QUIET and end >= QUIET + 8.0
    assert [t.name for t in shown["plot"].data] == ["audio", "chat", "fused score"]
    assert shown["why"].layout.title.text.startswith("Chat burst: ")

    retuned = dict(zip(PAGE, app.retune(state, *tuning(0.0)), strict=True))
    alone = [h.window for h in job.result.highlights]
    assert job.result.signals == ()
    assert [t.name for t in retuned["plot"].data] == ["score"]  # the audio alone: no curves
    app.retune(state, *tuning(1.0))
    assert [h.window for h in job.result.highlights][0] == first.window
    assert alone[0] != first.window
    assert len(reads) == 1  # read once, at the analysis
