"""The web app end to end: a real ``python app.py`` on loopback, driven with gradio_client.

The app runs offline on tiny random-weight models (the CRNN from save_checkpoint, Demucs from
make_tiny_demucs_repo), so the scores mean nothing, but every step is the real one: upload,
separation, features, scoring, selection, ffmpeg cuts, downloads, re-tuning and errors.
"""

from __future__ import annotations

import base64
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
import numpy as np
import pytest
from conftest import make_media
from demucs_fixtures import make_tiny_demucs_repo
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from highlightsense import media

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT = 180.0  # s for the app to answer (imports torch, demucs, gradio)
FILE_DATA = {"_type": "gradio.FileData"}  # what marks a dict as a file in Gradio's JSON

# Settings sent with every run: 20 s clips leave ≥ 9 windows in a 60 s VOD and let a
# re-tune pad them without reaching both ends of it.
WINDOW = 20.0
TUNING = {"top_n": 3, "picky_by": "percentile", "percentile": 50.0, "threshold": 0.5}
TUNING |= {"gap": 5.0, "pad_before": 0.0, "pad_after": 0.0, "cut": "exact"}
TUNING_ARGS = (3, WINDOW, "percentile", 50.0, 0.5, 5.0, 0.0, 0.0, "exact")  # after the link


# --- helpers shared with test_app_browser.py ------------------------------------------------


def shared_path(factory: pytest.TempPathFactory, name: str) -> Path:
    """A path under the session's base temp dir, the same for every test module, so that the
    browser test reuses this module's VOD and feature cache instead of analysing again."""
    return factory.getbasetemp() / name


def shared_vod(factory: pytest.TempPathFactory) -> Path:
    """A 60 s test-pattern VOD with loud bursts, made once per session."""
    path = shared_path(factory, "app-media") / "stream vod.mp4"
    if not path.is_file():
        make_media(path, 60, loud_spans=((15, 21), (40, 44)))
    return path


def app_env(factory: pytest.TempPathFactory, checkpoint: Path, home: Path) -> dict[str, str]:
    """The environment of an app using the tiny models and only folders under ``home``."""
    repo = shared_path(factory, "app-demucs")
    if not repo.is_dir():
        make_tiny_demucs_repo(repo)
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
        "HIGHLIGHTSENSE_CACHE": str(shared_path(factory, "app-cache")),
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


@dataclass
class Run:
    job: str
    outputs: tuple
    seconds: float  # wall time of the analysis call


def find(client: Client, job: str, upload, link: str = "", **changes) -> tuple:
    values = {**TUNING, "window_sec": WINDOW, **changes}
    return client.predict(
        job,
        upload,
        link,
        values["top_n"],
        values["window_sec"],
        values["picky_by"],
        values["percentile"],
        values["threshold"],
        values["gap"],
        values["pad_before"],
        values["pad_after"],
        values["cut"],
        api_name="/find_highlights",
    )


def retune(client: Client, job: object, **changes) -> tuple:
    values = {**TUNING, **changes}
    return client.predict(job, *values.values(), api_name="/retune")


@pytest.fixture(scope="module")
def first_run(client: Client, vod: Path) -> Run:
    """The first analysis of the shared VOD, timed."""
    job = client.predict("", api_name="/new_job")[0]
    began = time.perf_counter()
    outputs = find(client, job, handle_file(str(vod)))
    return Run(job, outputs, time.perf_counter() - began)


# --- reading the outputs ----------------------------------------------------------------------


def plot_values(plot: dict, trace: int, axis: str) -> np.ndarray:
    """One axis of one trace of a Plotly figure as Gradio sends it (maybe binary-encoded)."""
    assert plot["type"] == "plotly"
    values = json.loads(plot["plot"])["data"][trace][axis]
    if isinstance(values, dict):  # plotly ≥ 6: {"dtype": "f8", "bdata": base64}
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"])
    return np.asarray(values, dtype=float)


def by_name(paths: list[str]) -> dict[str, Path]:
    return {Path(p).name: Path(p) for p in paths}


def summary_of(downloads: list[str]) -> dict:
    return json.loads(by_name(downloads)["highlights.json"].read_text())


def gallery_videos(gallery: dict) -> list[tuple[Path, str]]:
    """The clips of a gallery update: (path, caption) each."""
    return [(Path(item["video"]), item["caption"]) for item in gallery["value"]]


def analysis_count(app: RunningApp, job: str) -> int:
    return len(re.findall(rf"analysis started: job {job}\b", app.log()))


def ffmpeg_children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` and whose name contains ffmpeg."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        parent = int(text[text.rindex(")") + 2 :].split()[1])
        if parent == pid and "ffmpeg" in name:
            found.append(int(stat.parent.name))
    return found


# --- tests ------------------------------------------------------------------------------------


def test_upload_gives_plot_clips_table_and_downloads(first_run: Run, app: RunningApp) -> None:
    job, status, plot, gallery, table, downloads, picker = first_run.outputs
    assert job == first_run.job and re.fullmatch(r"[0-9a-f]{32}", job)
    summary = summary_of(downloads)
    highlights = summary["highlights"]
    assert 1 <= len(highlights) <= TUNING["top_n"]
    assert f"{len(highlights)} highlight" in status

    # the plot: one point per scored window, the chosen ones among them
    probabilities = plot_values(plot, 0, "y")
    assert len(probabilities) == summary["windows"] >= 9
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    for highlight in highlights:
        assert np.isclose(probabilities, highlight["confidence"], atol=1e-6).any()

    # the table, ranked, matching highlights.json
    assert table["headers"] == ["Rank", "Start", "End", "Confidence"]
    assert [row[0] for row in table["data"]] == list(range(1, len(highlights) + 1))
    confidences = [row[3] for row in table["data"]]
    assert confidences == sorted(confidences, reverse=True)
    assert np.allclose(confidences, [h["confidence"] for h in highlights], atol=1e-3)
    for row, highlight in zip(table["data"], highlights, strict=True):
        assert row[1:3] == [highlight["start_ts"], highlight["end_ts"]]

    # the gallery: clips that decode, as long as their spans, captioned with rank and times
    videos = gallery_videos(gallery)
    assert len(videos) == len(highlights)
    for (path, caption), highlight in zip(videos, highlights, strict=True):
        info = media.probe(path)
        assert info.has_video
        assert info.duration == pytest.approx(WINDOW, abs=0.5)
        span = highlight["end_sec"] - highlight["start_sec"]
        assert info.duration == pytest.approx(span, abs=0.5)
        assert caption.startswith(f"#{highlight['rank']} · {highlight['start_ts']}–")

    # downloads: the zip, both tables and each clip alone
    files = by_name(downloads)
    clip_names = [f"highlight_{h['rank']:02d}.mp4" for h in highlights]
    assert set(files) == {"highlights.zip", "highlights.csv", "highlights.json", *clip_names}
    with zipfile.ZipFile(files["highlights.zip"]) as archive:
        assert sorted(archive.namelist()) == clip_names
        for name in clip_names:
            assert archive.read(name) == files[name].read_bytes()
    with open(files["highlights.csv"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["confidence"]) for r in rows] == [h["confidence"] for h in highlights]

    assert [choice[1] for choice in picker["choices"]] == [h["rank"] for h in highlights]
    assert analysis_count(app, first_run.job) == 1


def test_retune_reselects_without_analysing_again(
    first_run: Run, client: Client, app: RunningApp
) -> None:
    began = time.perf_counter()
    status, plot, gallery, table, downloads, picker = retune(
        client, first_run.job, top_n=1, pad_before=2.0, pad_after=3.0
    )
    seconds = time.perf_counter() - began

    highlights = summary_of(downloads)["highlights"]
    assert len(table["data"]) == len(highlights) == 1
    best = plot_values(plot, 0, "y").max()
    assert highlights[0]["confidence"] == pytest.approx(best, abs=1e-6)
    # padded by 2 s and 3 s, unless the VOD's start or end is in the way
    start, end = highlights[0]["start_sec"], highlights[0]["end_sec"]
    assert WINDOW < end - start <= WINDOW + 5.0 + 0.05
    (path, _), *_ = gallery_videos(gallery)
    assert media.probe(path).duration == pytest.approx(end - start, abs=0.5)

    print(f"first analysis {first_run.seconds:.1f} s, re-tune {seconds:.2f} s")
    assert seconds < 0.5 * first_run.seconds
    assert analysis_count(app, first_run.job) == 1  # the separator ran once, for the first run
    assert re.search(rf"re-tuned: job {first_run.job}\b", app.log())


def test_why_this_clip_and_reconnect(first_run: Run, client: Client) -> None:
    retune(client, first_run.job, top_n=2)
    video, audio, why = client.predict(first_run.job, 1, api_name="/show_clip")
    path = Path(video["value"] if isinstance(video, dict) else video)
    assert media.probe(path).duration == pytest.approx(WINDOW, abs=0.5)
    attention = plot_values(why, 0, "y")
    voice = plot_values(why, 1, "y")
    frames = round(WINDOW * 22050 / 512)
    assert abs(len(voice) - frames) <= 1  # one loudness value per feature frame of the window
    assert len(attention) == -(-len(voice) // 16)  # one attention weight per 16 frames
    assert np.all(attention >= 0) and attention.sum() <= 1.0 + 1e-5

    # a page that reconnects with its job id sees the latest selection again
    job, status, _, gallery, table, downloads, _, _ = client.predict(
        first_run.job, api_name="/results"
    )
    assert job == first_run.job
    assert (
        len(table["data"])
        == len(gallery_videos(gallery))
        == len(summary_of(downloads)["highlights"])
    )


def test_bad_upload_is_refused_then_a_good_one_works(
    client: Client, vod: Path, tmp_path: Path
) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).bytes(100_000))
    with pytest.raises(AppError, match=r"`junk\.mp4` could not be read .*; choose an mp4"):
        find(client, "", handle_file(str(junk)))
    outputs = find(client, "", handle_file(str(vod)))
    assert outputs[4]["data"] and len(gallery_videos(outputs[3])) == len(outputs[4]["data"])


def test_app_without_models_starts_and_says_why(
    tmp_path_factory: pytest.TempPathFactory, checkpoint: Path, vod: Path, tmp_path: Path
) -> None:
    """Missing weights do not stop the app from starting; using it says what is wrong. The
    upload limit is enforced by the server, whatever the client does."""
    home = tmp_path_factory.mktemp("no-models")
    env = app_env(tmp_path_factory, checkpoint, home)
    env |= {"HIGHLIGHTSENSE_WEIGHTS": str(home / "missing.pt"), "HIGHLIGHTSENSE_MAX_UPLOAD": "1mb"}
    app = start_app(env, home)
    try:
        assert "the models could not be loaded: No weights at" in app.log()
        client = Client(app.url, verbose=False, download_files=str(tmp_path))
        small = tmp_path / "small.mp4"
        small.write_bytes(bytes(1000))
        with pytest.raises(AppError, match=r"No weights at \S*missing\.pt"):
            find(client, "", handle_file(str(small)))
        with open(vod, "rb") as big:  # 1.8 MB
            refused = httpx.post(f"{app.url}gradio_api/upload", files={"files": big}, timeout=60)
        assert refused.status_code == 413
        assert client.predict("", api_name="/results")[0] == ""  # still serving
    finally:
        app.stop()


def test_cancel_stops_the_analysis(
    client: Client, app: RunningApp, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # another VOD: its features are not cached, so the job is still separating when cancelled
    other = make_media(tmp_path_factory.mktemp("other") / "other.mp4", 60, video=False)
    job = client.predict("", api_name="/new_job")[0]
    running = client.submit(
        job, handle_file(str(other)), "", *TUNING_ARGS, api_name="/find_highlights"
    )
    deadline = time.monotonic() + 60
    while analysis_count(app, job) == 0:
        assert time.monotonic() < deadline, "the analysis did not start"
        time.sleep(0.1)
    assert client.predict(job, api_name="/cancel").startswith("Cancelled")
    with pytest.raises(AppError, match="The job was cancelled"):
        running.result(timeout=60)
    assert "stopped: The job was cancelled" in client.predict(job, api_name="/results")[1]
    time.sleep(1.0)
    assert ffmpeg_children(app.process.pid) == []


def raw_call(app: RunningApp, api_name: str, data: list) -> tuple[str, object]:
    """Send arbitrary JSON to an event, as any HTTP client may: (final event kind, its data)."""
    request = urllib.request.Request(
        f"{app.url}gradio_api/call/{api_name}",
        data=json.dumps({"data": data}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        event = json.load(response)["event_id"]
    with urllib.request.urlopen(f"{app.url}gradio_api/call/{api_name}/{event}", timeout=120) as r:
        stream = r.read().decode()
    kind = re.findall(r"^event: (\w+)$", stream, re.MULTILINE)[-1]
    return kind, json.loads(re.findall(r"^data: (.*)$", stream, re.MULTILINE)[-1])


@pytest.mark.parametrize(
    ("api_name", "data", "message"),
    [
        ("retune", ["0" * 32, *TUNING.values()], "That job is not known here"),
        ("retune", ["../../etc/passwd", *TUNING.values()], "That job id is not valid"),
        ("retune", [{"job": 1}, *TUNING.values()], "That job id is not valid"),
        ("retune", ["JOB", -1, *list(TUNING.values())[1:]], "less than minimum value 1"),
        ("retune", ["JOB", "many", *list(TUNING.values())[1:]], "Expected a `float`"),
        ("retune", ["JOB", 2.5, *list(TUNING.values())[1:]], "must be a whole number"),
        ("retune", ["JOB", 3, "loudest", *list(TUNING.values())[2:]], "not in the list"),
        ("retune", ["JOB", *list(TUNING.values())[:4], -5, 0, 0, "exact"], "less than minimum"),
        ("retune", ["JOB"], "didn't receive enough input values"),
        ("show_clip", ["JOB", 99], "The clip must be a whole number between 1 and"),
        ("show_clip", ["JOB", [1]], "The clip must be a whole number"),
        ("cancel", [12345], "That job id is not valid"),
        ("find_highlights", ["", None, "", *TUNING_ARGS], "Upload a VOD or paste"),
        ("find_highlights", ["", None, "https://evil.example/x", *TUNING_ARGS], "not a supported"),
        (
            "find_highlights",
            ["", None, ["https://youtu.be/x"], *TUNING_ARGS],
            "not a supported link",
        ),
        ("find_highlights", ["", "PASSWD", "", *TUNING_ARGS], "it was not uploaded by a user"),
        ("find_highlights", ["", "OUTSIDE", "", *TUNING_ARGS], "it was not uploaded by a user"),
        ("find_highlights", ["", "/etc/passwd", "", *TUNING_ARGS], "validation error for FileData"),
    ],
)
def test_api_refuses_bad_json(
    app: RunningApp, first_run: Run, vod: Path, api_name: str, data: list, message: str
) -> None:
    """Every event takes arbitrary JSON: each bad argument gets one clear sentence."""
    stand_ins = {
        "JOB": first_run.job,
        "PASSWD": {"path": "/etc/passwd", "meta": FILE_DATA},
        "OUTSIDE": {"path": str(vod), "meta": FILE_DATA},  # a media file Gradio never received
    }
    data = [stand_ins.get(value, value) if isinstance(value, str) else value for value in data]
    kind, payload = raw_call(app, api_name, data)
    assert kind == "error"
    assert message in payload["error"]
    # and the app keeps serving
    assert raw_call(app, "results", [first_run.job])[1][0] == first_run.job


def test_api_refuses_bad_runs_of_a_real_upload(client: Client, vod: Path) -> None:
    upload = handle_file(str(vod))
    with pytest.raises(AppError, match="either a file or a link, not both"):
        find(client, "", upload, "https://youtu.be/dQw4w9WgXcQ")
    with pytest.raises(AppError, match="greater than maximum value 60"):
        find(client, "", upload, window_sec=300)
    with pytest.raises(AppError, match="That job is not known here"):
        find(client, "0" * 32, upload)
    # an expired job is no error for a page that reconnects: it just starts empty
    assert client.predict("0" * 32, api_name="/results")[:2] == (
        "",
        "Your previous results have expired.",
    )
