"""Where and how the models run: the device, the worker / thread / batch plan, freed memory.

Resolved once per :class:`~highlightsense.engine.Engine` (and once per training run), then passed
on as what was resolved.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .errors import SettingsError
from .progress import Progress

MAX_CPU_WORKERS = 4  # model calls in flight at once on a CPU (each holds a segment's activations)
GPU_SEGMENTS = 8  # Demucs segments per forward on a GPU
GPU_WINDOWS = 64  # CRNN windows per forward on a GPU
TRIM_BATCHES = 4  # scoring batches between two releases of freed memory


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` → the GPU of this process when there is one, else the CPU; ``cuda`` without a GPU
    falls back to the CPU with a warning; ``cuda:N`` and ``cpu`` as given."""
    available = torch.cuda.is_available()
    if name == "auto":
        return torch.device("cuda", local_rank) if available else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise SettingsError(f"Unknown device {name!r}: use auto, cpu, cuda or cuda:N.") from exc
    if device.type == "cuda" and not available:
        warnings.warn("No CUDA GPU is available; running on the CPU instead.", stacklevel=2)
        return torch.device("cpu")
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", local_rank)
    return device


@dataclass(frozen=True)
class Plan:
    """How model calls are spread: ``workers`` threads with ``threads`` torch threads each,
    ``segments`` Demucs segments and ``windows`` CRNN windows per forward."""

    workers: int
    threads: int
    segments: int
    windows: int

    @classmethod
    def for_device(cls, device: str, batch_size: int | None = None) -> Plan:
        """On a CPU the cores torch would use are shared out as single-threaded workers, each
        running its own segment or window: one multi-threaded forward synchronises its threads at
        every operation, which costs more than it gains on small operations and stalls whenever
        another process takes a core (benchmarks/README.md has the figures); bigger batches gain
        nothing there. A GPU runs one big batch at a time."""
        cores = torch.get_num_threads()
        if torch.device(device).type != "cpu":
            segments, windows = batch_size or GPU_SEGMENTS, batch_size or GPU_WINDOWS
            return cls(workers=1, threads=cores, segments=segments, windows=windows)
        workers = min(cores, MAX_CPU_WORKERS)
        per_call = batch_size or workers
        return cls(workers, max(1, cores // workers), segments=per_call, windows=per_call)


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``count`` for the block (it is process-wide)."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, where the process has one (Linux with glibc)."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):  # another C library, or no dlopen(NULL)
        return None


def release_freed_memory() -> None:
    """Hand the pages of freed heap memory back to the system.

    Separation allocates and frees buffers of many sizes; glibc keeps the holes they leave, so
    without this the resident size grew with the VOD's length (≈ 18 MB per minute of audio,
    though nothing stayed alive: malloc_trim brought a 15-minute run from 847 to 433 MB).
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def trimming(chunks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """The chunks, with freed memory released before each (once per chunk of decoded audio)."""
    for chunk in chunks:
        release_freed_memory()
        yield chunk


def trimming_progress(progress: Progress | None) -> Progress:
    """``progress``, releasing freed memory every TRIM_BATCHES calls (scoring calls it after
    each batch; trimming after every one cost 15 % of the scoring time)."""
    calls = itertools.count(1)

    def report(fraction: float, message: str) -> None:
        if next(calls) % TRIM_BATCHES == 0:
            release_freed_memory()
        if progress is not None:
            progress(fraction, message)

    return report
