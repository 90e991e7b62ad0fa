"""Cache of the expensive part of a run: separation + features, keyed by input content.

A second run on the same VOD with other selection settings (or in the app, a re-tune) loads the
(2, 80, T) log-mel array from here instead of separating again. Entries are written to a
temporary name and renamed, so a crash never leaves a half-written entry; the oldest entries are
removed once the cache grows past its size limit.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

from .weights import cache_dir

FEATURE_VERSION = 1  # bump when the features change, so old entries are not reused
HASH_BLOCK = 4 << 20  # bytes read at a time when hashing the input
MAX_BYTES_ENV = "HIGHLIGHTSENSE_CACHE_MAX_GB"
MAX_BYTES_DEFAULT = 4 << 30  # bytes of features kept (a 3-hour VOD is ≈ 300 MB)


def content_hash(path: Path) -> str:
    """sha256 of the file's bytes (the cache key must not depend on its name or place)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def feature_key(content: str, producer: str) -> str:
    """One key for (input bytes, what made the stems: separator identity or chosen tracks)."""
    text = f"{content}|{producer}|features-v{FEATURE_VERSION}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _folder() -> Path:
    return cache_dir() / "features"


def load(key: str) -> np.ndarray | None:
    """The cached (2, 80, T) float32 features, or None."""
    path = _folder() / f"{key}.npy"
    try:
        spec = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    os.utime(path)  # least recently used goes first
    return spec


def store(key: str, spec: np.ndarray) -> None:
    folder = _folder()
    folder.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=folder, prefix=".part-", suffix=".npy")
    try:
        with os.fdopen(handle, "wb") as file:
            np.save(file, np.ascontiguousarray(spec, dtype=np.float32), allow_pickle=False)
        os.replace(tmp, folder / f"{key}.npy")
    finally:
        Path(tmp).unlink(missing_ok=True)
    _prune(folder)


def _prune(folder: Path) -> None:
    limit = float(os.environ.get(MAX_BYTES_ENV, 0) or 0) * (1 << 30) or MAX_BYTES_DEFAULT
    entries = sorted(folder.glob("*.npy"), key=lambda p: p.stat().st_mtime, reverse=True)
    total = 0
    for entry in entries:
        total += entry.stat().st_size
        if total > limit and entry != entries[0]:
            entry.unlink(missing_ok=True)
