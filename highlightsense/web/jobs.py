"""A visitor's jobs: their progress, their limits (time, disk) and how long they are kept.

A job exists only once its analysis starts (a queued click is no job yet), so nobody's traffic
can evict a job that waits or runs. A finished job is kept until it expires, until its visitor's
next job succeeds, or, oldest first, when the disk ceiling needs room; never for other
visitors' traffic alone: when the registry is full of protected jobs, new work is refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import Cancelled, UserError
from ..files import write_atomic
from ..progress import eta_seconds
from .controls import BadInput, Picks
from .messages import JobTimeout

JOB_ID = re.compile(r"[0-9a-f]{32}")
MAX_JOBS = 64  # jobs kept at once (an Analysis is ≈ 10 MB for 6 hours of VOD)
KEEP_RENDERS = 2  # a job's latest selections kept on disk, so a download in flight survives
PROGRESS_EVERY = 0.5  # s between two writes of a job's progress file

# Plain stage names, each with the share of the bar it ends at (the analysis takes most of it).
STAGES = (
    ("Downloading the VOD", "fetch"),
    ("Separating voice from game sound", "features"),
    ("Scoring every moment", "score"),
    ("Cutting the clips", "clips"),
)


class Busy(UserError):
    """No room for new work right now (too many kept jobs, or the disk ceiling)."""


@dataclass(eq=False)
class Job:
    """One analysis and its latest selection, kept on the server under a random id."""

    id: str
    folder: Path
    owner: str  # the visitor's token ("api" for /detect callers)
    used: float = field(default_factory=time.time)  # last use, for expiry
    state: str = "running"  # running → done | failed | cancelled
    message: str = ""  # why it failed or was cancelled
    name: str = ""  # the VOD's file name, as its visitor knows it
    source: Path | None = None  # the VOD kept for a re-analysis with another clip length
    window: float = 0.0  # s, the clip length it was analysed with
    analysis: Any = None  # highlightsense.results.Analysis
    result: Any = None  # highlightsense.results.Result of the selection shown
    picks: Picks | None = None  # the selection shown
    exact: bool = True  # the clips shown are the cuts asked for (not quick previews)
    files: list[Path] = field(default_factory=list)  # the downloads of the selection shown
    renders: int = 0
    generation: int = 0  # bumped by each new selection: an older render in flight stops
    framing: Any = None  # web.framing.Framing of the vertical clips asked for; None: none
    frame: Any = None  # (H, W, 3) uint8 preview frame for the vertical choice, made once
    facecam: Any = None  # faces.FacecamSuggestion, asked for once
    chat: Any = None  # chat.ChatSignal of the chat replay given with the VOD; None: audio alone
    captions: str | None = None  # burn, soft or files (settings.CAPTION_MODES); None: none
    # the visitor's corrected transcripts, by the clip's span (ms): a re-tune that picks the
    # same span again keeps its correction (web.library.correct_caption bounds how many)
    corrections: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def cancel_flag(self) -> Path:
        """A file, not a threading.Event: on ZeroGPU the analysis runs in another process."""
        return self.folder / "cancel"

    @property
    def progress_file(self) -> Path:
        return self.folder / "progress.json"

    def progress(self, limit: float) -> JobProgress:
        return JobProgress(self.cancel_flag, self.progress_file, time.time(), limit)

    def read_progress(self) -> dict:
        try:
            return json.loads(self.progress_file.read_text())
        except (OSError, ValueError):
            return {"stage": "Starting", "fraction": 0.0, "eta": None}


class JobProgress:
    """The library's ``progress(fraction, message)`` for one job, as a file the page polls (so
    it survives a reload, and reaches us from ZeroGPU's process). Raises :class:`Cancelled`
    once the cancel flag exists and :class:`JobTimeout` past the wall-clock ``limit``: raising
    inside progress stops the library and kills its ffmpeg runs. Picklable."""

    def __init__(
        self,
        flag: Path,
        file: Path,
        began: float,
        limit: float,
        start: float = 0.0,
        width: float = 1.0,
        stages: tuple[tuple[str, float], ...] = (("Working", 1.0),),
    ):
        self.flag, self.file, self.began, self.limit = flag, file, began, limit
        self.start, self.width, self.stages = start, width, stages
        self._written = 0.0

    def part(self, start: float, width: float, stages: tuple[tuple[str, float], ...]):
        """The span [start, start + width) of this bar; ``stages``: (plain name, the part's own
        fraction it ends at), so the library's many messages become a few plain names."""
        return JobProgress(
            self.flag,
            self.file,
            self.began,
            self.limit,
            self.start + self.width * start,
            self.width * width,
            stages,
        )

    def check(self) -> None:
        if self.flag.exists():
            raise Cancelled("The job was cancelled.")
        if time.time() - self.began > self.limit:
            raise JobTimeout(
                f"This VOD took longer than the {self.limit / 60:.0f} minutes this app gives "
                "one job; try a shorter VOD."
            )

    def __call__(self, fraction: float, message: str = "") -> None:
        self.check()
        fraction = min(max(float(fraction), 0.0), 1.0)
        stage = next((name for name, end in self.stages if fraction <= end), self.stages[-1][0])
        now = time.time()
        if now - self._written < PROGRESS_EVERY and fraction < 1.0:
            return
        self._written = now
        overall = self.start + self.width * fraction
        elapsed = now - self.began
        eta = eta_seconds(overall, elapsed)
        record = {"stage": stage, "fraction": overall, "eta": eta, "elapsed": elapsed}
        # the job may have been dropped meanwhile; the check above stops it next time
        with contextlib.suppress(OSError):
            write_atomic(self.file, json.dumps(record))


def new_token() -> str:
    return secrets.token_hex(16)


def is_token(value: object) -> bool:
    return isinstance(value, str) and JOB_ID.fullmatch(value) is not None


def folder_bytes(folder: Path) -> int:
    """Bytes in the files under ``folder`` (hard links counted once)."""
    seen, total = set(), 0
    for path in _files(folder):
        try:
            stat = path.stat()
        except OSError:
            continue
        if (stat.st_dev, stat.st_ino) not in seen:
            seen.add((stat.st_dev, stat.st_ino))
            total += stat.st_size
    return total


def _files(folder: Path) -> Iterator[Path]:
    for root, _, names in os.walk(folder):
        for name in names:
            yield Path(root, name)


class Jobs:
    """The registry: jobs by id, dropped with their folders ``ttl`` s after their last use."""

    def __init__(
        self,
        root: Path,
        ttl: float,
        max_bytes: float,
        uploads: Path | None = None,
        orphan_age: float = 3600.0,
        capacity: int = MAX_JOBS,
    ):
        self.root, self.ttl, self.max_bytes, self.uploads = root, ttl, max_bytes, uploads
        self.orphan_age, self.capacity = orphan_age, capacity
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def start(self, owner: str, needed: int = 0) -> Job:
        """A new running job for ``owner``, if there is room for ``needed`` more bytes."""
        self.prune()
        self.make_room(needed)
        with self._lock:
            if len(self._jobs) >= self.capacity:
                self._evict_one(owner)
            job_id = secrets.token_hex(16)
            job = Job(job_id, self.root / f"job-{job_id}", owner)
            job.folder.mkdir(parents=True)
            self._jobs[job_id] = job
        return job

    def _evict_one(self, owner: str) -> None:
        """Room for one job: the oldest finished job of a visitor who keeps more than one, else
        refuse, unless ``owner`` has results its new job replaces on success (a visitor holds
        two jobs at most). Another visitor's latest results are never taken for traffic."""
        latest: dict[str, Job] = {}  # each visitor's newest results
        for job in self._jobs.values():
            if job.state == "done" and job.used >= latest.get(job.owner, job).used:
                latest[job.owner] = job
        spare = [
            job
            for job in self._jobs.values()
            if job.state != "running" and (latest.get(job.owner) is not job or job.owner == "api")
        ]
        if not spare and owner in latest and owner != "api":
            return
        if not spare:
            raise Busy("This app is busy with other visitors' work; try again in a few minutes.")
        self._remove(min(spare, key=lambda job: job.used))

    def find(self, job_id: object) -> Job | None:
        """The job, touched, or None for anything that is not a live job id."""
        if not is_token(job_id):
            return None
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                job.used = time.time()
        return job

    def get(self, job_id: object) -> Job:
        if not is_token(job_id):
            raise BadInput("That job id is not valid; press Find highlights to start a new job.")
        job = self.find(job_id)
        if job is None:
            raise BadInput(
                "That job is not known here (results expire after a while); "
                "press Find highlights to analyse the VOD again."
            )
        return job

    def succeeded(self, job: Job) -> None:
        """``job`` is done: its visitor's older jobs are replaced by it."""
        job.state = "done"
        with self._lock:
            older = [
                other
                for other in self._jobs.values()
                if other.owner == job.owner and other is not job and other.state != "running"
            ]
            if job.owner != "api":
                for other in older:
                    self._remove(other)

    def drop(self, job: Job) -> None:
        with self._lock:
            self._remove(job)

    def _remove(self, job: Job) -> None:
        self._jobs.pop(job.id, None)
        shutil.rmtree(job.folder, ignore_errors=True)

    def usage(self) -> int:
        """Bytes the app holds on disk: its work dir and Gradio's uploads."""
        total = folder_bytes(self.root)
        if self.uploads is not None and self.uploads.is_dir():
            total += folder_bytes(self.uploads)
        return total

    def make_room(self, needed: int = 0) -> None:
        """Drop finished jobs, oldest first, until the disk ceiling leaves ``needed`` bytes;
        refuse new work when even that is not enough."""
        while self.usage() + needed > self.max_bytes:
            with self._lock:
                idle = [job for job in self._jobs.values() if job.state != "running"]
                if not idle:
                    break
                self._remove(min(idle, key=lambda job: job.used))
        if self.usage() + needed > self.max_bytes:
            raise Busy("The app's disk is full right now; try again later, or a shorter VOD.")

    def prune(self) -> None:
        """Expired jobs, stale folders of an earlier run and orphaned uploads go."""
        now = time.time()
        with self._lock:
            for job in list(self._jobs.values()):
                if job.state != "running" and now - job.used > self.ttl:
                    self._remove(job)
            known = {job.folder for job in self._jobs.values()}
        for folder in self.root.glob("job-*"):
            try:
                stale = folder not in known and now - folder.stat().st_mtime > self.ttl
            except OSError:
                continue
            if stale:
                shutil.rmtree(folder, ignore_errors=True)
        self.sweep_uploads(now)

    def sweep_uploads(self, now: float) -> None:
        """Uploads no job holds (a job hard-links its input) older than ``orphan_age``: aborted,
        refused or replaced uploads, and copies of files Gradio served."""
        if self.uploads is None or not self.uploads.is_dir():
            return
        for path in _files(self.uploads):
            try:
                stat = path.stat()
                if stat.st_nlink == 1 and now - stat.st_mtime > self.orphan_age:
                    path.unlink()
            except OSError:
                continue
        for root, names, _ in os.walk(self.uploads, topdown=False):
            for name in names:
                with contextlib.suppress(OSError):
                    Path(root, name).rmdir()  # only empty ones


def keep_input(job: Job, path: Path) -> Path:
    """A hard link to the upload in the job's folder, so it outlives the sweeps of uploads for
    as long as the job lives; the upload itself where linking is impossible."""
    target = job.folder / "input" / path.name
    target.parent.mkdir(exist_ok=True)
    try:
        os.link(path, target)
    except OSError:
        return path
    return target
