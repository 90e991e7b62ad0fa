"""What the streamer says: a 16 kHz mono voice track → segments and words with their times.

The one place faster-whisper (CTranslate2; MIT) is used. The model is named by
``HIGHLIGHTSENSE_WHISPER``: a faster-whisper size (``base``, ``small`` …), a Hub repository of a
CTranslate2 Whisper, or a local folder (offline use). Sizes and repositories are taken from the
Hugging Face cache when there (a Space's ``preload_from_hub``), else downloaded once through
huggingface_hub into the cache folder. It runs on the CPU in int8 by default (the
``benchmarks/captions.py`` figures chose the size and the type).
"""

from __future__ import annotations

import functools
import os
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import TranscriptError
from .files import cache_dir

WHISPER_ENV = "HIGHLIGHTSENSE_WHISPER"
DEFAULT_WHISPER = "base"  # benchmarks/captions.py: ten 30 s clips within 60 s on 2 cores
COMPUTE_TYPE = "int8"  # CTranslate2 weights type on the CPU (float32 measured ~2x slower)
SAMPLE_RATE = 16000  # Hz, what Whisper listens at
BEAM_SIZE = 1  # greedy decoding: the speed target is 60 s for ten 30 s clips on 2 cores
SILENCE_DBFS = -50.0  # dB: a voice track quieter than this throughout holds no speech
MAX_SECONDS = 600.0  # s of audio transcribed at once at most (a clip is at most ~6 min)
MAX_TEXT = 2000  # characters of one clip's transcript kept at most
MAX_THREADS = 8  # CTranslate2 threads at most (one per usable core below that)
SIZES = ("tiny", "base", "small", "medium", "large-v1", "large-v2", "large-v3", "turbo",
         "tiny.en", "base.en", "small.en", "medium.en", "distil-small.en", "distil-medium.en",
         "distil-large-v2", "distil-large-v3", "large-v3-turbo", "large")  # fmt: skip
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")


@dataclass(frozen=True)
class Word:
    text: str  # as spoken, with its leading space (Whisper's tokens)
    start: float  # s from the start of the audio
    end: float


@dataclass(frozen=True)
class Segment:
    text: str
    start: float  # s
    end: float
    words: tuple[Word, ...] = ()


@dataclass(frozen=True)
class Transcript:
    """One clip's speech. Empty (no segments) for silence or music."""

    segments: tuple[Segment, ...] = ()
    language: str | None = None  # ISO code detected or given; None when nothing was heard
    model: str = ""  # the Whisper model that made it
    words: tuple[Word, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "words", tuple(w for s in self.segments for w in s.words))

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments).strip()


def clean_text(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` as one line of plain, printable words: control and format characters (and line
    breaks) become spaces, runs of spaces one, at most ``limit`` characters."""
    kept = "".join(" " if unicodedata.category(ch)[0] in "CZ" and ch != " " else ch for ch in text)
    return " ".join(kept.split())[:limit].strip()


def cpu_threads() -> int:
    """Threads for CTranslate2: the cores this process may use (its default is 4 whatever the
    machine, which oversubscribes 2 cores), at most MAX_THREADS."""
    usable = (
        os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    )
    return max(1, min(MAX_THREADS, len(usable)))


def model_name() -> str:
    """The Whisper model to use: ``$HIGHLIGHTSENSE_WHISPER`` or the default size."""
    return os.environ.get(WHISPER_ENV, "").strip() or DEFAULT_WHISPER


def _check_name(name: str) -> str:
    """A size, a Hub repository or an existing folder, else a TranscriptError naming the
    variable: anything else would be sent to the Hub as a repository name."""
    if name in SIZES or Path(name).expanduser().is_dir():
        return name
    if _HUB_NAME.fullmatch(name) and not Path(name).expanduser().exists():
        return name
    raise TranscriptError(
        f"{WHISPER_ENV}={name!r} is not a Whisper size ({', '.join(SIZES[:4])} …), a Hub "
        "repository (owner/name) or a folder; set it to one of those."
    )


@functools.lru_cache(maxsize=2)
def load_model(name: str, compute_type: str = COMPUTE_TYPE):  # noqa: ANN201
    """The faster-whisper model ``name`` on the CPU, loaded once per process (and downloaded
    once into the cache). A folder that is not a CTranslate2 Whisper model, or a damaged one, is
    a TranscriptError naming the variable."""
    from faster_whisper import WhisperModel

    name = _check_name(name)
    folder = Path(name).expanduser()
    threads = cpu_threads()
    try:
        if folder.is_dir():
            needed = ("model.bin", "tokenizer.json", "preprocessor_config.json")
            missing = [f for f in needed if not (folder / f).is_file()]
            if missing:
                raise TranscriptError(
                    f"{WHISPER_ENV} names the folder {folder.name}, which is not a CTranslate2 "
                    f"Whisper model (no {', '.join(missing)}); convert the model with "
                    "ct2-transformers-converter or name a size such as base."
                )
            return WhisperModel(str(folder), device="cpu", compute_type=compute_type,
                                cpu_threads=threads, local_files_only=True)  # fmt: skip
        preloaded = _hub_cached(name)
        if preloaded is not None:
            return WhisperModel(preloaded, device="cpu", compute_type=compute_type,
                                cpu_threads=threads, local_files_only=True)  # fmt: skip
        return WhisperModel(name, device="cpu", compute_type=compute_type, cpu_threads=threads,
                            download_root=str(cache_dir() / "whisper"))  # fmt: skip
    except TranscriptError:
        raise
    except (RuntimeError, ValueError, OSError, KeyError) as err:
        raise TranscriptError(
            f"The Whisper model {folder.name or name!r} named by {WHISPER_ENV} could not be "
            f"loaded ({str(err).splitlines()[0][:200] if str(err) else type(err).__name__}); "
            "it may be damaged or not a Whisper model: download it again or name a size."
        ) from err


def _hub_cached(name: str) -> str | None:
    """The folder of the size or Hub repository ``name`` already in the Hugging Face cache (where
    a Space's ``preload_from_hub`` puts it), without asking the network; None when not there."""
    from faster_whisper.utils import download_model

    try:
        return download_model(name, local_files_only=True)
    except (OSError, ValueError):  # not in that cache (LocalEntryNotFoundError), or no such size
        return None


def is_silent(audio: np.ndarray) -> bool:
    """True when ``audio`` (n,) never rises above SILENCE_DBFS over any 0.1 s block."""
    block = SAMPLE_RATE // 10
    usable = (
        audio[: len(audio) // block * block].reshape(-1, block)
        if len(audio) >= block
        else (audio.reshape(1, -1))
    )
    if usable.size == 0:
        return True
    rms = np.sqrt(np.mean(usable.astype(np.float64) ** 2, axis=1))
    return bool(20 * np.log10(rms.max() + 1e-12) < SILENCE_DBFS)


def transcribe(
    audio: np.ndarray,
    *,
    language: str | None = None,
    model: str | None = None,
    compute_type: str = COMPUTE_TYPE,
) -> Transcript:
    """The speech in ``audio`` (n,) float32 at 16 kHz: segments and words, times in seconds
    from its start (never past its end). ``language`` is an ISO code (None: detected). Silence
    gives an empty transcript, not an error."""
    name = model or model_name()
    if audio.ndim != 1:
        raise ValueError(f"audio must be mono (n,), got shape {audio.shape}")
    duration = len(audio) / SAMPLE_RATE
    if duration > MAX_SECONDS:
        raise TranscriptError(
            f"A clip of {duration:.0f} s is too long to caption (at most {MAX_SECONDS:.0f} s); "
            "choose shorter clips."
        )
    if is_silent(audio):
        return Transcript(model=name)
    whisper = load_model(name, compute_type)
    if language is not None and language not in whisper.supported_languages:
        raise TranscriptError(
            f"{language!r} is not a language this Whisper model knows; give an ISO code such "
            "as en, de or fr, or leave the language out to detect it."
        )
    try:
        pieces, info = whisper.transcribe(
            np.ascontiguousarray(audio, dtype=np.float32),
            language=language,
            beam_size=BEAM_SIZE,
            word_timestamps=True,
            condition_on_previous_text=False,  # one clip's windows: no runaway repetition
        )
        segments = [_segment(piece, duration) for piece in pieces]
    except (RuntimeError, ValueError) as err:
        raise TranscriptError(
            f"The Whisper model {Path(name).name!r} failed on this audio ({err}); it may be "
            f"damaged: download it again or set {WHISPER_ENV} to a size such as base."
        ) from err
    segments = [s for s in segments if s.text]
    return Transcript(tuple(segments), info.language if segments else None, name)


def _segment(piece, duration: float) -> Segment:  # noqa: ANN001 (faster_whisper's Segment)
    def clamp(t: float) -> float:
        return min(max(float(t), 0.0), duration)

    words = tuple(
        Word(clean_text(w.word, 100) and " " + clean_text(w.word, 100), clamp(w.start),
             clamp(w.end))
        for w in piece.words or ()
        if clean_text(w.word, 100)
    )  # fmt: skip
    return Segment(clean_text(piece.text), clamp(piece.start), clamp(piece.end), words)
