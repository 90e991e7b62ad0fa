"""Choose the highlights from scored windows (SPEC §5): pure functions over (N, 3) arrays of
start_sec, end_sec, probability."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import SettingsError

PERCENTILE = 99.0  # keep windows at or above this percentile of all probabilities
NMS_SEC = 10.0  # s: a kept window suppresses others starting this close to it
TOP_N = 20  # clips at most


@dataclass(frozen=True)
class Selection:
    """The chosen windows: ``indices`` into the scored windows, in rank order (best first)."""

    threshold: float
    above: int  # windows at or above the threshold, before suppression
    indices: tuple[int, ...]


def check_settings(
    percentile: float | None, threshold: float | None, nms_sec: float, top_n: int
) -> None:
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise SettingsError(
            f"The threshold must be a probability between 0 and 1 (got {threshold})."
        )
    if threshold is None and (percentile is None or not 0.0 <= percentile <= 100.0):
        raise SettingsError(f"The percentile must be between 0 and 100 (got {percentile}).")
    if not 0.0 <= nms_sec <= 3600.0:
        raise SettingsError(f"The minimum gap must be between 0 and 3600 seconds (got {nms_sec}).")
    if not 1 <= top_n <= 500:
        raise SettingsError(f"The number of clips must be between 1 and 500 (got {top_n}).")


def percentile_threshold(probabilities: np.ndarray, percentile: float) -> float:
    """numpy's (linear) percentile of all window probabilities."""
    return float(np.percentile(probabilities, percentile))


def non_maximum_suppression(
    windows: np.ndarray, candidates: np.ndarray, nms_sec: float
) -> list[int]:
    """Greedy NMS, highest probability first: drop a window that overlaps a kept one or starts
    within ``nms_sec`` of a kept one's start. Returns kept indices, best first."""
    # stable sort, so ties keep time order and the result is deterministic
    order = candidates[np.argsort(-windows[candidates, 2], kind="stable")]
    kept: list[int] = []
    for i in order:
        start, end = windows[i, 0], windows[i, 1]
        if all(
            not (start < windows[k, 1] and end > windows[k, 0])
            and abs(start - windows[k, 0]) >= nms_sec
            for k in kept
        ):
            kept.append(int(i))
    return kept


def select(
    windows: np.ndarray,
    *,
    percentile: float | None = PERCENTILE,
    threshold: float | None = None,
    nms_sec: float = NMS_SEC,
    top_n: int = TOP_N,
) -> Selection:
    """windows: (N, 3) → the top_n windows at or above the threshold, after NMS.

    An absolute ``threshold`` (a probability) replaces the percentile when given.
    """
    check_settings(percentile, threshold, nms_sec, top_n)
    if len(windows) == 0:
        return Selection(threshold=float("nan"), above=0, indices=())
    cut = threshold if threshold is not None else percentile_threshold(windows[:, 2], percentile)
    candidates = np.flatnonzero(windows[:, 2] >= cut)
    kept = non_maximum_suppression(windows, candidates, nms_sec)[:top_n]
    return Selection(threshold=float(cut), above=len(candidates), indices=tuple(kept))


def clip_spans(
    windows: np.ndarray,
    selection: Selection,
    *,
    pad_before: float = 0.0,
    pad_after: float = 0.0,
    duration: float | None = None,
) -> list[tuple[float, float]]:
    """(start, end) seconds of each chosen clip in rank order, padded and clamped to the media."""
    end_limit = np.inf if duration is None else duration
    return [
        (max(0.0, windows[i, 0] - pad_before), min(end_limit, windows[i, 1] + pad_after))
        for i in selection.indices
    ]
