"""What a run produces: the :class:`Analysis` (the expensive part), the chosen
:class:`Highlight`s and the :class:`Result` of selecting and rendering them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .media import MediaInfo
from .settings import AnalysisSettings, Selection
from .signals import AUDIO, Signal, fuse
from .transcripts import Transcript


@dataclass
class Analysis:
    """Every window's score and what explains it: enough to select and cut clips again, with
    other :class:`~highlightsense.settings.Selection` values, without analysing again."""

    source: Path
    info: MediaInfo
    windows: np.ndarray  # (N, 3) start_sec, end_sec, probability
    attention: np.ndarray  # (N, S) attention over the GRU steps of each window
    loudness: np.ndarray  # (2, T) voice and game loudness in dB per feature frame
    model_identity: str
    producer: str  # separator identity, or the audio tracks used
    settings: AnalysisSettings  # what the scores were made with
    step_frames: int  # feature frames per attention step (the model's time reduction)
    seconds: dict[str, float] = field(default_factory=dict)  # per-stage wall time
    features_from_cache: bool = False
    # (n,) int16 at 16 kHz, sample 0 at time 0: the separated voice kept for captions (an array,
    # or a memory map of a file; voice.VoiceKeeper). None: not kept (captions separate again).
    voice: np.ndarray | None = field(default=None, repr=False)

    @property
    def duration(self) -> float:
        return self.info.duration


@dataclass(frozen=True)
class Highlight:
    rank: int
    window: int  # index into Analysis.windows
    start_sec: float  # clip start, padding included
    end_sec: float
    confidence: float  # the window's score: its probability, fused with any other signals


@dataclass
class Result:
    """What selecting (and rendering) produced. ``out_dir`` holds the files listed in the README."""

    analysis: Analysis
    selection: Selection
    highlights: list[Highlight]
    threshold: float
    above: int  # windows at or above the threshold before NMS
    clip_paths: list[Path] = field(default_factory=list)
    vertical_paths: list[Path] = field(default_factory=list)  # 9:16 clips, rank order
    vertical_note: str = ""  # how the vertical clips were framed (the facecam used, …)
    timeline_paths: list[Path] = field(default_factory=list)
    transcripts: list[Transcript] = field(default_factory=list)  # rank order, when captioned
    subtitle_paths: list[Path] = field(default_factory=list)  # clips/*.srt, *.vtt, captions.srt
    out_dir: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # analysis stages + rendering
    signals: tuple[Signal, ...] = ()  # fused with the audio (weight above 0), e.g. the chat
    notes: list[str] = field(default_factory=list)  # signals left out, one line each

    @property
    def windows(self) -> np.ndarray:
        return self.analysis.windows

    @property
    def scores(self) -> np.ndarray:
        """(N, 3) start_sec, end_sec and the score selection ranked by (the fused score)."""
        return fuse(self.analysis.windows, self.signals)

    def curves(self) -> dict[str, np.ndarray]:
        """Each fused signal's (N,) values, the audio's first, for the score plot; {} when the
        score is the audio's alone."""
        if not self.signals:
            return {}
        return {AUDIO: self.windows[:, 2]} | {s.name: s.values for s in self.signals}
