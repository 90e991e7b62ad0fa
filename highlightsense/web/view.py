"""What the page shows for a job: one status line, the summary, the table, the gallery, the
downloads and the plots. Pure formatting: no Gradio components, no library calls beyond the
figures. Scores read as percentages ("score 62%") everywhere."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

import numpy as np

from ..features import FRAMES_PER_SECOND
from ..plots import attention_figure, score_figure
from ..timecode import format_timestamp
from .controls import Picks

TABLE_HEADERS = ["#", "Start", "End", "Length", "Score"]
TABLE_TYPES = ["number", "str", "str", "str", "str"]
SAID_HEADER = "What was said"  # the column of the clips' transcripts, when captioned
FILE_ROUTE = "/gradio_api/file="  # where Gradio serves files of the allowed folders
SIZE_UNITS = ("bytes", "KB", "MB", "GB")


def status(text: str, kind: str = "info") -> str:
    """The one place messages, progress and errors are shown. ``kind``: info | error | busy."""
    return f'<div class="hs-status hs-{kind}" role="status">{text}</div>'


def message(text: str, kind: str = "info") -> str:
    return status(html.escape(text, quote=False), kind)


def progress(record: dict, note: str = "") -> str:
    """A bar with the stage's plain name, a percentage and, once it can be guessed, an ETA."""
    fraction = min(max(float(record.get("fraction") or 0.0), 0.0), 1.0)
    eta = record.get("eta")
    left = f" · about {_duration(eta)} left" if eta is not None and math.isfinite(eta) else ""
    stage = html.escape(str(record.get("stage") or "Working"), quote=False)
    return status(
        f'<div class="hs-stage">{stage}… {fraction:.0%}{left}</div>'
        f'<progress max="100" value="{fraction * 100:.0f}"></progress>'
        + (f'<div class="hs-note">{html.escape(note, quote=False)}</div>' if note else ""),
        "busy",
    )


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{max(seconds, 1)} s"
    if seconds < 3600:
        return f"{round(seconds / 60)} min"
    return f"{seconds // 3600} h {round(seconds % 3600 / 60)} min"


def summary(name: str, duration: float, threshold: float, picks: Picks, found: int) -> str:
    """What was found in which VOD, by which rule; an empty result says how to get some."""
    vod = f"<b>{html.escape(name, quote=False)}</b> ({format_timestamp(duration)} long)"
    if picks.picky_by == "threshold":
        rule = f"scoring at least {threshold:.0%}"
    else:
        rule = f"scoring higher than {picks.percentile:g}% of the VOD (at least {threshold:.0%})"
    if not found:
        return status(
            f"No highlights in {vod} with these settings: no moment is {rule}. "
            "Make it less picky under <i>Settings</i> (a lower share or minimum score).",
            "empty",
        )
    plural = "s" if found > 1 else ""
    return status(
        f"<b>{found} highlight{plural}</b> in {vod}: the moments {rule}, at least "
        f"{picks.gap:g} s apart. Change the settings to pick again.",
    )


def caption(rank: int, start: float, end: float, score: float) -> str:
    return f"#{rank} · {format_timestamp(start)}–{format_timestamp(end)} · score {score:.0%}"


def table_rows(highlights: list) -> list[list]:
    return [
        [
            h.rank,
            format_timestamp(h.start_sec),
            format_timestamp(h.end_sec),
            f"{h.end_sec - h.start_sec:.0f} s",
            f"{h.confidence:.0%}",
        ]
        for h in highlights
    ]


def table(highlights: list, said: Sequence[str] = ()) -> dict:
    """The highlights table (a Dataframe value), with a *What was said* column when ``said``
    holds each clip's transcript (plain text: the table shows it as text, never as markup)."""
    rows = table_rows(highlights)
    if not said:
        return {"headers": TABLE_HEADERS, "data": rows}
    return {
        "headers": [*TABLE_HEADERS, SAID_HEADER],
        "data": [[*row, text] for row, text in zip(rows, said, strict=True)],
    }


def downloads(files: list[Path]) -> str:
    """Links that download each file under its own name; nothing to remove by mistake."""
    if not files:
        return ""
    items = []
    for path in files:
        href = FILE_ROUTE + quote(str(path))
        name = html.escape(path.name)
        size = _size(path)
        items.append(
            f'<li><a href="{href}" download="{name}">{name}</a> <small>{size}</small></li>'
        )
    return '<div class="hs-downloads"><b>Downloads</b><ul>' + "".join(items) + "</ul></div>"


def _size(path: Path) -> str:
    try:
        size = float(path.stat().st_size)
    except OSError:
        return ""
    for unit in SIZE_UNITS:
        if size < 1000 or unit == SIZE_UNITS[-1]:
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    return ""


def score_plot(analysis, result):
    return score_figure(
        result.scores,
        result.threshold,
        [h.window for h in result.highlights],
        analysis.duration,
        curves=result.curves(),
    )


def why_plot(analysis, highlight, notes: Sequence[str] = ()):
    """The window's attention over the padded clip's voice and game loudness, with the other
    signals' plain lines (a chat burst) as its title."""
    start, end, _ = analysis.windows[highlight.window]
    first = round(highlight.start_sec * FRAMES_PER_SECOND)
    last = round(highlight.end_sec * FRAMES_PER_SECOND)
    loudness = analysis.loudness[:, first:last]
    window_frames = round((end - start) * FRAMES_PER_SECOND)
    time_reduction = analysis.step_frames  # feature frames per attention step
    steps = math.ceil(window_frames / time_reduction)  # the rest is padding, masked out
    attention = np.asarray(analysis.attention[highlight.window, :steps])
    figure = attention_figure(
        (highlight.start_sec, highlight.end_sec),
        (float(start), float(end)),
        attention,
        time_reduction / FRAMES_PER_SECOND,
        loudness,
        1 / FRAMES_PER_SECOND,
    )
    if notes:
        figure.update_layout(
            title={"text": " ".join(notes), "font": {"size": 13}}, margin={"t": 40}
        )
    return figure
