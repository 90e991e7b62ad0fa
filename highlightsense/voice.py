"""The streamer's voice over one clip's span, as the speech recogniser wants it: 16 kHz mono.

The analysis keeps only features, so the span is separated again with the same Demucs model
(loaded once per process) when captions are asked for: a 30 s clip costs one short separation.
With ``--tracks`` the file's own voice track is decoded directly, no Demucs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import soxr
import torch

from . import clips, stems
from .errors import MediaError, ToolError
from .media import MediaInfo
from .results import Analysis
from .timecode import format_timestamp
from .tools import run_tool, tool_reason
from .transcripts import SAMPLE_RATE

DECODE_TIMEOUT = 60.0  # s allowed to decode a span, plus
DECODE_TIMEOUT_PER_SECOND = 2.0  # s per second of span


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
    from .engine import Engine  # here: the engine imports the results this module also needs

    info, settings = analysis.info, analysis.settings
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
    pieces = stems.separate_stream(
        separator,
        [mix],
        total_samples=mix.shape[1],
        mean=mean,
        std=std,
        batch_size=engine.plan.segments,
        workers=engine.plan.workers,
        precision=engine.precision,
        cancel=cancel,
    )
    voice = torch.cat([v for v, _ in pieces], dim=1).mean(dim=0).numpy()  # (n,) mono
    return soxr.resample(voice, separator.samplerate, SAMPLE_RATE, quality="HQ").astype(np.float32)
