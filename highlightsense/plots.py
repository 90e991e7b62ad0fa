"""Interactive Plotly figures: the highlight score over the VOD, and "why this clip".

Scores are shown as percentages ("score 62%") everywhere a visitor reads them; times as
HH:MM:SS at round steps (every 10 s, 1 min, 5 min …).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from .timecode import format_timestamp

SCORE_COLOR = "#6d28d9"
THRESHOLD_COLOR = "#dc2626"
CLIP_COLOR = "rgba(250, 204, 21, 0.25)"
WINDOW_COLOR = "rgba(109, 40, 217, 0.08)"
ATTENTION_COLOR = "rgba(109, 40, 217, 0.25)"
VOICE_COLOR = "#0ea5e9"
GAME_COLOR = "#f97316"
CURVE_COLORS = {"audio": "#a78bfa", "chat": "#059669"}  # signals fused into the score
CURVE_COLOR = "#64748b"  # a signal without a colour of its own
TICKS = 7  # time labels along the x axis at most
TICK_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600)  # s
SCORE_TICKS = [0.25, 0.5, 0.75, 1.0]  # no 0: it would sit on the first time label


def time_ticks(begin: float, end: float, most: int = TICKS) -> list[float]:
    """Round times (multiples of a step from TICK_STEPS) in [begin, end], at most ``most``."""
    span = max(end - begin, 1.0)
    step = next((s for s in TICK_STEPS if span / s <= most - 1), TICK_STEPS[-1])
    first = np.ceil(begin / step) * step
    return [float(t) for t in np.arange(first, end + 1e-9, step)][:most]


def _time_axis(figure: go.Figure, begin: float, end: float, most: int = TICKS) -> None:
    """Label seconds as HH:MM:SS (Plotly has no duration axis type)."""
    end = max(end, begin + 1.0)
    ticks = time_ticks(begin, end, most)
    figure.update_xaxes(
        tickmode="array",
        tickvals=ticks,
        ticktext=[format_timestamp(t) for t in ticks],
        range=[begin, end],
    )


def score_figure(
    windows: np.ndarray,
    threshold: float,
    chosen: Sequence[int],
    duration: float,
    curves: Mapping[str, np.ndarray] | None = None,
) -> go.Figure:
    """windows: (N, 3) start, end, score → the score at each window's centre (one window: a
    line across it), the threshold, and each chosen window shaded and labelled with its rank.

    curves: name → (N,) values in [0, 1] of the signals fused into the score (the audio, the
    chat), drawn as thin dotted lines under it on the same axis, with a legend.
    """
    if len(windows) == 1:
        ((start, end, p),) = windows
        x, y = np.array([start, end]), np.array([p, p])
    else:
        x, y = (windows[:, 0] + windows[:, 1]) / 2, windows[:, 2]
    hover = [f"{format_timestamp(s)}–{format_timestamp(e)}: score {p:.0%}" for s, e, p in windows]
    figure = go.Figure()
    for name, values in (curves or {}).items():
        values = np.asarray(values, dtype=np.float64)
        figure.add_scatter(
            x=x,
            y=values if len(windows) > 1 else np.repeat(values, 2),
            mode="lines",
            line={"color": CURVE_COLORS.get(name, CURVE_COLOR), "width": 1, "dash": "dot"},
            name=name,
            hovertemplate=f"{name} %{{y:.0%}}<extra></extra>",
        )
    figure.add_scatter(
        x=x,
        y=y,
        mode="lines",
        line={"color": SCORE_COLOR, "width": 1.5},
        name="fused score" if curves else "score",
        hovertext=hover if len(windows) > 1 else hover * 2,
        hoverinfo="text",
    )
    if np.isfinite(threshold):
        figure.add_hline(
            y=threshold,
            line={"color": THRESHOLD_COLOR, "dash": "dash", "width": 1},
            annotation_text=f"picked above {threshold:.0%}",
            annotation_position="bottom left",
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
        yaxis={"title": "score", "range": [0, 1.08], "tickvals": SCORE_TICKS, "tickformat": ".0%"},
        margin={"l": 55, "r": 15, "t": 25, "b": 35},
        showlegend=bool(curves),
        legend={"orientation": "h", "x": 0, "y": 1.12, "yanchor": "bottom"},
        height=320,
    )
    _time_axis(figure, 0.0, duration)
    return figure


def attention_figure(
    clip: tuple[float, float],
    window: tuple[float, float],
    attention: np.ndarray,
    step_seconds: float,
    loudness: np.ndarray,
    frame_seconds: float,
) -> go.Figure:
    """What the model reacted to in one clip.

    clip: (start, end) s of the clip as cut (padding included), the x axis; window: (start,
    end) s the model scored, shaded. attention: (S,) weights over steps of ``step_seconds``
    from the window's start; loudness: (2, F) voice and game loudness in dB per frame of
    ``frame_seconds`` from the clip's start. Attention is a light area behind the two lines.
    """
    steps = window[0] + np.arange(len(attention)) * step_seconds
    frames = clip[0] + np.arange(loudness.shape[1]) * frame_seconds
    figure = go.Figure()
    figure.add_scatter(
        x=steps,
        y=attention,
        name="where the model listened",
        mode="lines",
        line={"color": ATTENTION_COLOR, "width": 0, "shape": "hv"},
        fill="tozeroy",
        fillcolor=ATTENTION_COLOR,
        yaxis="y2",
        hoverinfo="skip",
    )
    for row, name, color in ((0, "voice", VOICE_COLOR), (1, "game", GAME_COLOR)):
        figure.add_scatter(
            x=frames, y=loudness[row], mode="lines", name=name, line={"color": color, "width": 1}
        )
    if clip != window:
        figure.add_vrect(x0=window[0], x1=window[1], fillcolor=WINDOW_COLOR, line_width=0)
    figure.update_layout(
        yaxis={"title": "loudness (dB)"},
        # attention fills the lower third, under the loudness lines
        yaxis2={
            "overlaying": "y",
            "side": "right",
            "showgrid": False,
            "showticklabels": False,
            "range": [0, 3 * float(np.max(attention, initial=0.0)) or 1.0],
        },
        legend={"orientation": "h", "x": 0, "y": -0.15, "yanchor": "top"},
        margin={"l": 55, "r": 10, "t": 10, "b": 60},
        height=300,
    )
    _time_axis(figure, clip[0], clip[1], most=5)
    return figure
