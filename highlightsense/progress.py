"""Progress: the library reports ``progress(fraction, message)``; raising inside it cancels.

One plain callable type for every step (never a Gradio or terminal type inside the library);
:class:`Stages` maps each step's own 0-1 onto one overall bar, and :func:`eta_seconds` is the
estimate both the command line's bar and the app show.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

Progress = Callable[[float, str], None]

# Share of the overall bar each stage of a run gets (separation dominates a real run).
STAGE_WEIGHTS = {"fetch": 0.15, "read": 0.04, "separate": 0.8, "score": 0.1, "clips": 0.06}
MIN_FRACTION_FOR_ETA = 0.01  # below this the estimate is noise


def quiet(fraction: float, message: str) -> None:
    """A progress callable that shows nothing."""


class Stages:
    """Maps each stage's own 0-1 progress onto one overall bar. Calling the user's progress is
    also where a cancel lands: whatever it raises stops the run."""

    def __init__(self, progress: Progress | None, weights: Mapping[str, float]):
        self._progress = progress
        total = sum(weights.values()) or 1.0
        self._spans: dict[str, tuple[float, float]] = {}
        start = 0.0
        for name, weight in weights.items():
            self._spans[name] = (start / total, weight / total)
            start += weight

    def __call__(self, stage: str) -> Progress:
        offset, width = self._spans[stage]

        def report(fraction: float, message: str) -> None:
            if self._progress is not None:
                self._progress(offset + width * min(max(fraction, 0.0), 1.0), message)

        return report


def eta_seconds(fraction: float, elapsed: float) -> float | None:
    """Seconds left if the rest goes as fast as what is done, or None while too early to say."""
    if fraction < MIN_FRACTION_FOR_ETA:
        return None
    return elapsed * (1.0 - min(fraction, 1.0)) / fraction
