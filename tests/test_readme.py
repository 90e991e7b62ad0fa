"""Every command README.md shows runs as written: read out of README.md itself, not copied.

- The two install commands: ``.ci/run`` holds the test command verbatim; the app command's last
  part (start the app) runs as written against fixture models and serves its page.
- The command-line examples run on generated media with fixture models; the Twitch link cannot
  be fetched offline, so it must be refused with exit code 2 and one line saying why.
- The training commands run on generated clips (``torchrun`` starts several processes: it is
  checked to be the same ``train`` command, and not run here).
- The Python example runs with ``vod.mp4`` a generated VOD.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import make_media

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
VENV_PYTHON = ".venv/bin/python"
APP_START_TIMEOUT = 300  # s for the app to serve its page on a busy machine
COMMAND_TIMEOUT = 600  # s for one README command


def sections() -> dict[str, list[tuple[str, str]]]:
    """README's "## " sections → their fenced blocks as (language, text)."""
    found: dict[str, list[tuple[str, str]]] = {}
    for part in re.split(r"^## ", README.read_text(), flags=re.M)[1:]:
        title, _, body = part.partition("\n")
        found[title.strip()] = re.findall(r"^```(\w*)\n(.*?)^```$", body, flags=re.M | re.S)
    return found


def shell_lines(section: str) -> list[str]:
    """The commands of a section's bash blocks, comments dropped."""
    lines = []
    for language, text in sections()[section]:
        if language == "bash":
            for line in text.splitlines():
                command = line.split(" #", 1)[0].strip()
                if command:
                    lines.append(command)
    return lines


def as_argv(command: str) -> list[str]:
    """A README command → argv. ``.venv/bin/python`` is the repository's virtual environment
    when the tests run in it (the README's test command made it), else this interpreter; a
    bare ``python`` is whichever the reader has first on PATH: here, the one running the tests."""
    argv = shlex.split(command)
    if argv[0] == VENV_PYTHON and (REPO / VENV_PYTHON).is_file():
        argv[0] = str(REPO / VENV_PYTHON)
    elif argv[0] in ("python", "python3", VENV_PYTHON):
        argv[0] = sys.executable
    return argv


@pytest.fixture(scope="module")
def env(learned_checkpoint, tiny_separator, features_cache) -> dict:
    repo, name = tiny_separator
    return {
        **os.environ,
        "HIGHLIGHTSENSE_WEIGHTS": str(learned_checkpoint),
        "HIGHLIGHTSENSE_SEPARATOR": name,
        "HIGHLIGHTSENSE_SEPARATOR_REPO": str(repo),
        "HIGHLIGHTSENSE_CACHE": str(features_cache),  # the planted VOD's features, run-wide
        "PYTHONPATH": str(REPO),  # `python -m highlightsense` from any folder, as after install
    }


def run(command: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        as_argv(command), cwd=cwd, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT
    )


# --- the two commands --------------------------------------------------------------------------


def two_commands() -> tuple[str, str]:
    app, tests = (text.strip() for language, text in sections()["Two commands"])
    return app, tests


def test_both_commands_make_their_own_virtual_environment():
    for command in two_commands():
        parts = command.split(" && ")
        assert parts[0] == "python3 -m venv .venv", command
        assert all(part.startswith(VENV_PYTHON + " ") for part in parts[1:]), command


def test_ci_runs_the_readme_test_command_verbatim():
    _, tests = two_commands()
    lines = (REPO / ".ci" / "run").read_text().splitlines()
    assert tests in lines


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_app_command_starts_the_app_and_it_serves(env, tmp_path):
    app, _ = two_commands()
    start = app.split(" && ")[-1]  # the install parts are what the test command itself ran
    assert start == f"{VENV_PYTHON} app.py"
    port = free_port()
    log = tmp_path / "app.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            as_argv(start),
            cwd=REPO,
            env={**env, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + APP_START_TIMEOUT
        page = ""
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    page = response.read().decode("utf-8", "replace")
                    break
            except OSError:
                time.sleep(1)
        assert proc.poll() is None, log.read_text()[-2000:]
        assert "HighlightSense" in page or "gradio" in page.lower(), log.read_text()[-2000:]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- the command line ----------------------------------------------------------------------------


def test_command_line_examples(env, tmp_path, planted_vod):
    local, link = shell_lines("The command line")
    assert local == "python -m highlightsense detect my_vod.mp4"
    (tmp_path / "my_vod.mp4").symlink_to(planted_vod.path)
    done = run(local, tmp_path, env)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "highlights" / "my_vod"  # the README's default OUT
    assert {"scores.csv", "highlights.csv", "highlights.json", "scores.html", "clips"} <= {
        p.name for p in out.iterdir()
    }

    # No network in tests: the link must be refused at once with one line saying why.
    assert link.startswith("python -m highlightsense detect https://www.twitch.tv/videos/")
    offline = {**env, "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    refused = run(link, tmp_path, offline)
    assert refused.returncode == 2, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "Traceback" not in refused.stderr


# --- training ------------------------------------------------------------------------------------

# The fewest clips that train: round(15 % of 4) = 1 positive is held out for validation, and
# round(15 % of 1) = 0 negatives, so both classes stay in training. Every clip is padded to the
# 60 s training length, so each one costs a full forward and backward pass per epoch.
POSITIVE_CLIPS, NEGATIVE_CLIPS = 4, 1


def test_training_commands(env, tmp_path):
    from model_fixtures import write_planted_media

    commands = shell_lines("Training your own model")
    *local, distributed = commands
    assert (
        distributed.startswith("torchrun ") and " -m highlightsense train data -o " in distributed
    )
    for i in range(POSITIVE_CLIPS):
        write_planted_media(tmp_path / "clips" / "positive" / f"p{i}.m4a", 8.0, ((2.0, 5.0),),
                            video=False, seed=i)  # fmt: skip
    for i in range(NEGATIVE_CLIPS):
        make_media(tmp_path / "clips" / "negative" / f"n{i}.m4a", 8.0, video=False)
    for command in local:
        done = run(command, tmp_path, env)
        assert done.returncode == 0, (command, done.stderr[-2000:])
    assert (tmp_path / "runs" / "first" / "best_model.pt").is_file()


# --- the Python example --------------------------------------------------------------------------


def test_python_example(env, tmp_path, planted_vod):
    (code,) = (text for language, text in sections()["The command line"] if language == "python")
    (tmp_path / "vod.mp4").symlink_to(planted_vod.path)
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(r"^1 \d", done.stdout, flags=re.M), done.stdout[-2000:]  # highlight 1


# --- weights/ ------------------------------------------------------------------------------------


def test_weights_folder_is_tracked_with_only_its_readme():
    assert (REPO / "weights" / "README.md").is_file()
    ignored = subprocess.run(
        ["git", "check-ignore", "weights/best_model.pt", "weights/model.safetensors"],
        cwd=REPO,
        capture_output=True,
        timeout=30,
    )
    if ignored.returncode == 128:
        pytest.skip("not a git checkout")
    assert ignored.stdout.decode().split() == ["weights/best_model.pt", "weights/model.safetensors"]


def test_weights_folder_is_looked_at_first(checkpoint, tmp_path, monkeypatch, caplog):
    import logging
    import shutil

    from highlightsense import weights

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(weights.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(weights, "fetch_published", lambda: pytest.fail("downloaded"))
    (tmp_path / "weights").mkdir()
    weights.export_weights(checkpoint, tmp_path / "weights")  # a safetensors export
    with caplog.at_level(logging.INFO, logger="highlightsense.weights"):
        assert weights.resolve() == Path("weights")
        shutil.copy(checkpoint, tmp_path / "weights" / "best_model.pt")  # the checkpoint wins
        assert weights.resolve() == Path("weights") / "best_model.pt"
    assert "weights/best_model.pt (the weights folder)" in caplog.text
    assert weights.load().model is not None
