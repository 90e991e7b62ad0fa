"""Cutting the chosen highlights out of the original file as standalone clips.

Each clip is one ffmpeg run, several in parallel: as many as the memory budget allows for the
source's frame size (a 4K cut holds about a gigabyte). A clip is written under a hidden temporary
name and renamed once complete, so a file with a final name is always a whole clip.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

from . import outfolder
from .errors import Cancelled, MediaError, ToolError
from .files import atomic_path
from .media import MediaInfo, input_args
from .timecode import format_timestamp
from .tools import ffmpeg_path, run_tool, tool_reason

VIDEO_PRESET = "veryfast"  # x264 speed/size trade-off: clips are short, speed matters more
VIDEO_CRF = 20  # x264 constant rate factor: visually transparent for game footage
AUDIO_BITRATE = "160k"  # bit/s of the AAC track
MAX_WORKERS = 4  # parallel ffmpeg runs; each one already uses several threads
CUT_THREADS = 4  # decoder and encoder threads per run: each x264 thread holds frames of its own
CUT_MEMORY_BUDGET = 2 << 30  # bytes all parallel cuts may hold together
CUT_BASE_BYTES = 64 << 20  # bytes one ffmpeg run holds whatever the frame size (audio only)
# Bytes per pixel of a frame one re-encoding run holds at CUT_THREADS threads: measured 1065 MiB
# peak RSS for 4096x2160 (8.8 Mpixel) at 4 threads, x264 veryfast (961 MiB at 3 threads).
CUT_BYTES_PER_PIXEL = 126
CUT_TIMEOUT = 60.0  # s allowed per clip, plus
CUT_TIMEOUT_PER_SECOND = 10.0  # s allowed per second of clip (a slow CPU encoding 1080p)
POLL_INTERVAL = 0.1  # s between checks of cancel() while clips are being cut


def clip_names(count: int, extension: str) -> list[str]:
    """``highlight_01.mp4`` … by rank; more digits once there are more than 99 clips."""
    width = max(2, len(str(count)))
    return [f"highlight_{rank:0{width}d}{extension}" for rank in range(1, count + 1)]


def clamp_spans(spans: Sequence[tuple[float, float]], duration: float) -> list[tuple[float, float]]:
    """Spans (start_s, end_s) limited to [0, duration]; one left empty is a caller's bug."""
    clamped = []
    for start, end in spans:
        first, last = (min(max(t, 0.0), duration) for t in (start, end))
        if last <= first:
            raise ValueError(f"span {start}-{end} s is empty within the {duration:.3f} s recording")
        clamped.append((first, last))
    return clamped


def seek_input(info: MediaInfo, span: tuple[float, float]) -> list[str]:
    """The start of every cutting command: ffmpeg, its quiet flags, and ``span`` of the probed
    source as its input (the safety flags of :func:`media.input_args`)."""
    start, end = span
    return [
        ffmpeg_path(), "-nostdin", "-hide_banner", "-nostats", "-loglevel", "error", "-y",
        # Seeking on the input is fast, and frame-accurate when re-encoding: ffmpeg decodes from
        # the keyframe before start and drops what precedes it. With copy it snaps to a keyframe.
        "-threads", str(CUT_THREADS),  # before -i: the decoder's (frame threads hold frames too)
        "-ss", f"{start:.3f}", *input_args(info), "-t", f"{end - start:.3f}",
    ]  # fmt: skip


def cut_command(
    info: MediaInfo,
    span: tuple[float, float],
    target: Path,
    *,
    copy: bool = False,
    stream: int = 0,
) -> list[str]:
    """The ffmpeg command that writes ``span`` of the source to ``target`` (mp4 container)."""
    cmd = seek_input(info, span)
    if info.has_video:
        cmd += ["-map", "0:V:0"]  # capital V: a real picture stream, never cover art
    cmd += ["-map", f"0:{info.audio_streams[stream].index}", "-sn", "-dn"]
    if copy:
        cmd += ["-c", "copy", "-avoid_negative_ts", "make_zero"]
    else:
        if info.has_video:
            cmd += [
                "-c:v", "libx264", "-preset", VIDEO_PRESET, "-crf", str(VIDEO_CRF),
                "-pix_fmt", "yuv420p",  # what every browser and phone plays
                "-threads", str(CUT_THREADS),  # the encoder's: its memory grows with them
            ]  # fmt: skip
        cmd += ["-c:a", "aac", "-b:a", AUDIO_BITRATE]
    # faststart puts the index first, so a browser can play a clip before it has all of it.
    return [*cmd, "-movflags", "+faststart", "-f", "mp4", f"file:{target}"]


def cut_memory(info: MediaInfo, copy: bool = False, out_pixels: int = 0) -> int:
    """Bytes one cut of ``info`` may hold at its peak (an estimate from measurements), for clips
    of the source's frame size or of ``out_pixels`` per frame when that is bigger (a vertical
    clip is 1080x1920 whatever the source)."""
    if copy or not info.has_video:
        return CUT_BASE_BYTES  # no pictures are decoded or encoded
    pixels = (info.width or 1920) * (info.height or 1080)  # unknown size: assume 1080p
    return CUT_BASE_BYTES + CUT_BYTES_PER_PIXEL * max(pixels, out_pixels)


def parallel_cuts(info: MediaInfo, copy: bool = False, out_pixels: int = 0) -> int:
    """How many cuts may run at once: within the memory budget, the CPUs and MAX_WORKERS."""
    fits = math.floor(CUT_MEMORY_BUDGET / cut_memory(info, copy, out_pixels))
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1, fits))


def _cut_one(
    info: MediaInfo,
    span: tuple[float, float],
    target: Path,
    copy: bool,
    stream: int,
    stop: threading.Event,
    command: Callable[..., list[str]],
) -> Path:
    """Cut one clip to a temporary name beside ``target``, then rename it into place."""

    def check_stop() -> None:
        if stop.is_set():
            raise Cancelled("cutting clips was cancelled")

    timeout = CUT_TIMEOUT + CUT_TIMEOUT_PER_SECOND * (span[1] - span[0])
    partial = target
    try:
        with atomic_path(target) as partial:
            run_tool(
                command(info, span, partial, copy=copy, stream=stream),
                timeout=timeout,
                cancel=check_stop,
            )
    except ToolError as err:
        code = outfolder.tool_disk_error(str(err))
        if code is not None:  # the output, not the recording: say which folder, not which file
            # Raised without "from": its cause stays the OSError, which callers may re-address.
            raise outfolder.disk_error(  # noqa: B904
                OSError(code, os.strerror(code), str(target.parent)), target.parent
            )
        advice = (
            "cut it again without stream copy"
            if copy
            else "the recording may be damaged, try re-exporting it"
        )
        # The clip by its time: its file name may be internal (a store of cut spans).
        reason = tool_reason(err, info.path).replace(f"file:{partial}", "the clip")
        raise MediaError(
            f"could not cut the clip at {format_timestamp(span[0])}-{format_timestamp(span[1])} "
            f"from `{info.path.name}` ({reason}); {advice}."
        ) from err
    return target


def _check_names(names: Sequence[str], count: int) -> None:
    if len(names) != count:
        raise ValueError(f"got {len(names)} names for {count} spans")
    if len(set(names)) != count:
        raise ValueError("clip names must be unique")
    for name in names:
        if not name or Path(name).name != name or name.startswith("."):
            raise ValueError(f"clip name {name!r} must be a plain, visible file name")


def cut_clips(
    info: MediaInfo,
    spans: Sequence[tuple[float, float]],
    out_dir: Path,
    *,
    copy: bool = False,
    workers: int | None = None,
    cancel: Callable[[], None] | None = None,
    progress: Callable[[float, str], None] | None = None,
    names: Sequence[str] | None = None,
    stream: int = 0,
    command: Callable[..., list[str]] = cut_command,
    out_pixels: int = 0,
) -> list[Path]:
    """Cut each span (start_s, end_s) of the source into its own clip in ``out_dir``.

    ``spans`` are in rank order and clamped to the recording. Clips are re-encoded to H.264 +
    AAC (frame-accurate), or with ``copy`` stream-copied (fast, but they start at the keyframe
    before each span). Audio-only sources give ``.m4a`` clips. ``stream`` picks the audio track
    (0 = the first). ``command`` builds each clip's ffmpeg command, called like
    :func:`cut_command` (the vertical layouts pass their own, with the ``out_pixels`` of their
    frames for the memory budget). Returns the clip paths in rank order.

    ``cancel`` and ``progress(fraction, message)`` are called on this thread; whatever either
    raises stops every ffmpeg run and removes partial files. Clips finished before that stay.
    """
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    spans = clamp_spans(spans, info.duration)
    extension = ".mp4" if info.has_video else ".m4a"
    names = clip_names(len(spans), extension) if names is None else list(names)
    _check_names(names, len(spans))
    out_dir.mkdir(parents=True, exist_ok=True)
    targets = [out_dir / name for name in names]
    if not spans:
        return targets
    if progress is not None:
        progress(0.0, f"cutting {len(spans)} clips")

    stop = threading.Event()
    with ThreadPoolExecutor(
        max_workers=workers or parallel_cuts(info, copy, out_pixels),
        thread_name_prefix="cut",
    ) as pool:
        futures = [
            pool.submit(_cut_one, info, span, target, copy, stream, stop, command)
            for span, target in zip(spans, targets, strict=True)
        ]
        pending = set(futures)
        try:
            while pending:
                finished, pending = wait(pending, POLL_INTERVAL, FIRST_COMPLETED)
                for future in finished:
                    future.result()  # the first failure stops the rest
                if cancel is not None:
                    cancel()
                if finished and progress is not None:
                    done = len(futures) - len(pending)
                    progress(done / len(futures), f"cut {done} of {len(futures)} clips")
        except BaseException:
            # Queued clips never start; running ones see `stop` within POLL_INTERVAL and kill
            # their ffmpeg. Leaving the `with` waits for them, so their partial files are gone.
            stop.set()
            for future in futures:
                future.cancel()
            raise
    return targets
