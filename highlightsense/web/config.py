"""The deployment's settings, read from the environment when the app is built."""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from .. import tools
from . import library, zerogpu

WORKDIR_ENV = "HIGHLIGHTSENSE_WORKDIR"
TTL_ENV = "HIGHLIGHTSENSE_JOB_TTL"
JOB_MINUTES_ENV = "HIGHLIGHTSENSE_JOB_MINUTES"
MAX_DISK_ENV = "HIGHLIGHTSENSE_MAX_DISK_GB"
MAX_UPLOAD_ENV = "HIGHLIGHTSENSE_MAX_UPLOAD"
QUEUE_SIZE_ENV = "HIGHLIGHTSENSE_QUEUE_SIZE"
GPU_SECONDS_ENV = "HIGHLIGHTSENSE_GPU_SECONDS"
RETRY_ENV = "HIGHLIGHTSENSE_MODEL_RETRY"

TTL_HOURS = 6.0  # a job's results are kept this long after their last use
JOB_MINUTES = 60.0  # wall-clock limit of one job
MAX_DISK_GB = 40.0  # the work dir and Gradio's uploads together
MAX_UPLOAD = "8gb"  # Gradio's upload limit: a 6-hour 720p VOD fits
SIZE_UNITS = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4}  # as Gradio's
QUEUE_SIZE = 20  # jobs waiting at most; more are turned away with "queue full"
# s one ZeroGPU call may reserve, counted as ZeroGPU counts them (times its duration factor):
# above an unauthenticated visitor's whole day (2 min) every call of theirs would be refused
GPU_RESERVE_RANGE = (30.0, zerogpu.DAILY_QUOTA["unauthenticated"])


def env_float(name: str, default: float) -> float:
    text = os.environ.get(name, "")
    try:
        value = float(text) if text else default
    except ValueError:
        raise SystemExit(f"{name} must be a number (got {text!r}).") from None
    if not math.isfinite(value) or value <= 0:
        raise SystemExit(f"{name} must be a positive number (got {text!r}).")
    return value


@dataclass(frozen=True)
class Config:
    """The deployment's settings, from the environment (documented in the README)."""

    work_dir: Path
    ttl: float  # s
    job_limit: float  # s
    max_disk: float  # bytes
    max_upload: str
    queue_size: int
    gpu_limit: float  # s
    retry_every: float  # s
    device: str

    @classmethod
    def from_env(cls) -> Config:
        return cls(
            work_dir=work_dir(),
            ttl=env_float(TTL_ENV, TTL_HOURS) * 3600,
            job_limit=env_float(JOB_MINUTES_ENV, JOB_MINUTES) * 60,
            max_disk=env_float(MAX_DISK_ENV, MAX_DISK_GB) * 1e9,
            max_upload=upload_limit(),
            queue_size=int(env_float(QUEUE_SIZE_ENV, QUEUE_SIZE)),
            gpu_limit=gpu_reserve(),
            retry_every=env_float(RETRY_ENV, library.RETRY_SECONDS),
            device="cuda" if zerogpu.on_zero_gpu() else _auto_device(),
        )


def upload_limit() -> str:
    """``HIGHLIGHTSENSE_MAX_UPLOAD`` as Gradio reads ``launch(max_file_size=…)``, checked."""
    text = (os.environ.get(MAX_UPLOAD_ENV) or MAX_UPLOAD).replace(" ", "").lower()
    if not re.fullmatch(r"[1-9]\d*(b|kb|mb|gb|tb)", text):
        raise SystemExit(f"{MAX_UPLOAD_ENV} must be a size such as 500mb or 8gb (got {text!r}).")
    return text


def size_in_bytes(text: str) -> int:
    """A size :func:`upload_limit` accepted → bytes."""
    unit = text.lstrip("0123456789")
    return int(text[: len(text) - len(unit)]) * SIZE_UNITS[unit]


def gpu_reserve() -> float:
    """The most seconds one ZeroGPU call may reserve (``HIGHLIGHTSENSE_GPU_SECONDS``)."""
    value = env_float(GPU_SECONDS_ENV, zerogpu.RESERVE_MAX)
    low, high = GPU_RESERVE_RANGE
    if not low <= value <= high:
        raise SystemExit(
            f"{GPU_SECONDS_ENV} must be between {low:.0f} and {high:.0f} seconds (got {value:g}): "
            "ZeroGPU refuses longer calls to visitors who are not logged in."
        )
    return value


def _auto_device() -> str:
    from ..runtime import resolve_device

    return str(resolve_device("auto"))


def work_dir() -> Path:
    """The jobs' folder: inside the temp dir or the app's folder, where Gradio serves from."""
    root = Path(os.environ.get(WORKDIR_ENV) or Path(tempfile.gettempdir()) / "highlightsense-app")
    root = root.expanduser().resolve()
    if not any(root.is_relative_to(Path(p).resolve()) for p in (tempfile.gettempdir(), ".")):
        raise SystemExit(
            f"{WORKDIR_ENV}={root} is outside the temp dir ({tempfile.gettempdir()}) and the "
            "app's folder; Gradio would refuse to serve the clips from there."
        )
    return root


# s between two looks at an idle queue and at its jobs' progress: Gradio's own intervals on
# Windows. Elsewhere it looks every 1 ms and 10 ms, which kept an idle app at ~5 % of a core.
QUEUE_IDLE_POLL, PROGRESS_POLL = 0.05, 0.1


def calm_queue(demo: gr.Blocks) -> None:
    """Make ``demo``'s queue (after ``demo.queue()``) look for work less often when idle: a job
    starts up to 50 ms later, and progress reaches the page 10 times a second."""
    demo._queue.sleep_when_free = QUEUE_IDLE_POLL
    demo._queue.progress_update_sleep_when_free = PROGRESS_POLL


def lend_ffprobe() -> None:
    """Gradio's video component probes each clip with the ffprobe on PATH (and fails where
    there is an ffmpeg but no ffprobe); lend it the one the library uses."""
    if shutil.which("ffprobe") is None:
        try:
            folder = Path(tools.ffprobe_path()).parent
        except Exception:
            return
        os.environ["PATH"] = f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"
