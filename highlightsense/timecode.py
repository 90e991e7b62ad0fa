"""Times shown to people: ``HH:MM:SS`` positions in a VOD and ``M:SS`` / ``H:MM:SS`` durations."""

from __future__ import annotations

import math


def format_timestamp(seconds: float) -> str:
    """A position as ``HH:MM:SS`` (whole seconds, rounded down; hours keep counting past 24)."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(
            f"a timestamp needs a finite, non-negative number of seconds, got {seconds}"
        )
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"


def format_duration(seconds: float) -> str:
    """A length as ``M:SS``, or ``H:MM:SS`` from an hour on (an ETA, a clip's length)."""
    whole = max(0, int(seconds))
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
