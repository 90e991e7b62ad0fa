"""HighlightSense: turn a long game-stream VOD into its best clips, judged by audio excitement.

Public API::

    import highlightsense
    result = highlightsense.analyze("vod.mp4", top_n=10)            # -> Result
    engine = highlightsense.Engine.create(highlightsense.AnalysisSettings(device="cpu"))
    analysis = engine.analyze("vod.mp4")                             # -> Analysis (every window)
    result = highlightsense.render(analysis, highlightsense.Selection(top_n=5), out_dir)
    model = highlightsense.load_model(weights=None, device="cpu")   # the CRNN, eval mode
    highlightsense.features.log_mel_spectrogram(wave)               # (n,) @ 22 050 Hz -> (80, T)
    highlightsense.scoring.score_windows(model, spec)               # (2, 80, T) -> (N, 3)

Names are imported on first use, so ``import highlightsense`` stays light: loading the model
needs neither Demucs, the link downloader, plotly nor librosa.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    Cancelled,
    HighlightSenseError,
    MediaError,
    SeparatorError,
    SettingsError,
    SourceError,
    UserError,
    WeightsError,
)

if TYPE_CHECKING:
    from . import features, scoring
    from .engine import Engine
    from .pipeline import analyze, choose, render
    from .results import Analysis, Highlight, Result
    from .settings import AnalysisSettings, Selection
    from .weights import load_model

__version__ = "0.1.0"

_LAZY = {
    "Analysis": "results",
    "AnalysisSettings": "settings",
    "Engine": "engine",
    "Highlight": "results",
    "Result": "results",
    "Selection": "settings",
    "analyze": "pipeline",
    "choose": "pipeline",
    "load_model": "weights",
    "render": "pipeline",
}
_MODULES = ("features", "scoring")


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Analysis",
    "AnalysisSettings",
    "Cancelled",
    "Engine",
    "Highlight",
    "HighlightSenseError",
    "MediaError",
    "Result",
    "SeparatorError",
    "Selection",
    "SettingsError",
    "SourceError",
    "UserError",
    "WeightsError",
    "analyze",
    "choose",
    "features",
    "load_model",
    "render",
    "scoring",
]
