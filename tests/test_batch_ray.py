"""``batch`` on a real local Ray runtime: a worker killed mid-VOD is restarted by Ray and the
outputs equal a sequential ``detect``'s, byte for byte.

One runtime for the module (it takes seconds to start on a busy machine), on 127.0.0.1, with
its files under pytest's temporary folder and HOME pointed there too: Ray's token
authentication writes ``~/.ray/auth_token``, which must not land in the real home directory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from conftest import make_media

from highlightsense import pipeline
from highlightsense.batch import batch
from highlightsense.errors import SettingsError
from highlightsense.settings import AnalysisSettings, Selection

ray = pytest.importorskip("ray")

WINDOW, STRIDE = 10.0, 5.0  # s
CHOSEN = Selection(percentile=0, top_n=2)
BUSY_TITLE = b"ray::Analyser.analyse"  # a Ray worker's process title while it runs that method


@pytest.fixture(scope="module")
def runtime(tmp_path_factory, checkpoint, tiny_separator):
    repo, name = tiny_separator
    home = tmp_path_factory.mktemp("home")
    # Ray's socket paths (its folder + ~65 characters of session and socket names) must fit
    # AF_UNIX's 107 bytes: pytest's deep temporary folders under a long TMPDIR do not
    base = tempfile.gettempdir()
    short = len(base) > 16 and Path("/tmp").is_dir()
    ray_temp = tempfile.mkdtemp(prefix="hs-ray-", dir="/tmp" if short else base)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(home))
        patch.setenv("HIGHLIGHTSENSE_CACHE", str(tmp_path_factory.mktemp("cache")))
        patch.setenv("HIGHLIGHTSENSE_WEIGHTS", str(checkpoint))
        patch.setenv("HIGHLIGHTSENSE_SEPARATOR", name)
        patch.setenv("HIGHLIGHTSENSE_SEPARATOR_REPO", str(repo))
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            _node_ip_address="127.0.0.1",
            _temp_dir=ray_temp,
        )
        try:
            yield home
        finally:
            ray.shutdown()
            shutil.rmtree(ray_temp, ignore_errors=True)


def busy_workers() -> list[int]:
    """Pids of the processes whose title says they are analysing a VOD right now."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(BUSY_TITLE):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


class Killer(threading.Thread):
    """Kills the first worker seen analysing a VOD, once."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.killed: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and not self.killed:
            for pid in busy_workers():
                os.kill(pid, signal.SIGKILL)
                self.killed.append(pid)
                break
            time.sleep(0.02)


@pytest.mark.skipif(sys.platform != "linux", reason="finds the worker through /proc")
def test_killed_worker_is_rerun_and_outputs_equal_detect(runtime, tmp_path):
    folder = tmp_path / "vods"
    good = [
        make_media(folder / "first.mp4", 30, loud_spans=((8, 12),)),
        make_media(folder / "second.mp4", 25, loud_spans=((15, 20),)),
    ]
    (folder / "third.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 broken" * 20)
    settings = AnalysisSettings(window_sec=WINDOW, stride_sec=STRIDE, device="cpu")
    out = tmp_path / "out"
    killer = Killer()
    killer.start()
    try:
        result = batch([folder], out, settings, CHOSEN, executor="ray", digest=3)
    finally:
        killer.stop.set()
        killer.join()
    assert len(killer.killed) == 1  # one worker was killed in the middle of a VOD
    assert [(r.folder, r.status) for r in result.rows] == [
        ("first", "done"),
        ("second", "done"),
        ("third", "failed"),
    ]
    assert "third.mp4" in result.rows[2].error and "\n" not in result.rows[2].error
    compared = 0
    for vod, row in zip(good, result.rows, strict=False):
        alone = pipeline.detect(vod, settings, CHOSEN, out_dir=tmp_path / "alone" / row.folder)
        for name in ("scores.csv", "highlights.csv"):
            assert (out / row.folder / name).read_bytes() == (alone.out_dir / name).read_bytes()
            compared += 1
        assert len(list((out / row.folder / "clips").iterdir())) == len(alone.highlights) >= 1
    assert compared == 4
    assert not [p for p in out.iterdir() if ".partial-" in p.name]  # the killed try's swept

    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.parent.name == "clips"}
    again = batch([folder], out, settings, CHOSEN, executor="ray", digest=3)
    assert [r.status for r in again.rows] == ["skipped", "skipped", "failed"]
    assert again.rows[2].error == result.rows[2].error
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.parent.name == "clips"}
    summary = json.loads((out / "batch.json").read_text())
    assert summary["done"] == 2 and summary["failed"] == 1


def test_nothing_lands_in_the_real_home(runtime):
    assert (runtime / ".ray").is_dir()  # Ray wrote its token where HOME pointed, not in ~


def test_keep_stems_is_refused_before_any_work(runtime, tmp_path):
    vod = make_media(tmp_path / "v.mp4", 12)
    settings = AnalysisSettings(window_sec=WINDOW, stride_sec=STRIDE, keep_stems=True)
    with pytest.raises(SettingsError, match="keep-stems"):
        batch([vod], tmp_path / "out", settings, executor="ray")
    assert not (tmp_path / "out").exists()
