"""The page's *Vertical (9:16)* choice: which layout, where the facecam and the gameplay are, a
frame of the VOD with those boxes drawn on it and a small picture of the phone clip they make.

Pure functions over a preview frame (RGB uint8, (H, W, 3), from :func:`faces.frame_at`) and the
recording's :class:`MediaInfo`; boxes travel as "x,y,w,h" text in source pixels, the same words
the CLI's ``--facecam`` / ``--gameplay`` take. What a visitor sends is checked here again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..errors import SettingsError
from ..media import MediaInfo
from ..vertical import HEIGHT, STACK_TOP, WIDTH, Layout, Region, crop_box, layout_for, parse_region
from .controls import BadInput, choice, number

LAYOUTS = {
    "off": "Off",
    "stack": "Facecam above gameplay",
    "crop": "9:16 slice of the picture",
    "fit": "Whole picture on a blurred fill",
}
PLACES = {"facecam": "the facecam box", "gameplay": "the gameplay box"}
PHONE_WIDTH = 216  # pixels of the phone mock-up (a fifth of the clip's 1080)
PHONE_HEIGHT = PHONE_WIDTH * HEIGHT // WIDTH  # 384
MAX_BOX_CHARS = 80
BOX_TEXT = re.compile(r"[0-9., ]*")
FACECAM_COLOUR = (239, 68, 68)  # RGB, red
GAMEPLAY_COLOUR = (34, 197, 94)  # RGB, green
CROP_COLOUR = (250, 204, 21)  # RGB, yellow
DEFAULT_FACECAM_SHARE = 0.25  # of the frame's width, for a facecam box placed by a click
DEFAULT_CENTRE = 50.0  # % across the picture


@dataclass(frozen=True)
class Framing:
    """A visitor's checked vertical choice, in the library's words (``Selection`` fields)."""

    layout: str  # stack | crop | fit
    facecam: str | None = None  # "x,y,w,h" source pixels (stack)
    gameplay: str | None = None  # "x,y,w,h" source pixels (stack); None: the whole picture
    center_x: str | None = None  # fraction of the width (crop)

    def selection(self) -> dict:
        return {
            "vertical": self.layout,
            "facecam": self.facecam,
            "gameplay": self.gameplay,
            "center_x": self.center_x,
        }


def box_text(value: object, label: str) -> str | None:
    """A box typed or sent by the page ("x,y,w,h"), or None when empty."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_BOX_CHARS or not BOX_TEXT.fullmatch(value):
        raise BadInput(f"{label} must be four numbers: x, y, width and height in pixels.")
    return value.strip() or None


def _sentence(error: SettingsError) -> BadInput:
    text = str(error)
    return BadInput(text[:1].upper() + text[1:])


def checked(
    info: MediaInfo, layout: object, facecam: object, gameplay: object, centre: object
) -> tuple[Framing | None, Layout | None]:
    """The page's vertical controls as a :class:`Framing` and the library's :class:`Layout`
    for this recording; (None, None) when off. One sentence for anything that does not fit."""
    kind = choice(layout, LAYOUTS, "The vertical layout")
    if kind == "off":
        return None, None
    if not info.has_video or not info.width or not info.height:
        raise BadInput("This VOD has no picture, so it cannot be made into vertical clips.")
    top = box_text(facecam, "The facecam box") if kind == "stack" else None
    below = box_text(gameplay, "The gameplay box") if kind == "stack" else None
    across = None
    if kind == "crop":
        across = f"{number(centre, 'The slice position', 0, 100) / 100:.4f}"
    if kind == "stack" and top is None:
        raise BadInput("Show where the facecam is first: click on it in the picture.")
    try:
        library_layout, _ = layout_for(info, kind, top, below, across)
    except SettingsError as error:
        raise _sentence(error) from None
    return Framing(kind, top, below, across), library_layout


def note(layout: str, suggestion: object = None) -> str:
    """What the visitor sees under the pictures for ``layout`` (and the face detector's word)."""
    if layout == "stack":
        how = str(getattr(suggestion, "how", "")) if suggestion is not None else ""
        how = f"{how[:1].upper()}{how[1:]} " if how else ""
        return (
            f"{how}Click on the picture to move the box chosen above; the boxes' numbers can "
            "be typed too."
        )
    if layout == "crop":
        return "Click on the picture where the phone's slice should be centred."
    if layout == "fit":
        return "The whole picture, over a blurred copy of itself: nothing is left out."
    return ""


# --- a click on the picture ------------------------------------------------------------------


def default_box(place: str, width: int, height: int) -> Region:
    """Where a box starts when a click places one not drawn yet: a facecam a quarter of the
    picture wide shaped like the stack's top part, or a full-height gameplay slice shaped like
    its bottom part."""
    if place == "facecam":
        w = max(16, round(width * DEFAULT_FACECAM_SHARE))
        h = min(height, round(w * STACK_TOP / WIDTH))
    else:
        h = height
        w = min(width, round(h * WIDTH / (HEIGHT - STACK_TOP)))
    return Region(0, 0, w, h)


def moved(box: Region, x: float, y: float, width: int, height: int) -> Region:
    """``box`` centred on (x, y) source pixels, kept inside the picture."""
    left = min(max(round(x - box.w / 2), 0), width - box.w)
    top = min(max(round(y - box.h / 2), 0), height - box.h)
    return Region(left, top, box.w, box.h)


def click(
    info: MediaInfo, frame_width: int, layout: str, place: str, box: str | None, at: object
) -> str | float | None:
    """What a click at ``at`` ([x, y] pixels of the preview, sent by the browser) changes: the
    new "x,y,w,h" of the box being placed (stack), the slice position in % (crop), or None
    for a click that changes nothing."""
    if not isinstance(at, list | tuple) or len(at) != 2 or not frame_width or not info.width:
        return None
    scale = info.width / frame_width
    try:
        x = number(at[0], "x", 0, frame_width) * scale
        y = number(at[1], "y", 0, info.height / scale) * scale
    except BadInput:
        return None
    if layout == "crop":
        return round(100 * x / info.width, 1)
    if layout != "stack" or place not in PLACES:
        return None
    try:
        current = parse_region(box, info.width, info.height) if box else None
    except SettingsError:
        current = None
    current = current or default_box(place, info.width, info.height)
    return moved(current, x, y, info.width, info.height).text()


# --- pictures --------------------------------------------------------------------------------


def _in_frame(region: Region, scale: float, frame: np.ndarray) -> tuple[int, int, int, int]:
    """``region`` in the preview's pixels: (x0, y0, x1, y1), at least one pixel each way."""
    h, w = frame.shape[:2]
    x0, y0 = min(int(region.x * scale), w - 1), min(int(region.y * scale), h - 1)
    x1 = min(max(x0 + 1, round((region.x + region.w) * scale)), w)
    y1 = min(max(y0 + 1, round((region.y + region.h) * scale)), h)
    return x0, y0, x1, y1


def _box(image: np.ndarray, corners: tuple[int, int, int, int], colour, label: str) -> None:
    import cv2

    x0, y0, x1, y1 = corners
    thick = max(2, image.shape[1] // 240)
    cv2.rectangle(image, (x0, y0), (x1 - 1, y1 - 1), colour, thick)
    size = max(0.5, image.shape[1] / 900)
    (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, size, 1)
    cv2.rectangle(image, (x0, y0), (x0 + tw + 8, y0 + th + 10), colour, -1)
    cv2.putText(image, label, (x0 + 4, y0 + th + 4), cv2.FONT_HERSHEY_SIMPLEX, size, (0, 0, 0), 1)


def annotated(frame: np.ndarray, info: MediaInfo, layout: Layout | None) -> np.ndarray:
    """The preview frame with the layout's boxes drawn on it (a copy)."""
    image = frame.copy()
    if layout is None:
        return image
    scale = frame.shape[1] / info.width
    if layout.kind == "stack":
        gameplay = layout.gameplay or Region(0, 0, info.width, info.height)
        _box(image, _in_frame(gameplay, scale, frame), GAMEPLAY_COLOUR, "Gameplay")
        _box(image, _in_frame(layout.facecam, scale, frame), FACECAM_COLOUR, "Facecam")
    elif layout.kind == "crop":
        x0, y0, x1, y1 = _in_frame(crop_box(info.width, info.height, layout.center_x), scale, frame)
        shade = np.ones(image.shape[:2], bool)
        shade[y0:y1, x0:x1] = False
        image[shade] = image[shade] // 3  # what the slice leaves out, darkened
        _box(image, (x0, y0, x1, y1), CROP_COLOUR, "Phone")
    return image


def _cover(part: np.ndarray, w: int, h: int) -> np.ndarray:
    """``part`` scaled to cover w x h and centre-cropped to it, as the clips' filter does."""
    import cv2

    ph, pw = part.shape[:2]
    scale = max(w / pw, h / ph)
    rw, rh = max(w, round(pw * scale)), max(h, round(ph * scale))
    smooth = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    big = cv2.resize(part, (rw, rh), interpolation=smooth)
    x, y = (rw - w) // 2, (rh - h) // 2
    return big[y : y + h, x : x + w]


def _cut(frame: np.ndarray, region: Region, scale: float) -> np.ndarray:
    x0, y0, x1, y1 = _in_frame(region, scale, frame)
    return frame[y0:y1, x0:x1]


def phone(frame: np.ndarray, info: MediaInfo, layout: Layout) -> np.ndarray:
    """A small picture of the vertical clip this layout makes: (PHONE_HEIGHT, PHONE_WIDTH, 3)."""
    import cv2

    w, h = PHONE_WIDTH, PHONE_HEIGHT
    scale = frame.shape[1] / info.width
    if layout.kind == "stack":
        top_h = round(h * STACK_TOP / HEIGHT)
        gameplay = layout.gameplay or Region(0, 0, info.width, info.height)
        top = _cover(_cut(frame, layout.facecam, scale), w, top_h)
        return np.vstack([top, _cover(_cut(frame, gameplay, scale), w, h - top_h)])
    if layout.kind == "crop":
        return _cover(_cut(frame, crop_box(info.width, info.height, layout.center_x), scale), w, h)
    fill = cv2.blur(_cover(frame, w // 4, h // 4), (5, 5))
    image = cv2.resize(fill, (w, h), interpolation=cv2.INTER_LINEAR)
    fh, fw = frame.shape[:2]
    size = min(w / fw, h / fh)
    front = cv2.resize(frame, (max(1, round(fw * size)), max(1, round(fh * size))))
    y, x = (h - front.shape[0]) // 2, (w - front.shape[1]) // 2
    image[y : y + front.shape[0], x : x + front.shape[1]] = front
    return image
