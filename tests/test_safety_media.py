"""Hostile and broken media: absurd frames, sample rates and durations are refused at probe time,
a container that understates its length is decoded in full (and no further than the limit), bad
samples are one sentence, and a cut of the largest accepted frame stays within its budget."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from unittest import mock

import pytest
from conftest import ffmpeg_binary
from hypothesis import given, settings
from hypothesis import strategies as st

from highlightsense import clips, media, sources
from highlightsense.errors import MediaError, SettingsError, SourceError


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_binary(), "-v", "error", "-y", *args], check=True, timeout=300)


def one_line(err: Exception) -> str:
    text = str(err)
    assert "\n" not in text and text.endswith("."), text
    return text


# --- frame sizes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "fragment"),
    [("8000x8000", "8000x8000 pixel frames"), ("96x9000", "96x9000 pixel frames")],
)
def test_absurd_frame_sizes_are_refused_at_probe(tmp_path, size, fragment):
    path = tmp_path / "picture.mkv"
    ffmpeg("-f", "lavfi", "-i", f"color=c=blue:size={size}:rate=1:duration=1",
           "-f", "lavfi", "-i", "sine=duration=1", "-frames:v", "1", "-c:v", "mjpeg",
           "-pix_fmt", "yuvj420p", "-c:a", "pcm_s16le", str(path))  # fmt: skip
    assert path.stat().st_size < 1 << 20  # a tiny file: the frame size is what costs
    with pytest.raises(MediaError) as caught:
        media.probe(path)
    assert fragment in one_line(caught.value) and "scale it down" in str(caught.value)


@pytest.fixture(scope="module")
def largest_accepted(tmp_path_factory) -> Path:
    """1.5 s at the largest frame size accepted (DCI 4K), with sound."""
    path = tmp_path_factory.mktemp("big") / "4k.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=4096x2160:rate=30:duration=1.5",
           "-f", "lavfi", "-i", "sine=duration=1.5:sample_rate=48000", "-c:v", "libx264",
           "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path))  # fmt: skip
    return path


def test_probe_reports_the_picture(largest_accepted):
    info = media.probe(largest_accepted)
    assert (info.width, info.height, info.frame_rate) == (4096, 2160, Fraction(30))
    assert info.width * info.height == media.MAX_PIXELS


def cut_in_a_child(cut: str, source: Path, out: Path) -> dict:
    """Run ``cut`` (Python with ``info``, ``out``, ``clips``, ``vertical`` at hand, setting a dict
    ``report``) in a fresh interpreter; ``report`` plus the peak RSS of the ffmpeg it waited for,
    as the kernel measured it."""
    script = (
        "import json, resource, sys\n"
        "from pathlib import Path\n"
        "from highlightsense import clips, media, vertical\n"
        "info, out = media.probe(sys.argv[1]), Path(sys.argv[2])\n"
        f"{cut}"
        "report['peak'] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024\n"
        "print(json.dumps(report))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(source), str(out)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_a_cut_of_the_largest_frame_stays_within_its_memory_estimate(largest_accepted, tmp_path):
    """Peak RSS of the ffmpeg child that cuts a clip at 4096x2160, measured by the kernel."""
    report = cut_in_a_child(
        "clips.cut_clips(info, [(0.2, 1.4)], out, workers=1)\n"
        "report = {'estimate': clips.cut_memory(info), 'parallel': clips.parallel_cuts(info)}\n",
        largest_accepted,
        tmp_path / "clips",
    )
    print(f"4096x2160 cut: peak RSS {report['peak'] / 2**20:.0f} MiB")  # shown with -s
    assert report["peak"] <= report["estimate"] <= 1.25 * 2**30
    assert report["parallel"] == 1  # two would not fit the budget
    assert (tmp_path / "clips" / "highlight_01.mp4").is_file()


def test_parallel_cuts_fit_the_memory_budget():
    reached = []  # examples that ran more than one cut at once, so reached the budget assertion

    @settings(max_examples=60, deadline=None, database=None)
    @given(
        width=st.integers(16, media.MAX_SIDE),
        height=st.integers(16, media.MAX_SIDE),
        copy=st.booleans(),
    )
    def check(width, height, copy):
        info = media.MediaInfo(Path("/x.mp4"), "mov", 10.0, 1, [], True, width, height)
        with mock.patch.object(clips.os, "cpu_count", return_value=64):  # a big machine
            count = clips.parallel_cuts(info, copy)
        assert 1 <= count <= clips.MAX_WORKERS
        if count > 1:
            reached.append(count)
            assert count * clips.cut_memory(info, copy) <= clips.CUT_MEMORY_BUDGET

    check()
    assert len(reached) >= 10 and max(reached) == clips.MAX_WORKERS


# --- sample rates and durations ------------------------------------------------------------------


def wav_with_rate(path: Path, rate: int) -> Path:
    """A real 8 kHz WAV whose header then claims ``rate`` Hz (as a hostile upload would)."""
    ffmpeg("-f", "lavfi", "-i", "sine=duration=10:sample_rate=8000", "-c:a", "pcm_s16le",
           str(path))  # fmt: skip
    data = bytearray(path.read_bytes())
    assert data[24:28] == struct.pack("<I", 8000)
    data[24:28] = struct.pack("<I", rate)
    data[28:32] = struct.pack("<I", rate * 2)  # bytes per second
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("rate", [1, 100, 1_000_000])
def test_implausible_sample_rates_are_refused(tmp_path, rate):
    with pytest.raises(MediaError) as caught:
        media.probe(wav_with_rate(tmp_path / "odd.wav", rate))
    assert f"at {rate} Hz" in one_line(caught.value)


def test_one_duration_limit_for_files_and_links(tmp_path, monkeypatch):
    path = tmp_path / "a.wav"
    ffmpeg("-f", "lavfi", "-i", "sine=duration=40:sample_rate=8000", str(path))
    assert media.probe(path).duration == pytest.approx(40, abs=0.1)
    link = {"title": "vod", "duration": 40.0}
    sources.check_info(link)  # the default limit (6 h) takes both

    monkeypatch.setenv(media.MAX_HOURS_ENV, "0.01")  # 36 s
    assert media.max_duration() == pytest.approx(36.0)
    with pytest.raises(MediaError, match="more than the 1 min limit"):
        media.probe(path)
    with pytest.raises(SourceError, match="more than the"):
        sources.check_info(link)
    for bad in ("-1", "0", "nan", "1e9", "six"):
        monkeypatch.setenv(media.MAX_HOURS_ENV, bad)
        with pytest.raises(SettingsError, match=media.MAX_HOURS_ENV):
            media.max_duration()


def lying_mkv(path: Path, seconds: float, claimed: float) -> Path:
    """An mkv holding ``seconds`` of video and two audio tracks whose header says ``claimed``."""
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=size=160x90:rate=10:duration={seconds}",
           "-f", "lavfi", "-i", f"sine=frequency=300:duration={seconds}:sample_rate=44100",
           "-f", "lavfi", "-i", f"anoisesrc=amplitude=0.3:duration={seconds}:sample_rate=44100",
           "-map", "0:v", "-map", "1:a", "-map", "2:a", "-c:v", "libx264",
           "-preset", "ultrafast", "-c:a", "aac", str(path))  # fmt: skip
    data = bytearray(path.read_bytes())
    at = data.find(b"\x44\x89\x88")  # the segment's Duration: an 8-byte float, in ms
    assert struct.unpack(">d", data[at + 3 : at + 11])[0] == pytest.approx(seconds * 1000, abs=50)
    data[at + 3 : at + 11] = struct.pack(">d", claimed * 1000)
    path.write_bytes(bytes(data))
    assert media.probe(path).duration == pytest.approx(claimed)
    return path


@pytest.fixture(scope="module")
def lying(tmp_path_factory) -> Path:
    return lying_mkv(tmp_path_factory.mktemp("lie") / "lying.mkv", 120, 4)


def test_a_container_understating_its_length_is_analysed_in_full(lying, tmp_path, checkpoint):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "highlightsense", "detect", str(lying), "-o", str(out),
         "--tracks", "voice=1,game=2", "--window", "10", "--threshold", "0", "--top-n", "3",
         "-q"],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "HIGHLIGHTSENSE_WEIGHTS": str(checkpoint),
             "HIGHLIGHTSENSE_CACHE": str(tmp_path / "cache")},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "highlights.json").read_text())
    assert summary["input_duration_sec"] == pytest.approx(120, abs=0.1)
    ends = [float(line.split(",")[2]) for line in (out / "scores.csv").read_text().split()[1:]]
    assert len(ends) == summary["windows"] and max(ends) == pytest.approx(120, abs=0.1)
    assert max(h["start_sec"] for h in summary["highlights"]) > 4
    for row in summary["highlights"]:
        clip = media.probe(out / row["clip_path"])
        assert clip.duration == pytest.approx(row["duration_sec"], abs=0.15)
        # the last window may end one frame (23 ms) past the decoded audio: clamped there
        assert row["duration_sec"] == pytest.approx(10, abs=0.03)


def test_decoding_stops_at_the_limit_whatever_the_header_says(lying, monkeypatch):
    monkeypatch.setenv(media.MAX_HOURS_ENV, str(60 / 3600))  # 60 s: the header's 4 s passes
    info = media.probe(lying)
    seen = 0
    with pytest.raises(MediaError, match="holds more audio than the 1 min limit") as caught:
        for chunk in media.read_audio(info, sample_rate=8000, chunk_seconds=10):
            seen += chunk.shape[1]
    one_line(caught.value)
    assert seen == 60 * 8000  # every sample up to the limit, none beyond


# --- bad samples ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["0/0", "1/0", "-1/0"])
def test_nan_or_infinite_samples_are_one_sentence(tmp_path, bad, checkpoint, tiny_separator):
    path = tmp_path / "float.wav"
    ffmpeg("-f", "lavfi", "-i",
           f"aevalsrc=exprs='if(between(t,3,3.01),{bad},0.1*sin(2*PI*440*t))':s=22050:d=6",
           "-c:a", "pcm_f32le", str(path))  # fmt: skip
    info = media.probe(path)
    with pytest.raises(MediaError, match="NaN or infinity"):
        media.read_audio_all(info)  # resampled to 44.1 kHz on the way, as the pipeline does
    repo, name = tiny_separator
    proc = subprocess.run(
        [sys.executable, "-m", "highlightsense", "detect", str(path), "-o", str(tmp_path / "o"),
         "-q"],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "HIGHLIGHTSENSE_WEIGHTS": str(checkpoint),
             "HIGHLIGHTSENSE_CACHE": str(tmp_path / "cache"),
             "HIGHLIGHTSENSE_SEPARATOR": name, "HIGHLIGHTSENSE_SEPARATOR_REPO": str(repo)},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert "NaN or infinity" in line and line.startswith("error: `float.wav`")
    assert not (tmp_path / "o").exists()


def test_a_vertical_cut_of_a_small_source_stays_within_its_memory_estimate(media_dir, tmp_path):
    """A vertical clip is 1080x1920 whatever the source: its encoder is counted at that size."""
    from test_vertical import make_layout_source

    source = make_layout_source(media_dir / "small for vertical.mp4", 320, 180)
    report = cut_in_a_child(
        "vertical.cut_vertical(info, [(1.0, 3.0)], out, vertical.Layout('fit'), workers=1)\n"
        "pixels = vertical.WIDTH * vertical.HEIGHT\n"
        "report = {'source': clips.cut_memory(info),\n"
        "          'estimate': clips.cut_memory(info, out_pixels=pixels)}\n",
        source,
        tmp_path / "clips",
    )
    print(f"320x180 → 1080x1920 cut: peak RSS {report['peak'] / 2**20:.0f} MiB")
    assert report["source"] < report["peak"] <= report["estimate"]  # the source's size would not do
