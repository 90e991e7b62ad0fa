"""media.py: vetting hostile inputs, probing, streaming decode, process hygiene."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_media

from highlightsense import media, tools
from highlightsense.errors import Cancelled, MediaError, ToolError

AAC_FRAME = 1024  # samples per AAC frame: the decoder's padding granularity
MAX_REFUSAL_SECONDS = 10.0  # a refusal must come quickly, never after a hang


def ffmpeg(*args: str) -> None:
    cmd = [tools.ffmpeg_path(), "-hide_banner", "-loglevel", "error", "-y", "-nostdin", *args]
    subprocess.run(cmd, check=True, timeout=60, capture_output=True)


@pytest.fixture(scope="module")
def clip5(media_dir: Path) -> Path:
    """5 s of video with sound."""
    return make_media(media_dir / "clip5.mp4", 5)


@pytest.fixture(scope="module")
def wav3(media_dir: Path) -> Path:
    """3 s of PCM audio: no codec padding at all."""
    path = media_dir / "three.wav"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:duration=3:sample_rate=44100", str(path))
    return path


@pytest.fixture(scope="module")
def two_tracks(media_dir: Path) -> Path:
    """3 s, two audio tracks: 440 Hz first, 1000 Hz second."""
    path = media_dir / "two tracks.mkv"
    ffmpeg(
        "-f", "lavfi", "-i", "sine=frequency=440:duration=3:sample_rate=44100",
        "-f", "lavfi", "-i", "sine=frequency=1000:duration=3:sample_rate=44100",
        "-map", "0:a", "-map", "1:a", "-c:a", "aac",
        "-metadata:s:a:1", "title=game", str(path),
    )  # fmt: skip
    return path


def assert_refused(path: Path | str) -> MediaError:
    started = time.monotonic()
    with pytest.raises(MediaError) as caught:
        media.probe(path)
    assert time.monotonic() - started < MAX_REFUSAL_SECONDS
    message = str(caught.value)
    assert "\n" not in message and message.endswith(".")
    return caught.value


# --- refusals ----------------------------------------------------------------------------------


def test_refuses_missing_path(tmp_path: Path) -> None:
    assert "does not exist" in str(assert_refused(tmp_path / "nope.mp4"))


def test_refuses_directory(tmp_path: Path) -> None:
    assert "folder" in str(assert_refused(tmp_path))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX only")
def test_refuses_fifo_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    assert "not a regular file" in str(assert_refused(fifo))


def test_refuses_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    path.touch()
    assert "empty" in str(assert_refused(path))


def test_refuses_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "noise.mp4"
    path.write_bytes(np.random.default_rng(0).bytes(64_000))
    message = str(assert_refused(path))
    assert "could not be read" in message and "noise.mp4: Invalid data" in message
    assert str(tmp_path) not in message and "@ 0x" not in message


def test_refuses_text_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("These are my stream notes, not a video. Ünïcödé too.\n" * 50)
    assert "a text file" in str(assert_refused(path))


def test_refuses_truncated_mp4(tmp_path: Path, short_vod: Path) -> None:
    data = short_vod.read_bytes()
    path = tmp_path / "truncated.mp4"
    path.write_bytes(data[: int(len(data) * 0.3)])
    assert "could not be read" in str(assert_refused(path))


def test_refuses_video_without_audio(tmp_path: Path) -> None:
    path = tmp_path / "silent film.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x90:rate=10:duration=2", "-c:v", "libx264",
           "-preset", "ultrafast", str(path))  # fmt: skip
    error = assert_refused(path)
    assert (
        str(error)
        == "`silent film.mp4` has no audio track; choose a recording that includes sound."
    )


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nhttp://127.0.0.1:9/x.ts\n", "HLS"),
        ("\ufeff#EXTM3U\n#EXTINF:10,\nfile:/etc/passwd\n", "HLS"),
        ("ffconcat version 1.0\nfile '/etc/passwd'\n", "concat"),
        ('<?xml version="1.0"?>\n<MPD xmlns="urn:mpeg:dash:schema:mpd:2011"></MPD>\n', "DASH"),
        ("v=0\no=- 0 0 IN IP4 127.0.0.1\nc=IN IP4 127.0.0.1\nm=audio 9 RTP/AVP 0\n", "SDP"),
    ],
)
def test_refuses_playlists_before_any_tool_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, kind: str
) -> None:
    def no_tools(*args: object, **kwargs: object) -> None:
        raise AssertionError("a playlist reached ffprobe")

    monkeypatch.setattr(media, "run_tool", no_tools)
    path = tmp_path / "disguised.mp4"
    path.write_text(text, encoding="utf-8")
    assert kind in str(assert_refused(path))


def test_demuxer_allowlist_stops_playlists_that_slip_past_sniffing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clip5: Path
) -> None:
    # Without the allowlist ffprobe would happily open this HLS playlist and read clip5 through it.
    monkeypatch.setattr(media, "_text_kind", lambda head: None)
    path = tmp_path / "disguised.mp4"
    path.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:5\n#EXTINF:5,\nfile:{clip5}\n#EXT-X-ENDLIST\n")
    assert "not on whitelist" in str(assert_refused(path))


def test_refuses_too_many_streams(tmp_path: Path) -> None:
    path = tmp_path / "many.mkv"
    maps = ["-map", "0:a"] * (media.MAX_STREAMS + 1)
    ffmpeg("-f", "lavfi", "-i", "sine=duration=0.5", *maps, "-c:a", "pcm_s16le", str(path))
    assert "streams" in str(assert_refused(path))


def fake_probe(monkeypatch: pytest.MonkeyPatch, report: dict) -> None:
    """Make ffprobe 'report' this, to test what probe() does with replies no real file gives."""

    def run_tool(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
        return subprocess.CompletedProcess(args, 0, json.dumps(report).encode(), b"")

    monkeypatch.setattr(media, "run_tool", run_tool)


AUDIO = {"index": 0, "codec_type": "audio", "codec_name": "aac", "channels": 2,
         "sample_rate": "44100"}  # fmt: skip


@pytest.mark.parametrize(
    ("fmt", "fragment"),
    [
        ({"format_name": "mov,mp4", "duration": str(25 * 3600), "nb_streams": 1}, "25.0 h"),
        ({"format_name": "mov,mp4", "nb_streams": 1}, "how long"),
        ({"format_name": "mov,mp4", "duration": "nan", "nb_streams": 1}, "how long"),
        ({"format_name": "hls", "duration": "10", "nb_streams": 1}, "'hls' format"),
        ({"format_name": "mov,mp4", "duration": "10", "nb_streams": 99}, "streams"),
    ],
)
def test_refuses_absurd_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clip5: Path, fmt: dict, fragment: str
) -> None:
    fake_probe(monkeypatch, {"format": fmt, "streams": [AUDIO]})
    assert fragment in str(assert_refused(clip5))


def test_refuses_unparseable_report(monkeypatch: pytest.MonkeyPatch, clip5: Path) -> None:
    def run_tool(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
        return subprocess.CompletedProcess(args, 0, b"{not json", b"")

    monkeypatch.setattr(media, "run_tool", run_tool)
    assert_refused(clip5)


# --- probing valid files -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ä ö 日本 clip.mp4", "-i.mp4", "http:127.0.0.1:9.mp4"])
def test_odd_but_valid_names_work(tmp_path: Path, clip5: Path, name: str) -> None:
    path = tmp_path / name
    shutil.copy(clip5, path)
    info = media.probe(path)
    assert info.path == path and info.size == clip5.stat().st_size
    assert media.read_audio_all(info).shape[1] > 0


def test_probe_reports_streams(clip5: Path) -> None:
    info = media.probe(clip5)
    assert info.format_name.split(",")[0] == "mov"
    assert info.has_video
    assert info.duration == pytest.approx(5.0, abs=0.05)
    assert info.size == clip5.stat().st_size
    [audio] = info.audio_streams
    assert (audio.channels, audio.sample_rate, audio.codec) == (2, 44100, "aac")


def test_probe_audio_only_and_titles(two_tracks: Path) -> None:
    info = media.probe(two_tracks)
    assert not info.has_video and info.format_name.startswith("matroska")
    assert [a.title for a in info.audio_streams] == [None, "game"]


def test_probe_accepts_relative_paths(clip5: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(clip5.parent)
    assert media.probe(clip5.name).path == clip5


# --- decoding ----------------------------------------------------------------------------------


def test_read_audio_pcm_sample_count_is_exact(wav3: Path) -> None:
    audio = media.read_audio_all(media.probe(wav3))
    assert audio.shape == (2, 3 * 44100) and audio.dtype == np.float32
    assert np.allclose(audio[0], audio[1])  # mono source duplicated to both channels


def test_read_audio_aac_sample_count(clip5: Path) -> None:
    # ffmpeg's mp4 edit list trims the AAC encoder's 1024-sample priming but not the padding of
    # the last frame, so up to one AAC frame of extra samples appears at the end (measured: 684).
    info = media.probe(clip5)
    samples = media.read_audio_all(info).shape[1]
    assert 0 <= samples - round(info.duration * 44100) <= AAC_FRAME


def test_read_audio_resamples_and_downmixes(clip5: Path) -> None:
    audio = media.read_audio_all(media.probe(clip5), sample_rate=22050, channels=1)
    assert audio.shape[0] == 1
    assert 0 <= audio.shape[1] - 5 * 22050 <= AAC_FRAME


def test_chunks_equal_one_read(clip5: Path) -> None:
    info = media.probe(clip5)
    whole = media.read_audio_all(info)
    chunks = list(media.read_audio(info, chunk_seconds=0.7))
    frames = round(0.7 * 44100)
    assert all(c.shape == (2, frames) for c in chunks[:-1])
    assert 0 < chunks[-1].shape[1] <= frames
    assert all(c.flags.c_contiguous and c.dtype == np.float32 for c in chunks)
    np.testing.assert_array_equal(np.concatenate(chunks, axis=1), whole)


def dominant_frequency(signal: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(signal))
    return float(np.fft.rfftfreq(signal.size, 1 / sample_rate)[np.argmax(spectrum)])


def test_stream_picks_the_audio_track(two_tracks: Path) -> None:
    info = media.probe(two_tracks)
    first = media.read_audio_all(info, channels=1, stream=0)[0]
    second = media.read_audio_all(info, channels=1, stream=1)[0]
    assert dominant_frequency(first, 44100) == pytest.approx(440, abs=2)
    assert dominant_frequency(second, 44100) == pytest.approx(1000, abs=2)


def test_missing_track_is_a_media_error(two_tracks: Path) -> None:
    with pytest.raises(MediaError, match="choose a track from 0 to 1"):
        media.read_audio(media.probe(two_tracks), stream=2)


def assert_gone(proc: subprocess.Popen) -> None:
    assert proc.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.kill(proc.pid, 0)


def test_early_close_kills_ffmpeg(short_vod: Path, started: list[subprocess.Popen]) -> None:
    info = media.probe(short_vod)
    chunks = media.read_audio(info, chunk_seconds=0.5)
    assert next(chunks).shape == (2, 22050)
    [proc] = [p for p in started if Path(p.args[0]).name.startswith("ffmpeg")]
    assert proc.returncode is None  # still running, blocked on the full pipe
    chunks.close()
    assert_gone(proc)


def test_cancel_stops_decoding(short_vod: Path, started: list[subprocess.Popen]) -> None:
    calls = 0

    def cancel() -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise Cancelled("stop")

    chunks = media.read_audio(media.probe(short_vod), chunk_seconds=1.0, cancel=cancel)
    with pytest.raises(Cancelled):
        for _ in chunks:
            pass
    assert calls == 3
    assert_gone(started[-1])


def test_decoding_failure_is_a_media_error(tmp_path: Path, clip5: Path) -> None:
    path = tmp_path / "will break.mp4"
    shutil.copy(clip5, path)
    info = media.probe(path)
    path.write_bytes(b"\0" * 1000)  # replaced after probing
    with pytest.raises(MediaError, match="could not be decoded") as caught:
        media.read_audio_all(info)
    assert "\n" not in str(caught.value)


# --- running tools -----------------------------------------------------------------------------


def test_run_tool_returns_output() -> None:
    done = tools.run_tool([sys.executable, "-c", "print('hi')"], timeout=30)
    assert done.stdout.strip() == b"hi"


def test_run_tool_reports_failure_with_stderr() -> None:
    script = "import sys; sys.stderr.write('first\\nthe real reason\\n'); sys.exit(3)"
    with pytest.raises(ToolError, match=re.escape("status 3: first | the real reason")):
        tools.run_tool([sys.executable, "-c", script], timeout=30)


def test_run_tool_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time;"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid));"
        "time.sleep(60)"
    )
    started = time.monotonic()
    with pytest.raises(ToolError, match="did not finish within 1 s"):
        tools.run_tool([sys.executable, "-c", script], timeout=1)
    assert time.monotonic() - started < 10
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(grandchild), "the tool's child survived the timeout"


def alive(pid: int) -> bool:
    """Whether a process runs; a killed orphan waiting to be reaped by init counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat_file = Path(f"/proc/{pid}/stat")
    return not (stat_file.exists() and stat_file.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def test_run_tool_cancel(started: list[subprocess.Popen]) -> None:
    def cancel() -> None:
        raise Cancelled("stop")

    with pytest.raises(Cancelled):
        tools.run_tool(
            [sys.executable, "-c", "import time; time.sleep(60)"], timeout=60, cancel=cancel
        )
    assert_gone(started[-1])


def test_stream_tool_stall_timeout(started: list[subprocess.Popen]) -> None:
    script = "import sys, time; sys.stdout.write('x' * 10); sys.stdout.flush(); time.sleep(60)"
    blocks = tools.stream_tool([sys.executable, "-c", script], block_bytes=100, timeout=1)
    with pytest.raises(ToolError, match="no output for 1 s"):
        list(blocks)
    assert_gone(started[-1])


def test_scripts_on_path_are_not_taken_for_ffmpeg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrapper = tmp_path / "ffprobe"
    wrapper.write_text("#!/bin/sh\nexit 0\n")
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    found = tools._find_binary("ffprobe")
    assert found != str(wrapper) and Path(found).is_file()
