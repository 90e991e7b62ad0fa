"""A training run's record: metrics.csv, metrics.json and interactive plotly plots.

Every file is written to a temporary name and renamed, so a run killed mid-write leaves the
previous epoch's version intact.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..files import write_atomic

METRICS_CSV = "metrics.csv"
METRICS_JSON = "metrics.json"
LOSS_PLOT = "loss.html"
PR_PLOT = "pr_curve.html"
PLOTLY_JS = True  # embed plotly.js (~3.5 MB): the plots open offline


def _json_safe(value):
    """NaN (an undefined AUC) → None, so the JSON stays standard."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def to_json(data: object) -> str:
    return json.dumps(_json_safe(data), indent=2) + "\n"


def write_metrics(run_dir: Path, history: Sequence[dict], extra: dict) -> None:
    """One row per epoch: ``metrics.csv``, and ``metrics.json`` = ``extra`` + the rows."""
    if history:
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(history[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)
        write_atomic(run_dir / METRICS_CSV, text.getvalue())
    write_atomic(run_dir / METRICS_JSON, to_json({**extra, "epochs": list(history)}))


def plot_losses(run_dir: Path, history: Sequence[dict]) -> None:
    """loss.html: training and validation loss, and validation F1, per epoch."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    epochs = [row["epoch"] for row in history]
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    for key, name in (("train_loss", "training loss"), ("val_loss", "validation loss")):
        figure.add_trace(go.Scatter(x=epochs, y=[r[key] for r in history], name=name))
    figure.add_trace(
        go.Scatter(x=epochs, y=[r["f1"] for r in history], name="validation F1", mode="lines"),
        secondary_y=True,
    )
    figure.update_layout(title="Training", xaxis_title="epoch", template="plotly_white")
    figure.update_yaxes(title_text="BCE loss", secondary_y=False)
    figure.update_yaxes(title_text="F1 at 0.5", range=[0, 1], secondary_y=True)
    write_atomic(run_dir / LOSS_PLOT, figure.to_html(include_plotlyjs=PLOTLY_JS))


def plot_pr_curve(run_dir: Path, curve: dict[str, np.ndarray], title: str) -> None:
    """pr_curve.html: validation precision against recall, one point per threshold."""
    import plotly.graph_objects as go

    hover = [f"threshold {t:.3f}" for t in curve["threshold"]]
    figure = go.Figure(
        go.Scatter(
            x=np.r_[0.0, curve["recall"]],
            y=np.r_[1.0, curve["precision"]],
            text=["", *hover],
            mode="lines",
            line_shape="vh",
            name="validation",
        )
    )
    figure.update_layout(
        title=title,
        xaxis_title="recall",
        yaxis_title="precision",
        xaxis_range=[0, 1],
        yaxis_range=[0, 1.02],
        template="plotly_white",
    )
    write_atomic(run_dir / PR_PLOT, figure.to_html(include_plotlyjs=PLOTLY_JS))
