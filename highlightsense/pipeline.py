"""The whole run, chained: media → stems → features → model → scoring → selection → clips → plots.

:func:`analyze` is what the command line and the app call. It is split in three steps so the app
can re-tune without analysing again: :func:`analyze_source` (the expensive part: separation,
features, scoring), :func:`choose` (pure: threshold, NMS, top-n, padding) and :func:`render`
(cut the clips not cut yet, write the tables and the plot).
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import dataclasses
import itertools
import json
import os
import shutil
import tempfile
import time
import warnings
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import cache, clips, features, media, scoring, selection, sources, stems, weights
from .errors import Cancelled, MediaError, SettingsError
from .plots import score_figure

Progress = Callable[[float, str], None]
GpuRunner = Callable[..., Any]  # gpu(fn, *args) → fn(*args), run where the GPU is

SEPARATOR_ENV = "HIGHLIGHTSENSE_SEPARATOR"
SEPARATOR_REPO_ENV = "HIGHLIGHTSENSE_SEPARATOR_REPO"
MIX_RATE = 44100  # Hz: Demucs' rate, at which the mix is decoded
CHUNK_SECONDS = 30.0  # s of audio decoded at a time: bounds memory whatever the VOD's length
MAX_PAD = 120.0  # s of padding allowed before or after a clip
LOUDNESS_FLOOR_DB = -100.0  # dB shown for silence in "why this clip"
LOUDNESS_BLOCK = 16384  # frames (≈ 6 min) converted to dB at a time: 21 MB of float64
TRIM_BATCHES = 4  # scoring batches between two releases of freed memory
MAX_CPU_WORKERS = 4  # model calls in flight at once on a CPU (each holds a segment's activations)

# Share of the progress bar each stage gets (separation dominates a real run).
STAGE_WEIGHTS = {"read": 0.04, "separate": 0.8, "score": 0.1, "clips": 0.06}


@dataclass(frozen=True)
class Settings:
    """Every knob of a run; the defaults are the published system's (SPEC §4-5)."""

    weights: str | None = None  # None: $HIGHLIGHTSENSE_WEIGHTS, weights/best_model.pt, published
    separator: str | None = None  # Demucs model name; None: $HIGHLIGHTSENSE_SEPARATOR or htdemucs
    separator_repo: str | None = None  # local Demucs model folder; None: $…_SEPARATOR_REPO or hub
    tracks: tuple[int, int] | None = None  # (voice, game) audio track numbers from 1: no Demucs
    window_sec: float = scoring.WINDOW_SEC  # s, clip length scored by the model (≤ 60)
    stride_sec: float = scoring.STRIDE_SEC  # s between window starts
    percentile: float = selection.PERCENTILE  # keep windows at or above this percentile …
    threshold: float | None = None  # … or above this absolute probability when given
    nms_sec: float = selection.NMS_SEC  # s, minimum gap between chosen clips' starts
    top_n: int = selection.TOP_N  # clips at most
    pad_before: float = 0.0  # s added before each clip
    pad_after: float = 0.0  # s added after each clip
    copy: bool = False  # stream copy (fast, keyframe-aligned) instead of re-encoding
    clips: bool = True  # cut clips at all
    keep_stems: bool = False  # write stems/vocals.wav and stems/game.wav
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "fp32"  # fp32 | bf16: autocast for separation, and for scoring on a GPU
    batch_size: int | None = None  # windows (and Demucs segments) per forward; None: per device
    use_cache: bool = True  # reuse cached separation + features of the same input
    slice_sec: float = 1200.0  # s of VOD separated per GPU call when analyze_source gets gpu=

    def __post_init__(self) -> None:
        scoring.check_window(self.window_sec, self.stride_sec)
        selection.check_settings(self.percentile, self.threshold, self.nms_sec, self.top_n)
        for name in ("pad_before", "pad_after"):
            if not 0.0 <= getattr(self, name) <= MAX_PAD:
                raise SettingsError(f"Padding must be between 0 and {MAX_PAD:.0f} seconds.")
        if self.device not in ("auto", "cpu", "cuda"):
            raise SettingsError(f"The device must be auto, cpu or cuda (got {self.device!r}).")
        if self.precision not in ("fp32", "bf16"):
            raise SettingsError(f"The precision must be fp32 or bf16 (got {self.precision!r}).")
        if not 60.0 <= self.slice_sec <= 24 * 3600.0:
            raise SettingsError(f"A slice must be 60 s to 24 h long (got {self.slice_sec:g} s).")
        if self.batch_size is not None and not 1 <= self.batch_size <= 1024:
            raise SettingsError(f"The batch size must be between 1 and 1024 ({self.batch_size}).")
        if self.tracks is not None and (
            len(self.tracks) != 2 or min(self.tracks) < 1 or self.tracks[0] == self.tracks[1]
        ):
            raise SettingsError("Give two different audio tracks, numbered from 1: voice=1,game=2.")

    @classmethod
    def make(cls, **values: object) -> Settings:
        """Settings from keyword values, refusing unknown names with a SettingsError."""
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise SettingsError(f"Unknown setting(s): {', '.join(sorted(unknown))}.")
        return cls(**values)

    @property
    def separator_name(self) -> str:
        return self.separator or os.environ.get(SEPARATOR_ENV) or stems.DEFAULT_MODEL

    @property
    def separator_folder(self) -> Path | None:
        folder = self.separator_repo or os.environ.get(SEPARATOR_REPO_ENV)
        return Path(folder) if folder else None


def resolve_device(device: str) -> str:
    """auto → cuda when there is a GPU, else cpu; cuda without a GPU falls back with a warning."""
    available = torch.cuda.is_available()
    if device == "cuda" and not available:
        warnings.warn("No CUDA GPU is available; running on the CPU instead.", stacklevel=2)
        return "cpu"
    if device == "auto":
        return "cuda" if available else "cpu"
    return device


def _parallelism(device: str) -> tuple[int, int]:
    """(workers, torch threads each) for the model calls.

    On a CPU the cores torch would use are shared out as single-threaded workers, each running
    its own segment or window: one multi-threaded forward synchronises its threads at every
    operation, which costs more than it gains on small operations and stalls whenever another
    process takes a core (benchmarks/README.md has the figures). A GPU runs one call at a time.
    """
    if device != "cpu":
        return 1, torch.get_num_threads()
    cores = torch.get_num_threads()
    workers = min(cores, MAX_CPU_WORKERS)
    return workers, max(1, cores // workers)


def _batch_sizes(settings: Settings, device: str) -> tuple[int, int]:
    """(Demucs segments, CRNN windows) per forward. On CPUs one per worker: bigger batches gain
    nothing there (measured in benchmarks/); GPUs want big batches."""
    if settings.batch_size is not None:
        return settings.batch_size, settings.batch_size
    if device == "cuda":
        return 8, 64
    workers, _ = _parallelism(device)
    return workers, workers


def _find_malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, where the process has one (Linux with glibc)."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):  # another C library, or no dlopen(NULL)
        return None


_MALLOC_TRIM = _find_malloc_trim()


def _release_freed_memory() -> None:
    """Hand the pages of freed heap memory back to the system.

    Separation allocates and frees buffers of many sizes; glibc keeps the holes they leave, so
    without this the resident size grew with the VOD's length (≈ 18 MB per minute of audio,
    though nothing stayed alive: malloc_trim brought a 15-minute run from 847 to 433 MB).
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _trimming(chunks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """The chunks, with freed memory released before each (once per CHUNK_SECONDS of audio)."""
    for chunk in chunks:
        _release_freed_memory()
        yield chunk


def _trimming_progress(progress: Progress | None) -> Progress:
    """``progress``, releasing freed memory every TRIM_BATCHES calls (scoring calls it after
    each batch; trimming after every one cost 15 % of the scoring time)."""
    calls = itertools.count(1)

    def report(fraction: float, message: str) -> None:
        if next(calls) % TRIM_BATCHES == 0:
            _release_freed_memory()
        if progress is not None:
            progress(fraction, message)

    return report


@contextlib.contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``count`` for the block (it is process-wide)."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Stages:
    """Maps each stage's own 0-1 progress onto one overall bar. Calling the user's progress
    is also where a cancel lands: whatever it raises stops the run."""

    def __init__(self, progress: Progress | None, weights_: dict[str, float]):
        self._progress = progress
        total = sum(weights_.values())
        self._spans = {}
        start = 0.0
        for name, weight in weights_.items():
            self._spans[name] = (start / total, weight / total)
            start += weight

    def __call__(self, stage: str) -> Progress:
        offset, width = self._spans[stage]

        def report(fraction: float, message: str) -> None:
            if self._progress is not None:
                self._progress(offset + width * min(max(fraction, 0.0), 1.0), message)

        return report


@dataclass
class Analysis:
    """The expensive part of a run, enough to choose and cut clips again without redoing it."""

    source: Path
    info: media.MediaInfo
    windows: np.ndarray  # (N, 3) start_sec, end_sec, probability
    attention: np.ndarray  # (N, S) attention over GRU steps of each window
    loudness: np.ndarray  # (2, T) voice and game loudness in dB per feature frame
    model_identity: str
    producer: str  # separator identity, or the audio tracks used
    settings: Settings
    seconds: dict[str, float] = field(default_factory=dict)  # per-stage wall time
    features_from_cache: bool = False

    @property
    def duration(self) -> float:
        return self.info.duration


@dataclass(frozen=True)
class Highlight:
    rank: int
    window: int  # index into Analysis.windows
    start_sec: float  # clip start, padding included
    end_sec: float
    confidence: float


@dataclass
class Result:
    """What a run produced. ``out_dir`` holds the files listed in the README."""

    analysis: Analysis
    highlights: list[Highlight]
    threshold: float
    above: int  # windows at or above the threshold before NMS
    clip_paths: list[Path]
    out_dir: Path | None

    @property
    def windows(self) -> np.ndarray:
        return self.analysis.windows


# --- features ------------------------------------------------------------------------------


def _loudness(spec: np.ndarray) -> np.ndarray:
    """(2, 80, T) log-mel → (2, T) dB: total mel power per frame.

    Block by block, so the float64 temporaries stay small (a whole 3-hour VOD would need 1.2 GB).
    """
    loudness = np.empty((spec.shape[0], spec.shape[-1]), dtype=np.float32)  # (2, T)
    for start in range(0, spec.shape[-1], LOUDNESS_BLOCK):
        power = np.exp(spec[..., start : start + LOUDNESS_BLOCK].astype(np.float64)).sum(axis=1)
        loudness[:, start : start + LOUDNESS_BLOCK] = np.maximum(
            10 * np.log10(power + 1e-12), LOUDNESS_FLOOR_DB
        )
    return loudness


def _counted(chunks: Iterator[np.ndarray], counter: list[int], report: Progress, total: float):
    for chunk in chunks:
        counter[0] += chunk.shape[1]
        report(counter[0] / total, "Reading audio")
        yield chunk


def _track_pairs(info: media.MediaInfo, voice: int, game: int) -> Iterator[tuple]:
    """Voice and game chunks read from two audio tracks in lockstep (the shorter one padded)."""
    a = media.read_audio(info, sample_rate=MIX_RATE, stream=voice, chunk_seconds=CHUNK_SECONDS)
    b = media.read_audio(info, sample_rate=MIX_RATE, stream=game, chunk_seconds=CHUNK_SECONDS)
    with contextlib.closing(a), contextlib.closing(b):
        for x, y in itertools.zip_longest(a, b, fillvalue=np.zeros((2, 0), np.float32)):
            n = max(x.shape[1], y.shape[1])
            yield (
                np.pad(x, ((0, 0), (0, n - x.shape[1]))),
                np.pad(y, ((0, 0), (0, n - y.shape[1]))),
            )


def _separated_pairs(
    info: media.MediaInfo,
    separator: stems.Separator,
    settings: Settings,
    stages: Stages,
    segments: int,
    workers: int,
    mix: Mix,
) -> Iterator[tuple]:
    """The second pass over the audio (``mix`` came from the first): separation chunk by chunk,
    ``segments`` per batch on ``workers``."""
    second = media.read_audio(info, sample_rate=MIX_RATE, chunk_seconds=CHUNK_SECONDS)
    with contextlib.closing(second):
        yield from stems.separate_stream(
            separator,
            _trimming(second),
            total_samples=mix.samples,
            mean=mix.mean,
            std=mix.std,
            batch_size=segments,
            workers=workers,
            precision=settings.precision,
            progress=stages("separate"),
        )


class _StemWriter:
    """Writes the stems as 16-bit WAV files while they stream past."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        # closed in close(), which compute_features calls in a finally block
        self.files = [wave.open(str(folder / n), "wb") for n in ("vocals.wav", "game.wav")]  # noqa: SIM115
        for file in self.files:
            file.setnchannels(2)
            file.setsampwidth(2)
            file.setframerate(MIX_RATE)

    def write(self, pair: tuple) -> tuple:
        for file, audio in zip(self.files, pair, strict=True):
            samples = np.clip(np.asarray(audio, dtype=np.float32).T, -1.0, 1.0)
            file.writeframes((samples * 32767).astype("<i2").tobytes())
        return pair

    def close(self) -> None:
        for file in self.files:
            file.close()


def compute_features(
    info: media.MediaInfo,
    settings: Settings,
    *,
    device: str = "cpu",
    progress: Progress | None = None,
    stems_dir: Path | None = None,
) -> tuple[np.ndarray, str]:
    """media → (2, 80, T) float32 log-mel (voice, game) and the identity of what made the stems.

    Memory stays bounded by the chunk size and Demucs' segment, whatever the VOD's length; only
    the features themselves (≈ 100 MB per hour) are kept whole.
    """
    stages = Stages(progress, {k: STAGE_WEIGHTS[k] for k in ("read", "separate")})
    # Decided before the threads are set below: the pairs are made lazily inside that block.
    segments, _ = _batch_sizes(settings, device)
    workers, threads = _parallelism(device)
    if settings.tracks is not None:
        voice, game = (track - 1 for track in settings.tracks)
        pairs = _track_pairs(info, voice, game)
        producer = f"tracks:voice={voice + 1},game={game + 1}"
        frames = None  # known only at the end
        total = max(info.duration * MIX_RATE, 1.0)
        report = stages("separate")
        pairs = _report_samples(pairs, report, total)
    else:
        separator = stems.load_separator(
            settings.separator_name, settings.separator_folder, device=device
        )
        mix = measure_mix(info, stages("read"))
        frames = mix.frames
        pairs = _separated_pairs(info, separator, settings, stages, segments, workers, mix)
        producer = separator.identity
    writer = _StemWriter(stems_dir) if stems_dir is not None else None
    if writer is not None:
        pairs = map(writer.write, pairs)
    try:
        with _torch_threads(threads):
            spec = _collect(features.stems_to_features(pairs, MIX_RATE, device), frames)
    finally:
        if writer is not None:
            writer.close()
    return spec, producer


def _collect(chunks: Iterator[torch.Tensor], frames: int | None) -> np.ndarray:
    """Feature chunks (2, 80, k) → one (2, 80, T) array.

    When T is known in advance the chunks are written into place: a list of thousands of small
    pieces concatenated at the end held the features twice at the peak (+300 MB for 3 hours).
    """
    if frames is None:
        return np.concatenate([chunk.cpu().numpy() for chunk in chunks], axis=2)
    spec = np.empty((2, features.N_MELS, frames), dtype=np.float32)
    done, beyond = 0, []
    for chunk in chunks:
        piece = chunk.cpu().numpy()
        if beyond or done + piece.shape[-1] > frames:
            beyond.append(piece)
        else:
            spec[..., done : done + piece.shape[-1]] = piece
            done += piece.shape[-1]
    if beyond or done < frames:  # never seen: the count was off, so fall back to joining
        return np.concatenate([spec[..., :done], *beyond], axis=2)
    return spec


def _report_samples(pairs: Iterator[tuple], report: Progress, total: float) -> Iterator[tuple]:
    done = 0
    for pair in pairs:
        done += pair[0].shape[1]
        report(done / total, "Reading the voice and game tracks")
        yield pair


# --- long VODs in slices (one GPU call each on ZeroGPU) -------------------------------------

FRAME_SAMPLES = features.HOP * MIX_RATE // features.SAMPLE_RATE  # 1024 mix samples per frame
SLICE_CONTEXT = 8 * FRAME_SAMPLES  # mix samples of resampler + half-window context per side


@dataclass(frozen=True)
class Mix:
    """What a slice needs to know about the whole track: Demucs' normalisation and its length."""

    mean: float
    std: float
    samples: int  # at 44.1 kHz

    @property
    def frames(self) -> int:
        """Feature frames of the whole track: 1 + (its length at 22 050 Hz) // hop."""
        return 1 + ((self.samples + 1) // 2) // features.HOP


def measure_mix(info: media.MediaInfo, progress: Progress | None = None) -> Mix:
    """The cheap first pass over the audio (CPU only)."""
    counter = [0]
    report = progress or (lambda fraction, message: None)
    chunks = media.read_audio(info, sample_rate=MIX_RATE, chunk_seconds=CHUNK_SECONDS)
    with contextlib.closing(chunks):
        mean, std = stems.mix_stats(
            _counted(chunks, counter, report, max(info.duration * MIX_RATE, 1.0))
        )
    if counter[0] == 0:
        raise MediaError(f"{info.path.name} has an audio track with no sound samples in it.")
    return Mix(mean, std, counter[0])


def plan_slices(frames: int, slice_frames: int) -> list[tuple[int, int]]:
    """[start, end) frame ranges of at most ``slice_frames`` covering ``frames`` frames."""
    return [(a, min(a + slice_frames, frames)) for a in range(0, frames, slice_frames)]


def _sample_range(chunks: Iterator[np.ndarray], start: int, end: int) -> Iterator[np.ndarray]:
    """Samples [start, end) of a stream of (C, n) chunks."""
    position = 0
    for chunk in chunks:
        n = chunk.shape[1]
        lo, hi = max(start - position, 0), min(end - position, n)
        if hi > lo:
            yield chunk[:, lo:hi]
        position += n
        if position >= end:
            return


def _drop_leading(pairs: Iterator[tuple], count: int) -> Iterator[tuple]:
    for voice, game in pairs:
        cut = min(count, voice.shape[1])
        count -= cut
        if voice.shape[1] > cut:
            yield voice[:, cut:], game[:, cut:]


def features_range(
    info: media.MediaInfo,
    settings: Settings,
    mix: Mix,
    frames: tuple[int, int],
    device: str = "cpu",
) -> np.ndarray:
    """Frames [start, end) of :func:`compute_features`'s result, separating only around them.

    Demucs runs from a point of its own segment grid at least two segments before the slice, so
    every segment that touches the slice's samples sees exactly what it sees in a whole-track
    run; the resampler and the centred frames get their own context. Up to float rounding the
    slices of a track concatenate to the whole-track features.
    """
    start, end = frames
    separator = stems.load_separator(
        settings.separator_name, settings.separator_folder, device=device
    )
    segment = int(separator.samplerate * separator.segment)
    stride = int((1 - stems.OVERLAP) * segment)
    first_needed = FRAME_SAMPLES * start - SLICE_CONTEXT
    begin = max(0, (first_needed - 2 * segment) // stride * stride) if first_needed > 0 else 0
    last_needed = FRAME_SAMPLES * end + SLICE_CONTEXT
    stop = min(mix.samples, last_needed + 2 * segment)
    chunks = media.read_audio(info, sample_rate=MIX_RATE, chunk_seconds=CHUNK_SECONDS)
    with contextlib.closing(chunks):
        segments, _ = _batch_sizes(settings, device)
        pairs = stems.separate_stream(
            separator,
            _sample_range(chunks, begin, stop),
            total_samples=stop - begin,
            mean=mix.mean,
            std=mix.std,
            batch_size=segments,
            precision=settings.precision,
        )
        on_grid = -(-begin // FRAME_SAMPLES) * FRAME_SAMPLES  # first frame-aligned sample
        pairs = _drop_leading(iter(pairs), on_grid - begin)
        local = np.concatenate(
            [c.cpu().numpy() for c in features.stems_to_features(pairs, MIX_RATE, device)], axis=2
        )
    offset = on_grid // FRAME_SAMPLES
    return local[:, :, start - offset : end - offset]


def _features_in_slices(
    info: media.MediaInfo, settings: Settings, device: str, progress: Progress, gpu: GpuRunner
) -> np.ndarray:
    """The whole track's features as consecutive slices, each computed in its own GPU call."""
    stages = Stages(progress, {k: STAGE_WEIGHTS[k] for k in ("read", "separate")})
    mix = measure_mix(info, stages("read"))
    slice_frames = max(1, round(settings.slice_sec * features.FRAMES_PER_SECOND))
    slices = plan_slices(mix.frames, slice_frames)
    report = stages("separate")
    pieces = []
    for number, frames in enumerate(slices, start=1):
        report(
            (number - 1) / len(slices), f"Separating voice and game, part {number} of {len(slices)}"
        )
        pieces.append(gpu(features_range, info, settings, mix, frames, device))
    report(1.0, "Separated voice and game")
    return np.concatenate(pieces, axis=2)


def score_features(
    spec: np.ndarray, settings: Settings, device: str, progress: Progress | None = None
) -> scoring.Scores:
    """(2, 80, T) features → every window's probability and attention, with the settings' model."""
    model = weights.load(settings.weights, device).model
    _, window_batch = _batch_sizes(settings, device)
    workers, threads = _parallelism(device)
    with _torch_threads(threads):
        return scoring.score(
            model,
            torch.from_numpy(spec),
            window_sec=settings.window_sec,
            stride_sec=settings.stride_sec,
            batch_size=window_batch,
            workers=workers,
            # bf16 autocast makes the CRNN several times slower on CPUs (benchmarks/README.md).
            precision=settings.precision if device != "cpu" else "fp32",
            keep_attention=True,
            progress=_trimming_progress(progress),
        )


# --- the three steps --------------------------------------------------------------------------


def analyze_source(
    source: str | os.PathLike,
    settings: Settings,
    *,
    progress: Progress | None = None,
    stems_dir: Path | None = None,
    download_dir: Path | None = None,
    gpu: GpuRunner | None = None,
) -> Analysis:
    """Fetch (for a URL), probe, separate, featurize (or load the cache) and score every window.

    ``gpu(fn, *args)`` — when given — runs ``fn(*args)`` where a GPU is attached (on ZeroGPU, a
    ``spaces.GPU`` function): separation then runs in slices of ``settings.slice_sec`` so each
    call fits the per-call time limit, and scoring in one more call. Without it, one streaming
    pass does everything in this process.
    """
    text = str(source)
    is_url = sources.is_url(text)
    stages = Stages(
        progress,
        {
            "fetch": 0.2 if is_url else 0.0,
            "features": STAGE_WEIGHTS["read"] + STAGE_WEIGHTS["separate"],
            "score": STAGE_WEIGHTS["score"],
        },
    )
    seconds: dict[str, float] = {}
    began = time.perf_counter()
    if is_url:
        folder = download_dir or weights.cache_dir() / "downloads"
        path = sources.fetch(text, folder, progress=stages("fetch"))
    else:
        path = Path(text).expanduser()
    info = media.probe(path)
    if settings.tracks is not None and max(settings.tracks) > len(info.audio_streams):
        raise SettingsError(
            f"{path.name} has {len(info.audio_streams)} audio track(s); choose voice and game "
            f"tracks between 1 and {len(info.audio_streams)}."
        )
    device = resolve_device(settings.device)
    loaded = weights.load(settings.weights, device)  # fail on bad weights before separating
    seconds["probe"] = time.perf_counter() - began

    began = time.perf_counter()
    spec, producer, key = None, None, None
    if settings.use_cache:
        producer = _producer_identity(settings, device)
        key = cache.feature_key(cache.content_hash(path), producer)
        if stems_dir is None:  # stems were asked for: separate again to write them
            spec = cache.load(key)
    from_cache = spec is not None
    if not from_cache:
        if gpu is not None and settings.tracks is None and stems_dir is None:
            spec = _features_in_slices(info, settings, device, stages("features"), gpu)
            producer = _producer_identity(settings, device)
        else:
            spec, producer = compute_features(
                info, settings, device=device, progress=stages("features"), stems_dir=stems_dir
            )
        if key is not None:
            cache.store(key, spec)
    seconds["separate+features"] = time.perf_counter() - began

    began = time.perf_counter()
    if gpu is None:
        scores = score_features(spec, settings, device, progress=stages("score"))
    else:
        scores = gpu(score_features, spec, settings, device)
    seconds["score"] = time.perf_counter() - began
    return Analysis(
        source=path,
        info=info,
        windows=scores.windows,
        attention=scores.attention,
        loudness=_loudness(spec),
        model_identity=loaded.identity,
        producer=producer,
        settings=settings,
        seconds=seconds,
        features_from_cache=from_cache,
    )


def _producer_identity(settings: Settings, device: str) -> str:
    if settings.tracks is not None:
        return f"tracks:voice={settings.tracks[0]},game={settings.tracks[1]}"
    return stems.load_separator(
        settings.separator_name, settings.separator_folder, device=device
    ).identity


def choose(analysis: Analysis, settings: Settings) -> tuple[list[Highlight], float, int]:
    """Pure: the highlights for ``settings`` from already scored windows."""
    chosen = selection.select(
        analysis.windows,
        percentile=settings.percentile,
        threshold=settings.threshold,
        nms_sec=settings.nms_sec,
        top_n=settings.top_n,
    )
    spans = selection.clip_spans(
        analysis.windows,
        chosen,
        pad_before=settings.pad_before,
        pad_after=settings.pad_after,
        duration=analysis.duration,
    )
    highlights = [
        Highlight(rank, index, float(start), float(end), float(analysis.windows[index, 2]))
        for rank, (index, (start, end)) in enumerate(zip(chosen.indices, spans, strict=True), 1)
    ]
    return highlights, chosen.threshold, chosen.above


def _store_name(highlight: Highlight, copy: bool, extension: str) -> str:
    start_ms, end_ms = round(highlight.start_sec * 1000), round(highlight.end_sec * 1000)
    return f"span_{start_ms}_{end_ms}_{'copy' if copy else 'exact'}{extension}"


def cut_highlights(
    analysis: Analysis,
    highlights: list[Highlight],
    store: Path,
    *,
    copy: bool,
    progress: Progress | None = None,
    cancel: Callable[[], None] | None = None,
) -> list[Path]:
    """Clip files for ``highlights`` in ``store``, cutting only spans not cut before.
    Whatever ``cancel`` raises (it is called every few tenths of a second) stops the cutting."""
    extension = ".mp4" if analysis.info.has_video else ".m4a"
    targets = [store / _store_name(h, copy, extension) for h in highlights]
    missing = [(h, t) for h, t in zip(highlights, targets, strict=True) if not t.exists()]
    if missing:
        clips.cut_clips(
            analysis.info,
            [(h.start_sec, h.end_sec) for h, _ in missing],
            store,
            copy=copy,
            names=[t.name for _, t in missing],
            progress=progress,
            cancel=cancel,
        )
    return targets


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed
        shutil.copyfile(source, target)


def write_tables(result: Result, out_dir: Path) -> None:
    """scores.csv, highlights.csv, highlights.json and scores.html into ``out_dir``."""
    analysis = result.analysis
    with open(out_dir / "scores.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["window_index", "start_sec", "end_sec", "confidence"])
        for i, (start, end, p) in enumerate(analysis.windows):
            writer.writerow([i, f"{start:.3f}", f"{end:.3f}", f"{p:.6f}"])
    rows = _highlight_rows(result, out_dir)
    with open(out_dir / "highlights.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(HIGHLIGHT_FIELDS))
        writer.writeheader()
        writer.writerows(rows)
    # names only, no folders: the file may be served to someone else than the one who ran it
    settings = dataclasses.asdict(analysis.settings)
    for key in ("weights", "separator_repo"):
        settings[key] = Path(settings[key]).name if settings[key] else None
    summary = {
        "input": analysis.source.name,
        "input_duration_sec": round(analysis.duration, 3),
        "model": analysis.model_identity,
        "separator": analysis.producer,
        "settings": settings,
        "windows": len(analysis.windows),
        "threshold": result.threshold,
        "windows_above_threshold": result.above,
        "features_from_cache": analysis.features_from_cache,
        "seconds": {k: round(v, 3) for k, v in analysis.seconds.items()},
        "highlights": rows,
    }
    (out_dir / "highlights.json").write_text(json.dumps(summary, indent=2) + "\n")
    figure = score_figure(
        analysis.windows, result.threshold, [h.window for h in result.highlights], analysis.duration
    )
    figure.write_html(out_dir / "scores.html", include_plotlyjs=True, full_html=True)


HIGHLIGHT_FIELDS = (
    "rank", "start_sec", "end_sec", "start_ts", "end_ts", "duration_sec", "confidence", "clip_path",
)  # fmt: skip


def _highlight_rows(result: Result, out_dir: Path) -> list[dict]:
    rows = []
    for i, h in enumerate(result.highlights):
        clip = result.clip_paths[i] if i < len(result.clip_paths) else None
        rows.append(
            {
                "rank": h.rank,
                "start_sec": round(h.start_sec, 3),
                "end_sec": round(h.end_sec, 3),
                "start_ts": media.format_timestamp(h.start_sec),
                "end_ts": media.format_timestamp(h.end_sec),
                "duration_sec": round(h.end_sec - h.start_sec, 3),
                "confidence": round(h.confidence, 6),
                "clip_path": str(clip.relative_to(out_dir)) if clip else "",
            }
        )
    return rows


def render(
    analysis: Analysis,
    settings: Settings,
    out_dir: Path,
    *,
    store: Path | None = None,
    progress: Progress | None = None,
    cancel: Callable[[], None] | None = None,
) -> Result:
    """Choose, cut (reusing clips already in ``store``) and write every output into ``out_dir``.

    ``out_dir`` must be a fresh folder; :func:`analyze` renames it into place only when complete.
    """
    highlights, threshold, above = choose(analysis, settings)
    out_dir.mkdir(parents=True, exist_ok=True)  # the tables are written with or without clips
    clip_paths: list[Path] = []
    if settings.clips and highlights:
        cut = cut_highlights(
            analysis,
            highlights,
            store or out_dir / ".store",
            copy=settings.copy,
            progress=progress,
            cancel=cancel,
        )
        (out_dir / "clips").mkdir(parents=True, exist_ok=True)
        for highlight, path in zip(highlights, cut, strict=True):
            target = out_dir / "clips" / f"highlight_{highlight.rank:02d}{path.suffix}"
            target.unlink(missing_ok=True)
            _link(path, target)
            clip_paths.append(target)
        if store is None:
            shutil.rmtree(out_dir / ".store")
    result = Result(analysis, highlights, threshold, above, clip_paths, out_dir)
    write_tables(result, out_dir)
    return result


def default_out_dir(source: str) -> Path:
    if sources.is_url(source):
        name = "vod-" + "".join(c for c in source.rstrip("/").rsplit("/", 1)[-1] if c.isalnum())
    else:
        name = Path(source).stem
    return Path("highlights") / (name or "vod")


def analyze(
    source: str | os.PathLike,
    *,
    progress: Progress | None = None,
    out_dir: str | os.PathLike | None = None,
    **settings: object,
) -> Result:
    """A VOD (path or URL) in, ranked highlight clips and tables out.

    Everything is written into a hidden folder beside ``out_dir`` and renamed into place at the
    end, so a failed or cancelled run leaves nothing that looks complete.
    """
    config = Settings.make(**settings)
    target = Path(out_dir) if out_dir is not None else default_out_dir(str(source))
    target = target.expanduser().resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    stages = Stages(
        progress, {"analyze": 1 - STAGE_WEIGHTS["clips"], "clips": STAGE_WEIGHTS["clips"]}
    )
    try:
        analysis = analyze_source(
            source,
            config,
            progress=stages("analyze"),
            stems_dir=staging / "stems" if config.keep_stems else None,
        )
        began = time.perf_counter()
        result = render(analysis, config, staging, progress=stages("clips"))
        stages("clips")(1.0, "Done")
        analysis.seconds["clips+tables"] = time.perf_counter() - began
        _replace_dir(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    result.out_dir = target
    result.clip_paths = [target / p.relative_to(staging) for p in result.clip_paths]
    return result


def _replace_dir(staging: Path, target: Path) -> None:
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(target)


__all__ = [
    "Analysis",
    "Cancelled",
    "Highlight",
    "Result",
    "Settings",
    "analyze",
    "analyze_source",
    "choose",
    "render",
]
