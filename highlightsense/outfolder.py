"""The output folder's rules: nothing a user had there is ever deleted, moved or hidden.

A run writes into a hidden staging folder and publishes it at the end, so a failed run never
leaves output that looks complete. The output folder may be missing (it is created), empty, or
an earlier HighlightSense output (recognised by its marker file and by holding nothing but our
own files), which is replaced; anything else is refused with an :class:`OutputError` before any
work starts. An existing folder is reused as it is (its mode and owner are never changed): only
its entries are exchanged.

Staging folders are named ``.<name>.partial-<pid>-<hex>`` (``.old-`` while an earlier output is
being replaced) and hold the marker file, so the ones a killed run left behind are recognisable
and are swept by the next run once their process is gone or they are older than a day.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputError

MARKER = ".highlightsense"  # file in every folder we write: says the folder is ours to replace
MARKER_TEXT = "Written by HighlightSense; a new run with this folder as its output replaces it.\n"
STALE_SECONDS = 24 * 3600.0  # s after which a staging folder is abandoned, whatever its pid
SUMMARY = "highlights.json"  # written last: its presence means the output is complete
OUTPUT_FILES = frozenset({MARKER, "scores.csv", "highlights.csv", SUMMARY, "scores.html",
                          "captions.srt"})  # fmt: skip
OUTPUT_FOLDERS = {
    "clips": re.compile(r"highlight_\d{2,}\.(mp4|m4a|srt|vtt)"),  # captions: .srt, .vtt
    "stems": re.compile(r"(vocals|game)\.wav"),
}
SUMMARY_KEYS = frozenset({"input", "model", "settings", "windows", "highlights"})
MAX_SUMMARY_BYTES = 16 << 20  # bytes of a highlights.json read to recognise an older output
STAGING_NAME = re.compile(r"\.(?P<name>.+)\.(?P<kind>partial|old)-(?P<pid>\d{1,10})-[0-9a-f]{8}")

# What each errno means for a folder, and what the user can do about it.
DISK_ERRORS = {
    errno.ENOSPC: ("its disk is full", "free some space or choose another folder"),
    errno.EDQUOT: ("its disk quota is used up", "free some space or choose another folder"),
    errno.EROFS: ("it is on a read-only disk", "choose a folder you can write to"),
    errno.EACCES: ("permission was denied", "choose a folder you can write to"),
    errno.EPERM: ("the operation was not permitted", "choose a folder you can write to"),
}


def _shown(path: Path) -> str:
    """A folder for a message: printable, on one line."""
    return "`" + "".join(c if c.isprintable() else "?" for c in str(path)) + "`"


def is_disk_error(err: BaseException) -> bool:
    """Whether ``err`` says a folder cannot be written (full, read-only, no permission)."""
    return isinstance(err, OSError) and err.errno in DISK_ERRORS


def disk_error(err: OSError, folder: Path) -> OutputError:
    """One sentence naming ``folder`` for a full, read-only or forbidden disk."""
    reason, advice = DISK_ERRORS.get(err.errno, (err.strerror or "it cannot be written", ""))
    error = OutputError(
        f"Could not write to {_shown(folder)}: {reason}; {advice or 'choose another folder'}."
    )
    error.__cause__ = err
    return error


def tool_disk_error(message: str) -> int | None:
    """The errno a tool's error message reports for its output file, if it is a disk error."""
    for code in DISK_ERRORS:
        if os.strerror(code) in message:
            return code
    return None


# --- recognising our own folders -------------------------------------------------------------


def _is_staging(entry: Path) -> bool:
    """A staging or old-output folder of ours (by its name and its marker)."""
    return (
        STAGING_NAME.fullmatch(entry.name) is not None
        and not entry.is_symlink()
        and entry.is_dir()
        and (entry / MARKER).is_file()
    )


def _holds_only_ours(folder: Path) -> bool:
    for entry in folder.iterdir():
        if entry.is_symlink():
            return False
        if entry.name in OUTPUT_FILES:
            if not entry.is_file():
                return False
        elif entry.name in OUTPUT_FOLDERS:
            pattern = OUTPUT_FOLDERS[entry.name]
            if not entry.is_dir() or not all(
                pattern.fullmatch(child.name) and child.is_file() and not child.is_symlink()
                for child in entry.iterdir()
            ):
                return False
        elif not _is_staging(entry):
            return False
    return True


def _older_summary(folder: Path) -> bool:
    """An output written before the marker existed: recognised by its highlights.json."""
    path = folder / SUMMARY
    try:
        if not path.is_file() or path.stat().st_size > MAX_SUMMARY_BYTES:
            return False
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(summary, dict) and summary.keys() >= SUMMARY_KEYS


def is_ours(folder: Path) -> bool:
    """Whether ``folder`` is an earlier HighlightSense output holding nothing else."""
    try:
        return _holds_only_ours(folder) and ((folder / MARKER).is_file() or _older_summary(folder))
    except OSError:
        return False


def _is_empty(folder: Path) -> bool:
    return all(_is_staging(entry) for entry in folder.iterdir())


def check(target: Path) -> None:
    """Refuse an output folder that holds anything but an earlier output of ours."""
    shown = _shown(target)
    try:
        if target.is_symlink():
            raise OutputError(
                f"The output {shown} is a link; choose a new or empty folder, or an earlier "
                "HighlightSense output."
            )
        if not target.exists():
            return
        if not target.is_dir():
            raise OutputError(
                f"The output {shown} is a file, not a folder; choose a new or empty folder."
            )
        if _is_empty(target) or is_ours(target):
            return
    except OSError as err:
        if is_disk_error(err):
            raise disk_error(err, target) from err
        raise
    raise OutputError(
        f"The output folder {shown} already holds files HighlightSense did not write; "
        "choose a new or empty folder (nothing was changed)."
    )


# --- sweeping what killed runs left ------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid < 2**31  # another user's process, or an impossible pid
    return True


def sweep(folder: Path, now: float | None = None) -> list[Path]:
    """Remove our abandoned staging folders in ``folder``; returns what was removed.

    Only folders with our name pattern and marker, whose process is gone (or which are older
    than :data:`STALE_SECONDS`, the pid having been reused), and never our own process's.
    """
    now = time.time() if now is None else now
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = STAGING_NAME.fullmatch(entry.name)
        if match is None or not _is_staging(entry):
            continue
        pid = int(match["pid"])
        with contextlib.suppress(OSError):
            old = now - entry.lstat().st_mtime > STALE_SECONDS
            if pid != os.getpid() and (old or not _pid_alive(pid)):
                shutil.rmtree(entry)
                removed.append(entry)
    return removed


# --- staging and publishing ------------------------------------------------------------------


def _new_folder(parent: Path, name: str, kind: str) -> Path:
    """A fresh hidden folder of ours (mode from the umask, like any folder the user makes)."""
    folder = parent / f".{name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"
    folder.mkdir()
    (folder / MARKER).write_text(MARKER_TEXT)
    return folder


def stage(target: Path) -> Path:
    """Check ``target``, sweep abandoned staging folders, and make a staging folder for it.

    The staging folder lies inside ``target`` when it exists (so only ``target`` needs to be
    writable), beside it otherwise.
    """
    target = Path(os.path.abspath(target))
    check(target)
    try:
        sweep(target.parent)
        if target.is_dir():
            sweep(target)
            return _new_folder(target, target.name, "partial")
        target.parent.mkdir(parents=True, exist_ok=True)
        return _new_folder(target.parent, target.name, "partial")
    except OSError as err:
        if is_disk_error(err):
            folder = target if target.is_dir() else target.parent
            raise disk_error(err, folder) from err
        if isinstance(err, NotADirectoryError | FileExistsError):
            raise OutputError(
                f"The output {_shown(target)} cannot be made: a file is in the way of one of its "
                "folders; choose another folder."
            ) from err
        raise


def discard(staging: Path) -> None:
    """Remove a staging folder after a failed or cancelled run."""
    if _is_staging(staging):
        shutil.rmtree(staging, ignore_errors=True)


def _move_entries(source: Path, dest: Path, skip: frozenset[str] = frozenset()) -> None:
    # highlights.json last: once it is there, the output is complete.
    entries = [e for e in source.iterdir() if e.name not in skip and not _is_staging(e)]
    for entry in sorted(entries, key=lambda e: e.name == SUMMARY):
        os.replace(entry, dest / entry.name)


def publish(staging: Path, target: Path) -> None:
    """Put the complete output in ``staging`` in place at ``target``.

    ``target`` is checked again (something may have appeared there while the run worked). A
    missing target becomes the staging folder; an existing one (empty or ours) keeps its own
    inode, mode and owner, and only its entries are exchanged.
    """
    target = Path(os.path.abspath(target))
    check(target)
    try:
        if not target.exists() and staging.parent == target.parent:
            staging.rename(target)
            return
        target.mkdir(parents=True, exist_ok=True)
        old = _new_folder(target, target.name, "old")
        _move_entries(target, old)  # only our own entries: check() said so
        _move_entries(staging, target, skip=frozenset({MARKER}))
        os.replace(staging / MARKER, target / MARKER)
        shutil.rmtree(old)
        shutil.rmtree(staging)
    except OSError as err:
        if is_disk_error(err):
            raise disk_error(err, target) from err
        raise


@contextlib.contextmanager
def writing(staging: Path, target: Path) -> Iterator[None]:
    """Turn a disk error while writing into ``staging`` into one naming ``target``.

    The staging folder's name is internal: the user chose ``target``. An error that names no
    file (a write into an open file) is the output's too: the cache only warns.
    """
    try:
        yield
    except OutputError as err:
        cause = err.__cause__
        if isinstance(cause, OSError) and _inside(cause.filename, staging):
            raise disk_error(cause, target) from cause
        raise
    except OSError as err:
        if is_disk_error(err) and (err.filename is None or _inside(err.filename, staging)):
            raise disk_error(err, target) from err
        raise


def _inside(filename: object, folder: Path) -> bool:
    if not isinstance(filename, str | os.PathLike):
        return False
    path = Path(os.path.abspath(filename))
    return path == folder or folder in path.parents
