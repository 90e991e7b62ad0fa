"""The streamer's voice over one clip's span, as the speech recogniser wants it: 16 kHz mono.

When captions will be wanted, the analysis keeps the separated voice as it streams past
(:class:`VoiceKeeper`: mono, resampled to 16 kHz on the way, int16), so a clip's voice is a slice
of it (on ZeroGPU, each GPU call returns its slice's voice with its features). Otherwise
(features from the cache, a VOD longer than the keeper's limit) the span is separated again
with the same Demucs model (loaded once per process): a 30 s clip costs one short separation.
With ``--tracks`` the file's own voice track is decoded directly, no Demucs.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import soxr
import torch

from . import clips, stems
from .errors import MediaError, ToolError
from .media import MediaInfo
from .results import Analysis
from .runtime import torch_threads
from .timecode import format_timestamp
from .tools import run_tool, tool_reason
from .transcripts import SAMPLE_RATE

DECODE_TIMEOUT = 60.0  # s allowed to decode a span, plus
DECODE_TIMEOUT_PER_SECOND = 2.0  # s per second of span
FULL_SCALE = 32768.0  # kept int16 sample q is the voice q / FULL_SCALE (a power of two: exact)
BYTES_PER_HOUR = SAMPLE_RATE * 2 * 3600  # 115.2 MB of kept voice per hour of VOD (int16, mono)
MAX_KEPT_IN_MEMORY = 3 * 3600.0  # s of voice kept in memory at most: 346 MB
MAX_KEPT_ON_DISK = 12 * 3600.0  # s of voice kept in a file at most: 1.4 GB
KEPT_FILE = "voice-16k.s16"  # the kept voice in a folder: raw int16 little-endian, mono, 16 kHz
KEPT_SLACK = 64  # samples kept beyond the resampled length (soxr rounds the total its own way)


def decode_span(
    info: MediaInfo,
    span: tuple[float, float],
    *,
    stream: int = 0,
    channels: int,
    rate: int,
    cancel: Callable[[], None] | None = None,
) -> np.ndarray:
    """Audio track ``stream`` over ``span`` (s) of the source as float32 (channels, n)."""
    start, end = clips.clamp_spans([span], info.duration)[0]
    cmd = [
        *clips.seek_input(info, (start, end)),
        "-map", f"0:{info.audio_streams[stream].index}", "-vn", "-sn", "-dn",
        "-ac", str(channels), "-ar", str(rate), "-c:a", "pcm_f32le", "-f", "f32le", "pipe:1",
    ]  # fmt: skip
    try:
        done = run_tool(
            cmd, timeout=DECODE_TIMEOUT + DECODE_TIMEOUT_PER_SECOND * (end - start), cancel=cancel
        )
    except ToolError as err:
        raise MediaError(
            f"could not read the audio at {format_timestamp(start)}-{format_timestamp(end)} of "
            f"`{info.path.name}` ({tool_reason(err, info.path)}); the recording may be damaged."
        ) from err
    samples = np.frombuffer(done.stdout, dtype="<f4").reshape(-1, channels).T
    if not np.isfinite(samples).all():
        raise MediaError(f"`{info.path.name}` contains invalid audio samples (NaN or infinity).")
    return np.ascontiguousarray(samples, dtype=np.float32)


def voice_of(
    analysis: Analysis,
    span: tuple[float, float],
    cancel: Callable[[], None] | None = None,
) -> np.ndarray:
    """The voice over ``span`` (s) of the analysed source: (n,) float32 at 16 kHz, sample 0 at
    the span's start (its times are the clip's)."""
    from .engine import Engine  # here: the engine imports this module

    info, settings = analysis.info, analysis.settings
    if analysis.voice is not None:
        return kept_span(analysis.voice, clips.clamp_spans([span], info.duration)[0])
    if settings.tracks is not None:
        track = decode_span(info, span, stream=settings.tracks[0] - 1, channels=1,
                            rate=SAMPLE_RATE, cancel=cancel)  # fmt: skip
        return track[0]
    engine = Engine.create(settings)
    separator = engine.separator
    mix = decode_span(info, span, channels=separator.audio_channels, rate=separator.samplerate,
                      cancel=cancel)  # fmt: skip
    if mix.shape[1] == 0:
        return np.zeros(0, np.float32)
    mean, std = stems.mix_stats([mix])
    with torch_threads(engine.plan.threads):  # each worker's, as in the analysis
        pieces = stems.separate_stream(
            separator,
            [mix],
            total_samples=mix.shape[1],
            mean=mean,
            std=std,
            batch_size=engine.plan.segments,
            workers=engine.plan.workers,
            precision=engine.precision,
            runtime=engine.runtime,
            cancel=cancel,
        )
        voice = torch.cat([v for v, _ in pieces], dim=1).mean(dim=0).numpy()  # (n,) mono
    return soxr.resample(voice, separator.samplerate, SAMPLE_RATE, quality="HQ").astype(np.float32)


def kept_span(kept: np.ndarray, span: tuple[float, float]) -> np.ndarray:
    """The kept voice (n,) int16 over ``span`` (s) → (m,) float32, sample 0 at the span's start
    (shorter where the kept voice ends first)."""
    first, last = round(span[0] * SAMPLE_RATE), round(span[1] * SAMPLE_RATE)
    return kept[first:last].astype(np.float32) / np.float32(FULL_SCALE)


class VoiceKeeper:
    """Keeps the separated voice while it streams past during analysis: (voice, game) pairs at
    the separator's rate in, the voice out as (n,) int16 at 16 kHz, sample 0 at time 0.

    Resampled by soxr's streaming resampler (HQ), one filter running across the chunks, so there
    are no seams where they meet. In memory, or with a ``folder`` in a raw file there
    (:data:`KEPT_FILE`, read back as a memory map): 115 MB per hour of VOD either way. A track
    longer than the limit (:data:`MAX_KEPT_IN_MEMORY`, :data:`MAX_KEPT_ON_DISK`) is not kept
    (a warning; captions then separate each clip's span again).
    """

    def __init__(self, folder: Path | None = None):
        self.folder = folder
        self.limit = MAX_KEPT_IN_MEMORY if folder is None else MAX_KEPT_ON_DISK  # s
        self._buffer: np.ndarray | None = None  # (capacity,) int16
        self._stream: soxr.ResampleStream | None = None
        self._done = 0  # samples written into the buffer
        self._kept: np.ndarray | None = None

    def open(self, rate: int, samples: int) -> None:
        """Get ready for a track of ``samples`` at ``rate`` Hz (its length from the first pass
        over the audio), or keep nothing when it is longer than the limit."""
        if self._allocate(samples * SAMPLE_RATE // rate + KEPT_SLACK):
            self._stream = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32",
                                               quality="HQ")  # fmt: skip

    def join(self, pieces: Sequence[np.ndarray]) -> None:
        """Keep consecutive pieces of voice already kept elsewhere ((k,) int16 at 16 kHz each):
        the slices of a track separated one GPU call each (:func:`slices.features_range`)."""
        if not self._allocate(sum(piece.shape[0] for piece in pieces)):
            return
        for piece in pieces:
            self._buffer[self._done : self._done + piece.shape[0]] = piece
            self._done += piece.shape[0]
        self._finish()

    def _allocate(self, capacity: int) -> bool:
        """A buffer of ``capacity`` samples, in memory or in the folder; False (and a warning)
        when that is longer than the limit."""
        if capacity / SAMPLE_RATE > self.limit + 1.0:
            warnings.warn(
                f"The voice of a recording longer than {self.limit / 3600:g} hours is not kept; "
                "captions will separate each clip's voice again (slower).",
                stacklevel=3,
            )
            return False
        if self.folder is None:
            self._buffer = np.empty(capacity, dtype=np.int16)
        else:
            self.folder.mkdir(parents=True, exist_ok=True)
            # a new file, never one rewritten in place: a map of an earlier one stays valid
            (self.folder / KEPT_FILE).unlink(missing_ok=True)
            self._buffer = np.memmap(self.folder / KEPT_FILE, dtype="<i2", mode="w+",
                                     shape=(max(capacity, 1),))  # fmt: skip
        return True

    def write(self, pair: tuple) -> tuple:
        """Keep the voice of one (voice (C, n), game (C, n)) pair; the pair passes on as it was."""
        if self._stream is not None:
            mono = np.asarray(pair[0], dtype=np.float32).mean(axis=0)  # (n,)
            self._put(self._stream.resample_chunk(mono))
        return pair

    def _put(self, voice: np.ndarray) -> None:
        """Append (k,) float32 to the buffer as int16 (rounded, clipped to full scale)."""
        room = min(voice.shape[0], self._buffer.shape[0] - self._done)
        quantised = np.clip(np.rint(voice[:room] * FULL_SCALE), -32768, 32767)
        self._buffer[self._done : self._done + room] = quantised.astype(np.int16)
        self._done += room

    def close(self) -> None:
        """The end of the track: flush what the resampler still holds."""
        if self._stream is None:
            return
        self._put(self._stream.resample_chunk(np.zeros(0, np.float32), last=True))
        self._stream = None
        self._finish()

    def _finish(self) -> None:
        if self.folder is None:
            self._kept = self._buffer[: self._done]
        else:
            self._buffer.flush()
            self._kept = np.zeros(0, np.int16)  # an empty file cannot be mapped
            if self._done:
                path = self.folder / KEPT_FILE
                self._kept = np.memmap(path, dtype="<i2", mode="r", shape=(self._done,))
        self._buffer = None

    def kept(self) -> np.ndarray | None:
        """(n,) int16 at 16 kHz, sample 0 at time 0; None when nothing was kept."""
        self.close()
        return self._kept
