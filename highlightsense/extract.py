"""A whole VOD's features: decode the mix, split it into voice and game (Demucs, or the file's
own two tracks), and turn both into the (2, 80, T) log-mel the model scores.

Memory stays bounded by the chunk size and Demucs' segment, whatever the VOD's length; only the
features themselves (≈ 100 MB per hour) are kept whole.
"""

from __future__ import annotations

import contextlib
import itertools
import wave
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
import torch

from . import features, media, stems
from .errors import MediaError
from .progress import Progress
from .runtime import Plan, trimming
from .separator import Separator

TRACKS_RATE = 44100  # Hz at which a file's own voice and game tracks are decoded
CHUNK_SECONDS = 30.0  # s of audio decoded at a time: bounds memory whatever the VOD's length
LOUDNESS_FLOOR_DB = -100.0  # dB shown for silence in "why this clip"
LOUDNESS_BLOCK = 16384  # frames (≈ 6 min) converted to dB at a time: 21 MB of float64

Item = TypeVar("Item")


def frames_for(samples: int, rate: int) -> int:
    """Feature frames of ``samples`` at ``rate`` Hz: 1 + (their length at 22 050 Hz) // hop.

    Exact where ``rate`` is a whole multiple of 22 050 Hz (Demucs' 44.1 kHz); elsewhere soxr's
    output length can differ by one sample, which the callers allow for.
    """
    if rate % features.SAMPLE_RATE == 0:
        resampled = -(-samples // (rate // features.SAMPLE_RATE))
    else:
        resampled = round(samples * features.SAMPLE_RATE / rate)
    return 1 + resampled // features.HOP


@dataclass(frozen=True)
class Mix:
    """What separation needs to know about the whole track: Demucs' normalisation and its
    length, from a cheap first pass over the audio."""

    mean: float
    std: float
    samples: int  # at ``rate``
    rate: int  # Hz, the separator's

    @property
    def frames(self) -> int:
        return frames_for(self.samples, self.rate)


def reporting(
    items: Iterable[Item],
    size: Callable[[Item], int],
    total: float,
    report: Progress,
    message: str,
) -> Iterator[Item]:
    """The items, reporting the share of ``total`` their sizes add up to after each."""
    done = 0
    for item in items:
        done += size(item)
        report(done / total, message)
        yield item


def _samples(chunk: np.ndarray | tuple) -> int:
    return (chunk[0] if isinstance(chunk, tuple) else chunk).shape[1]


def measure_mix(info: media.MediaInfo, rate: int, progress: Progress | None = None) -> Mix:
    """The first pass over the audio (CPU only): Demucs' normalisation and the decoded length."""
    report = progress or (lambda fraction, message: None)
    total = max(info.duration * rate, 1.0)
    chunks = media.read_audio(info, sample_rate=rate, chunk_seconds=CHUNK_SECONDS)
    counted = [0]

    def size(chunk: np.ndarray) -> int:
        counted[0] += chunk.shape[1]
        return chunk.shape[1]

    with contextlib.closing(chunks):
        mean, std = stems.mix_stats(reporting(chunks, size, total, report, "Reading the audio"))
    if counted[0] == 0:
        raise MediaError(f"{info.path.name} has an audio track with no sound samples in it.")
    return Mix(mean, std, counted[0], rate)


def separated(
    info: media.MediaInfo,
    separator: Separator,
    mix: Mix,
    plan: Plan,
    precision: str,
    runtime: str = "torch",
    progress: Progress | None = None,
) -> Iterator[tuple]:
    """The second pass over the audio: (voice, game) chunks, separated ``plan.segments`` Demucs
    segments per model call on ``plan.workers`` threads, the network run by ``runtime``."""
    chunks = media.read_audio(info, sample_rate=mix.rate, chunk_seconds=CHUNK_SECONDS)
    with contextlib.closing(chunks):
        yield from stems.separate_stream(
            separator,
            trimming(chunks),
            total_samples=mix.samples,
            mean=mix.mean,
            std=mix.std,
            batch_size=plan.segments,
            workers=plan.workers,
            precision=precision,
            runtime=runtime,
            progress=progress,
        )


def from_tracks(
    info: media.MediaInfo, voice: int, game: int, progress: Progress | None = None
) -> Iterator[tuple]:
    """(voice, game) chunks read from two audio tracks (0-based among the file's audio tracks)
    in lockstep, the shorter one padded with silence."""
    a = media.read_audio(info, sample_rate=TRACKS_RATE, stream=voice, chunk_seconds=CHUNK_SECONDS)
    b = media.read_audio(info, sample_rate=TRACKS_RATE, stream=game, chunk_seconds=CHUNK_SECONDS)

    def pairs() -> Iterator[tuple]:
        for x, y in itertools.zip_longest(a, b, fillvalue=np.zeros((2, 0), np.float32)):
            n = max(x.shape[1], y.shape[1])
            yield (
                np.pad(x, ((0, 0), (0, n - x.shape[1]))),
                np.pad(y, ((0, 0), (0, n - y.shape[1]))),
            )

    total = max(info.duration * TRACKS_RATE, 1.0)
    report = progress or (lambda fraction, message: None)
    with contextlib.closing(a), contextlib.closing(b):
        yield from reporting(pairs(), _samples, total, report, "Reading the voice and game tracks")


class Tap(Protocol):
    """Something that sees the (voice, game) pairs stream past on their way to the features
    (:class:`StemWriter`, :class:`highlightsense.voice.VoiceKeeper`)."""

    def write(self, pair: tuple) -> tuple: ...  # the pair, unchanged

    def close(self) -> None: ...  # the stream ended (or stopped)


class StemWriter:
    """Writes the stems as 16-bit WAV files while they stream past."""

    def __init__(self, folder: Path, rate: int):
        folder.mkdir(parents=True, exist_ok=True)
        # closed in close(), which to_features calls in a finally block
        self.files = [wave.open(str(folder / n), "wb") for n in ("vocals.wav", "game.wav")]  # noqa: SIM115
        for file in self.files:
            file.setnchannels(2)
            file.setsampwidth(2)
            file.setframerate(rate)

    def write(self, pair: tuple) -> tuple:
        for file, audio in zip(self.files, pair, strict=True):
            samples = np.clip(np.asarray(audio, dtype=np.float32).T, -1.0, 1.0)
            file.writeframes((samples * 32767).astype("<i2").tobytes())
        return pair

    def close(self) -> None:
        for file in self.files:
            file.close()


def to_features(
    pairs: Iterable[tuple],
    rate: int,
    device: str,
    frames: int | None = None,
    stems_dir: Path | None = None,
    taps: Sequence[Tap] = (),
) -> np.ndarray:
    """(voice, game) chunks at ``rate`` → (2, 80, T) float32 log-mel, writing the stems to
    ``stems_dir`` on the way when given, and showing each pair to the ``taps``. ``frames``: T
    when known in advance."""
    taps = [*taps, *([StemWriter(stems_dir, rate)] if stems_dir is not None else [])]
    for tap in taps:
        pairs = map(tap.write, pairs)
    try:
        return collect(features.stems_to_features(pairs, rate, device), frames)
    finally:
        for tap in taps:
            tap.close()


def collect(chunks: Iterable[torch.Tensor], frames: int | None) -> np.ndarray:
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
    if beyond or done < frames:  # the estimate was off (a rate soxr rounds otherwise): join
        return np.concatenate([spec[..., :done], *beyond], axis=2)
    return spec


def loudness(spec: np.ndarray) -> np.ndarray:
    """(2, 80, T) log-mel → (2, T) dB: total mel power per frame.

    Block by block, so the float64 temporaries stay small (a whole 3-hour VOD would need 1.2 GB).
    """
    result = np.empty((spec.shape[0], spec.shape[-1]), dtype=np.float32)  # (2, T)
    for start in range(0, spec.shape[-1], LOUDNESS_BLOCK):
        power = np.exp(spec[..., start : start + LOUDNESS_BLOCK].astype(np.float64)).sum(axis=1)
        result[:, start : start + LOUDNESS_BLOCK] = np.maximum(
            10 * np.log10(power + 1e-12), LOUDNESS_FLOOR_DB
        )
    return result
