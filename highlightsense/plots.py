"""Interactive Plotly figures: highlight probability over the VOD, and "why this clip"."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from .timecode import format_timestamp

SCORE_COLOR = "#6d28d9"
THRESHOLD_COLOR = "#dc2626"
CLIP_COLOR = "rgba(250, 204, 21, 0.25)"
VOICE_COLOR = "#0ea5e9"
GAME_COLOR = "#f97316"
TICKS = 8  # time labels along the x axis


def _time_axis(figure: go.Figure, begin: float, end: float) -> None:
    """Label seconds as HH:MM:SS (Plotly has no duration axis type)."""
    ticks = np.linspace(begin, max(end, begin + 1.0), TICKS)
    figure.update_xaxes(
        tickmode="array",
        tickvals=ticks,
        ticktext=[format_timestamp(t) for t in ticks],
        range=[begin, max(end, begin + 1.0)],
    )


def score_figure(
    windows: np.ndarray,
    threshold: float,
    chosen: Sequence[int],
    duration: float,
) -> go.Figure:
    """windows: (N, 3) start, end, probability → probability at each window's centre, the
    threshold line, and each chosen window shaded and labelled with its rank."""
    centres = (windows[:, 0] + windows[:, 1]) / 2
    hover = [f"{format_timestamp(s)}–{format_timestamp(e)}<br>score {p:.3f}" for s, e, p in windows]
    figure = go.Figure(
        go.Scatter(
            x=centres,
            y=windows[:, 2],
            mode="lines",
            line={"color": SCORE_COLOR, "width": 1.5},
            name="highlight probability",
            hovertext=hover,
            hoverinfo="text",
        )
    )
    if np.isfinite(threshold):
        figure.add_hline(
            y=threshold,
            line={"color": THRESHOLD_COLOR, "dash": "dash", "width": 1},
            annotation_text=f"threshold {threshold:.3f}",
            annotation_position="top left",
        )
    for rank, index in enumerate(chosen, start=1):
        start, end, _ = windows[index]
        figure.add_vrect(
            x0=start,
            x1=end,
            fillcolor=CLIP_COLOR,
            line_width=0,
            annotation_text=f"#{rank}",
            annotation_position="top",
        )
    figure.update_layout(
        title="Highlight probability over the VOD",
        yaxis={"title": "probability", "range": [0, 1.05]},
        xaxis={"title": "time"},
        margin={"l": 50, "r": 20, "t": 50, "b": 40},
        showlegend=False,
        height=360,
    )
    _time_axis(figure, 0.0, duration)
    return figure


def attention_figure(
    start: float,
    attention: np.ndarray,
    step_seconds: float,
    loudness: np.ndarray,
    frame_seconds: float,
) -> go.Figure:
    """What the model reacted to in one clip.

    attention: (S,) weights over GRU steps of ``step_seconds``; loudness: (2, F) voice and game
    loudness in dB per frame of ``frame_seconds``, for the same window.
    """
    steps = start + np.arange(len(attention)) * step_seconds
    frames = start + np.arange(loudness.shape[1]) * frame_seconds
    figure = go.Figure()
    figure.add_bar(
        x=steps, y=attention, name="model attention", marker_color=SCORE_COLOR, yaxis="y2"
    )
    for row, name, color in ((0, "voice loudness", VOICE_COLOR), (1, "game loudness", GAME_COLOR)):
        figure.add_scatter(
            x=frames, y=loudness[row], mode="lines", name=name, line={"color": color, "width": 1}
        )
    figure.update_layout(
        title="Why this clip: where the model looked, beside voice and game loudness",
        yaxis={"title": "loudness (dB)"},
        yaxis2={"title": "attention", "overlaying": "y", "side": "right", "showgrid": False},
        legend={"orientation": "h", "y": -0.2},
        margin={"l": 50, "r": 50, "t": 50, "b": 40},
        height=320,
        bargap=0,
    )
    _time_axis(figure, start, frames[-1] if len(frames) else start)
    return figure
