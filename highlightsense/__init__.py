"""HighlightSense: turn a long game-stream VOD into its best clips, judged by audio excitement.

Public API::

    import highlightsense
    result = highlightsense.analyze("vod.mp4", top_n=10)        # -> Result
    model = highlightsense.load_model(weights=None, device="cpu")  # the CRNN, eval mode
    highlightsense.features.log_mel_spectrogram(wave)             # (n,) @ 22 050 Hz -> (80, T)
    highlightsense.scoring.score_windows(model, spec)             # (2, 80, T) -> (N, 3)
"""

from . import features, scoring
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
from .pipeline import Analysis, Highlight, Result, Settings, analyze
from .weights import load_model

__version__ = "0.1.0"

__all__ = [
    "Analysis",
    "Cancelled",
    "Highlight",
    "HighlightSenseError",
    "MediaError",
    "Result",
    "SeparatorError",
    "Settings",
    "SettingsError",
    "SourceError",
    "UserError",
    "WeightsError",
    "analyze",
    "features",
    "load_model",
    "scoring",
]
