"""timelines.py: every file is read back with OpenTimelineIO's adapters and checked by value."""

from __future__ import annotations

import fractions
import re
import subprocess
from pathlib import Path

import opentimelineio as otio
import pytest
from conftest import ffmpeg_binary
from hypothesis import given, note
from hypothesis import strategies as st

from highlightsense import media, settings, timelines
from highlightsense.errors import SettingsError
from highlightsense.timelines import Marker

SECONDS = 100  # length of the generated recordings: past a minute, where drop-frame shows
HIGHLIGHTS = [  # rank order; odd starts, one past a minute (drop-frame), one in the first 10 s
    Marker(1, 61.37, 91.37, 0.97, "the streamer shouts 14 dB over the game"),
    Marker(2, 3.5, 33.5, 0.91, "game sound peaks"),
    Marker(3, 40.02, 58.0, 0.88, ""),
]
ADAPTER_KINDS = ("otio", "fcp7xml", "fcpxml", "edl")


def make_recording(path: Path, rate: str | None) -> Path:
    """A SECONDS-long recording: a tiny test picture at ``rate`` frames/s, or sound only."""
    cmd = [ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-y"]
    if rate is not None:
        cmd += ["-f", "lavfi", "-i", f"testsrc2=size=64x36:rate={rate}:duration={SECONDS}"]
    cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={SECONDS}:sample_rate=22050"]
    if rate is not None:
        cmd += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    cmd += ["-c:a", "aac", "-b:a", "32k", str(path)]
    subprocess.run(cmd, check=True, timeout=120)
    return path


@pytest.fixture(
    scope="module", params=["25", "30000/1001", None], ids=["25fps", "29.97fps", "audio"]
)
def recording(request: pytest.FixtureRequest, media_dir: Path) -> media.MediaInfo:
    name = {"25": "r25.mp4", "30000/1001": "r2997.mp4", None: "talk.m4a"}[request.param]
    return media.probe(make_recording(media_dir / name, request.param))


@pytest.fixture(scope="module")
def written(
    recording: media.MediaInfo, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    out_dir = tmp_path_factory.mktemp("timelines")
    paths = timelines.write_timelines(
        list(timelines.TIMELINE_FILES), out_dir, recording, HIGHLIGHTS
    )
    return dict(zip(timelines.TIMELINE_FILES, paths, strict=True))


def read_back(path: Path, kind: str, info: media.MediaInfo) -> otio.schema.Timeline:
    extra = {"rate": float(timelines.timeline_rate(info))} if kind == "edl" else {}
    return otio.adapters.read_from_file(str(path), adapter_name=timelines.ADAPTERS[kind], **extra)


def tolerance(kind: str, info: media.MediaInfo) -> float:
    """Seconds a read-back time may differ from the highlight's: one frame.

    The FCP X reader counts in whole frames of ``int(rate)`` and truncates (29.97 → 29), so for
    that file a frame is one of its frames plus the half frame the writer rounded to.
    """
    rate = float(timelines.timeline_rate(info))
    if kind == "fcpxml":
        return 1 / int(rate) + 0.5 / rate
    return 1 / rate


def test_probe_reports_the_frame_rate(recording: media.MediaInfo) -> None:
    if recording.has_video:
        assert recording.frame_rate in (fractions.Fraction(25), fractions.Fraction(30000, 1001))
        assert (recording.width, recording.height) == (64, 36)
    else:
        assert (recording.frame_rate, recording.width, recording.height) == (None, None, None)


def test_every_kind_is_written(written: dict[str, Path]) -> None:
    assert [path.name for path in written.values()] == list(timelines.TIMELINE_FILES.values())
    assert all(path.stat().st_size > 0 for path in written.values())
    assert not [p for p in next(iter(written.values())).parent.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("kind", ADAPTER_KINDS)
def test_clips_match_the_spans(
    written: dict[str, Path], recording: media.MediaInfo, kind: str
) -> None:
    timeline = read_back(written[kind], kind, recording)
    by_rank = {h.rank: h for h in HIGHLIGHTS}
    tracks = [t for t in timeline.tracks if t.find_clips()]
    assert tracks, "no clips read back"
    eps = tolerance(kind, recording)
    for track in tracks:
        clips = list(track.find_clips())
        # The rough cut in rank order, one clip per highlight on every track.
        assert [c.name.strip() for c in clips] == ["highlight_01", "highlight_02", "highlight_03"]
        for rank, clip in enumerate(clips, start=1):
            span = clip.source_range
            highlight = by_rank[rank]
            assert span.start_time.to_seconds() == pytest.approx(highlight.start_sec, abs=eps)
            assert span.duration.to_seconds() == pytest.approx(
                highlight.end_sec - highlight.start_sec, abs=eps
            )


@pytest.mark.parametrize("kind", ADAPTER_KINDS)
def test_one_marker_per_highlight(
    written: dict[str, Path], recording: media.MediaInfo, kind: str
) -> None:
    timeline = read_back(written[kind], kind, recording)
    markers = [m for clip in timeline.find_clips() for m in clip.markers]
    if kind == "edl" and not markers:
        # The EDL reader skips locators in drop-frame timecode ("01:00:05;12"); read those
        # lines with OTIO's own timecode parser instead.
        rate = float(timelines.timeline_rate(recording))
        markers = [
            otio.schema.Marker(
                name=name,
                marked_range=otio.opentime.TimeRange(otio.opentime.from_timecode(stamp, rate)),
            )
            for stamp, name in re.findall(
                r"^\* LOC: (\S+) \w+\s+(.*)$", written[kind].read_text(), flags=re.M
            )
        ]
        assert recording.frame_rate == fractions.Fraction(30000, 1001)
    assert len(markers) == len(HIGHLIGHTS)
    eps = tolerance(kind, recording)
    for marker, highlight in zip(markers, HIGHLIGHTS, strict=True):
        name = timelines.marker_name(highlight)
        # CMX 3600 comments are upper case.
        assert marker.name == (name.upper() if kind == "edl" else name)
        assert marker.marked_range.start_time.to_seconds() == pytest.approx(
            highlight.start_sec, abs=eps
        )
        if kind != "edl":  # an EDL locator is a point in time
            assert marker.marked_range.duration.to_seconds() == pytest.approx(
                highlight.end_sec - highlight.start_sec, abs=eps
            )
        if kind == "otio":
            assert marker.comment == highlight.why
        if kind == "fcp7xml" and highlight.why:
            assert marker.metadata["fcp_xml"]["comment"] == highlight.why


@pytest.mark.parametrize("kind", ["otio", "fcp7xml", "fcpxml"])
def test_media_is_the_original_at_its_rate(
    written: dict[str, Path], recording: media.MediaInfo, kind: str
) -> None:
    timeline = read_back(written[kind], kind, recording)
    rate = float(timelines.timeline_rate(recording))
    for clip in timeline.find_clips():
        assert clip.media_reference.target_url == recording.path.as_uri()
        if kind != "fcpxml":  # its reader rounds rates down to whole numbers
            assert clip.source_range.start_time.rate == pytest.approx(rate)


def test_edl_timecode_is_drop_frame_only_at_29_97(
    written: dict[str, Path], recording: media.MediaInfo
) -> None:
    text = written["edl"].read_text()
    events = re.findall(r"^\d{3} .*$", text, flags=re.M)
    assert len(events) == len(HIGHLIGHTS)
    drop = recording.frame_rate == fractions.Fraction(30000, 1001)
    assert ("FCM: DROP FRAME" in text) is drop
    assert ("FCM: NON-DROP FRAME" in text) is not drop
    assert all((";" in event) is drop for event in events)
    channel = "V" if recording.has_video else "A"
    assert all(event.split()[2] == channel for event in events)


def test_fcpxml_frame_duration_and_sound(
    written: dict[str, Path], recording: media.MediaInfo
) -> None:
    text = written["fcpxml"].read_text()
    rate = timelines.timeline_rate(recording)
    assert f'frameDuration="{rate.denominator}/{rate.numerator}s"' in text
    assert 'hasAudio="1"' in text
    assert (f'hasVideo="{int(recording.has_video)}"') in text


def test_chapters_file(written: dict[str, Path]) -> None:
    assert written["chapters"].read_text().splitlines() == [
        "0:00 Marker 2",  # starts at 3.5 s: it takes the 0:00 line
        "0:41 Marker 3",
        "1:02 Marker 1",
    ]


def test_time_order(recording: media.MediaInfo, tmp_path: Path) -> None:
    [path] = timelines.write_timelines(["otio"], tmp_path, recording, HIGHLIGHTS, order="time")
    clips = list(otio.adapters.read_from_file(str(path)).tracks[0].find_clips())
    starts = [c.source_range.start_time.to_seconds() for c in clips]
    assert starts == sorted(starts) and len(starts) == len(HIGHLIGHTS)


# --- pure parts --------------------------------------------------------------------------------


def test_rows_are_accepted(recording: media.MediaInfo) -> None:
    rows = [
        {"rank": "1", "start_sec": "61.37", "end_sec": "91.37", "confidence": "0.97"},
        {"rank": 2, "start_sec": 3.5, "end_sec": 33.5, "confidence": 0.91, "why": "loud"},
    ]
    assert timelines.as_marker(rows[0]) == Marker(1, 61.37, 91.37, 0.97)
    assert timelines.as_marker(rows[1]).why == "loud"
    with pytest.raises(ValueError):
        Marker(0, 1.0, 2.0, 0.5)
    with pytest.raises(ValueError):
        Marker(1, 5.0, 5.0, 0.5)


def test_kinds_and_orders_are_checked(recording: media.MediaInfo, tmp_path: Path) -> None:
    assert settings.parse_kinds("EDL, otio,edl") == ("edl", "otio")
    assert settings.parse_kinds("all") == tuple(timelines.TIMELINE_FILES)
    for text in ("otio,aaf", "", " , "):
        with pytest.raises(SettingsError, match="choose any of") as caught:
            settings.parse_kinds(text)
        assert "\n" not in str(caught.value)
    with pytest.raises(SettingsError):
        timelines.write_timelines(["premiere"], tmp_path, recording, HIGHLIGHTS)
    with pytest.raises(SettingsError, match="rank or time"):
        timelines.write_timelines(["otio"], tmp_path, recording, HIGHLIGHTS, order="score")
    assert list(tmp_path.iterdir()) == []


def test_rates_snap_to_what_editors_offer() -> None:
    def info(rate: str | None) -> media.MediaInfo:
        return media.MediaInfo(
            Path("/x.mp4"), "mov", 10.0, 1, [], rate is not None, 64, 36,
            fractions.Fraction(rate) if rate else None,
        )  # fmt: skip

    assert timelines.timeline_rate(info("60003/1000")) == 60
    assert timelines.timeline_rate(info("2997/100")) == fractions.Fraction(30000, 1001)
    for unusual in ("10", "15", "120"):  # no SMPTE timecode: counted at the audio-only rate
        assert timelines.timeline_rate(info(unusual)) == timelines.AUDIO_ONLY_RATE
    assert timelines.timeline_rate(info(None)) == timelines.AUDIO_ONLY_RATE


def test_chapter_timestamps() -> None:
    assert timelines.chapter_timestamp(0) == "0:00"
    assert timelines.chapter_timestamp(754) == "12:34"
    assert timelines.chapter_timestamp(3723) == "1:02:03"


def test_chapters_move_or_drop_crowded_highlights() -> None:
    crowded = [
        Marker(1, 100.0, 130.0, 0.9),
        Marker(2, 104.0, 106.0, 0.8),  # 4 s after #1 and over before 110 s: dropped
        Marker(3, 105.0, 135.0, 0.7),  # moves to 110 s, still inside its span
        Marker(4, 595.0, 600.0, 0.6),  # within 10 s of the end: dropped
    ]
    assert timelines.chapter_lines(crowded, 600.0) == [
        "0:00 Start",
        "1:40 Marker 1",
        "1:50 Marker 3",
    ]


reached = {"chapters": 0}


@given(
    st.lists(
        st.tuples(st.floats(0, 3000), st.floats(1, 60)).map(lambda t: (t[0], t[0] + t[1])),
        max_size=30,
    )
)
def test_chapters_follow_youtube_rules(spans: list[tuple[float, float]]) -> None:
    items = [Marker(rank, a, b, 0.5) for rank, (a, b) in enumerate(spans, start=1)]
    lines = timelines.chapter_lines(items, 3100.0)
    seconds = []
    for line in lines:
        stamp, title = line.split(" ", 1)
        parts = [int(p) for p in stamp.split(":")]
        seconds.append(sum(p * 60**i for i, p in enumerate(reversed(parts))))
        if title != timelines.FIRST_CHAPTER_TITLE:
            rank = int(title.removeprefix("Marker "))
            start, end = spans[rank - 1]
            # Inside its highlight (the 0:00 line may stand for one starting in the first 10 s).
            assert seconds[-1] == 0 or start <= seconds[-1] < end
    note(f"{lines}")
    reached["chapters"] += 1
    assert seconds[0] == 0
    assert all(b - a >= timelines.CHAPTER_GAP for a, b in zip(seconds, seconds[1:], strict=False))
    assert seconds[-1] <= 3100.0 - timelines.CHAPTER_GAP or len(seconds) == 1


def test_the_chapter_property_ran() -> None:
    assert reached["chapters"] >= 50


def test_media_url_can_hide_the_folder(recording: media.MediaInfo, tmp_path: Path) -> None:
    name = recording.path.name
    paths = timelines.write_timelines(
        ["otio", "fcp7xml", "fcpxml", "edl"], tmp_path, recording, HIGHLIGHTS, media_url=name
    )
    for path in paths:
        text = path.read_text()
        assert name in text and str(recording.path.parent) not in text
