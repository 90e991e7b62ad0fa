"""Frames of a recording and where its facecam probably is.

:func:`frame_at` grabs one picture (scaled down to a bounded size) for the app's preview;
:func:`suggest_facecam` runs OpenCV's frontal-face Haar cascade, whose model ships inside the
opencv-python-headless wheel, on a few such frames and proposes a facecam region around the
face found most consistently, saying how it was found.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .errors import MediaError, ToolError
from .media import MediaInfo, input_args
from .tools import ffmpeg_path, run_tool, tool_reason
from .vertical import STACK_TOP, WIDTH, Region

PREVIEW_SIDE = 1280  # pixels: longest side of a preview frame
DETECT_SIDE = 640  # pixels: longest side of the frames the face detector sees
DETECT_FRAMES = 6  # frames looked at, spread over the recording
EDGE_SKIP = 0.05  # fraction of the recording skipped at each end (intros, end screens)
FRAME_TIMEOUT = 30.0  # s for ffmpeg to deliver one frame
CASCADE = "haarcascade_frontalface_default.xml"  # in cv2.data.haarcascades
MIN_FACE = 0.04  # fraction of the frame height: smaller "faces" are texture, not a webcam
SAME_PLACE = 0.3  # IoU above which two detections are the same face in the same place
FACE_TO_CAM = 3.0  # facecam height in face heights: head, shoulders and a margin


@dataclass(frozen=True)
class FacecamSuggestion:
    """A proposed facecam region (source pixels), or None, and how it was found (one sentence)."""

    region: Region | None
    how: str


def _fit(width: int, height: int, side: int) -> tuple[int, int]:
    """width x height scaled down (never up) so the longer side is at most ``side``, even."""
    scale = min(1.0, side / max(width, height))
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def frame_at(
    info: MediaInfo,
    seconds: float,
    *,
    side: int = PREVIEW_SIDE,
    cancel: Callable[[], None] | None = None,
) -> np.ndarray:
    """The picture at ``seconds`` as RGB uint8 (H, W, 3), longer side at most ``side`` pixels.

    Its scale to the source is ``frame.shape[1] / info.width``. Raises :class:`MediaError` for a
    recording without a picture or one ffmpeg cannot decode there.
    """
    if not info.has_video or not info.width or not info.height:
        raise MediaError(f"`{info.path.name}` has no picture to show; choose a video recording.")
    seconds = min(max(float(seconds), 0.0), max(info.duration - 0.5, 0.0))
    w, h = _fit(info.width, info.height, side)
    cmd = [
        ffmpeg_path(), "-nostdin", "-hide_banner", "-nostats", "-loglevel", "error",
        "-ss", f"{seconds:.3f}", *input_args(info),
        "-map", "0:V:0", "-frames:v", "1", "-vf", f"scale={w}:{h}:flags=area,setsar=1",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1",
    ]  # fmt: skip
    try:
        raw = run_tool(cmd, timeout=FRAME_TIMEOUT, cancel=cancel).stdout
    except ToolError as err:
        raise MediaError(
            f"no frame could be read from `{info.path.name}` at {seconds:.1f} s "
            f"({tool_reason(err, info.path)}); the recording may be damaged."
        ) from err
    if len(raw) != w * h * 3:
        raise MediaError(
            f"no frame could be read from `{info.path.name}` at {seconds:.1f} s; "
            "the recording may end early or be damaged."
        )
    return np.frombuffer(raw, dtype=np.uint8).reshape(h, w, 3).copy()


@functools.lru_cache(maxsize=1)
def _detector():  # -> cv2.CascadeClassifier
    import cv2

    detector = cv2.CascadeClassifier(cv2.data.haarcascades + CASCADE)
    if detector.empty():
        raise MediaError(
            "OpenCV's face model could not be loaded; reinstall opencv-python-headless."
        )
    return detector


def detect_faces(frame: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Faces in an RGB (H, W, 3) frame as (x, y, w, h) pixel boxes, biggest first."""
    import cv2

    gray = cv2.equalizeHist(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY))
    least = max(12, round(MIN_FACE * frame.shape[0]))
    boxes = _detector().detectMultiScale(
        gray, scaleFactor=1.1, minNeighbors=5, minSize=(least, least)
    )
    return sorted((tuple(int(v) for v in box) for box in boxes), key=lambda b: -b[2] * b[3])


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def facecam_around(face: tuple[float, float, float, float], width: int, height: int) -> Region:
    """A region around a face box, shaped like the stack layout's top part, inside the frame."""
    fx, fy, fw, fh = face
    aspect = WIDTH / STACK_TOP
    h = min(FACE_TO_CAM * fh, height, width / aspect)
    w = h * aspect
    cx, cy = fx + fw / 2, fy + fh / 2
    x = min(max(cx - w / 2, 0), width - w)
    y = min(max(cy - h / 2, 0), height - h)
    return Region(math.floor(x), math.floor(y), math.floor(w), math.floor(h))


def suggest_facecam(
    info: MediaInfo,
    *,
    frames: int = DETECT_FRAMES,
    cancel: Callable[[], None] | None = None,
) -> FacecamSuggestion:
    """Where the facecam probably is: around the face found in the most frames at one place.

    Looks at ``frames`` frames spread over the recording (at most :data:`DETECT_SIDE` pixels
    across). The region is None when no face is found; ``how`` says what was done either way.
    """
    if not info.has_video or not info.width or not info.height:
        raise MediaError(
            f"`{info.path.name}` has no picture, so it has no facecam; choose a video recording."
        )
    span = info.duration * (1 - 2 * EDGE_SKIP)
    times = [info.duration * EDGE_SKIP + span * (i + 0.5) / frames for i in range(frames)]
    scale = info.width / _fit(info.width, info.height, DETECT_SIDE)[0]
    found: list[tuple[int, tuple[int, int, int, int]]] = []  # (frame number, box)
    for number, seconds in enumerate(times):
        frame = frame_at(info, seconds, side=DETECT_SIDE, cancel=cancel)
        found += [(number, box) for box in detect_faces(frame)[:3]]  # a facecam face is big
    if not found:
        return FacecamSuggestion(
            None,
            f"no face was found in {frames} frames by OpenCV's face detector; "
            "draw the facecam region yourself.",
        )
    # The facecam stays put while faces in the game move: keep the place seen in most frames.
    groups = [[(n, b) for n, b in found if _iou(a, b) >= SAME_PLACE] for _, a in found]
    best = max(groups, key=lambda g: (len({n for n, _ in g}), sum(b[2] * b[3] for _, b in g)))
    face = tuple(float(np.median([b[i] for _, b in best])) * scale for i in range(4))
    region = facecam_around(face, info.width, info.height)  # type: ignore[arg-type]
    seen = len({n for n, _ in best})
    return FacecamSuggestion(
        region,
        f"OpenCV's face detector found a face at the same place in {seen} of {frames} frames; "
        f"the facecam region {region.text()} is drawn around it.",
    )
