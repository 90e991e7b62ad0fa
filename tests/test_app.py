"""The web app end to end: a real ``python app.py`` on loopback, driven with gradio_client
(its one public endpoint, /detect) and with raw HTTP (the page's private events).

The app runs offline on tiny random-weight models (the CRNN from save_checkpoint, Demucs from
make_tiny_demucs_repo), so the scores mean nothing, but every step is the real one: upload,
separation, features, scoring, selection, ffmpeg cuts, downloads and errors.
"""

from __future__ import annotations

import csv
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import built_once, make_media
from demucs_fixtures import make_tiny_demucs_repo
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from highlightsense import media

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT = 180.0  # s for the app to answer (imports torch, demucs, gradio)
FILE_DATA = {"_type": "gradio.FileData"}  # what marks a dict as a file in Gradio's JSON

# --- helpers shared with test_app_browser.py ------------------------------------------------


def shared_vod(factory: pytest.TempPathFactory) -> Path:
    """A 60 s test-pattern VOD with loud bursts, made once per test run (every test process)."""

    def build(folder: Path) -> None:
        make_media(folder / "stream vod.mp4", 60, loud_spans=((15, 21), (40, 44)))

    return built_once(factory, "app-media", build) / "stream vod.mp4"


def app_env(factory: pytest.TempPathFactory, checkpoint: Path, home: Path) -> dict[str, str]:
    """The environment of an app using the tiny models and only folders under ``home``."""
    repo = built_once(factory, "demucs", make_tiny_demucs_repo)  # the tiny_separator fixture's
    env = {
        **os.environ,
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(free_port()),
        "GRADIO_TEMP_DIR": str(home / "gradio"),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        "HIGHLIGHTSENSE_WEIGHTS": str(checkpoint),
        "HIGHLIGHTSENSE_SEPARATOR": "tiny",
        "HIGHLIGHTSENSE_SEPARATOR_REPO": str(repo),
        # one cache for every app of the run: the example and the shared VOD are analysed once
        "HIGHLIGHTSENSE_CACHE": str(built_once(factory, "app-cache", lambda folder: None)),
        "HIGHLIGHTSENSE_WORKDIR": str(home / "work"),
    }
    env.pop("SPACES_ZERO_GPU", None)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningApp:
    process: subprocess.Popen
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_app(env: dict[str, str], home: Path) -> RunningApp:
    """``python app.py`` in ``home``, once it answers on its port."""
    log_path = home / "app.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(REPO / "app.py")],
            cwd=home,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    app = RunningApp(process, f"http://127.0.0.1:{env['GRADIO_SERVER_PORT']}/", log_path)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"app.py exited with status {process.returncode}:\n{app.log()[-3000:]}")
        try:
            with urllib.request.urlopen(app.url, timeout=5) as response:
                if response.status == 200:
                    return app
        except OSError:
            time.sleep(0.5)
    app.stop()
    pytest.fail(f"app.py did not answer within {START_TIMEOUT:.0f} s:\n{app.log()[-3000:]}")


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, checkpoint: Path):
    home = tmp_path_factory.mktemp("app")
    running = start_app(app_env(tmp_path_factory, checkpoint, home), home)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(app: RunningApp, tmp_path_factory: pytest.TempPathFactory) -> Client:
    downloads = tmp_path_factory.mktemp("client-downloads")
    return Client(app.url, verbose=False, download_files=str(downloads))


@pytest.fixture(scope="module")
def vod(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_vod(tmp_path_factory)


def detect(client: Client, file=None, link: str = "", **changes) -> tuple[dict, str | None]:
    values = {"top_n": 3, "percentile": 50.0, "threshold": None, "gap": 5.0}
    values |= {"pad_before": 0.0, "pad_after": 0.0, "cut": "exact"} | changes
    return client.predict(file, link, *values.values(), api_name="/detect")


def analysis_count(app: RunningApp) -> int:
    return len(re.findall(r"analysis started: job [0-9a-f]{32}\b", app.log()))


# --- the public API ---------------------------------------------------------------------------


def test_only_detect_is_public(client: Client) -> None:
    api = client.view_api(return_format="dict", print_info=False)
    assert list(api["named_endpoints"]) == ["/detect"]
    assert api["unnamed_endpoints"] == {}
    names = [p["parameter_name"] for p in api["named_endpoints"]["/detect"]["parameters"]]
    assert names == [
        "file", "link", "top_n", "percentile", "threshold", "gap", "pad_before", "pad_after", "cut",
        "chat", "chat_weight",
    ]  # fmt: skip


def test_detect_returns_highlights_and_a_zip_named_after_the_vod(
    client: Client, vod: Path, app: RunningApp
) -> None:
    report, archive = detect(client, handle_file(str(vod)))
    assert report["vod"] == vod.name and report["duration"] == pytest.approx(60.0, abs=0.1)
    highlights = report["highlights"]
    assert 1 <= len(highlights) <= 3
    assert (
        report["message"]
        == f"{len(highlights)} highlight{'s' if len(highlights) > 1 else ''} found."
    )
    assert [h["rank"] for h in highlights] == list(range(1, len(highlights) + 1))
    confidences = [h["confidence"] for h in highlights]
    assert confidences == sorted(confidences, reverse=True)
    assert all(h["confidence"] >= report["threshold"] for h in highlights)
    stem = vod.stem
    assert Path(archive).name == f"{stem}-highlights.zip"
    with zipfile.ZipFile(archive) as zipped:
        names = {Path(name).name: name for name in zipped.namelist()}
        tables = {f"{stem}-highlights.csv", f"{stem}-highlights.json", f"{stem}-scores.csv"}
        timelines = {f"{stem}-{name}" for name in (
            "timeline.otio", "timeline.xml", "timeline.fcpxml", "timeline.edl", "chapters.txt"
        )}  # fmt: skip
        clips = {h["clip"] for h in highlights}
        assert set(names) == tables | timelines | clips
        chapters = zipped.read(names[f"{stem}-chapters.txt"]).decode().splitlines()
        assert chapters[0].startswith("0:00") and len(chapters) >= len(highlights)
        assert clips == {f"{stem}-highlight_{h['rank']:02d}.mp4" for h in highlights}
        summary = json.loads(zipped.read(names[f"{stem}-highlights.json"]))
        assert [h["confidence"] for h in summary["highlights"]] == pytest.approx(confidences)
        rows = list(
            csv.DictReader(zipped.read(names[f"{stem}-highlights.csv"]).decode().splitlines())
        )
        assert [float(r["duration_sec"]) for r in rows] == pytest.approx(
            [30.0] * len(rows), abs=0.05
        )
        for highlight in highlights:
            clip = Path(archive).parent / highlight["clip"]
            clip.write_bytes(zipped.read(names[highlight["clip"]]))
            span = highlight["end_sec"] - highlight["start_sec"]
            assert media.probe(clip).duration == pytest.approx(span, abs=0.5)


def test_readme_api_example_runs_against_the_app(app: RunningApp, vod: Path, tmp_path: Path):
    """The README's gradio_client example, as written but for the address of this test's app."""
    from test_readme import sections

    (code,) = (text for language, text in sections()["The web app"] if language == "python")
    assert '"http://127.0.0.1:7860/"' in code
    code = code.replace('"http://127.0.0.1:7860/"', repr(app.url))
    (tmp_path / "my_vod.mp4").symlink_to(vod)
    env = {**os.environ, "GRADIO_TEMP_DIR": str(tmp_path / "gradio")}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()  # gradio_client's own "Loaded as API" line first
    assert any(line.startswith("1 ") for line in lines), done.stdout
    assert lines[-1].endswith("highlights.zip"), done.stdout


def test_detect_picks_the_planted_shouts_in_time_order(
    tmp_path_factory: pytest.TempPathFactory, learned_checkpoint: Path, planted_vod
) -> None:
    """Through /detect, with a model that has learned something: one highlight per shout
    planted in the VOD, in the shouts' order of time (random weights could not tell)."""
    from model_fixtures import burst_seconds

    home = tmp_path_factory.mktemp("learned-app")
    running = start_app(app_env(tmp_path_factory, learned_checkpoint, home), home)
    try:
        client = Client(running.url, verbose=False, download_files=str(home / "downloads"))
        report, _ = detect(
            client, handle_file(str(planted_vod.path)), top_n=5, threshold=0.5, gap=10.0
        )
    finally:
        running.stop()
    picks = sorted((h["start_sec"], h["end_sec"]) for h in report["highlights"])
    assert len(picks) == len(planted_vod.bursts), report
    for (start, end), burst in zip(picks, planted_vod.bursts, strict=True):
        assert burst_seconds(start, end, (burst,)) >= 1.0, (start, end, burst)


def test_minimum_score_with_nothing_above_it_still_answers(client: Client, vod: Path) -> None:
    """Issue 11 item 1: a threshold no window reaches gives no highlights, not a crash."""
    report, archive = detect(client, handle_file(str(vod)), threshold=0.999, cut="fast")
    assert report["highlights"] == [] and report["threshold"] == 0.999
    assert report["message"].startswith("No highlights with these settings")
    with zipfile.ZipFile(archive) as zipped:
        assert sorted(Path(n).name for n in zipped.namelist()) == [
            f"{vod.stem}-highlights.csv", f"{vod.stem}-highlights.json", f"{vod.stem}-scores.csv"
        ]  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({}, "Upload a VOD or paste a Twitch or YouTube link first."),
        (
            {"link": "https://evil.example/<b>x</b>"},
            "https://evil.example/<b>x</b> is not a supported link",
        ),
        ({"link": "x" * 3000}, "The link must be a web address of at most 2048 characters."),
        (
            {"link": "https://youtu.be/x", "top_n": 2.5},
            "The number of clips must be a whole number",
        ),
        ({"link": "https://youtu.be/x", "percentile": 10}, "The share to beat must be a number"),
        ({"link": "https://youtu.be/x", "threshold": 7}, "The minimum score must be a number"),
    ],
)
def test_detect_answers_bad_input_with_one_plain_sentence(
    client: Client, app: RunningApp, changes: dict, message: str
) -> None:
    before = analysis_count(app)
    with pytest.raises(AppError) as caught:
        detect(client, **changes)
    text = str(caught.value)
    assert message in text
    assert "&lt;" not in text and "`" not in text and "--" not in text
    assert analysis_count(app) == before


# --- the page's private events, reached by number ---------------------------------------------


def call_by_index(app: RunningApp, fn_index: int, data: list) -> list[dict]:
    """Send ``data`` to event ``fn_index`` through the queue, as any HTTP client can: the
    messages it streams back, up to the completed one."""
    session = os.urandom(8).hex()
    with httpx.Client(base_url=app.url, timeout=60) as http:
        joined = http.post(
            "gradio_api/queue/join",
            json={"data": data, "fn_index": fn_index, "session_hash": session},
        )
        joined.raise_for_status()
        messages = []
        with http.stream("GET", "gradio_api/queue/data", params={"session_hash": session}) as r:
            for line in r.iter_lines():
                if line.startswith("data:"):
                    message = json.loads(line[5:])
                    messages.append(message)
                    if message.get("msg") == "process_completed":
                        break
    return messages


RAW_ERRORS = ("Traceback", "invalid literal", "int too large", "NoneType", "object has no")


def test_every_private_event_answers_garbage_with_the_apps_sentence(app: RunningApp) -> None:
    config = httpx.get(f"{app.url}config", timeout=30).json()
    garbage = [10**400, "../../etc/passwd", {"job": 1}, [1, 2], None, "zz"]
    checked = refused_by_gradio = 0
    for index, dependency in enumerate(config["dependencies"]):
        if dependency.get("api_name") == "detect" or not dependency.get("backend_fn", True):
            continue
        width = len(dependency["inputs"])
        for value in garbage:
            messages = call_by_index(app, index, [value] * width)
            done = messages[-1]
            assert done["msg"] == "process_completed"
            text = json.dumps(done)
            if "Could not preprocess input component" in text:
                refused_by_gradio += 1  # the component's own check, before any handler runs
                continue
            assert not any(raw in text for raw in RAW_ERRORS), (dependency.get("api_name"), text)
            checked += 1
    print(f"{checked} answered by the app's handlers, {refused_by_gradio} by Gradio's checks")
    assert checked >= 6 * 8


def test_app_without_models_says_what_the_owner_must_set(
    tmp_path_factory: pytest.TempPathFactory, checkpoint: Path, vod: Path, tmp_path: Path
) -> None:
    """Missing weights do not stop the app from starting; the failure is remembered and said at
    once, naming the variable the Space's owner sets. The upload limit holds for any client."""
    home = tmp_path_factory.mktemp("no-models")
    env = app_env(tmp_path_factory, checkpoint, home)
    env |= {"HIGHLIGHTSENSE_WEIGHTS": str(home / "missing.pt"), "HIGHLIGHTSENSE_MAX_UPLOAD": "1mb"}
    app = start_app(env, home)
    try:
        deadline = time.monotonic() + 60
        while "the models could not be loaded" not in app.log():
            assert time.monotonic() < deadline, app.log()
            time.sleep(0.5)
        client = Client(app.url, verbose=False, download_files=str(tmp_path))
        small = tmp_path / "small.mp4"
        small.write_bytes(bytes(1000))
        for _ in range(2):  # remembered: the second call does not try again
            with pytest.raises(AppError, match="the Space's owner must set HIGHLIGHTSENSE_WEIGHTS"):
                detect(client, handle_file(str(small)))
        assert app.log().count("the models could not be loaded") == 1
        with open(vod, "rb") as big:  # 1.8 MB
            refused = httpx.post(f"{app.url}gradio_api/upload", files={"files": big}, timeout=60)
        assert refused.status_code == 413
    finally:
        app.stop()
