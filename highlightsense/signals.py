"""Fuse the audio model's probability with other per-window signals (chat, …) into the score
that selection ranks by.

A :class:`Signal` is a per-window array in [0, 1] with a name and a weight. The fused score is
``(1 − Σ w)·p_audio + Σ w·signal``; with no signal of positive weight it is the audio
probability itself, untouched, so such a run is the audio-only run byte for byte.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import SettingsError

AUDIO = "audio"  # the name of the model's own signal in tables and contributions


@dataclass(frozen=True)
class Signal:
    """values: (N,) in [0, 1], one per scored window; weight: its share of the fused score;
    reasons: (N,) one plain line per window ("" when it has nothing to say); about: what the
    tables record of where it came from."""

    name: str
    values: np.ndarray
    weight: float
    reasons: tuple[str, ...] = ()
    about: Mapping[str, object] = field(default_factory=dict)


def active(signals: Sequence[Signal]) -> tuple[Signal, ...]:
    """The signals that count: weight above 0."""
    return tuple(s for s in signals if s.weight > 0.0)


def check(signals: Sequence[Signal], count: int) -> None:
    total = sum(s.weight for s in signals)
    if any(not 0.0 <= s.weight <= 1.0 for s in signals) or total > 1.0:
        raise SettingsError("Signal weights must be between 0 and 1 and sum to at most 1.")
    if any(len(s.values) != count for s in signals):
        raise SettingsError("Every signal needs one value per scored window.")


def fuse(windows: np.ndarray, signals: Sequence[Signal]) -> np.ndarray:
    """windows: (N, 3) start, end, audio probability → (N, 3) with the fused score; the same
    array when no signal has a weight."""
    used = active(signals)
    if not used:
        return windows
    check(used, len(windows))
    fused = windows.copy()
    fused[:, 2] = (1.0 - sum(s.weight for s in used)) * windows[:, 2]
    for s in used:
        fused[:, 2] += s.weight * np.asarray(s.values, dtype=np.float64)
    return fused


def contributions(windows: np.ndarray, signals: Sequence[Signal], index: int) -> dict[str, dict]:
    """Each signal's value, weight and weighted part of window ``index``'s fused score."""
    used = active(signals)
    audio_weight = 1.0 - sum(s.weight for s in used)
    parts = {AUDIO: (float(windows[index, 2]), audio_weight)}
    parts |= {s.name: (float(s.values[index]), s.weight) for s in used}
    return {
        name: {"score": round(v, 6), "weight": round(w, 6), "contribution": round(v * w, 6)}
        for name, (v, w) in parts.items()
    }


def reasons(signals: Sequence[Signal], index: int) -> list[str]:
    """The signals' plain lines on window ``index`` (those that have something to say)."""
    return [s.reasons[index] for s in active(signals) if s.reasons and s.reasons[index]]
