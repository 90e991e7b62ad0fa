"""Running ``python app.py`` for tests: its environment (tiny models, folders under a temp
folder), starting it on a free loopback port and stopping it. Used by the session fixtures in
conftest.py, which test_app.py and test_app_browser.py share (one process runs both files)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import built_once, make_media, shared_features_cache
from demucs_fixtures import make_tiny_demucs_repo
from whisper_fixtures import build_scripted_whisper

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT = 180.0  # s for the app to answer (imports torch, demucs, gradio)


def shared_vod(factory: pytest.TempPathFactory) -> Path:
    """A 60 s test-pattern VOD with loud bursts, made once per test run (every test process)."""

    def build(folder: Path) -> None:
        make_media(folder / "stream vod.mp4", 60, loud_spans=((15, 21), (40, 44)))

    return built_once(factory, "app-media", build) / "stream vod.mp4"


def loud_vod(factory: pytest.TempPathFactory) -> Path:
    """A 120 s test-pattern VOD loud throughout, made once per test run: whichever spans the
    random model picks hold a voice above the silence floor, so each clip has captions; and
    whichever 30 s window comes first, another one fits beside it."""

    def build(folder: Path) -> None:
        make_media(folder / "loud vod.mp4", 120, loud_spans=((0, 120),))

    return built_once(factory, "app-loud-media", build) / "loud vod.mp4"


def app_env(factory: pytest.TempPathFactory, checkpoint: Path, home: Path) -> dict[str, str]:
    """The environment of an app using the tiny models and only folders under ``home``."""
    repo = built_once(factory, "demucs", make_tiny_demucs_repo)  # the tiny_separator fixture's
    whisper = built_once(factory, "whisper", build_scripted_whisper)  # scripted_whisper's
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
        "HIGHLIGHTSENSE_WHISPER": str(whisper),  # captions: " gg wp" at 0-2 s, offline
        # one cache for every app of the run: the example and the shared VOD are analysed once
        "HIGHLIGHTSENSE_CACHE": str(shared_features_cache(factory)),
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
