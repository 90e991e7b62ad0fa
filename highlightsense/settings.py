"""The two kinds of settings of a run, with their defaults (the published system's, SPEC §4-5).

:class:`AnalysisSettings` change the scores: which models, which audio, the windows, where and how
precisely the models run. :class:`Selection` only changes which scored windows become clips and how
they are cut, so a finished analysis can be re-selected in seconds. The command line's flags and
the app's controls carry these field names, so both map onto the two groups by name.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from . import scoring, selection
from .chat import CHAT_WEIGHT, check_words
from .errors import SettingsError

SEPARATOR_ENV = "HIGHLIGHTSENSE_SEPARATOR"
SEPARATOR_REPO_ENV = "HIGHLIGHTSENSE_SEPARATOR_REPO"
DEFAULT_SEPARATOR = "htdemucs"  # Demucs' hybrid transformer model (SPEC §1)
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
SEPARATOR_RUNTIMES = ("auto", "torch", "openvino")  # what runs Demucs' network (openvino_separator)
MAX_PAD = 120.0  # s of padding allowed before or after a clip
MAX_BATCH = 1024  # windows (or Demucs segments) per forward at most
TIMELINE_ORDERS = ("rank", "time")
TIMELINE_FILES = {  # kind → file name written in the output folder
    "otio": "timeline.otio",
    "fcp7xml": "timeline.xml",
    "fcpxml": "timeline.fcpxml",
    "edl": "timeline.edl",
    "chapters": "chapters.txt",
}
VERTICAL_LAYOUTS = ("stack", "crop", "fit")  # see highlightsense.vertical
CHAT_ON_ERROR = ("stop", "audio")  # a chat file that cannot be used stops the run, or is left out
CAPTION_MODES = ("burn", "soft", "files")  # see highlightsense.captions
LANGUAGE_CODE = re.compile(r"[a-z]{2,3}")  # Whisper's ISO 639 codes (en, de, haw, yue …)

T = TypeVar("T")


def _pick(cls: type[T], values: Mapping[str, Any]) -> T:
    """An instance of ``cls`` from the entries of ``values`` named like its fields."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{key: value for key, value in values.items() if key in names})


def _make(cls: type[T], values: Mapping[str, Any]) -> T:
    unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise SettingsError(f"Unknown setting(s): {', '.join(sorted(unknown))}.")
    return cls(**values)


@dataclass(frozen=True)
class AnalysisSettings:
    """What the scores depend on (changing any of these means analysing again)."""

    weights: str | None = None  # None: $HIGHLIGHTSENSE_WEIGHTS, weights/, the published model
    separator: str | None = None  # Demucs model name; None: $HIGHLIGHTSENSE_SEPARATOR or htdemucs
    separator_repo: str | None = None  # local Demucs model folder; None: $…_SEPARATOR_REPO or hub
    tracks: tuple[int, int] | None = None  # (voice, game) audio track numbers from 1: no Demucs
    window_sec: float = scoring.WINDOW_SEC  # s, clip length scored by the model (≤ 60)
    stride_sec: float = scoring.STRIDE_SEC  # s between window starts
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto | fp32 | bf16: autocast for separation (auto: bf16 only on CPUs
    # where it is faster, see cpu.default_precision), and for scoring on a GPU when bf16
    separator_runtime: str = "auto"  # auto | torch | openvino: what runs Demucs' network (auto:
    # OpenVINO on CPUs at bf16 where it is installed and the model is HTDemucs, else torch)
    batch_size: int | None = None  # windows (and Demucs segments) per forward; None: per device
    use_cache: bool = True  # reuse cached separation + features of the same input
    keep_stems: bool = False  # also write the separated stems (separates again, never cached)

    def __post_init__(self) -> None:
        scoring.check_window(self.window_sec, self.stride_sec)
        if self.device not in DEVICES:
            raise SettingsError(f"The device must be auto, cpu or cuda (got {self.device!r}).")
        if self.precision not in PRECISIONS:
            raise SettingsError(
                f"The precision must be auto, fp32 or bf16 (got {self.precision!r})."
            )
        if self.separator_runtime not in SEPARATOR_RUNTIMES:
            raise SettingsError(
                "The separator runtime must be auto, torch or openvino "
                f"(got {self.separator_runtime!r})."
            )
        if self.batch_size is not None and not 1 <= self.batch_size <= MAX_BATCH:
            raise SettingsError(
                f"The batch size must be between 1 and {MAX_BATCH} (got {self.batch_size})."
            )
        if self.tracks is not None and (
            len(self.tracks) != 2 or min(self.tracks) < 1 or self.tracks[0] == self.tracks[1]
        ):
            raise SettingsError("Give two different audio tracks, numbered from 1: voice=1,game=2.")

    @classmethod
    def make(cls, **values: Any) -> AnalysisSettings:
        """From keyword values, refusing unknown names with a SettingsError."""
        return _make(cls, values)

    @classmethod
    def pick(cls, values: Mapping[str, Any]) -> AnalysisSettings:
        """From the entries of ``values`` that name its fields (the others are left alone)."""
        return _pick(cls, values)

    @property
    def separator_name(self) -> str:
        return self.separator or os.environ.get(SEPARATOR_ENV) or DEFAULT_SEPARATOR

    @property
    def separator_folder(self) -> Path | None:
        folder = self.separator_repo or os.environ.get(SEPARATOR_REPO_ENV)
        return Path(folder).expanduser().resolve() if folder else None


@dataclass(frozen=True)
class Selection:
    """Which scored windows become clips, and how they are cut: a finished analysis can be
    selected again with other values without being analysed again."""

    percentile: float = selection.PERCENTILE  # keep windows at or above this percentile …
    threshold: float | None = None  # … or at or above this absolute probability when given
    nms_sec: float = selection.NMS_SEC  # s, minimum gap between chosen clips' starts
    top_n: int = selection.TOP_N  # clips at most
    pad_before: float = 0.0  # s added before each clip
    pad_after: float = 0.0  # s added after each clip
    copy: bool = False  # stream copy (fast, keyframe-aligned) instead of re-encoding
    clips: bool = True  # cut clips at all
    timelines: tuple[
        str, ...
    ] = ()  # editor timelines to write: otio, fcp7xml, fcpxml, edl, chapters
    timeline_order: str = "rank"  # the rough cut in rank or time order
    vertical: str | None = None  # also cut 9:16 clips with this layout: stack, crop or fit
    facecam: str | None = None  # stack's top region "x,y,w,h" (pixels or fractions); None: detect
    gameplay: str | None = None  # stack's bottom region; None: the whole frame
    center_x: str | None = None  # crop's centre (pixels or a fraction of the width); None: middle
    chat: str | None = None  # chat replay file fused with the audio (highlightsense.chat); None: no
    chat_weight: float = CHAT_WEIGHT  # share of the chat score in the fused score; 0: audio
    chat_words: tuple[str, ...] = ()  # the community's own reaction words, besides the lexicon
    chat_on_error: str = "stop"  # stop | audio: what a chat file that cannot be used does
    captions: str | None = None  # burn, soft or files: captions from the voice (None: none)
    language: str | None = None  # the speech's ISO code for captions (None: detected)

    def __post_init__(self) -> None:
        selection.check_settings(self.percentile, self.threshold, self.nms_sec, self.top_n)
        if not 0.0 <= self.chat_weight <= 1.0:
            raise SettingsError(
                f"The chat weight must be between 0 and 1 (got {self.chat_weight})."
            )
        object.__setattr__(self, "chat_words", check_words(self.chat_words))
        if self.chat_on_error not in CHAT_ON_ERROR:
            raise SettingsError(
                f"On a chat error the run can stop or go on with audio alone (got "
                f"{self.chat_on_error!r})."
            )
        for name in ("pad_before", "pad_after"):
            if not 0.0 <= getattr(self, name) <= MAX_PAD:
                raise SettingsError(f"Padding must be between 0 and {MAX_PAD:.0f} seconds.")
        if self.timelines:
            object.__setattr__(self, "timelines", check_kinds(self.timelines))
        if self.timeline_order not in TIMELINE_ORDERS:
            raise SettingsError(
                f"The timeline order must be rank or time (got {self.timeline_order!r})."
            )
        if self.vertical is not None and self.vertical not in VERTICAL_LAYOUTS:
            raise SettingsError(
                f"The vertical layout must be one of {', '.join(VERTICAL_LAYOUTS)} "
                f"(got {self.vertical!r})."
            )

        if self.captions is not None and self.captions not in CAPTION_MODES:
            raise SettingsError(
                f"Captions must be one of {', '.join(CAPTION_MODES)} (got {self.captions!r})."
            )
        if self.language is not None and not LANGUAGE_CODE.fullmatch(str(self.language)):
            raise SettingsError(
                f"The language must be an ISO code such as en, de or fr (got {self.language!r})."
            )

    @classmethod
    def make(cls, **values: Any) -> Selection:
        """From keyword values, refusing unknown names with a SettingsError."""
        return _make(cls, values)

    @classmethod
    def pick(cls, values: Mapping[str, Any]) -> Selection:
        """From the entries of ``values`` that name its fields (the others are left alone)."""
        return _pick(cls, values)


def parse_kinds(text: str) -> tuple[str, ...]:
    """``"otio,edl"`` → ``("otio", "edl")``; ``"all"`` → every kind. SettingsError if unknown."""
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    return tuple(TIMELINE_FILES) if names == ["all"] else check_kinds(names)


def check_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    """``kinds`` without repeats, or SettingsError naming those that are not timeline kinds."""
    unknown = [kind for kind in kinds if kind not in TIMELINE_FILES]
    if unknown or not kinds:
        raise SettingsError(
            f"unknown timeline kind {', '.join(map(repr, unknown)) or 'none given'}; "
            f"choose any of {', '.join(TIMELINE_FILES)} separated by commas."
        )
    return tuple(dict.fromkeys(kinds))


def split(values: Mapping[str, Any]) -> tuple[AnalysisSettings, Selection]:
    """Keyword settings of either kind → both objects; an unknown name is a SettingsError."""
    known = {f.name for cls in (AnalysisSettings, Selection) for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise SettingsError(f"Unknown setting(s): {', '.join(sorted(unknown))}.")
    return AnalysisSettings.pick(values), Selection.pick(values)
