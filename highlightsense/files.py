"""Files the project writes and reads back: where its cache lives, hashing, atomic replacement."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

CACHE_ENV = "HIGHLIGHTSENSE_CACHE"
HASH_BLOCK = 4 << 20  # bytes read at a time when hashing a file
MAX_HEADER = 1024  # bytes of a cache entry's JSON header read back at most


def cache_dir() -> Path:
    """The project's cache folder (weights, features, downloads): ``$HIGHLIGHTSENSE_CACHE``, else
    ``~/.cache/highlightsense``."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "highlightsense"
    return Path(root)


def hash_file(path: Path, digest: hashlib._Hash | None = None) -> str:
    """The hex digest of a file's bytes (sha256 unless another ``digest`` object is given, which
    may already hold a prefix, as git's blob ids do)."""
    digest = hashlib.sha256() if digest is None else digest
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """A hidden temporary path beside ``target`` to write to; renamed onto ``target`` when the
    block succeeds and removed when it fails, so ``target`` is never seen half-written.

    The temporary name starts with a dot and ends in ``.part``, so nothing globbing for finished
    files (``*.pt`` data, ``*.mp4`` clips) takes it for one: tools must be told the format.
    """
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        yield temporary
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def write_atomic(target: Path, data: bytes | str) -> None:
    """Write ``data`` to ``target`` through :func:`atomic_path`."""
    with atomic_path(target) as temporary:
        temporary.write_bytes(data.encode() if isinstance(data, str) else data)


def read_entry_header(file: BinaryIO, magic: bytes) -> Any:
    """The JSON header of a cache entry (``magic``, a 4-byte little-endian length, the JSON),
    read from ``file``'s start; None when the entry is not one of this kind. Raises ValueError
    for a header that is not JSON (the caller's miss)."""
    if file.read(len(magic)) != magic:
        return None
    (length,) = struct.unpack("<I", file.read(4).rjust(4, b"\0"))
    if length > MAX_HEADER:
        return None
    return json.loads(file.read(length))


def entry_header(magic: bytes, header: dict) -> bytes:
    """The bytes :func:`read_entry_header` reads back as ``header``."""
    text = json.dumps(header).encode()
    return magic + struct.pack("<I", len(text)) + text
