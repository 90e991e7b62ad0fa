"""The page's settings and their limits, checked again on the server: an API caller can send
anything, and every handler answers a bad value with one sentence."""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from gradio.utils import get_upload_folder

from .. import chat, scoring, selection
from ..errors import UserError

MAX_CLIPS = 50
MIN_PERCENTILE = 50.0  # lower makes most of the VOD a "highlight"
MAX_GAP = 600.0  # s
MAX_PADDING = 60.0  # s
MIN_WINDOW = 5.0  # s
MAX_WINDOW = scoring.MAX_WINDOW_SEC  # s, the model's training length
DEFAULT_THRESHOLD = 0.5  # score, shown when "Minimum score" is picked
PICKY_BY = {"percentile": "Share of the VOD to beat", "threshold": "Minimum score"}
CUTS = {"exact": "Exact (re-encodes; slower)", "fast": "Fast (copies; starts at a keyframe)"}
VOD_TYPES = [".mp4", ".mkv", ".mov", ".webm", ".flv", ".ts", ".m4a", ".wav", ".mp3", ".ogg"]
VOD_TYPES += [".flac", ".aac"]
CHAT_TYPES = [".json", ".jsonl", ".txt", ".log"]  # the format is told from the content
MAX_LINK_CHARS = 2048


class BadInput(UserError):
    """A value sent to a handler is out of range or of the wrong kind."""


@dataclass(frozen=True)
class Picks:
    """How clips are chosen from scored windows: what a re-tune changes without re-analysing."""

    top_n: int = selection.TOP_N
    picky_by: str = "percentile"
    percentile: float = selection.PERCENTILE
    threshold: float = DEFAULT_THRESHOLD
    gap: float = selection.NMS_SEC  # s
    pad_before: float = 0.0  # s
    pad_after: float = 0.0  # s
    cut: str = "exact"
    chat_weight: float = chat.CHAT_WEIGHT  # share of the chat in the score (with a chat file)

    def settings(self) -> dict:
        """The library's names for these (fields of ``highlightsense.settings.Selection``)."""
        return {
            "top_n": self.top_n,
            "percentile": self.percentile,
            "threshold": self.threshold if self.picky_by == "threshold" else None,
            "nms_sec": self.gap,
            "pad_before": self.pad_before,
            "pad_after": self.pad_after,
            "copy": self.cut == "fast",
        }

    def values(self) -> tuple:
        """In the order of the page's controls (and of :func:`picks`' arguments)."""
        return tuple(asdict(self).values())


def number(value: object, label: str, low: float, high: float, whole: bool = False) -> float:
    """``value`` as a number in [low, high], else a :class:`BadInput` naming ``label``."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value.strip())
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    ok = ok and low <= value <= high and math.isfinite(value)  # compared first: 10**400 is no float
    if not ok or (whole and value != int(value)):
        kind = "a whole number" if whole else "a number"
        raise BadInput(f"{label} must be {kind} between {low:g} and {high:g}.")
    return int(value) if whole else float(value)


def choice(value: object, choices: dict[str, str], label: str) -> str:
    if not isinstance(value, str) or value not in choices:
        raise BadInput(f"{label} must be one of: {', '.join(choices)}.")
    return value


def picks(
    top_n: object = selection.TOP_N,
    picky_by: object = "percentile",
    percentile: object = selection.PERCENTILE,
    threshold: object = DEFAULT_THRESHOLD,
    gap: object = selection.NMS_SEC,
    pad_before: object = 0.0,
    pad_after: object = 0.0,
    cut: object = "exact",
    chat_weight: object = chat.CHAT_WEIGHT,
) -> Picks:
    """The controls' values, checked. ``threshold`` may be None when picking by percentile."""
    by = choice(picky_by, PICKY_BY, "How picky")
    if threshold is None and by == "percentile":
        threshold = DEFAULT_THRESHOLD
    return Picks(
        top_n=int(number(top_n, "The number of clips", 1, MAX_CLIPS, whole=True)),
        picky_by=by,
        percentile=number(percentile, "The share to beat", MIN_PERCENTILE, 100),
        threshold=number(threshold, "The minimum score", 0, 1),
        gap=number(gap, "The gap between clips", 0, MAX_GAP),
        pad_before=number(pad_before, "The padding before", 0, MAX_PADDING),
        pad_after=number(pad_after, "The padding after", 0, MAX_PADDING),
        cut=choice(cut, CUTS, "The cut"),
        chat_weight=number(chat_weight, "The chat weight", 0, 1),
    )


def window(value: object) -> float:
    return number(value, "The clip length", MIN_WINDOW, MAX_WINDOW)


def link_text(value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > MAX_LINK_CHARS:
        raise BadInput("The link must be a web address of at most 2048 characters.")
    return value.strip()


def chat_file(value: object) -> Path | None:
    """An uploaded chat replay's path (None: no chat), refused unless Gradio put it in its
    upload folder; what is in it is checked by the library (highlightsense.chat)."""
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise BadInput("The chat is not a file; upload the chat replay through the page.")
    path = Path(value).resolve()
    if not path.is_relative_to(Path(get_upload_folder()).resolve()) or not path.is_file():
        raise BadInput("That chat file was not uploaded to this app; upload it through the page.")
    chat.check_file(path)  # too big or not a chat: one sentence now, not after the analysis
    return path


def uploaded_file(value: object) -> Path:
    """An uploaded file's path, refused unless Gradio put it in its upload folder."""
    if not isinstance(value, str) or not value:
        raise BadInput("The upload is not a file; upload the VOD through the page.")
    path = Path(value).resolve()
    if not path.is_relative_to(Path(get_upload_folder()).resolve()) or not path.is_file():
        raise BadInput("That file was not uploaded to this app; upload the VOD through the page.")
    return path
