"""Handing the highlights to a video editor: timelines with markers, and YouTube chapters.

One OpenTimelineIO timeline is built per call and written through OTIO's own adapters:
``timeline.otio`` (OTIO JSON), ``timeline.xml`` (Final Cut Pro 7 XML, which Premiere and
Resolve import), ``timeline.fcpxml`` (Final Cut Pro X) and ``timeline.edl`` (CMX 3600), plus
``chapters.txt`` (YouTube chapter lines). Each timeline references the original file at its
frame rate and holds a rough cut: the highlight spans one after another, in rank or time order,
each carrying one marker over its span (named with rank and confidence, the "why" summary in
its note). Times are whole frames of the media, so every editor lands on the same frames.
"""

from __future__ import annotations

import contextlib
import fractions
import math
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import opentimelineio as otio

from .clips import clip_names
from .errors import SettingsError
from .files import write_atomic
from .media import MediaInfo
from .settings import TIMELINE_FILES, check_kinds
from .settings import TIMELINE_ORDERS as ORDERS  # how the rough cut is ordered

ADAPTERS = {  # kind → OTIO adapter that writes (and reads back) it
    "otio": "otio_json",
    "fcp7xml": "fcp_xml",
    "fcpxml": "fcpx_xml",
    "edl": "cmx_3600",
}

# Rates editors offer for a sequence and SMPTE timecode can count (frames/s). A recording's
# measured average rate is often a hair off (60.0003); it is snapped to the nearest of these
# within SNAP_TOLERANCE.
STANDARD_RATES = tuple(
    fractions.Fraction(r) for r in ("24000/1001", "24", "25", "30000/1001", "30", "48", "50",
                                    "60000/1001", "60")
)  # fmt: skip
SNAP_TOLERANCE = 0.005  # relative
# Audio has no frames, but every editor format counts in them. 30 frames/s is the rate most game
# streams are recorded at, is whole (no drop-frame timecode, so timecode reads as clock time)
# and its frame (33 ms) is finer than anything a listener can place an edit by.
AUDIO_ONLY_RATE = fractions.Fraction(30)  # frames/s

CHAPTER_GAP = 10  # s: YouTube ignores chapters shorter than this
FIRST_CHAPTER_TITLE = "Start"  # title of the 0:00 line when no highlight starts there
MAX_HIGHLIGHTS = 10_000  # more markers than any editor shows usefully
MAX_WHY_CHARS = 500  # characters of a "why" summary kept in a marker note

_FCPX_PATCH = threading.Lock()


@dataclass(frozen=True)
class Marker:
    """One chosen clip as a timeline marks it (from a highlights table row)."""

    rank: int  # 1 = best
    start_sec: float  # s in the original recording
    end_sec: float  # s in the original recording
    confidence: float  # the model's probability, 0-1
    why: str = ""  # a one-line summary of why it was chosen (may be empty)

    def __post_init__(self) -> None:
        if self.rank < 1 or not (0 <= self.start_sec < self.end_sec < math.inf):
            raise ValueError(f"not a highlight: {self}")


def as_marker(item: Marker | Mapping[str, object]) -> Marker:
    """A :class:`Marker` from itself or from a table row (``why`` optional)."""
    if isinstance(item, Marker):
        return item
    return Marker(
        rank=int(item["rank"]),  # type: ignore[arg-type]
        start_sec=float(item["start_sec"]),  # type: ignore[arg-type]
        end_sec=float(item["end_sec"]),  # type: ignore[arg-type]
        confidence=float(item["confidence"]),  # type: ignore[arg-type]
        why=str(item.get("why") or ""),
    )


def timeline_rate(info: MediaInfo) -> fractions.Fraction:
    """Frames/s the timelines count in: the picture's rate, snapped to a standard one if close.

    A rate no editor offers (a 10 or 15 fps screen capture, a variable-rate phone clip) has no
    SMPTE timecode, which every format here needs: such media is counted at the audio-only rate,
    whose 33 ms frames still place each marker within a frame of the picture's own.
    """
    if not info.has_video or info.frame_rate is None:
        return AUDIO_ONLY_RATE
    nearest = min(STANDARD_RATES, key=lambda r: abs(r - info.frame_rate))
    if abs(nearest - info.frame_rate) <= SNAP_TOLERANCE * nearest:
        return nearest
    return AUDIO_ONLY_RATE


def chapter_timestamp(seconds: int) -> str:
    """YouTube's chapter time: ``0:00``, ``12:34``, ``1:02:03``."""
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def chapter_lines(highlights: Sequence[Marker], duration: float) -> list[str]:
    """YouTube chapter lines: ``0:00`` first, then one per highlight in time order.

    Chapters are whole seconds at least :data:`CHAPTER_GAP` apart, and the last starts at least
    that long before the end. A highlight that starts too soon after the previous chapter moves
    later while that keeps it inside its span; otherwise it is left out. One that starts in the
    first seconds takes over the 0:00 line.
    """
    chapters = [(0, FIRST_CHAPTER_TITLE)]
    for item in sorted(highlights, key=lambda h: (h.start_sec, h.rank)):
        start = math.ceil(item.start_sec) if item.start_sec > 0 else 0
        title = f"Marker {item.rank}"
        if start < CHAPTER_GAP and chapters == [(0, FIRST_CHAPTER_TITLE)]:
            chapters[0] = (0, title)
            continue
        start = max(start, chapters[-1][0] + CHAPTER_GAP)
        if start < item.end_sec and start <= duration - CHAPTER_GAP:
            chapters.append((start, title))
    return [f"{chapter_timestamp(start)} {title}" for start, title in chapters]


# --- the timeline ------------------------------------------------------------------------------


def _frames(seconds: float, rate: fractions.Fraction) -> int:
    return round(seconds * rate)


def _range(first: int, last: int, rate: float) -> otio.opentime.TimeRange:
    """Frames [first, last) as an OTIO time range."""
    return otio.opentime.TimeRange(
        otio.opentime.RationalTime(first, rate), otio.opentime.RationalTime(last - first, rate)
    )


def marker_name(item: Marker) -> str:
    """``#1 (0.97)``: rank and confidence, short enough for an editor's marker list."""
    return f"#{item.rank} ({item.confidence:.2f})"


def build_timeline(
    info: MediaInfo,
    highlights: Sequence[Marker],
    *,
    order: str = "rank",
    media_url: str | None = None,
) -> otio.schema.Timeline:
    """The rough cut of ``highlights`` over the original file, one marker per highlight.

    The media is referenced as ``media_url``, by default the file's absolute ``file://`` URL.
    Video sources get a picture track (with the markers) and a sound track; audio-only sources
    get one sound track (with the markers). Spans are clamped to the recording and rounded to
    whole frames of :func:`timeline_rate`.
    """
    if order not in ORDERS:
        raise SettingsError(f"unknown timeline order {order!r}; choose rank or time.")
    if len(highlights) > MAX_HIGHLIGHTS:
        raise SettingsError(
            f"{len(highlights)} highlights are more than the {MAX_HIGHLIGHTS} a timeline holds; "
            "choose fewer."
        )
    rate = timeline_rate(info)
    rate_f = float(rate)
    total = _frames(info.duration, rate)
    key = (lambda h: h.rank) if order == "rank" else (lambda h: (h.start_sec, h.rank))
    items = sorted(highlights, key=key)
    names = clip_names(max((h.rank for h in items), default=0), "")
    media = otio.schema.ExternalReference(
        target_url=media_url or info.path.as_uri(), available_range=_range(0, total, rate_f)
    )
    kinds = [otio.schema.TrackKind.Video] if info.has_video else []
    tracks = [
        otio.schema.Track(name=f"{kind[0]}1", kind=kind)
        for kind in (*kinds, otio.schema.TrackKind.Audio)
    ]
    for item in items:
        first = min(max(_frames(item.start_sec, rate), 0), total - 1)
        last = min(max(_frames(item.end_sec, rate), first + 1), total)
        span = _range(first, last, rate_f)
        for number, track in enumerate(tracks):
            clip = otio.schema.Clip(
                name=names[item.rank - 1],
                media_reference=media.clone(),
                source_range=span,
            )
            if number == 0:  # one marker per highlight, on the first track
                note = item.why[:MAX_WHY_CHARS]
                clip.markers.append(
                    otio.schema.Marker(
                        name=marker_name(item),
                        marked_range=span,
                        color=otio.schema.MarkerColor.RED,
                        comment=note,
                        # Final Cut 7 XML keeps a marker's note in its <comment> element.
                        metadata={"fcp_xml": {"comment": note}} if note else {},
                    )
                )
            track.append(clip)
    timeline = otio.schema.Timeline(name=f"{info.path.stem} highlights", tracks=tracks)
    timeline.global_start_time = otio.opentime.RationalTime(0, rate_f)
    return timeline


@contextlib.contextmanager
def _fcpx_fixes(info: MediaInfo) -> Iterator[None]:
    """Three fixes to the FCP X adapter while it writes.

    It looks a frame duration up by ``int(rate)`` in a small table, so 29.97 frames/s gets none
    (a broken file); it runs an ``ffprobe`` from PATH, without a timeout, for the picture size
    that :class:`MediaInfo` already holds; and it guesses an asset's hasAudio / hasVideo from
    the kind of track its clips sit on. All three come from the probed facts here.
    """
    # The module OTIO's plugin system loaded and will call, not a fresh import of it.
    fcpx_xml = otio.adapters.from_name(ADAPTERS["fcpxml"]).module()

    def frame_duration(rate: float) -> str:
        exact = fractions.Fraction(rate).limit_denominator(1001)
        return f"{exact.denominator}/{exact.numerator}s"

    def format_name(rate: float, path: str) -> str:
        if not (info.width and info.height):
            return ""
        return f"FFVideoFormat{info.width}x{info.height}p{round(rate, 2):g}"

    writer = fcpx_xml.FcpxOtio
    add_asset = writer._add_asset

    def add_probed_asset(self: object, clip: object, compound_only: bool = False) -> str:
        asset_id = add_asset(self, clip, compound_only=compound_only)
        asset = self._asset_by_id(asset_id)  # type: ignore[attr-defined]
        asset.set("hasAudio", "1")
        asset.set("hasVideo", "1" if info.has_video else "0")
        return asset_id

    with _FCPX_PATCH:
        saved = (writer.__dict__["_framerate_to_frame_duration"], fcpx_xml.format_name, add_asset)
        writer._framerate_to_frame_duration = staticmethod(frame_duration)
        writer._add_asset = add_probed_asset
        fcpx_xml.format_name = format_name
        try:
            yield
        finally:
            writer._framerate_to_frame_duration, fcpx_xml.format_name, writer._add_asset = saved


def timeline_text(timeline: otio.schema.Timeline, kind: str, info: MediaInfo) -> str:
    """One timeline kind (not chapters) as the text of its file."""
    adapter = ADAPTERS[kind]
    if kind == "fcpxml":
        # FCP X clips carry their own sound, and the adapter misplaces connected sound lanes
        # (and fails on a timeline without a picture track): the primary storyline only.
        storyline = timeline.deepcopy()
        del storyline.tracks[1:]
        storyline.tracks[0].kind = otio.schema.TrackKind.Video
        with _fcpx_fixes(info):
            return otio.adapters.write_to_string(storyline, adapter_name=adapter)
    if kind == "edl" and not info.has_video:
        # The CMX writer wants exactly one picture track and writes the first track: an empty
        # picture track after the sound track gives an audio-only EDL ("A" events).
        timeline = timeline.deepcopy()
        timeline.tracks.append(otio.schema.Track(kind=otio.schema.TrackKind.Video))
    if kind == "edl":
        rate = float(timeline_rate(info))
        text = otio.adapters.write_to_string(timeline, adapter_name=adapter, rate=rate)
        # The writer leaves out the FCM line (its own TODO); editors read it to know whether
        # "01:00:00;00" counts drop-frame. OTIO picked drop-frame iff it wrote semicolons.
        zero = otio.opentime.to_timecode(otio.opentime.RationalTime(0, rate), rate)
        fcm = "FCM: DROP FRAME" if ";" in zero else "FCM: NON-DROP FRAME"
        title, _, events = text.partition("\n\n")
        return f"{title}\n{fcm}\n\n{events}"
    return otio.adapters.write_to_string(timeline, adapter_name=adapter)


def write_timelines(
    kinds: Sequence[str],
    out_dir: Path,
    info: MediaInfo,
    highlights: Sequence[Marker | Mapping[str, object]],
    *,
    order: str = "rank",
    media_url: str | None = None,
) -> list[Path]:
    """Write each of ``kinds`` (keys of :data:`TIMELINE_FILES`) into ``out_dir``.

    ``highlights`` are :class:`Marker` or table rows with rank, start_sec, end_sec,
    confidence and optionally why. ``order`` ("rank" or "time") orders the rough cut.
    ``media_url`` replaces the file's absolute URL (the web app should pass the bare file name,
    so downloads do not reveal the server's folders; the editor then asks to relink). Each file
    is written under a temporary name and renamed. Returns the paths written, in ``kinds`` order.
    """
    kinds = check_kinds(kinds)
    items = [as_marker(item) for item in highlights]
    timeline = build_timeline(info, items, order=order, media_url=media_url)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in kinds:
        if kind == "chapters":
            text = "\n".join(chapter_lines(items, info.duration)) + "\n"
        else:
            text = timeline_text(timeline, kind, info)
        path = out_dir / TIMELINE_FILES[kind]
        write_atomic(path, text)
        written.append(path)
    return written


def rough_cut_places(
    info: MediaInfo, highlights: Sequence[Marker | Mapping[str, object]], order: str = "rank"
) -> list[tuple[int, float, float]]:
    """Where each highlight sits in :func:`build_timeline`'s rough cut: (rank, its start s in
    the cut, the s of the recording it starts at), in the cut's order, on the same whole frames."""
    rate = timeline_rate(info)
    total = _frames(info.duration, rate)
    items = [as_marker(h) for h in highlights]
    key = (lambda h: h.rank) if order == "rank" else (lambda h: (h.start_sec, h.rank))
    places, at = [], 0
    for item in sorted(items, key=key):
        first = min(max(_frames(item.start_sec, rate), 0), total - 1)
        last = min(max(_frames(item.end_sec, rate), first + 1), total)
        places.append((item.rank, float(at / rate), float(first / rate)))
        at += last - first
    return places
