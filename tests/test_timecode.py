"""Times shown to people: positions as HH:MM:SS, lengths as M:SS or H:MM:SS."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from highlightsense.timecode import format_duration, format_timestamp

# --- format_timestamp ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(0, "00:00:00"), (59.999, "00:00:59"), (61, "00:01:01"), (3600, "01:00:00"),
     (7505.5, "02:05:05"), (90061, "25:01:01"), (360000, "100:00:00")],
)  # fmt: skip
def test_format_timestamp_examples(seconds: float, expected: str) -> None:
    assert format_timestamp(seconds) == expected


@given(st.floats(min_value=0, max_value=1e7, allow_nan=False))
def test_format_timestamp_round_trips_whole_seconds(seconds: float) -> None:
    hours, minutes, secs = format_timestamp(seconds).split(":")
    assert len(minutes) == len(secs) == 2 and len(hours) >= 2
    assert int(minutes) < 60 and int(secs) < 60
    assert int(hours) * 3600 + int(minutes) * 60 + int(secs) == int(seconds)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_format_timestamp_refuses_impossible_values(bad: float) -> None:
    with pytest.raises(ValueError):
        format_timestamp(bad)


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(0, "0:00"), (59.9, "0:59"), (61, "1:01"), (3599, "59:59"), (3600, "1:00:00"),
     (7505.5, "2:05:05"), (-3, "0:00")],
)  # fmt: skip
def test_format_duration_examples(seconds: float, expected: str) -> None:
    assert format_duration(seconds) == expected
