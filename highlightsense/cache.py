"""Cache of the expensive part of a run: separation + features, keyed by input content.

A second run on the same VOD with other selection settings (or in the app, a re-tune) loads the
(2, 80, T) log-mel array from here instead of separating again. The cache is an optimisation
only: what is read back is checked (magic, dtype, shape, size, checksum, finite values) and
anything else is a miss, recomputed and overwritten; a failed write is a warning, never a failed
run. Entries are written to a temporary name and renamed, so a crash never leaves a half-written
entry; the least recently used entries are removed once the cache grows past its size limit.

An entry: ``MAGIC``, a 4-byte little-endian header length, a JSON header
``{"dtype": "<f4", "shape": [2, 80, T], "sha256": <hex of the payload>}``, then the payload.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from pathlib import Path

import numpy as np

from . import features, media
from .files import cache_dir, entry_header, hash_file, read_entry_header, write_atomic

FEATURE_VERSION = 2  # bump when the features or the entry format change: old entries are unused
MAX_BYTES_ENV = "HIGHLIGHTSENSE_CACHE_MAX_GB"
MAX_BYTES_DEFAULT = 4 << 30  # bytes of features kept (a 3-hour VOD is ≈ 300 MB)
MAGIC = b"HSFEAT\x00\x02"  # first bytes of an entry
DTYPE = "<f4"  # little-endian float32
SUFFIX = ".feat"
OLD_SUFFIXES = (".npy",)  # entries of earlier versions, pruned like the others


def content_hash(path: Path) -> str:
    """sha256 of the file's bytes (the cache key must not depend on its name or place)."""
    return hash_file(path)


def feature_key(content: str, producer: str) -> str:
    """One key for (input bytes, what made the stems: separator identity or chosen tracks)."""
    text = f"{content}|{producer}|features-v{FEATURE_VERSION}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def piece_key(key: str, frames: tuple[int, int | None]) -> str:
    """The key of frames [start, end) of entry ``key`` (end None: to the end), for analyses
    made in slices that keep each slice as it is made."""
    start, end = frames
    text = f"{key}|frames {start}-{'end' if end is None else end}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def forget(key: str) -> None:
    """Remove entry ``key`` if it is there (a slice once the whole is kept)."""
    with contextlib.suppress(OSError):
        (_folder() / f"{key}{SUFFIX}").unlink(missing_ok=True)


def _folder() -> Path:
    return cache_dir() / "features"


def _max_frames() -> int:
    """Frames of the longest recording accepted: a longer entry is not ours."""
    return int(media.max_duration() * features.FRAMES_PER_SECOND) + 2


def _read_entry(path: Path) -> np.ndarray | None:
    """The (2, 80, T) float32 array in an entry, or None if anything about it is wrong."""
    if not path.is_file():  # a folder, a pipe or nothing at the entry's path
        return None
    with open(path, "rb") as file:
        header = read_entry_header(file, MAGIC)
        if not isinstance(header, dict):
            return None
        shape = header.get("shape")
        if (
            header.get("dtype") != DTYPE
            or not isinstance(shape, list)
            or len(shape) != 3
            or not all(type(n) is int for n in shape)
            or shape[:2] != [2, features.N_MELS]
            or not 1 <= shape[2] <= _max_frames()
        ):
            return None
        size = 2 * features.N_MELS * shape[2] * np.dtype(DTYPE).itemsize
        payload = file.read(size + 1)
    if len(payload) != size or hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        return None
    spec = np.frombuffer(payload, dtype=DTYPE).reshape(shape).astype(np.float32)
    return spec if np.isfinite(spec).all() else None


def load(key: str) -> np.ndarray | None:
    """The cached (2, 80, T) float32 features, or None (missing, unreadable or damaged)."""
    path = _folder() / f"{key}{SUFFIX}"
    try:
        spec = _read_entry(path)
    except (OSError, ValueError):  # UnicodeDecodeError and JSON errors are ValueErrors
        return None  # a folder in the way, a broken header: a miss, overwritten by store()
    if spec is None:
        return None
    with contextlib.suppress(OSError):  # a read-only cache still serves what it holds
        os.utime(path)  # least recently used goes first
    return spec


def _entry_bytes(spec: np.ndarray) -> bytes:
    payload = np.ascontiguousarray(spec, dtype=DTYPE).tobytes()
    header = {
        "dtype": DTYPE,
        "shape": list(spec.shape),
        "sha256": hashlib.sha256(payload).hexdigest(),
    }
    return entry_header(MAGIC, header) + payload


def store(key: str, spec: np.ndarray) -> bool:
    """Keep ``spec`` (2, 80, T) for next time; returns whether it was written.

    A cache that cannot be written (a full or read-only disk, a folder in the way) only warns:
    the analysis that produced ``spec`` must not be lost to its cache.
    """
    if spec.ndim != 3 or spec.shape[:2] != (2, features.N_MELS):
        raise ValueError(f"features must be (2, {features.N_MELS}, T), got {spec.shape}")
    folder = _folder()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / f"{key}{SUFFIX}", _entry_bytes(spec))
        _prune(folder)
    except OSError as err:
        warnings.warn(
            f"The feature cache in {folder} could not be written ({err.strerror or err}); "
            "the next run on this file will analyse it again.",
            stacklevel=2,
        )
        return False
    return True


def _prune(folder: Path) -> None:
    limit = float(os.environ.get(MAX_BYTES_ENV, 0) or 0) * (1 << 30) or MAX_BYTES_DEFAULT
    entries = [
        entry
        for suffix in (SUFFIX, *OLD_SUFFIXES)
        for entry in folder.glob(f"*{suffix}")
        if entry.is_file() and not entry.name.startswith(".")
    ]
    entries.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    total = 0
    for entry in entries:
        total += entry.stat().st_size
        if total > limit and entry != entries[0]:
            entry.unlink(missing_ok=True)
