"""Many VODs in one run: ``batch(inputs, out_dir, settings, selection)``.

The inputs (files, folders searched recursively, Twitch / YouTube links, channel video pages and
playlists, ``@list.txt`` files) are expanded into jobs, each analysed into its own folder of
``out_dir`` in exactly :func:`highlightsense.pipeline.detect`'s layout. What is done is kept in a
``sqlite3`` database in ``out_dir`` (committed once a VOD's folder is in place), so running the
same command again skips the VODs already done with the same settings and redoes the failed and
interrupted ones. One broken VOD never stops the batch: its row carries its sentence.

On one machine the work overlaps: while VOD k is separated and scored (one at a time: separation
takes every core), VOD k-1's clips are cut and its tables written in a thread, and VOD k+1 is
downloaded and probed in another. :mod:`highlightsense.batch_ray` runs the same steps on a Ray
cluster; :mod:`highlightsense.batch_report` writes the report.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import outfolder, pipeline, sources
from .engine import Engine
from .errors import Cancelled, OutputError, SettingsError, SourceError, UserError
from .progress import Progress
from .results import Analysis
from .settings import AnalysisSettings, Selection

# What a folder is searched for: the kinds the app's upload box accepts.
MEDIA_SUFFIXES = frozenset(
    {".mp4", ".mkv", ".mov", ".webm", ".flv", ".ts", ".m4a", ".wav", ".mp3", ".ogg"}
)
MAX_VODS = 100_000  # jobs in one batch at most (a 10 000-line list is fine)
MAX_LINE_CHARS = 4096  # characters of one line of a list file
MAX_LIST_BYTES = 64 << 20  # bytes of one list file
MAX_CHANNEL_VODS = 1000  # VODs a channel page or playlist expands to at most
MAX_DIGEST = 1000  # moments in the digest at most
MAX_FOLDER_NAME = 80  # characters of a VOD's folder name (before the -2, -3 … suffix)
MARKER = ".highlightsense-batch"  # file in a batch output: says the folder is ours
MARKER_TEXT = "A HighlightSense batch output; running the same batch again resumes it.\n"
STATE = ".batch.sqlite3"  # the batch's state (which VODs are done, with which settings)
OWN_ENTRIES = frozenset({MARKER, STATE, f"{STATE}-journal"})
ERROR_CHARS = 300  # characters of an error sentence kept in a row
INTERNAL = "an internal error stopped this VOD ({}); please report it"

DONE, FAILED, SKIPPED = "done", "failed", "skipped"  # a row's status (skipped: done before)

CHANNEL_EXTRACTORS = ["twitch:videos", "youtube:tab"]  # yt-dlp extractors of VOD lists


@dataclass(frozen=True)
class Job:
    """One VOD to analyse: ``source`` is a local path or a canonical link, ``key`` is what
    makes two inputs the same VOD (the real path, or the link)."""

    source: str
    key: str
    error: str = ""  # set when the input could not be used at all (a bad line of a list)


@dataclass
class VodRow:
    """One VOD's line of the report (batch.csv / batch.json) and of the state database."""

    source: str
    folder: str  # relative to the batch output
    status: str  # done, failed or skipped (done by an earlier run with the same settings)
    duration_sec: float | None = None
    seconds: float | None = None  # wall time this VOD took
    highlights: int = 0
    top_start_sec: float | None = None
    top_confidence: float | None = None
    error: str = ""
    media: str = ""  # the analysed file (a link's download), for the digest's timelines
    picks: list[dict[str, Any]] = field(default_factory=list)  # highlights.csv's rows + why

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class BatchResult:
    rows: list[VodRow]  # one per distinct input, in input order
    out_dir: Path
    duplicates: int = 0  # inputs given more than once (analysed once)
    report_paths: list[Path] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(row.status == FAILED for row in self.rows)


# --- inputs ----------------------------------------------------------------------------------


def _shown(text: str) -> str:
    return sources._shown(text)


def is_channel_link(text: str) -> bool:
    """A Twitch channel's videos page or a YouTube playlist (pure: no network)."""
    try:
        check_channel_link(text)
    except SourceError:
        return False
    return True


def check_channel_link(text: str) -> str:
    """The canonical URL of a Twitch channel's videos page or a YouTube playlist."""
    from urllib.parse import parse_qs, urlsplit

    refused = SourceError(
        f"{_shown(text)} is not a channel's videos page (https://www.twitch.tv/<name>/videos) "
        "or a YouTube playlist (https://www.youtube.com/playlist?list=<id>)."
    )
    stripped = text.strip()
    if not stripped.isascii() or len(stripped) > sources.MAX_URL_LENGTH:
        raise refused
    parts = urlsplit(stripped if "://" in stripped else "https://" + stripped)
    host = (parts.hostname or "").rstrip(".")
    if parts.scheme != "https" or "@" in parts.netloc:
        raise refused
    name = parts.path.strip("/").split("/")
    channel = len(name) == 2 and name[1] == "videos" and name[0].replace("_", "").isalnum()
    if host in sources.TWITCH_HOSTS and channel and len(name[0]) <= 25:
        return f"https://www.twitch.tv/{name[0]}/videos"
    if host in sources.YOUTUBE_HOSTS and parts.path.rstrip("/") == "/playlist":
        lists = parse_qs(parts.query).get("list", [])
        if len(lists) == 1 and lists[0].replace("-", "").replace("_", "").isalnum():
            return f"https://www.youtube.com/playlist?list={lists[0]}"
    raise refused


def channel_entries(url: str, limit: int) -> list[dict[str, Any]]:
    """yt-dlp's flat list of a channel page's or playlist's videos (newest first, ≤ limit)."""
    import yt_dlp

    params = {
        "extract_flat": "in_playlist",
        "playlistend": limit,
        "allowed_extractors": CHANNEL_EXTRACTORS,
        "socket_timeout": sources.SOCKET_TIMEOUT,
        "cachedir": False,
        "quiet": True,
        "noprogress": True,
        "logger": sources._YtDlpLog(),
    }
    try:
        with yt_dlp.YoutubeDL(params) as ydl:
            info = ydl.extract_info(url, download=False)
    except yt_dlp.utils.YoutubeDLError as err:
        raise sources._download_error(url, err) from err
    return list(info.get("entries") or [])[:limit]


def _published(entry: dict[str, Any]) -> datetime.date | None:
    """The day a flat entry says its video was published, if it says."""
    stamp, day = entry.get("timestamp"), str(entry.get("upload_date") or "")
    if isinstance(stamp, int | float):
        return datetime.datetime.fromtimestamp(stamp, datetime.timezone.utc).date()
    if len(day) == 8 and day.isdigit():
        return datetime.datetime.strptime(day, "%Y%m%d").date()
    return None


def vod_links(entries: Iterable[dict[str, Any]], since: datetime.date | None) -> list[str]:
    """The VOD links among yt-dlp's flat entries, published on or after ``since`` when they
    say when (entries that do not say are kept)."""
    links = []
    for entry in entries:
        url = entry.get("url") or entry.get("webpage_url") or ""
        try:
            link = sources.check_url(str(url))
        except SourceError:
            continue
        day = _published(entry)
        if since is None or day is None or day >= since:
            links.append(link)
    return links


def _media_in(folder: Path, skip: Path) -> Iterator[Path]:
    """Media files under ``folder`` (sorted, hidden entries and ``skip`` left out)."""
    try:
        entries = sorted(folder.iterdir())
    except OSError as err:
        shown = _shown(str(folder))
        raise UserError(f"Could not read the folder {shown} ({err.strerror}).") from err
    for entry in entries:
        if entry.name.startswith(".") or entry.absolute() == skip or entry.is_symlink():
            continue
        if entry.is_dir():
            yield from _media_in(entry, skip)
        elif entry.suffix.lower() in MEDIA_SUFFIXES and entry.is_file():
            yield entry


def _file_job(path: Path, error: str = "") -> Job:
    return Job(str(path), os.path.realpath(path), error)


def _line_job(line: str, number: int, list_file: Path, base: Path) -> Job:
    """One line of a list file: a file (relative to the list's folder) or a link."""
    where = f"line {number} of {list_file.name}"
    if sources.is_url(line):
        try:
            link = sources.check_url(line)
        except SourceError as err:
            return Job(line, f"{where}:{line}", f"{where}: {err}")
        return Job(link, link)
    path = (base / Path(line).expanduser()).absolute()
    if not path.is_file():
        return Job(
            line,
            f"{where}:{line}",
            f"{where}: {_shown(line)} is neither a file nor a supported link; "
            "fix or remove the line.",
        )
    return _file_job(path)


def _list_jobs(list_file: Path) -> Iterator[Job]:
    """Stream a list file: one file or link per line, ``#`` comments and blank lines ignored."""
    try:
        size = list_file.stat().st_size
        handle = open(list_file, encoding="utf-8", errors="replace")  # noqa: SIM115
    except OSError as err:
        raise UserError(
            f"Could not read the list {_shown(str(list_file))} ({err.strerror}); "
            "give a text file with one file or link per line."
        ) from err
    if size > MAX_LIST_BYTES:
        handle.close()
        raise UserError(
            f"The list {_shown(str(list_file))} is larger than {MAX_LIST_BYTES >> 20} MB; "
            "split it into smaller lists."
        )
    with handle:
        for number, raw in enumerate(iter(lambda: handle.readline(MAX_LINE_CHARS + 1), ""), 1):
            if len(raw) > MAX_LINE_CHARS and not raw.endswith("\n"):
                handle.readline()  # the rest of an overlong line, up to the list's byte limit
                yield Job(
                    raw[:40], f"line {number}", f"line {number} of {list_file.name} is too long."
                )
                continue
            line = raw.strip()
            line = "" if line.startswith("#") else line.split(" #", 1)[0].strip()
            if line:
                yield _line_job(line, number, list_file, list_file.parent)


def expand(
    inputs: Iterable[str | os.PathLike],
    *,
    out_dir: Path,
    limit: int = MAX_CHANNEL_VODS,
    since: datetime.date | None = None,
) -> tuple[list[Job], int]:
    """The jobs of ``inputs`` in order, each VOD once, and how many duplicates were dropped.

    A top-level input that gives nothing (a missing file, an empty folder, a bad link, an empty
    channel) is a :class:`UserError` before any work; a bad line of a list becomes a failed
    job, so the other lines still run.
    """
    jobs: dict[str, Job] = {}
    duplicates = 0
    for given in inputs:
        text = str(given)
        for job in _one_input(text, out_dir, limit, since):  # streamed: a list line at a time
            if job.key in jobs:
                duplicates += 1
                continue
            if len(jobs) >= MAX_VODS:
                raise UserError(
                    f"More than {MAX_VODS} VODs were given; split them into several batches."
                )
            jobs[job.key] = job
    if not jobs:
        raise UserError("No VODs were given; name files, folders, links or @list.txt files.")
    return list(jobs.values()), duplicates


def _one_input(text: str, out_dir: Path, limit: int, since: datetime.date | None) -> Iterator[Job]:
    if text.startswith("@"):
        yield from _list_jobs(Path(text[1:]).expanduser())
        return
    if sources.is_url(text):
        if is_channel_link(text):
            url = check_channel_link(text)
            links = vod_links(channel_entries(url, min(limit, MAX_CHANNEL_VODS)), since)
            if not links:
                raise SourceError(
                    f"{_shown(url)} lists no VODs"
                    + (f" since {since.isoformat()}" if since else "")
                    + "; check the channel's name or the date."
                )
            yield from (Job(link, link) for link in links)
            return
        link = sources.check_url(text)
        yield Job(link, link)
        return
    path = Path(text).expanduser()
    if path.is_dir():
        found = False
        for media_file in _media_in(path, out_dir):
            found = True
            yield _file_job(media_file)
        if not found:
            raise UserError(
                f"The folder {_shown(text)} holds no media files "
                f"({', '.join(sorted(MEDIA_SUFFIXES))}); choose another folder."
            )
        return
    if not path.is_file():
        raise UserError(f"{_shown(text)} is not a file, a folder, a link or an @list file.")
    yield _file_job(path)


# --- the output folder and its state -----------------------------------------------------------


def check_out_dir(out_dir: Path) -> None:
    """Refuse an output that is a user's folder: it must be new, empty or an earlier batch's."""
    shown = _shown(str(out_dir))
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise OutputError(f"The output {shown} is not a folder; choose a new or empty folder.")
    if not out_dir.exists() or (out_dir / MARKER).is_file():
        return
    if any(True for _ in out_dir.iterdir()):
        raise OutputError(
            f"The output folder {shown} already holds files HighlightSense did not write; "
            "choose a new or empty folder (nothing was changed)."
        )


def settings_key(engine: Engine, chosen: Selection) -> tuple[str, str]:
    """Hashes of what the scores depend on (settings, models) and of the selection."""
    analysis = dataclasses.asdict(engine.settings) | {
        "model": engine.model.identity,
        "producer": engine.producer,
    }
    for key in ("device", "precision", "batch_size", "use_cache", "keep_stems"):
        analysis.pop(key)  # how, not what: the same scores
    analysis["keep_stems"] = engine.settings.keep_stems  # it changes the folder's files

    def digest(value: dict) -> str:
        return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()

    return digest(analysis), digest(dataclasses.asdict(chosen))


class State:
    """The batch's sqlite3 database: per source, its folder, the settings it was done with
    and its row. One transaction per finished VOD, so a power cut loses nothing finished."""

    def __init__(self, out_dir: Path):
        self.connection = sqlite3.connect(out_dir / STATE, isolation_level=None)
        self.connection.execute("PRAGMA synchronous=FULL")
        self.connection.execute(
            "CREATE TABLE IF NOT EXISTS vods (source TEXT PRIMARY KEY, folder TEXT UNIQUE, "
            "analysis TEXT, selection TEXT, status TEXT, row TEXT)"
        )

    def folders(self) -> dict[str, str]:
        return dict(self.connection.execute("SELECT source, folder FROM vods"))

    def done(self, source: str, keys: tuple[str, str]) -> VodRow | None:
        found = self.connection.execute(
            "SELECT row FROM vods WHERE source = ? AND analysis = ? AND selection = ? "
            "AND status = ?",
            (source, *keys, DONE),
        ).fetchone()
        return VodRow(**json.loads(found[0])) if found else None

    def reserve(self, source: str, folder: str) -> None:
        self.connection.execute(
            "INSERT OR IGNORE INTO vods (source, folder, status) VALUES (?, ?, 'new')",
            (source, folder),
        )

    def record(self, row: VodRow, keys: tuple[str, str]) -> None:
        self.connection.execute(
            "UPDATE vods SET analysis = ?, selection = ?, status = ?, row = ? WHERE source = ?",
            (*keys, row.status, json.dumps(row.as_dict()), row.source),
        )

    def close(self) -> None:
        self.connection.close()


def open_out_dir(out_dir: Path) -> State:
    """Check ``out_dir``, make it (with its marker) and open its state."""
    check_out_dir(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not (out_dir / MARKER).is_file():
        (out_dir / MARKER).write_text(MARKER_TEXT)
    return State(out_dir)


def folder_names(jobs: list[Job], out_dir: Path, state: State) -> dict[str, str]:
    """Each job's folder: the one it had in an earlier run, else its input's name, made unique
    (``name-2`` …) against the other jobs and anything already in ``out_dir``."""
    known = state.folders()
    taken = set(known.values())
    names = {}
    for job in jobs:
        if job.source in known:
            names[job.key] = known[job.source]
            continue
        base = pipeline.default_out_dir(job.source).name[:MAX_FOLDER_NAME] or "vod"
        base = base.lstrip(".") or "vod"
        name, number = base, 1
        while name in taken or name in OWN_ENTRIES or os.path.lexists(out_dir / name):
            number += 1
            name = f"{base}-{number}"
        taken.add(name)
        names[job.key] = name
        state.reserve(job.source, name)
    return names


# --- one VOD's steps (shared with the Ray executor) --------------------------------------------


def prepare(
    job: Job, download_dir: Path | None = None, cancel: Callable[[], None] | None = None
) -> Path:
    """The local file of ``job``: a link is downloaded (into the cache unless told where);
    whatever ``cancel`` raises stops the download."""
    if job.error:
        raise UserError(job.error)
    if sources.is_url(job.source):
        from .files import cache_dir

        folder = download_dir or cache_dir() / "downloads"
        return sources.fetch(job.source, folder, cancel=cancel)
    return Path(job.source)


def analyse(
    engine: Engine, media: Path, target: Path, keep_voice: bool = False
) -> tuple[Path, Analysis]:
    """Stage ``target`` (refusing a user's folder first) and analyse ``media`` into it, keeping
    its separated voice when captions will be made (``keep_voice``)."""
    staging = outfolder.stage(target)
    try:
        with outfolder.writing(staging, target):
            stems = staging / "stems" if engine.settings.keep_stems else None
            analysis = engine.analyze(media, stems_dir=stems, keep_voice=keep_voice)
    except BaseException:
        outfolder.discard(staging)
        raise
    return staging, analysis


def finish(
    job: Job,
    analysis: Analysis,
    chosen: Selection,
    staging: Path,
    target: Path,
    began: float,
    cancel: Callable[[], None] | None = None,
) -> VodRow:
    """Select, cut and write the tables into ``staging`` and put it in place at ``target``."""
    try:
        with outfolder.writing(staging, target):
            result = pipeline.render(analysis, chosen, staging, cancel=cancel)
        outfolder.publish(staging, target)
    except BaseException:
        outfolder.discard(staging)
        raise
    summary = json.loads((target / outfolder.SUMMARY).read_text())
    picks = [
        {k: h[k] for k in ("rank", "start_sec", "end_sec", "confidence", "clip_path", "why")}
        for h in summary["highlights"]
    ]
    top = result.highlights[0] if result.highlights else None
    return VodRow(
        source=job.source,
        folder=target.name,
        status=DONE,
        duration_sec=round(analysis.duration, 3),
        seconds=round(time.time() - began, 3),
        highlights=len(result.highlights),
        top_start_sec=round(top.start_sec, 3) if top else None,
        top_confidence=round(top.confidence, 6) if top else None,
        media=str(analysis.source.absolute()),
        picks=picks,
    )


def failed_row(job: Job, folder: str, err: BaseException, began: float) -> VodRow:
    """The row of a VOD that could not be done, with its one sentence."""
    if isinstance(err, UserError):
        sentence = str(err)
    else:
        sentence = INTERNAL.format(f"{type(err).__name__}: {err}".splitlines()[0][:120])
    return VodRow(
        source=job.source,
        folder=folder,
        status=FAILED,
        seconds=round(time.time() - began, 3),
        error=sentence[:ERROR_CHARS],
    )


# --- the local executor ------------------------------------------------------------------------


class Tracker:
    """Overall progress: VODs done of N and hours of VOD done, for ``progress``."""

    def __init__(self, total: int, progress: Progress | None, on_vod: Callable | None):
        self.total, self.done, self.hours = total, 0, 0.0
        self.progress, self.on_vod = progress, on_vod
        self.lock = threading.Lock()

    def __call__(self, row: VodRow) -> None:
        with self.lock:
            self.done += 1
            self.hours += (row.duration_sec or 0.0) / 3600
            if self.on_vod is not None:
                self.on_vod(row)
            if self.progress is not None:
                self.progress(
                    self.done / self.total,
                    f"{self.done}/{self.total} VODs, {self.hours:.2f} h of VOD done",
                )


def run_local(
    engine: Engine,
    todo: list[tuple[Job, Path]],
    chosen: Selection,
    finished: Callable[[VodRow], None],
) -> None:
    """Analyse one VOD at a time in this thread; prepare the next and finish the previous
    in two helper threads. ``finished`` is called here, in order of completion."""
    stop = threading.Event()

    def cancel() -> None:
        if stop.is_set():
            raise Cancelled("The batch was stopped.")

    def prepared(job: Job) -> tuple[float, Path | BaseException]:
        began = time.time()
        try:
            return began, prepare(job, cancel=cancel)  # Ctrl-C must not wait for a download
        except Exception as err:
            return began, err

    def finishing(job, analysis, staging, target, began) -> VodRow:
        try:
            return finish(job, analysis, chosen, staging, target, began, cancel)
        except Exception as err:
            if isinstance(err, Cancelled) and stop.is_set():
                raise
            return failed_row(job, target.name, err, began)

    with (
        concurrent.futures.ThreadPoolExecutor(1) as fetcher,
        concurrent.futures.ThreadPoolExecutor(1) as cutter,
    ):
        pending: concurrent.futures.Future | None = None  # the previous VOD's finishing
        upcoming = fetcher.submit(prepared, todo[0][0]) if todo else None
        try:
            for number, (job, target) in enumerate(todo):
                began, media = upcoming.result()
                if number + 1 < len(todo):
                    upcoming = fetcher.submit(prepared, todo[number + 1][0])
                row = None
                if isinstance(media, BaseException):
                    row = failed_row(job, target.name, media, began)
                else:
                    try:
                        keep = chosen.captions is not None
                        staging, analysis = analyse(engine, media, target, keep)
                    except Exception as err:
                        row = failed_row(job, target.name, err, began)
                if pending is not None:  # at most one VOD waits to be cut: bounded memory
                    finished(pending.result())
                    pending = None
                if row is not None:
                    finished(row)
                else:
                    pending = cutter.submit(finishing, job, analysis, staging, target, began)
            if pending is not None:
                finished(pending.result())
        except BaseException:
            stop.set()  # the cutter's ffmpeg runs stop and its staging folder is removed
            if pending is not None:
                with contextlib.suppress(BaseException):
                    finished(pending.result())  # a VOD that completed anyway is kept
            raise


# --- the library's entry point ----------------------------------------------------------------


def batch(
    inputs: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    settings: AnalysisSettings | None = None,
    selection: Selection | None = None,
    *,
    executor: str = "local",
    ray_address: str | None = None,
    digest: int = 20,
    limit: int = MAX_CHANNEL_VODS,
    since: datetime.date | None = None,
    progress: Progress | None = None,
    on_vod: Callable[[VodRow], None] | None = None,
) -> BatchResult:
    """Analyse every VOD of ``inputs`` into its own folder of ``out_dir``, resuming an earlier
    run of the same batch, and write the report (batch.csv, batch.json, index.html, the
    digest). Returns one row per distinct VOD, in input order.

    ``executor`` is ``"local"`` (this machine, work overlapped) or ``"ray"`` (a Ray cluster at
    ``ray_address``, or a local Ray runtime when None). ``progress(fraction, message)`` follows
    the VODs done; ``on_vod(row)`` is called as each VOD finishes.
    """
    from . import batch_report

    settings, chosen = settings or AnalysisSettings(), selection or Selection()
    if executor not in ("local", "ray"):
        raise SettingsError(f"The executor must be local or ray (got {executor!r}).")
    if executor == "ray" and settings.keep_stems:
        raise SettingsError("--keep-stems is not available with --executor ray; run it locally.")
    if not 0 <= digest <= MAX_DIGEST:
        raise SettingsError(f"The digest holds 0 to {MAX_DIGEST} moments (got {digest}).")
    if not 1 <= limit <= MAX_CHANNEL_VODS:
        raise SettingsError(f"--limit must be between 1 and {MAX_CHANNEL_VODS} (got {limit}).")
    target = Path(os.path.abspath(Path(out_dir).expanduser()))
    check_out_dir(target)
    jobs, duplicates = expand(inputs, out_dir=target, limit=limit, since=since)
    engine = Engine.create(settings).load()  # bad models fail here, before any VOD
    keys = settings_key(engine, chosen)
    state = open_out_dir(target)
    try:
        names = folder_names(jobs, target, state)
        rows: dict[str, VodRow] = {}
        todo = []
        for job in jobs:
            earlier = state.done(job.source, keys)
            if earlier is not None and (target / names[job.key] / outfolder.SUMMARY).is_file():
                rows[job.key] = dataclasses.replace(earlier, status=SKIPPED)
            else:
                todo.append((job, target / names[job.key]))
        tracker = Tracker(len(todo), progress, on_vod)
        by_source = {job.source: job.key for job, _ in todo}

        def finished(row: VodRow) -> None:
            state.record(row, keys)
            rows[by_source[row.source]] = row
            tracker(row)

        if executor == "ray":
            from . import batch_ray

            batch_ray.run(engine, todo, chosen, finished, address=ray_address)
        else:
            run_local(engine, todo, chosen, finished)
    finally:
        state.close()
    result = BatchResult([rows[job.key] for job in jobs], target, duplicates)
    result.report_paths = batch_report.write_report(
        result.rows, target, digest=digest, timelines=chosen.timelines
    )
    return result
