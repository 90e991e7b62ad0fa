"""The app on ZeroGPU: how long each GPU call asks for, the slices that keep every call short,
and ZeroGPU's refusals turned into one sentence a visitor can act on.

ZeroGPU (Hugging Face's shared GPUs for Spaces; the ``spaces`` package, 0.51.x) lends a GPU for
one call of a ``spaces.GPU`` function at a time. Each call asks for a duration; ``spaces``
multiplies it by its card's ``duration_factor`` (``spaces/zero/configs.json``: 1.5 on the
current cards, half an RTX Pro 6000 Blackwell, 1.0 on the H200) and the server refuses a call
whose seconds exceed what the visitor may still use that day ("ZeroGPU quota exceeded": 2 min
unauthenticated, 5 min with a free account, 40 min PRO) or could ever use at once ("ZeroGPU
illegal duration"). So every call here reserves at most ``RESERVE_MAX`` seconds, factor
included: separation runs in as many slices as that takes, and scoring in one more call.

How long a call takes comes from :data:`ESTIMATE`, or from ``gpu_speed.json`` beside this file
when ``benchmarks/gpu_check.sh`` has measured it on a GPU (its ``zerogpu`` block).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import features, slices
from ..errors import GpuRefused, UserError

DURATION_FACTOR = 1.5  # the largest `duration_factor` of spaces' configs.json (0.51.x)
RESERVE_MAX = 60.0  # s a call may reserve, factor included: half an anonymous day (2 min)
SAFETY = 1.5  # wall seconds asked for per second the speed figures predict
DAILY_QUOTA = {"unauthenticated": 120.0, "free": 300.0, "pro": 2400.0}  # s a day (hub docs)
MEASURED = Path(__file__).with_name("gpu_speed.json")  # the zerogpu block of gpu_check.json


@dataclass(frozen=True)
class GpuSpeed:
    """Seconds of GPU time a call takes: a fixed part, plus a part per second of VOD."""

    overhead: float  # s per call: the worker's fork, CUDA start, weights to the GPU, ffmpeg
    separate: float  # s per s of VOD: decode, Demucs, log-mel (features_range)
    score: float  # s per s of VOD: the CRNN over every window (score)
    source: str  # where the figures come from


# Not measured yet (benchmarks/gpu_check.sh is ready for a GPU). Demucs' htdemucs separates at
# 100-300x realtime on a datacenter GPU; decoding and resampling stay on the worker's CPU, so
# the whole slice is taken at 50x (0.02 s per s). The CRNN scores a 1-hour VOD's 720 windows in
# well under a second on a GPU; 0.0005 s per s is 2000x realtime. 8 s per call for the fork,
# CUDA's start and moving ~110 MB of weights.
ESTIMATE = GpuSpeed(overhead=8.0, separate=0.02, score=0.0005, source="estimate")


def gpu_speed(path: Path = MEASURED) -> GpuSpeed:
    """The measured figures when ``path`` holds them (a ``zerogpu`` block), else the estimate."""
    try:
        block = json.loads(path.read_text())
        block = block.get("zerogpu", block)
        found = GpuSpeed(
            overhead=float(block["overhead_s"]),
            separate=float(block["separate_s_per_vod_s"]),
            score=float(block["score_s_per_vod_s"]),
            source=f"measured on {block.get('device', 'a GPU')}",
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return ESTIMATE
    figures = (found.overhead, found.separate, found.score)
    if not all(math.isfinite(x) and x > 0 for x in figures):
        return ESTIMATE
    return found


def longest_request(reserve_max: float = RESERVE_MAX) -> int:
    """The most seconds one call may ask for so that, times the factor, it fits ``reserve_max``."""
    return max(1, math.floor(reserve_max / DURATION_FACTOR))


def requested(vod_seconds: float, kind: str, speed: GpuSpeed, reserve_max: float) -> int:
    """Seconds to ask for a call of ``kind`` ("separate" or "score") covering ``vod_seconds``."""
    rate = speed.score if kind == "score" else speed.separate
    wanted = math.ceil(SAFETY * (speed.overhead + rate * vod_seconds))
    return min(wanted, longest_request(reserve_max))


def slice_seconds(speed: GpuSpeed, reserve_max: float = RESERVE_MAX) -> float:
    """Seconds of VOD one call separates: the most whose request still fits ``reserve_max``."""
    room = longest_request(reserve_max) / SAFETY - speed.overhead
    return max(60.0, math.floor(room / speed.separate))


def plan(vod_seconds: float, speed: GpuSpeed, reserve_max: float = RESERVE_MAX) -> list[int]:
    """The seconds each call of a ``vod_seconds`` analysis asks for, in order: what
    :meth:`highlightsense.engine.Engine.analyze` does with the runner of :func:`runner`."""
    frames = math.floor(vod_seconds * features.FRAMES_PER_SECOND) + 1
    per_slice = max(1, round(slice_seconds(speed, reserve_max) * features.FRAMES_PER_SECOND))
    calls = []
    for start, end in slices.plan_slices(frames, per_slice):
        covered = ((frames if end is None else end) - start) / features.FRAMES_PER_SECOND
        calls.append(requested(covered, "separate", speed, reserve_max))
    return [*calls, requested(frames / features.FRAMES_PER_SECOND, "score", speed, reserve_max)]


def on_zero_gpu() -> bool:
    """Whether this process runs on ZeroGPU, as the ``spaces`` package itself decides."""
    try:
        from spaces.config import Config
    except ImportError:
        return False
    return bool(Config.zero_gpu)


QUOTA = (
    "Your share of this Space's free GPU time has run out for now: log in to Hugging Face "
    "(or go PRO) for more, try a shorter VOD, or try again later; the parts already "
    "analysed are kept, so the same VOD picks up where it stopped."
)
NO_GPU = (
    "No GPU was free for this Space just now; try again in a few minutes (the parts already "
    "analysed are kept, so the same VOD picks up where it stopped)."
)
ABORTED = (
    "A GPU step took longer than this Space asked for and was stopped; try again (the parts "
    "already analysed are kept), or try a shorter VOD."
)
QUOTA_TITLES = ("quota exceeded", "illegal duration", "pending credits")  # of spaces' gr.Errors


def refusal(error: Exception) -> Exception:
    """ZeroGPU's ``gr.Error`` (its title says which) → one sentence for the visitor; a bug
    inside the call (spaces names only its class) stays an internal error."""
    title = str(getattr(error, "title", "") or "").lower()
    message = str(getattr(error, "message", error))
    if any(key in title for key in QUOTA_TITLES) or "quota" in message.lower():
        return GpuRefused(QUOTA)
    if "worker error" in title:
        if "aborted" in message.lower():
            return GpuRefused(ABORTED)
        return RuntimeError(f"the GPU call failed with {message}")
    return GpuRefused(NO_GPU)


@dataclass(frozen=True)
class _Raised:
    """A user's mistake found inside a GPU call, carried back as a value (spaces would turn
    any exception but ``gr.Error`` into a bare class name)."""

    error: UserError


def _call(vod_seconds: float, fn: Callable, *args: object) -> object:
    try:
        return fn(*args)
    except UserError as error:
        return _Raised(error)


def runner(reserve_max: float = RESERVE_MAX, speed: GpuSpeed | None = None) -> Callable | None:
    """On ZeroGPU, ``run(vod_seconds, fn, *args)`` → ``fn(*args)`` in one GPU call asking for
    what :func:`requested` says (the engine's ``gpu`` argument); elsewhere None, and the
    library runs in this process."""
    if not on_zero_gpu():
        return None
    import gradio as gr
    import spaces

    speed = speed or gpu_speed()

    def duration(vod_seconds: float, fn: Callable, *_: object) -> int:
        kind = "score" if getattr(fn, "__name__", "") == "score" else "separate"
        return requested(vod_seconds, kind, speed, reserve_max)

    def call(vod_seconds: float, fn: Callable, *args: object) -> object:
        return _call(vod_seconds, fn, *args)  # a new function each time: spaces caches by it

    task = spaces.GPU(duration=duration)(call)

    def run(vod_seconds: float, fn: Callable, *args: object) -> object:
        try:
            outcome = task(vod_seconds, fn, *args)
        except gr.Error as error:
            raise refusal(error) from error
        if isinstance(outcome, _Raised):
            raise outcome.error
        return outcome

    return run
