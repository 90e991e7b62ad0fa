"""The web app end to end: a real ``python app.py`` on loopback, driven with gradio_client (its
public endpoints: /detect and the calls on its jobs), with the ``mcp`` package's client (the
same functions as MCP tools) and with raw HTTP (the page's private events).

The app runs offline on tiny random-weight models (the CRNN from save_checkpoint, Demucs from
make_tiny_demucs_repo), so the scores mean nothing, but every step is the real one: upload,
separation, features, scoring, selection, ffmpeg cuts, downloads and errors. The tests that
check what is picked use the learned fixture model on the planted VOD.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import contextlib
import csv
import io
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import pytest
from app_server import RunningApp, loud_vod, shared_vod
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from link_server import HOST as LINK_HOST

from highlightsense import media

DETECT = ["file", "link", "top_n", "percentile", "threshold", "gap", "pad_before", "pad_after"]
DETECT += ["cut", "vertical"]  # new parameters go at the end, with defaults
DETECT += ["chat", "chat_weight"]  # the chat replay (issue 23)
DETECT += ["captions"]  # issue 22
TIMELINE_FILES = {  # get_timeline's kind → the file's name after the VOD's
    "otio": "timeline.otio",
    "fcp7xml": "timeline.xml",
    "fcpxml": "timeline.fcpxml",
    "edl": "timeline.edl",
    "chapters": "chapters.txt",
}
TOOLS = {"detect", "get_clip", "get_timeline", "vertical_clips"}  # the MCP server's tools
MCP_TIMEOUT = 600.0  # s for an MCP call that analyses a VOD on a busy machine
SPAN_TOLERANCE = 0.5  # s: an exact cut is within a frame (0.1 s at 10 fps) + AAC priming
COPY_SLACK = 0.1  # s: a stream-copied audio clip starts on an AAC frame (1024 samples, 23 ms)
SAID = "gg wp"  # what the scripted Whisper (app_server.app_env) hears in each clip
WORD_FRAME = 0.02 + 1e-6  # s: Whisper's word times are whole encoder frames


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(app: RunningApp, tmp_path_factory: pytest.TempPathFactory) -> Client:
    downloads = tmp_path_factory.mktemp("client-downloads")
    return Client(app.url, verbose=False, download_files=str(downloads))


@pytest.fixture(scope="module")
def vod(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_vod(tmp_path_factory)


def detect(client: Client, file=None, link: str = "", **changes) -> tuple:
    """/detect's six outputs: report, zip, clips, vertical clips, timelines, score plot."""
    values = {"top_n": 3, "percentile": 50.0, "threshold": None, "gap": 5.0}
    values |= {"pad_before": 0.0, "pad_after": 0.0, "cut": "exact", "vertical": "off"} | changes
    return client.predict(file=file, link=link, **values, api_name="/detect")


def analysis_count(app: RunningApp) -> int:
    return len(re.findall(r"analysis started: job [0-9a-f]{32}\b", app.log()))


def assert_planted(highlights: list[dict], planted_vod) -> None:
    """One highlight per shout planted in the VOD, each holding ≥ 1 s of its shout."""
    from model_fixtures import burst_seconds

    picks = sorted((h["start_sec"], h["end_sec"]) for h in highlights)
    assert len(picks) == len(planted_vod.bursts), highlights
    for (start, end), burst in zip(picks, planted_vod.bursts, strict=True):
        assert burst_seconds(start, end, (burst,)) >= 1.0, (start, end, burst)


# --- the public API ---------------------------------------------------------------------------


def test_the_public_api_reads_cleanly(client: Client) -> None:
    """view_api(): /detect and the calls on its jobs only, every parameter in one line with its
    range and default, only what has no default shown as required."""
    api = client.view_api(return_format="dict", print_info=False)
    assert list(api["named_endpoints"]) == [
        "/detect",
        "/get_clip",
        "/get_timeline",
        "/vertical_clips",
    ]
    assert api["unnamed_endpoints"] == {}
    endpoints = api["named_endpoints"]
    assert [p["parameter_name"] for p in endpoints["/detect"]["parameters"]] == DETECT
    required = {
        name: [p["parameter_name"] for p in info["parameters"] if not p["parameter_has_default"]]
        for name, info in endpoints.items()
    }
    assert required == {
        "/detect": [], "/get_clip": ["job"], "/get_timeline": ["job"], "/vertical_clips": ["job"]
    }  # fmt: skip
    for name, info in endpoints.items():
        assert info["description"], name
        for parameter in info["parameters"]:
            line = parameter["python_type"]["description"]
            assert line and "\n" not in line, (name, parameter)
            if parameter["python_type"]["type"] == "float":  # a number: its range and default
                assert re.search(r"\d+-\d+", line) and "default" in line, (name, line)
    assert [r["label"] for r in endpoints["/detect"]["returns"]] == [
        "report", "zip", "clips", "vertical_clips", "timelines", "plot"
    ]  # fmt: skip
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        client.view_api()
    text = printed.getvalue()
    assert "Unnamed API endpoints" not in text
    assert "top_n: float (not required, defaults to:   20)  (clips at most, 1-50" in text, text


def test_detect_hands_back_each_clip_the_zip_the_timelines_and_the_plot(
    client: Client, vod: Path, app: RunningApp
) -> None:
    report, archive, clips, vertical, timelines, plot = detect(client, handle_file(str(vod)))
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
    assert report["vertical"] is None and vertical == []
    stem = vod.stem

    # each clip is a file the caller received, named as the report says, as long as its span
    assert len(clips) == len(highlights)
    for highlight, clip in zip(highlights, clips, strict=True):
        clip = Path(clip)
        assert clip.is_file() and clip.name == highlight["clip"]
        assert highlight["clip"] == f"{stem}-highlight_{highlight['rank']:02d}.mp4"
        info = media.probe(clip)
        assert info.has_video and (info.width, info.height) == (160, 90)
        span = highlight["end_sec"] - highlight["start_sec"]
        assert info.duration == pytest.approx(span, abs=SPAN_TOLERANCE)
        assert highlight["vertical_clip"] is None

    assert Path(archive).name == f"{stem}-highlights.zip"
    with zipfile.ZipFile(archive) as zipped:
        names = {Path(name).name: name for name in zipped.namelist()}
        tables = {f"{stem}-highlights.csv", f"{stem}-highlights.json", f"{stem}-scores.csv"}
        named_timelines = {f"{stem}-{name}" for name in TIMELINE_FILES.values()}
        assert set(names) == tables | named_timelines | {h["clip"] for h in highlights}
        for clip in clips:  # the same bytes as in the zip
            assert zipped.read(names[Path(clip).name]) == Path(clip).read_bytes()
        for timeline in timelines:
            assert zipped.read(names[Path(timeline).name]) == Path(timeline).read_bytes()
        chapters = zipped.read(names[f"{stem}-chapters.txt"]).decode().splitlines()
        assert chapters[0].startswith("0:00") and len(chapters) >= len(highlights)
        summary = json.loads(zipped.read(names[f"{stem}-highlights.json"]))
        assert [h["confidence"] for h in summary["highlights"]] == pytest.approx(confidences)
        rows = list(
            csv.DictReader(zipped.read(names[f"{stem}-highlights.csv"]).decode().splitlines())
        )
        assert [float(r["duration_sec"]) for r in rows] == pytest.approx(
            [30.0] * len(rows), abs=0.05
        )
    assert [Path(t).name for t in timelines] == [f"{stem}-{n}" for n in TIMELINE_FILES.values()]
    assert Path(timelines[3]).read_text().startswith("TITLE:")  # a CMX 3600 EDL
    page = Path(plot).read_text()
    assert Path(plot).name == f"{stem}-scores.html" and "plotly" in page.lower()

    # the calls on the job hand back the same files
    job = report["job"]
    for highlight, clip in zip(highlights, clips, strict=True):
        one = client.predict(job, highlight["rank"], False, api_name="/get_clip")
        assert Path(one).read_bytes() == Path(clip).read_bytes()
    for (kind, name), timeline in zip(TIMELINE_FILES.items(), timelines, strict=True):
        one = client.predict(job, kind, api_name="/get_timeline")
        assert Path(one).name == f"{stem}-{name}"
        assert Path(one).read_bytes() == Path(timeline).read_bytes()


def test_detect_cuts_vertical_clips_when_asked_and_vertical_clips_reframes_them(
    client: Client, vod: Path, app: RunningApp
) -> None:
    report, _, clips, vertical, _, _ = detect(
        client, handle_file(str(vod)), top_n=1, cut="fast", vertical="fit"
    )
    assert report["vertical"] == "fit" and len(report["highlights"]) == 1 == len(vertical)
    (highlight,) = report["highlights"]
    span = highlight["end_sec"] - highlight["start_sec"]
    assert (
        Path(vertical[0]).name
        == highlight["vertical_clip"]
        == f"{vod.stem}-vertical-highlight_01.mp4"
    )
    info = media.probe(Path(vertical[0]))
    assert (info.width, info.height) == (1080, 1920)
    assert info.duration == pytest.approx(span, abs=SPAN_TOLERANCE)
    assert Path(clips[0]).is_file()  # the landscape clip too
    one = client.predict(report["job"], 1, True, api_name="/get_clip")
    assert Path(one).read_bytes() == Path(vertical[0]).read_bytes()

    analyses = analysis_count(app)
    again, cropped = client.predict(report["job"], "crop", api_name="/vertical_clips")
    assert (
        again["vertical"] == "crop"
        and again["highlights"][0]["start_sec"] == highlight["start_sec"]
    )
    info = media.probe(Path(cropped[0]))
    assert (info.width, info.height) == (1080, 1920)
    assert info.duration == pytest.approx(span, abs=SPAN_TOLERANCE)
    assert Path(cropped[0]).read_bytes() != Path(vertical[0]).read_bytes()
    assert analysis_count(app) == analyses  # cut again, not analysed again


def test_detect_with_captions_hands_back_each_highlights_text_and_subtitles(
    client: Client, tmp_path_factory: pytest.TempPathFactory
) -> None:
    vod = loud_vod(tmp_path_factory)
    any_two = {"top_n": 2, "threshold": 0.0, "gap": 0.0, "cut": "fast"}
    report, archive, clips, _, timelines, _ = detect(
        client, handle_file(str(vod)), **any_two, captions="files"
    )
    highlights = report["highlights"]
    assert len(highlights) == 2 == len(clips)
    named = {Path(path).name: Path(path) for path in timelines}
    assert list(named)[:6] == [
        *(f"{vod.stem}-{name}" for name in TIMELINE_FILES.values()),
        f"{vod.stem}-captions.srt",
    ]  # the editor timelines first, as before
    with zipfile.ZipFile(archive) as zipped:
        zipped_names = {Path(name).name for name in zipped.namelist()}
    for h in highlights:
        assert h["text"] == SAID and h["language"] == "en"
        assert [w["word"] for w in h["words"]] == SAID.split()
        assert h["words"][0]["start"] == pytest.approx(0.0, abs=WORD_FRAME)
        assert h["words"][1]["end"] == pytest.approx(2.0, abs=WORD_FRAME)
        stem = f"{vod.stem}-highlight_{h['rank']:02d}"
        assert h["subtitles"] == [f"{stem}.srt", f"{stem}.vtt"]
        assert set(h["subtitles"]) <= zipped_names
        end = round(h["words"][-1]["end"] * 1000)  # the cue ends with the last word
        cue = f"00:00:00,000 --> 00:00:0{end // 1000},{end % 1000:03d}\n{SAID}\n\n"
        assert named[f"{stem}.srt"].read_text() == f"1\n{cue}"
        vtt = f"WEBVTT\n\n1\n{cue.replace(',', '.')}"
        assert named[f"{stem}.vtt"].read_text() == vtt
    assert list(named)[6:] == [name for h in highlights for name in h["subtitles"]]

    off, *_ = detect(client, handle_file(str(vod)), **any_two)
    assert off["highlights"] and not any("text" in h or "words" in h for h in off["highlights"])


def test_readme_api_example_runs_against_the_app(app: RunningApp, vod: Path, tmp_path: Path):
    """The README's gradio_client script, as written but for the address of this test's app."""
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
    ranked = [line for line in lines if re.match(r"\d+ \d", line)]
    assert ranked and ranked[0].startswith("1 "), done.stdout
    saved = sorted((tmp_path / "clips").iterdir())  # the script keeps each clip it received
    assert [p.name for p in saved] == [
        f"my_vod-highlight_{i:02d}.mp4" for i in range(1, len(ranked) + 1)
    ]
    assert all(media.probe(p).duration > 1 for p in saved)
    assert lines[-1].endswith("my_vod-highlights.zip"), done.stdout


def test_detect_picks_the_planted_shouts_in_time_order(
    learned_app: RunningApp, planted_vod, tmp_path
) -> None:
    """Through /detect, with a model that has learned something: one highlight per shout
    planted in the VOD, in the shouts' order of time (random weights could not tell)."""
    client = Client(learned_app.url, verbose=False, download_files=str(tmp_path))
    report, *_ = detect(
        client, handle_file(str(planted_vod.path)), top_n=5, threshold=0.5, gap=10.0, cut="fast"
    )
    assert_planted(report["highlights"], planted_vod)


def test_mcp_client_lists_the_tools_and_analyses_a_vod(
    learned_app: RunningApp, planted_vod, tmp_path: Path
) -> None:
    """A real MCP client (the ``mcp`` package, streamable HTTP) on the app's MCP server: the
    tools are listed with their parameters; detect on the planted VOD (its sound, sent as the
    data URL MCP clients use for a local file: the server takes 4 MiB a request) finds the
    planted shouts; get_clip and get_timeline hand back that job's files."""
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from model_fixtures import write_planted_media

    sound = write_planted_media(tmp_path / "planted.m4a", video=False)
    vod_url = "data:audio/mp4;base64," + base64.b64encode(sound.read_bytes()).decode()

    async def session() -> tuple:
        url = f"{learned_app.url}gradio_api/mcp/"
        async with (
            httpx.AsyncClient(timeout=MCP_TIMEOUT) as http,
            streamable_http_client(url, http_client=http) as (read, write, _),
            ClientSession(read, write) as mcp,
        ):
            await mcp.initialize()
            tools = {tool.name: tool for tool in (await mcp.list_tools()).tools}
            arguments = {"file": vod_url, "top_n": 5, "threshold": 0.5, "gap": 10, "cut": "fast"}
            found = await mcp.call_tool("detect", arguments)
            assert not found.isError, found.content
            job = ast.literal_eval(found.content[0].text)[0]["job"]
            clip = await mcp.call_tool("get_clip", {"job": job, "rank": 2})
            chapters = await mcp.call_tool("get_timeline", {"job": job, "kind": "chapters"})
            return tools, found, clip, chapters

    tools, found, clip, chapters = asyncio.run(asyncio.wait_for(session(), MCP_TIMEOUT))
    assert set(tools) == TOOLS
    properties = tools["detect"].inputSchema["properties"]
    assert list(properties) == DETECT and "50-100" in properties["percentile"]["description"]
    assert tools["get_clip"].inputSchema["required"] == ["job"]
    # Gradio hands a tool's outputs back as one text: the Python form of /detect's six, each
    # file with the address it is served at
    (content,) = found.content
    report, archive, clips, vertical, timelines, plot = ast.literal_eval(content.text)
    assert_planted(report["highlights"], planted_vod)
    assert vertical == [] and len(timelines) == len(TIMELINE_FILES)
    assert [clip["orig_name"] for clip in clips] == [h["clip"] for h in report["highlights"]]
    received = []
    for highlight, served in zip(report["highlights"], clips, strict=True):
        fetched = httpx.get(served["url"], timeout=60)
        assert fetched.status_code == 200
        received.append(fetched.content)
        (tmp_path / highlight["clip"]).write_bytes(fetched.content)
        span = highlight["end_sec"] - highlight["start_sec"]
        cut = media.probe(tmp_path / highlight["clip"]).duration
        assert cut == pytest.approx(span, abs=SPAN_TOLERANCE + COPY_SLACK)
    # a single file comes back as its address
    assert not clip.isError and not chapters.isError, (clip.content, chapters.content)
    assert httpx.get(clip.content[0].text, timeout=60).content == received[1]
    lines = httpx.get(chapters.content[0].text, timeout=60).text.splitlines()
    assert lines[0].startswith("0:00") and len(lines) >= len(report["highlights"])


def test_minimum_score_with_nothing_above_it_still_answers(client: Client, vod: Path) -> None:
    """Issue 11 item 1: a threshold no window reaches gives no highlights, not a crash."""
    report, archive, clips, vertical, timelines, plot = detect(
        client, handle_file(str(vod)), threshold=0.999, cut="fast"
    )
    assert report["highlights"] == [] and report["threshold"] == 0.999
    assert not clips and not vertical and not timelines and Path(plot).is_file()
    with pytest.raises(AppError, match="This job found no highlights, so it has no clips."):
        client.predict(report["job"], 1, False, api_name="/get_clip")
    assert report["message"].startswith("No highlights with these settings")
    with zipfile.ZipFile(archive) as zipped:
        assert sorted(Path(n).name for n in zipped.namelist()) == [
            f"{vod.stem}-highlights.csv", f"{vod.stem}-highlights.json", f"{vod.stem}-scores.csv"
        ]  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({}, "Upload a VOD or paste a Twitch, Kick or YouTube link first."),
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
        (
            {"link": "https://youtu.be/x", "vertical": "sideways"},
            "is not in the list of choices: ['off', 'stack', 'crop', 'fit']",  # Gradio's own check
        ),
        (
            {"link": "https://youtu.be/x", "captions": "{\\an8}"},
            "is not in the list of choices: ['off', 'burn', 'soft', 'files']",
        ),
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


@pytest.mark.parametrize(
    ("endpoint", "values", "message"),
    [
        ("/get_clip", ["zz", 1, False], "That job is not known here"),
        ("/get_clip", ["0" * 32, 1, False], "That job is not known here"),
        ("/get_timeline", ["../../etc/passwd", "edl"], "That job is not known here"),
        ("/vertical_clips", [None, "fit"], "That job is not known here"),
    ],
)
def test_calls_on_a_job_answer_bad_input_with_one_plain_sentence(
    client: Client, endpoint: str, values: list, message: str
) -> None:
    with pytest.raises(AppError) as caught:
        client.predict(*values, api_name=endpoint)
    assert message in str(caught.value) and "Traceback" not in str(caught.value)


def test_calls_on_a_real_job_check_their_values(client: Client, vod: Path) -> None:
    report, *_ = detect(client, handle_file(str(vod)), top_n=1, cut="fast")
    job = report["job"]
    for endpoint, values, message in [
        ("/get_clip", [job, 2, False], "The rank must be a whole number between 1 and 1."),
        ("/get_clip", [job, 10**400, False], "The rank must be a whole number"),
        ("/get_clip", [job, 1, True], "This job has no vertical clips; call vertical_clips first."),
        (
            "/get_timeline",
            [job, "docx"],
            "is not in the list of choices",  # Gradio's own check of a Radio
        ),
        ("/vertical_clips", [job, "off"], "is not in the list of choices"),
    ]:
        with pytest.raises(AppError) as caught:
            client.predict(*values, api_name=endpoint)
        assert message in str(caught.value), (endpoint, values, str(caught.value))


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
    app_without_models: RunningApp, vod: Path, tmp_path: Path
) -> None:
    """Missing weights do not stop the app from starting; the failure is remembered and said at
    once, naming the variable the Space's owner sets. The upload limit holds for any client."""
    app = app_without_models
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


def test_a_file_link_over_the_upload_limit_is_refused_before_it_is_fetched_whole(
    app_without_models: RunningApp, link_server, tmp_path: Path
) -> None:
    """An API or MCP caller may give the VOD as a link; the app fetches it within the same 1 MB
    limit as an upload, says so in one sentence, leaves no part of it on disk and keeps
    serving. A link within the limit is fetched (the call then fails on the missing models)."""
    app = app_without_models
    client = Client(app.url, verbose=False, download_files=str(tmp_path))
    gradio_files = app.log_path.parent / "gradio"  # its GRADIO_TEMP_DIR
    for name in ("undeclared.bin", "declared.bin"):
        with pytest.raises(AppError, match="larger than this app's limit of 1 MB"):
            detect(client, handle_file(f"http://{LINK_HOST}/{name}"))
        assert link_server.sent[name] < 16 * 1024**2, link_server.sent  # of 64 MB
        assert not [path for path in gradio_files.rglob(name)], "a partial download was kept"
    with pytest.raises(AppError, match="HIGHLIGHTSENSE_WEIGHTS"):
        detect(client, handle_file(f"http://{LINK_HOST}/small.bin"))
    (fetched,) = gradio_files.rglob("small.bin")
    assert fetched.stat().st_size == 100_000
