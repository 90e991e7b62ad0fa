"""Library errors → one plain sentence for a visitor of the page (or an API caller).

The library's sentences are written for the command line: they may quote a tool's output,
carry backticks or name command-line flags. A visitor can act on none of that, and the Space's
owner sets environment variables, not flags.
"""

from __future__ import annotations

import re

from ..errors import (
    Cancelled,
    MediaError,
    SeparatorError,
    SourceError,
    ToolError,
    UserError,
    WeightsError,
)

GENERIC = "Something went wrong on our side; please try again, or try another file."
CANCELLED = "Cancelled; your earlier results are still here."
NO_WEIGHTS = (
    "This Space cannot analyse VODs yet because its highlight model could not be loaded; "
    "the Space's owner must set HIGHLIGHTSENSE_WEIGHTS to a reachable checkpoint "
    "(a file, hf://owner/repo or an https link)."
)
NO_SEPARATOR = (
    "This Space cannot analyse VODs yet because its voice separator (Demucs) could not be "
    "loaded; the Space's owner must let it reach the Hugging Face Hub or set "
    "HIGHLIGHTSENSE_SEPARATOR_REPO to a local Demucs model folder."
)
NO_DOWNLOAD = (
    "That link could not be downloaded: the video may be private, deleted or region-locked, "
    "or this server cannot reach the site right now; try again later or upload the file."
)
FLAGS = {
    "--weights": "HIGHLIGHTSENSE_WEIGHTS",
    "--separator-repo": "HIGHLIGHTSENSE_SEPARATOR_REPO",
    "--separator": "HIGHLIGHTSENSE_SEPARATOR",
}
CODE = re.compile(r" ?\(`[^`]*`\)")  # "(`ffmpeg -i <file> -c copy out.mp4`)": a command to type
TOOL_DETAIL = re.compile(r" \((?:ffprobe|ffmpeg|yt-dlp)\b.*?\)(?=;|$)")


class JobTimeout(Cancelled):
    """A job ran past the app's wall-clock limit."""


def for_visitor(error: BaseException) -> str:
    """The sentence shown for ``error``; anything not a UserError gets the generic sentence
    (the caller logs it with its traceback)."""
    if isinstance(error, JobTimeout):
        return str(error)
    if isinstance(error, Cancelled):
        return CANCELLED
    if isinstance(error, WeightsError):
        return NO_WEIGHTS
    if isinstance(error, SeparatorError):
        return NO_SEPARATOR
    if not isinstance(error, UserError):
        return GENERIC
    text = str(error)
    if isinstance(error, SourceError) and text.startswith("could not download"):
        return NO_DOWNLOAD
    if isinstance(error, MediaError) and isinstance(error.__cause__, ToolError | ValueError):
        text = _without_tool_output(text)
    return plain(text)


def _without_tool_output(text: str) -> str:
    """Drop the parenthesised tool output from "X could not be read (ffprobe …); choose …"."""
    head, sep, tail = text.partition(" (")
    if not sep:
        return text
    _, sep, rest = tail.rpartition(");")
    if "could not be read" in head:
        return f"{head} because it is damaged or incomplete; try the file again or re-export it."
    return f"{head};{rest}" if sep else head + "."


def plain(text: str) -> str:
    """No commands to type, no backticks, environment variables instead of flags."""
    text = CODE.sub("", text)
    text = TOOL_DETAIL.sub("", text)
    for flag, variable in FLAGS.items():
        text = text.replace(f"pass {flag}", f"set {variable}").replace(flag, variable)
    return text.replace("`", "")
