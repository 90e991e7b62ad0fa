"""Long VODs in slices, for GPUs lent one call at a time (ZeroGPU): each slice of the features
is computed in its own call, separating only around it, and the slices join exactly.

Demucs runs from a point of its own segment grid at least two segments before a slice, so every
segment that touches the slice's samples sees exactly what it sees in a whole-track run; the
resampler and the centred frames get their own context. Up to float rounding the slices of a
track concatenate to the whole-track features.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np

from . import features, media, stems
from .extract import CHUNK_SECONDS, Mix, to_features
from .runtime import Plan
from .separator import Separator
from .transcripts import SAMPLE_RATE
from .voice import VoiceKeeper

SLICE_SEC = 1200.0  # s of VOD separated per call by default
CONTEXT_FRAMES = 8  # feature frames of resampler + half-window context on each side


def can_slice(rate: int) -> bool:
    """Slices join exactly only where feature frames fall on whole mix samples."""
    return rate % features.SAMPLE_RATE == 0


def plan_slices(frames: int, slice_frames: int) -> list[tuple[int, int | None]]:
    """[start, end) frame ranges of at most ``slice_frames`` covering ``frames`` frames; the last
    one is open (None), so it reaches the true end whatever the estimate of ``frames``."""
    starts = list(range(0, frames, slice_frames)) or [0]
    ends: list[int | None] = [*starts[1:], None]
    return list(zip(starts, ends, strict=True))


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
    separator: Separator,
    mix: Mix,
    frames: tuple[int, int | None],
    plan: Plan,
    precision: str,
    device: str,
    keep_voice: bool = False,
    runtime: str = "torch",
) -> np.ndarray | tuple[np.ndarray, np.ndarray | None]:
    """Frames [start, end) of the whole track's features (end None: to the end), separating
    only around them. With ``keep_voice``, (features, voice): the voice is samples
    [:func:`voice_sample` (start), :func:`voice_sample` (end)) of what
    :class:`~highlightsense.voice.VoiceKeeper` keeps of the whole track, (k,) int16 at 16 kHz
    (None where it would be longer than the keeper's limit). ``runtime`` runs Demucs' network as
    in the whole-track pass (torch on GPUs)."""
    start, end = frames
    frame_samples = features.HOP * mix.rate // features.SAMPLE_RATE
    context = CONTEXT_FRAMES * frame_samples
    segment = int(separator.samplerate * separator.segment)
    stride = int((1 - stems.OVERLAP) * segment)
    first_needed = frame_samples * start - context
    begin = max(0, (first_needed - 2 * segment) // stride * stride) if first_needed > 0 else 0
    stop = (
        mix.samples
        if end is None
        else min(mix.samples, frame_samples * end + context + 2 * segment)
    )
    on_grid = -(-begin // frame_samples) * frame_samples  # first frame-aligned sample
    taps, keeper = [], None
    if keep_voice:
        # The keeper starts where the mix's and the 16 kHz sample grids meet, at or after
        # on_grid (within 441 samples at 44.1 kHz, well inside the context), so its samples
        # are the whole track's, not ones shifted by a fraction of a sample.
        period = mix.rate // math.gcd(mix.rate, SAMPLE_RATE)
        voice_from = -(-on_grid // period) * period
        keeper = VoiceKeeper()
        keeper.open(mix.rate, stop - voice_from)
        taps.append(_Skipping(keeper, voice_from - on_grid))
    chunks = media.read_audio(info, sample_rate=mix.rate, chunk_seconds=CHUNK_SECONDS)
    with contextlib.closing(chunks):
        pairs = stems.separate_stream(
            separator,
            _sample_range(chunks, begin, stop),
            total_samples=stop - begin,
            mean=mix.mean,
            std=mix.std,
            batch_size=plan.segments,
            precision=precision,
            runtime=runtime,
        )
        local = to_features(_drop_leading(iter(pairs), on_grid - begin), mix.rate, device,
                            taps=taps)  # fmt: skip
    offset = on_grid // frame_samples
    spec = local[:, :, start - offset : None if end is None else end - offset]
    if keeper is None:
        return spec
    kept = keeper.kept()
    if kept is None:
        return spec, None
    kept_from = voice_from * SAMPLE_RATE // mix.rate  # exact: voice_from is on both grids
    first = voice_sample(start, mix.rate) - kept_from
    last = None if end is None else voice_sample(end, mix.rate) - kept_from
    return spec, np.array(kept[first:last])


def voice_sample(frame: int, rate: int) -> int:
    """The kept voice's first 16 kHz sample at or after feature frame ``frame`` of a mix at
    ``rate`` Hz: where one slice's voice ends and the next one's begins."""
    frame_samples = features.HOP * rate // features.SAMPLE_RATE
    return -(-frame * frame_samples * SAMPLE_RATE // rate)


class _Skipping:
    """Shows the voice to a keeper from ``skip`` samples into the pairs streaming past."""

    def __init__(self, keeper: VoiceKeeper, skip: int):
        self.keeper, self.skip = keeper, skip

    def write(self, pair: tuple) -> tuple:
        voice = pair[0]
        cut = min(self.skip, voice.shape[1])
        self.skip -= cut
        if voice.shape[1] > cut:
            self.keeper.write((voice[:, cut:], None))
        return pair

    def close(self) -> None:
        self.keeper.close()
