"""clips.py: real cuts of generated media, checked by decoding them again."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import make_media
from hypothesis import given, settings
from hypothesis import strategies as st

from highlightsense import clips, media, tools
from highlightsense.errors import Cancelled, MediaError

SPANS = [(11.5, 14.25), (30.0, 32.3), (2.0, 3.0)]  # s, rank order
FPS = 10  # frames/s of the generated test video
WIDTH, HEIGHT = 160, 90  # pixels of the generated test video
DURATION_TOLERANCE = 0.1  # s: one frame at 10 fps


def ffprobe(path: Path) -> dict:
    cmd = [
        tools.ffprobe_path(), "-v", "error", "-show_entries",
        "format=duration:stream=codec_type,codec_name,pix_fmt,duration", "-of", "json", str(path),
    ]  # fmt: skip
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, timeout=30).stdout)


def gray_frame(path: Path, index: int) -> np.ndarray:
    """Frame ``index`` of a video, decoded from the start (no seeking), as (HEIGHT, WIDTH)."""
    cmd = [
        tools.ffmpeg_path(), "-v", "error", "-i", str(path), "-vf", f"select=eq(n\\,{index})",
        "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "gray", "pipe:1",
    ]  # fmt: skip
    raw = subprocess.run(cmd, check=True, capture_output=True, timeout=30).stdout
    return np.frombuffer(raw, dtype=np.uint8).reshape(HEIGHT, WIDTH).astype(np.float32)


def no_partials(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".part"]


@pytest.fixture(scope="module")
def vod_info(short_vod: Path) -> media.MediaInfo:
    return media.probe(short_vod)


@pytest.fixture(scope="module")
def cut(vod_info: media.MediaInfo, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return clips.cut_clips(vod_info, SPANS, tmp_path_factory.mktemp("cut"))


# --- pure helpers ------------------------------------------------------------------------------


def test_clip_names() -> None:
    assert clips.clip_names(3, ".mp4") == [
        "highlight_01.mp4",
        "highlight_02.mp4",
        "highlight_03.mp4",
    ]
    many = clips.clip_names(120, ".m4a")
    assert many[0] == "highlight_001.m4a" and many[-1] == "highlight_120.m4a"
    assert clips.clip_names(0, ".mp4") == []


def test_clamp_spans_examples() -> None:
    assert clips.clamp_spans([(-3, 5), (38, 45)], 40.0) == [(0.0, 5), (38, 40.0)]
    with pytest.raises(ValueError):
        clips.clamp_spans([(41, 50)], 40.0)


@st.composite
def spans_and_duration(draw: st.DrawFn) -> tuple[list[tuple[float, float]], float, bool]:
    """(spans, duration, valid): about half the cases have only spans that meet [0, duration]
    (they must come back clamped), the rest hold one empty span (it must be refused)."""
    duration = draw(st.floats(0.1, 100))
    valid = draw(st.booleans())
    spans = []
    for _ in range(draw(st.integers(1, 5))):
        start = draw(st.floats(-50, duration * 0.99))
        end = draw(st.floats(max(start, 0.0) + duration * 0.01, duration + 50))
        spans.append((start, end))
    if not valid:  # a span wholly before 0 or after the end: empty once clamped
        gap = draw(st.floats(0.0, 50))
        empty = draw(st.sampled_from([(-gap - 1.0, -gap), (duration + gap, duration + gap + 1.0)]))
        spans.insert(draw(st.integers(0, len(spans))), empty)
    return spans, duration, valid


def test_clamp_spans_stay_inside() -> None:
    reached = {True: 0, False: 0}

    @settings(max_examples=200, database=None)
    @given(spans_and_duration())
    def check(case: tuple[list[tuple[float, float]], float, bool]) -> None:
        spans, duration, valid = case
        if not valid:
            with pytest.raises(ValueError):
                clips.clamp_spans(spans, duration)
            reached[False] += 1
            return
        clamped = clips.clamp_spans(spans, duration)
        expected = [(min(max(a, 0.0), duration), min(max(b, 0.0), duration)) for a, b in spans]
        assert clamped == expected
        assert all(0 <= a < b <= duration for a, b in clamped)
        reached[True] += 1

    check()
    total = reached[True] + reached[False]
    assert total >= 100 and min(reached.values()) >= 0.2 * total, reached  # both branches


# --- re-encoded clips --------------------------------------------------------------------------


def test_clip_names_and_order(cut: list[Path]) -> None:
    assert [p.name for p in cut] == ["highlight_01.mp4", "highlight_02.mp4", "highlight_03.mp4"]
    assert all(p.is_file() for p in cut)
    assert no_partials(cut[0].parent)


@pytest.mark.parametrize("rank", range(len(SPANS)))
def test_reencoded_clip_codecs_and_duration(cut: list[Path], rank: int) -> None:
    report = ffprobe(cut[rank])
    streams = {s["codec_type"]: s for s in report["streams"]}
    assert streams["video"]["codec_name"] == "h264"
    assert streams["video"]["pix_fmt"] == "yuv420p"
    assert streams["audio"]["codec_name"] == "aac"
    start, end = SPANS[rank]
    assert float(report["format"]["duration"]) == pytest.approx(end - start, abs=DURATION_TOLERANCE)
    assert float(streams["audio"]["duration"]) == pytest.approx(end - start, abs=0.03)


def test_faststart_puts_the_index_first(cut: list[Path]) -> None:
    for path in cut:
        data = path.read_bytes()
        assert 0 < data.find(b"moov") < data.find(b"mdat")


def test_reencoded_clip_starts_on_the_right_frame(cut: list[Path], short_vod: Path) -> None:
    first = gray_frame(cut[0], 0)
    wanted = round(SPANS[0][0] * FPS)
    errors = {
        n: np.abs(first - gray_frame(short_vod, n)).mean() for n in (wanted - 1, wanted, wanted + 1)
    }
    assert min(errors, key=errors.get) == wanted


def test_reencoded_clip_audio_is_aligned(cut: list[Path]) -> None:
    # The loud burst starts at 12 s in the source, so 0.5 s into the clip cut from 11.5 s.
    audio = media.read_audio_all(media.probe(cut[0]), channels=1)[0]
    loud = np.flatnonzero(np.abs(audio) > 0.5)
    assert loud[0] / 44100 == pytest.approx(0.5, abs=0.02)


# --- other modes -------------------------------------------------------------------------------


def test_stream_copy_gives_playable_clips(vod_info: media.MediaInfo, tmp_path: Path) -> None:
    [clip] = clips.cut_clips(vod_info, [(30.0, 33.0)], tmp_path, copy=True)
    report = ffprobe(clip)
    assert {s["codec_name"] for s in report["streams"]} == {"h264", "aac"}
    # Keyframe-aligned: it may start earlier than asked, never later, and must decode cleanly.
    assert float(report["format"]["duration"]) >= 3.0 - DURATION_TOLERANCE
    decode = [tools.ffmpeg_path(), "-v", "error", "-xerror", "-i", str(clip), "-f", "null", "-"]
    assert subprocess.run(decode, capture_output=True, timeout=60).returncode == 0


def test_audio_only_source_gives_m4a(media_dir: Path, tmp_path: Path) -> None:
    source = make_media(media_dir / "podcast.m4a", 8, video=False)
    info = media.probe(source)
    assert not info.has_video
    paths = clips.cut_clips(info, [(1.0, 3.5), (5.0, 7.0)], tmp_path)
    assert [p.name for p in paths] == ["highlight_01.m4a", "highlight_02.m4a"]
    for path, (start, end) in zip(paths, [(1.0, 3.5), (5.0, 7.0)], strict=True):
        report = ffprobe(path)
        assert [s["codec_type"] for s in report["streams"]] == ["audio"]
        assert report["streams"][0]["codec_name"] == "aac"
        assert float(report["format"]["duration"]) == pytest.approx(end - start, abs=0.03)


def test_odd_paths_and_given_names(media_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "ä ö 日本 clip.mp4"
    shutil.copy(make_media(media_dir / "six.mp4", 6), source)
    out_dir = tmp_path / "ä ö 日本 out"
    paths = clips.cut_clips(
        media.probe(source), [(1.0, 2.0), (-1.0, 99.0)], out_dir, names=["-i.mp4", "ü 2.mp4"]
    )
    assert paths == [out_dir / "-i.mp4", out_dir / "ü 2.mp4"]
    assert float(ffprobe(paths[1])["format"]["duration"]) == pytest.approx(
        6.0, abs=DURATION_TOLERANCE
    )


@pytest.mark.parametrize(
    "names", [["a.mp4"], ["a.mp4", "a.mp4"], ["../a.mp4", "b.mp4"], [".a.mp4", "b.mp4"]]
)
def test_bad_names_are_refused(vod_info: media.MediaInfo, tmp_path: Path, names: list[str]) -> None:
    with pytest.raises(ValueError):
        clips.cut_clips(vod_info, [(1, 2), (3, 4)], tmp_path, names=names)


# --- cancel and failure ------------------------------------------------------------------------


def test_progress_raising_cancels_and_cleans_up(vod_info: media.MediaInfo, tmp_path: Path) -> None:
    seen: list[float] = []

    def progress(fraction: float, message: str) -> None:
        seen.append(fraction)
        if fraction > 0:
            raise Cancelled("user pressed stop")

    spans = [(t, t + 6.0) for t in range(0, 30, 5)]
    with pytest.raises(Cancelled, match="user pressed stop"):
        clips.cut_clips(vod_info, spans, tmp_path, workers=2, progress=progress)
    assert seen[0] == 0.0 and len(seen) == 2
    assert no_partials(tmp_path)
    finished = list(tmp_path.iterdir())
    assert 1 <= len(finished) < len(spans)
    for path in finished:  # whatever kept its final name is a whole clip
        assert float(ffprobe(path)["format"]["duration"]) == pytest.approx(
            6.0, abs=DURATION_TOLERANCE
        )


def test_cancel_kills_running_cuts(
    vod_info: media.MediaInfo, tmp_path: Path, started: list[subprocess.Popen]
) -> None:
    def cancel() -> None:
        raise Cancelled("stop")

    with pytest.raises(Cancelled):
        clips.cut_clips(vod_info, [(0, 40), (0, 40)], tmp_path, workers=2, cancel=cancel)
    assert no_partials(tmp_path)
    # Reaped: killed mid-encode (the usual case here) or, on a fast machine, already done.
    assert len(started) == 2
    assert all(p.returncode in (0, -signal.SIGKILL) for p in started)


def test_cut_failure_is_a_media_error(media_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "gone.mp4"
    shutil.copy(make_media(media_dir / "six.mp4", 6), source)
    info = media.probe(source)
    source.write_bytes(b"\0" * 100)  # replaced after probing
    with pytest.raises(
        MediaError, match="could not cut the clip at 00:00:01-00:00:02 from `gone.mp4`"
    ) as caught:
        clips.cut_clips(info, [(1.0, 2.0)], tmp_path / "out")
    assert "\n" not in str(caught.value)
    assert list((tmp_path / "out").iterdir()) == []
