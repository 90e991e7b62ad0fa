"""SIGTERM while cutting behaves like Ctrl-C; SIGKILL leaves no ffmpeg running on, and the next
run sweeps the staging folder the killed one left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ffmpeg_binary

from highlightsense import outfolder

WAIT_FOR_CUTS = 240.0  # s until the first clip is being cut (the analysis comes first)
GONE_WITHIN = 10.0  # s for killed encoders to disappear


@pytest.fixture(scope="module")
def obs_recording(tmp_path_factory) -> Path:
    """90 s of 640x360 video with voice and game on their own tracks: no Demucs needed, and a
    30 s clip takes a few seconds to encode."""
    path = tmp_path_factory.mktemp("sig") / "obs.mkv"
    subprocess.run(
        [ffmpeg_binary(), "-v", "error", "-y",
         "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30:duration=90",
         "-f", "lavfi", "-i", "sine=frequency=300:duration=90:sample_rate=44100",
         "-f", "lavfi", "-i", "anoisesrc=amplitude=0.3:duration=90:sample_rate=44100",
         "-map", "0:v", "-map", "1:a", "-map", "2:a", "-c:v", "libx264", "-preset", "ultrafast",
         "-c:a", "aac", str(path)],
        check=True, timeout=300,
    )  # fmt: skip
    return path


def children(pid: int) -> dict[int, str]:
    """pid → command line of the live processes whose parent is ``pid``."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found[int(entry.name)] = cmdline
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has stopped; only its exit status is left


def start_cutting(recording: Path, out: Path, env: dict) -> tuple[subprocess.Popen, list[int]]:
    """Start the CLI and wait until it runs clip encoders; return it and their pids."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "highlightsense", "detect", str(recording), "-o", str(out),
         "--tracks", "voice=1,game=2", "--threshold", "0", "--top-n", "4", "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env},
    )  # fmt: skip
    deadline = time.monotonic() + WAIT_FOR_CUTS
    while time.monotonic() < deadline and proc.poll() is None:
        cuts = [pid for pid, cmd in children(proc.pid).items() if "+faststart" in cmd]
        if cuts:
            return proc, cuts
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"no clip was being cut: {proc.communicate()}")


def assert_gone(pids: list[int]) -> None:
    deadline = time.monotonic() + GONE_WITHIN
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in pids if alive(pid)], "ffmpeg outlived its parent"


@pytest.fixture
def env(tmp_path, checkpoint) -> dict:
    return {
        "HIGHLIGHTSENSE_CACHE": str(tmp_path / "cache"),
        "HIGHLIGHTSENSE_WEIGHTS": str(checkpoint),
    }


def test_sigterm_while_cutting_is_like_ctrl_c(obs_recording, tmp_path, env):
    out = tmp_path / "out"
    proc, cuts = start_cutting(obs_recording, out, env)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert stderr.strip().splitlines() == ["error: terminated; nothing was written."]
    assert_gone(cuts)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [tmp_path / "cache"]  # no staging folder left


def test_sigkill_leaves_no_encoder_and_the_next_run_sweeps_its_staging(
    obs_recording, tmp_path, env
):
    out = tmp_path / "out"
    proc, cuts = start_cutting(obs_recording, out, env)
    proc.kill()
    proc.communicate(timeout=60)
    assert_gone(cuts)  # PR_SET_PDEATHSIG: the kernel killed them with their parent
    [left] = [p for p in tmp_path.iterdir() if p.name.startswith(".out.partial-")]
    assert (left / outfolder.MARKER).is_file()

    rerun = subprocess.run(
        [sys.executable, "-m", "highlightsense", "detect", str(obs_recording), "-o", str(out),
         "--tracks", "voice=1,game=2", "--no-clips", "-q"],
        capture_output=True, text=True, timeout=300, env={**os.environ, **env},
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    assert not left.exists()
    assert json.loads((out / "highlights.json").read_text())["windows"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "out"]
