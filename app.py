"""HighlightSense in the browser: upload a game-stream VOD (or paste a link), get its best clips.

A thin Gradio client of :mod:`highlightsense.pipeline`: the handlers check their inputs, call
the library and format what it returns. ``python app.py`` serves it on 127.0.0.1:7860
(``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` change that); on a Hugging Face Space the same
file is the Space's ``app_file``.

Each run is a *job* kept server-side under a random id (the browser only holds the id): its
Analysis (scores, attention, loudness) stays in memory, so changing the number of clips, the
pickiness, the gap or the padding re-selects and cuts only new clips, in seconds. A job's files
live in its own folder under the work dir and are removed after ``HIGHLIGHTSENSE_JOB_TTL`` hours.

Environment: the CLI's ``HIGHLIGHTSENSE_WEIGHTS``, ``HIGHLIGHTSENSE_SEPARATOR``,
``HIGHLIGHTSENSE_SEPARATOR_REPO`` and ``HIGHLIGHTSENSE_CACHE`` pick the models (read by the
library), plus ``HIGHLIGHTSENSE_WORKDIR`` (jobs' folders; inside the temp dir or the app's folder),
``HIGHLIGHTSENSE_JOB_TTL`` (hours, default 6), ``HIGHLIGHTSENSE_MAX_UPLOAD`` (default 20gb),
``HIGHLIGHTSENSE_QUEUE_SIZE`` (jobs waiting at most, default 20) and, on ZeroGPU,
``HIGHLIGHTSENSE_GPU_SECONDS`` (the longest GPU call to ask for, default 300).
"""

from __future__ import annotations

try:  # preinstalled on Hugging Face Spaces; imported first, as ZeroGPU patches torch
    import spaces
except ImportError:
    spaces = None

import contextlib
import dataclasses
import html
import logging
import math
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import plotly.graph_objects as go
from gradio.utils import get_upload_folder

from highlightsense import media, pipeline, scoring, selection, sources, stems, weights
from highlightsense.errors import Cancelled, ToolError, UserError
from highlightsense.features import FRAMES_PER_SECOND, HOP, SAMPLE_RATE
from highlightsense.plots import attention_figure, score_figure

LOG = logging.getLogger("highlightsense.app")

WORKDIR_ENV = "HIGHLIGHTSENSE_WORKDIR"
TTL_ENV = "HIGHLIGHTSENSE_JOB_TTL"
MAX_UPLOAD_ENV = "HIGHLIGHTSENSE_MAX_UPLOAD"
QUEUE_SIZE_ENV = "HIGHLIGHTSENSE_QUEUE_SIZE"
GPU_SECONDS_ENV = "HIGHLIGHTSENSE_GPU_SECONDS"

TTL_HOURS = 6.0  # a job's results are kept this long after their last use
MAX_UPLOAD = "20gb"  # Gradio's upload limit: a 6-hour 1080p VOD fits
QUEUE_SIZE = 20  # jobs waiting at most; more are turned away with "queue full"
MAX_JOBS = 32  # jobs kept in memory at once (an Analysis is ≈ 10 MB for 6 hours)
KEEP_RENDERS = 2  # a job's latest selections kept on disk, so a download in flight survives
CACHE_SWEEP = 3600  # s between sweeps of expired jobs and of Gradio's cache of served files

# Wall time of one ZeroGPU call: a base for start-up plus a share of the VOD's length it covers
# (decoding, separating, featurizing or scoring). Longer VODs are split into more calls.
GPU_BASE_SECONDS = 30
GPU_SECONDS_PER_VOD_SECOND = 0.03
GPU_MAX_SECONDS = 300

FETCH_SHARE = 0.15  # of the progress bar, downloading a linked VOD
STEP_FRAMES = 16  # feature frames per attention step: the CRNN pools time by 2·2·2·2
STEP_SECONDS = STEP_FRAMES * HOP / SAMPLE_RATE  # ≈ 0.37 s
FRAME_SECONDS = HOP / SAMPLE_RATE  # ≈ 23 ms
POLL_SECONDS = 3.0  # how often a reconnected page asks whether its job has finished
JOB_ID = re.compile(r"[0-9a-f]{32}")

# Limits of the controls, enforced again on the server for API callers.
MAX_CLIPS = 50
MIN_PERCENTILE = 50.0  # lower makes most of the VOD a "highlight"
MAX_GAP = 600.0  # s
MAX_PADDING = 60.0  # s
MIN_WINDOW = 5.0  # s
PICKY_BY = {"percentile": "Share of the VOD to beat", "threshold": "Minimum score"}
CUTS = {"exact": "Exact (re-encodes; slower)", "fast": "Fast (copies; starts at a keyframe)"}
VOD_TYPES = [".mp4", ".mkv", ".mov", ".webm", ".flv", ".ts", ".m4a", ".wav", ".mp3", ".ogg"]
VOD_TYPES += [".flac", ".aac"]

EXAMPLE_SECONDS = 60  # length of the generated demo VOD
EXAMPLE_BURSTS = ((17, 23), (38, 42))  # s, loud moments in it
EXAMPLE_TIMEOUT = 120.0  # s for ffmpeg to write it

GENERIC_ERROR = "Something went wrong on our side; please try again, or try another file."
ON_ZERO_GPU = spaces is not None and os.environ.get("SPACES_ZERO_GPU") == "true"
DEVICE = "cuda" if ON_ZERO_GPU else pipeline.resolve_device("auto")


def _env_float(name: str, default: float) -> float:
    text = os.environ.get(name, "")
    try:
        value = float(text) if text else default
    except ValueError:
        raise SystemExit(f"{name} must be a number (got {text!r}).") from None
    if not math.isfinite(value) or value <= 0:
        raise SystemExit(f"{name} must be a positive number (got {text!r}).")
    return value


def _work_dir() -> Path:
    """The folder holding the jobs' folders. Gradio serves copies of returned files only from
    the temp dir or the app's folder, so the work dir must be inside one of them."""
    root = Path(os.environ.get(WORKDIR_ENV) or Path(tempfile.gettempdir()) / "highlightsense-app")
    root = root.expanduser().resolve()
    if not any(root.is_relative_to(Path(p).resolve()) for p in (tempfile.gettempdir(), ".")):
        raise SystemExit(
            f"{WORKDIR_ENV}={root} is outside the temp dir ({tempfile.gettempdir()}) and the "
            "app's folder; Gradio would refuse to serve the clips from there."
        )
    root.mkdir(parents=True, exist_ok=True)
    return root


def lend_ffprobe() -> None:
    """Gradio's video component probes each clip with the ffprobe on PATH (and fails where
    there is an ffmpeg but no ffprobe); lend it the one the library uses."""
    if shutil.which("ffprobe") is None:
        try:
            folder = Path(media.ffprobe_path()).parent
        except ToolError:
            return
        os.environ["PATH"] = f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"


def refusal(message: str) -> gr.Error:
    """The one sentence a user sees. Escaped, as Gradio's modal renders HTML and messages quote
    file names and links; no traceback in the log, since the user's input was at fault."""
    return gr.Error(html.escape(message, quote=False), print_exception=False)


# --- jobs ------------------------------------------------------------------------------------


@dataclass(eq=False)
class Job:
    """One VOD's analysis and its latest selection, kept on the server under a random id."""

    id: str
    folder: Path
    used: float = field(default_factory=time.time)  # last use, for expiry
    state: str = "waiting"  # waiting → running → done | failed | cancelled
    message: str = ""  # why it failed or was cancelled
    analysis: pipeline.Analysis | None = None
    latest: tuple[pipeline.Result, pipeline.Settings] | None = None  # the selection shown
    renders: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def cancel_flag(self) -> Path:
        """A file, not a threading.Event: ZeroGPU runs the analysis in another process."""
        return self.folder / "cancel"


class Jobs:
    """A small registry of jobs: at most ``capacity``, each dropped with its folder ``ttl``
    seconds after its last use (running jobs excepted)."""

    def __init__(self, root: Path, ttl: float, capacity: int = MAX_JOBS):
        self.root, self.ttl, self.capacity = root, ttl, capacity
        self._jobs: OrderedDict[str, Job] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()

    def create(self) -> Job:
        self.prune(room=1)
        job_id = secrets.token_hex(16)
        job = Job(job_id, self.root / f"job-{job_id}")
        job.folder.mkdir()
        with self._lock:
            self._jobs[job_id] = job
        return job

    def find(self, job_id: object) -> Job | None:
        """The job, touched, or None for anything that is not a live job id."""
        if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
            return None
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                job.used = time.time()
                self._jobs.move_to_end(job_id)
        return job

    def get(self, job_id: object) -> Job:
        if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
            raise refusal("That job id is not valid; press Find highlights to start a new job.")
        job = self.find(job_id)
        if job is None:
            raise refusal(
                "That job is not known here (its results expire after a while); "
                "press Find highlights to analyse the VOD again."
            )
        return job

    def discard(self, job_id: object) -> None:
        """Drop a finished job its browser has replaced."""
        job = self.find(job_id)
        if job is not None and job.state != "running":
            with self._lock:
                self._jobs.pop(job.id, None)
            shutil.rmtree(job.folder, ignore_errors=True)

    def prune(self, room: int = 0) -> None:
        now = time.time()
        with self._lock:
            idle = [job for job in self._jobs.values() if job.state != "running"]
            expired = [job for job in idle if now - job.used > self.ttl]
            excess = len(self._jobs) - len(expired) + room - self.capacity
            expired += [job for job in idle if job not in expired][: max(excess, 0)]
            for job in expired:
                del self._jobs[job.id]
            known = {job.folder for job in self._jobs.values()}
        for job in expired:
            shutil.rmtree(job.folder, ignore_errors=True)
        # folders left behind by an earlier run of the app
        for folder in self.root.glob("job-*"):
            try:
                stale = folder not in known and now - folder.stat().st_mtime > self.ttl
            except FileNotFoundError:
                continue
            if stale:
                shutil.rmtree(folder, ignore_errors=True)


def sweep_jobs() -> None:
    """Drop expired jobs now and then, even while no one starts a new one."""
    while True:
        time.sleep(CACHE_SWEEP)
        JOBS.prune()


class JobProgress:
    """The library's ``progress(fraction, message)`` drawn on a part of a Gradio bar; it raises
    :class:`Cancelled` once the job's cancel flag exists, which stops the library (and kills its
    ffmpeg runs). Picklable, so ZeroGPU can hand it to the process that holds the GPU."""

    def __init__(self, flag: Path, bar: gr.Progress | None, start: float = 0.0, width: float = 1.0):
        self.flag, self.bar, self.start, self.width = flag, bar, start, width

    def part(self, start: float, width: float) -> JobProgress:
        """The span [start, start + width) of this bar, in its own 0-1 fractions."""
        return JobProgress(self.flag, self.bar, self.start + self.width * start, self.width * width)

    def __call__(self, fraction: float, message: str) -> None:
        if self.flag.exists():
            raise Cancelled("The job was cancelled.")
        if self.bar is not None:
            self.bar(self.start + self.width * min(max(fraction, 0.0), 1.0), desc=message)


# --- models and the GPU ----------------------------------------------------------------------


def load_models() -> None:
    """Load the CRNN and Demucs on the app's device (the library caches both per process).

    On ZeroGPU this runs at import time: models moved to "cuda" there are the ones ZeroGPU
    places on the GPU it lends to each decorated call.
    """
    defaults = pipeline.Settings(device=DEVICE)
    weights.load(defaults.weights, DEVICE)
    stems.load_separator(defaults.separator_name, defaults.separator_folder, device=DEVICE)


def slice_seconds() -> float:
    """Seconds of VOD one ZeroGPU call separates: as much as fits the longest call asked for."""
    return max(60.0, (GPU_LIMIT - GPU_BASE_SECONDS) / GPU_SECONDS_PER_VOD_SECOND)


def gpu_seconds(fn, *args) -> int:
    """How long to borrow the GPU for one :func:`on_gpu` call: ZeroGPU calls this with the same
    arguments. A separation slice knows its frames; scoring gets the whole VOD's features."""
    if fn is pipeline.features_range:
        start, end = args[3]
        frames = end - start
    else:
        frames = args[0].shape[-1]
    return int(
        min(
            math.ceil(GPU_BASE_SECONDS + GPU_SECONDS_PER_VOD_SECOND * frames / FRAMES_PER_SECOND),
            GPU_LIMIT,
        )
    )


def on_gpu(fn, *args):
    """Run ``fn(*args)`` where the GPU is: on ZeroGPU one call per separation slice and one for
    scoring, so a VOD of any length fits the per-call limit."""
    return fn(*args)


if spaces is not None:  # a no-op off ZeroGPU hardware
    on_gpu = spaces.GPU(duration=gpu_seconds)(on_gpu)


def analyze_media(
    path: str, settings: pipeline.Settings, progress: JobProgress
) -> pipeline.Analysis:
    """The GPU part of a job: separation, features and scoring of a local file."""
    if ON_ZERO_GPU:
        settings = dataclasses.replace(settings, slice_sec=slice_seconds())
        return pipeline.analyze_source(path, settings, progress=progress, gpu=on_gpu)
    return pipeline.analyze_source(path, settings, progress=progress)


# --- checking what a caller sent --------------------------------------------------------------


def _number(value: object, label: str, low: float, high: float, whole: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not low <= value <= high or (whole and value != int(value)):
        kind = "a whole number" if whole else "a number"
        raise refusal(f"{label} must be {kind} between {low:g} and {high:g}.")
    return int(value) if whole else float(value)


def _choice(value: object, choices: dict[str, str], label: str) -> str:
    if not isinstance(value, str) or value not in choices:
        raise refusal(f"{label} must be one of: {', '.join(choices)}.")
    return value


def selection_settings(
    top_n: object,
    picky_by: object,
    percentile: object,
    threshold: object,
    gap: object,
    pad_before: object,
    pad_after: object,
    cut: object,
) -> dict:
    """The re-tunable settings, checked: what changes the choice of clips but not the scores."""
    by = _choice(picky_by, PICKY_BY, "Pickiness")
    return {
        "top_n": _number(top_n, "The number of clips", 1, MAX_CLIPS, whole=True),
        "percentile": _number(percentile, "The share to beat", MIN_PERCENTILE, 100),
        "threshold": _number(threshold, "The minimum score", 0, 1) if by == "threshold" else None,
        "nms_sec": _number(gap, "The gap between clips", 0, MAX_GAP),
        "pad_before": _number(pad_before, "The padding before", 0, MAX_PADDING),
        "pad_after": _number(pad_after, "The padding after", 0, MAX_PADDING),
        "copy": _choice(cut, CUTS, "The cut") == "fast",
    }


def uploaded_file(value: object) -> Path:
    """An uploaded file's path, refused unless Gradio put it in its upload folder."""
    if not isinstance(value, str) or not value:
        raise refusal("The upload is not a file; upload the VOD through the page.")
    path = Path(value).resolve()
    if not path.is_relative_to(Path(get_upload_folder()).resolve()) or not path.is_file():
        raise refusal("That file was not uploaded to this app; upload the VOD through the page.")
    return path


def chosen_source(upload: object, link: object) -> str:
    """The uploaded file's path or the canonical link, whichever the user gave."""
    if link is not None and not isinstance(link, str):
        raise refusal("The link must be text.")
    link = (link or "").strip()
    if upload not in (None, "") and link:
        raise refusal("Give either a file or a link, not both: clear one of them.")
    if upload not in (None, ""):
        return str(uploaded_file(upload))
    if link:
        with user_errors():
            return sources.check_url(link)
    raise refusal("Upload a VOD or paste a Twitch or YouTube link first.")


@contextlib.contextmanager
def user_errors(job: Job | None = None) -> Iterator[None]:
    """Turn what the library raises into one gr.Error sentence: a UserError's own sentence,
    a cancel, or (logged with its traceback) a generic sentence for anything else. A running
    job is marked failed or cancelled."""
    try:
        yield
    except gr.Error:
        raise
    except Exception as error:
        if isinstance(error, Cancelled):
            message = "The job was cancelled."
        elif isinstance(error, UserError):
            message = str(error)
        else:
            LOG.error("job %s failed", job.id if job else "-", exc_info=error)
            message = GENERIC_ERROR
        if job is not None and job.state == "running":
            job.state = "cancelled" if isinstance(error, Cancelled) else "failed"
            job.message = message
        raise refusal(message) from None


# --- the demo VOD --------------------------------------------------------------------------

_example_lock = threading.Lock()


def example_vod() -> Path:
    """A short test-pattern VOD with two loud bursts, written once into the work dir."""
    target = WORK_DIR / "example" / "highlightsense-demo.mp4"
    with _example_lock:
        if target.is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        seconds = EXAMPLE_SECONDS
        bursts = "+".join(f"between(t,{a},{b})" for a, b in EXAMPLE_BURSTS)
        audio = (
            f"anoisesrc=color=pink:amplitude=0.05:duration={seconds}:seed=1[quiet];"
            f"sine=frequency=220:duration={seconds},volume=0.1[tone];"
            f"anoisesrc=color=white:amplitude=0.8:duration={seconds}:seed=2,"
            f"volume='{bursts}':eval=frame[loud];"
            "[quiet][tone][loud]amix=inputs=3:normalize=0,aformat=channel_layouts=stereo[a]"
        )
        partial = target.with_name("partial-" + target.name)
        command = [
            media.ffmpeg_path(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=25:duration={seconds}",
            "-filter_complex", audio, "-map", "0:v", "-map", "[a]",
            "-c:v", "libx264", "-preset", "veryfast", "-crf", "30", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart", str(partial),
        ]  # fmt: skip
        try:
            subprocess.run(command, check=True, capture_output=True, timeout=EXAMPLE_TIMEOUT)
        except (OSError, subprocess.SubprocessError) as err:
            LOG.error("could not write the example VOD: %s", getattr(err, "stderr", err))
            raise refusal("The example could not be made on this server; upload a VOD.") from None
        partial.replace(target)
        return target


# --- what the page shows -------------------------------------------------------------------


def _clock(seconds: float) -> str:
    return media.format_timestamp(seconds)


def _caption(highlight: pipeline.Highlight) -> str:
    span = f"{_clock(highlight.start_sec)}–{_clock(highlight.end_sec)}"
    return f"#{highlight.rank} · {span} · {highlight.confidence:.0%} sure"


def _summary(
    analysis: pipeline.Analysis, result: pipeline.Result, settings: pipeline.Settings
) -> str:
    found = len(result.highlights)
    rule = (
        f"scoring at least {result.threshold:.3f}"
        if settings.threshold is not None
        else f"beating {settings.percentile:g}% of the VOD (score ≥ {result.threshold:.3f})"
    )
    if not found:
        return (
            f"**No highlights** in this {_clock(analysis.duration)} VOD with these settings: no "
            f"moment is {rule}. Make it less picky under *Settings*."
        )
    took = sum(analysis.seconds.values())
    return (
        f"**{found} highlight{'s' if found > 1 else ''}** in this {_clock(analysis.duration)} "
        f"VOD: moments {rule}, at least {settings.nms_sec:g} s apart "
        f"(analysed in {took:.0f} s). Change the settings to pick again without waiting."
    )


def results_view(job: Job) -> tuple:
    """status, plot, gallery, table, downloads, clip picker for a job with results."""
    analysis, (result, settings) = job.analysis, job.latest
    figure = score_figure(
        analysis.windows, result.threshold, [h.window for h in result.highlights], analysis.duration
    )
    captions = [_caption(h) for h in result.highlights]
    videos = analysis.info.has_video
    gallery = [(str(p), c) for p, c in zip(result.clip_paths, captions, strict=True)]
    table = [
        [h.rank, _clock(h.start_sec), _clock(h.end_sec), round(h.confidence, 3)]
        for h in result.highlights
    ]
    downloads = [result.out_dir / "highlights.csv", result.out_dir / "highlights.json"]
    if result.clip_paths:
        downloads = [result.out_dir / "highlights.zip", *downloads, *result.clip_paths]
    picker = gr.Dropdown(
        choices=[(c, h.rank) for c, h in zip(captions, result.highlights, strict=True)],
        value=1 if result.highlights else None,
    )
    return (
        _summary(analysis, result, settings),
        figure,
        gr.Gallery(value=gallery if videos else [], visible=videos),
        table,
        [str(p) for p in downloads],
        picker,
    )


def empty_view(status: str) -> tuple:
    # The picker's value goes too: the next results set it again, and only a change of
    # value shows their first clip.
    picker = gr.Dropdown(choices=[], value=None)
    return status, None, gr.Gallery(value=[], visible=True), [], None, picker


def why_figure(analysis: pipeline.Analysis, window: int) -> go.Figure:
    """The window's attention beside the voice and game loudness of its frames."""
    start, end, _ = analysis.windows[window]
    first = round(start * FRAMES_PER_SECOND)
    loudness = analysis.loudness[:, first : first + round((end - start) * FRAMES_PER_SECOND)]
    steps = math.ceil(loudness.shape[1] / STEP_FRAMES)  # the rest is padding, masked out
    attention = analysis.attention[window, :steps]
    return attention_figure(start, attention, STEP_SECONDS, loudness, FRAME_SECONDS)


# --- handlers ------------------------------------------------------------------------------


def render(job: Job, settings: pipeline.Settings, progress: JobProgress | None) -> None:
    """Choose and cut clips for ``settings`` (only spans not cut before), zip them, keep it."""
    with job.lock:
        job.renders += 1
        out_dir = job.folder / f"render-{job.renders}"
        result = pipeline.render(
            job.analysis, settings, out_dir, store=job.folder / "store", progress=progress
        )
        if result.clip_paths:
            # Clips are compressed already: store them, do not deflate them again.
            with zipfile.ZipFile(out_dir / "highlights.zip", "w", zipfile.ZIP_STORED) as archive:
                for path in result.clip_paths:
                    archive.write(path, path.name)
        job.latest = result, settings
        for old in range(1, job.renders - KEEP_RENDERS + 1):
            shutil.rmtree(job.folder / f"render-{old}", ignore_errors=True)


def _keep_input(job: Job, path: Path) -> Path:
    """A hard link to the upload in the job's folder, so it outlives Gradio's cache sweeps
    for as long as the job lives; the upload itself where linking is impossible."""
    target = job.folder / "input" / path.name
    target.parent.mkdir(exist_ok=True)
    try:
        os.link(path, target)
    except OSError:
        return path
    return target


def new_job(previous: object) -> tuple:
    """Start a job for this browser. Its id reaches the browser before the work starts, so a
    page that reconnects finds the results; the job this browser had before is dropped."""
    JOBS.discard(previous)
    job = JOBS.create()
    return (job.id, *empty_view("Starting…"), None, None, None)


def find_highlights(
    job_id: object,
    upload: object,
    link: object,
    top_n: object,
    window_sec: object,
    picky_by: object,
    percentile: object,
    threshold: object,
    gap: object,
    pad_before: object,
    pad_after: object,
    cut: object,
    progress: gr.Progress = gr.Progress(),
) -> tuple:
    """Analyse a VOD (an uploaded file or a Twitch / YouTube link) and cut its best clips.

    ``job_id``: from /new_job, or empty to start a job here. Returns the job id, a summary,
    the score plot, the clips, the table, the files to download and the clip picker.
    """
    chosen = selection_settings(
        top_n, picky_by, percentile, threshold, gap, pad_before, pad_after, cut
    )
    window = _number(window_sec, "The clip length", MIN_WINDOW, scoring.MAX_WINDOW_SEC)
    with user_errors():
        settings = pipeline.Settings(
            window_sec=window, stride_sec=min(scoring.STRIDE_SEC, window), device=DEVICE, **chosen
        )
        load_models()  # loaded at start-up; this only reports why, if that failed
    source = chosen_source(upload, link)
    job = JOBS.get(job_id) if job_id not in (None, "") else JOBS.create()
    if job.state != "waiting":
        raise refusal("This job has already run; press Find highlights to start a new one.")
    job.state = "running"
    bar = JobProgress(job.cancel_flag, progress)
    clips_share = pipeline.STAGE_WEIGHTS["clips"]
    with user_errors(job):
        if sources.is_url(source):
            bar(0.0, "Downloading the VOD")
            path = sources.fetch(source, job.folder / "download", progress=bar.part(0, FETCH_SHARE))
            analysis_bar = bar.part(FETCH_SHARE, 1 - FETCH_SHARE - clips_share)
        else:
            path = _keep_input(job, Path(source))
            analysis_bar = bar.part(0, 1 - clips_share)
        analysis_bar(0.0, "Reading the VOD")
        info = media.probe(path)
        LOG.info("analysis started: job %s, %.0f s of media", job.id, info.duration)
        began = time.perf_counter()
        job.analysis = analyze_media(str(path), settings, analysis_bar)
        LOG.info("analysis finished: job %s in %.1f s", job.id, time.perf_counter() - began)
        render(job, settings, bar.part(1 - clips_share, clips_share))
        job.state = "done"
    return (job.id, *results_view(job))


def retune(
    job_id: object,
    top_n: object,
    picky_by: object,
    percentile: object,
    threshold: object,
    gap: object,
    pad_before: object,
    pad_after: object,
    cut: object,
) -> tuple:
    """Pick the clips again from a finished job's scores (no new analysis): only clips not cut
    before are cut. Returns the summary, plot, clips, table, downloads and clip picker."""
    chosen = selection_settings(
        top_n, picky_by, percentile, threshold, gap, pad_before, pad_after, cut
    )
    if job_id in (None, ""):
        return gr.skip()  # nothing analysed yet: the controls are just being set up
    job = JOBS.get(job_id)
    if job.state != "done":
        return gr.skip()  # the running analysis reads the controls again when it ends
    settings = dataclasses.replace(job.analysis.settings, **chosen)
    if settings == job.latest[1]:
        return gr.skip()
    with user_errors(job):
        began = time.perf_counter()
        render(job, settings, None)
        LOG.info("re-tuned: job %s in %.2f s", job.id, time.perf_counter() - began)
    return results_view(job)


def show_clip(job_id: object, rank: object) -> tuple:
    """One clip of a finished job: its video (or audio) and why the model picked it."""
    if job_id in (None, "") or rank in (None, ""):
        return None, None, None
    job = JOBS.get(job_id)
    if job.latest is None:
        raise refusal("This job has no clips yet; wait for it to finish.")
    result, _ = job.latest
    highlights = result.highlights
    if not highlights:
        return None, None, None
    index = _number(rank, "The clip", 1, len(highlights), whole=True) - 1
    clip = str(result.clip_paths[index])
    video = job.analysis.info.has_video
    return (
        gr.Video(value=clip if video else None, visible=video),
        gr.Audio(value=None if video else clip, visible=not video),
        why_figure(job.analysis, highlights[index].window),
    )


def picked_row(event: gr.SelectData) -> int | None:
    """The rank in a selected table row (its first column, whatever the sort order)."""
    row = event.row_value
    return int(row[0]) if row else None


def picked_clip(event: gr.SelectData) -> int | None:
    return int(event.index) + 1 if isinstance(event.index, int) else None


def cancel_job(job_id: object) -> str:
    """Stop a running job; what it finished before is discarded."""
    if job_id in (None, ""):
        return gr.skip()
    job = JOBS.get(job_id)
    if job.state != "running":
        return gr.skip()
    job.cancel_flag.touch()
    return "Cancelled. Press Find highlights to start again."


def restore(job_id: object) -> tuple:
    """What a (re)loaded page shows for the job its browser remembers."""
    job = JOBS.find(job_id)
    if job is None:
        status = "Your previous results have expired." if job_id else ""
        return ("", *empty_view(status), gr.Timer(active=False))
    if job.state == "done":
        return (job.id, *results_view(job), gr.Timer(active=False))
    if job.state == "running":
        waiting = "Still working on your VOD; the results will appear here."
        return (job.id, waiting, *[gr.skip()] * 5, gr.Timer(active=True))
    if job.state == "waiting":  # the page closed before its job left the queue
        message = "Your last job did not start; press Find highlights again."
    else:
        message = f"Your last job stopped: {job.message}"
    return (job.id, *empty_view(html.escape(message, quote=False)), gr.Timer(active=False))


def toggle_pickiness(picky_by: str) -> tuple:
    return gr.Slider(visible=picky_by != "threshold"), gr.Slider(visible=picky_by == "threshold")


# --- the page ------------------------------------------------------------------------------

INTRO = """# HighlightSense
Find the best moments of a long game stream. Upload the recording (or paste a Twitch VOD or
YouTube link) and press **Find highlights**: the streamer's voice is separated from the game's
sound, a model listens to both, and the most exciting moments come back as clips."""

CSS = """
#find-highlights { font-size: 1.15rem; min-height: 3rem; }
"""


def build_app() -> gr.Blocks:
    with gr.Blocks(title="HighlightSense", delete_cache=(CACHE_SWEEP, int(JOBS.ttl))) as demo:
        job_state = gr.BrowserState("", storage_key="highlightsense-job")
        timer = gr.Timer(POLL_SECONDS, active=False)
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=2):
                upload = gr.File(
                    label="Your VOD (a video or audio file)",
                    file_types=VOD_TYPES,
                    type="filepath",
                    elem_id="vod-upload",
                )
                link = gr.Textbox(
                    label="…or paste a link",
                    placeholder="https://www.twitch.tv/videos/… or a YouTube link",
                    max_length=sources.MAX_URL_LENGTH,
                )
                with gr.Row():
                    find = gr.Button(
                        "Find highlights", variant="primary", scale=3, elem_id="find-highlights"
                    )
                    cancel = gr.Button("Cancel", variant="stop", scale=1)
                example = gr.Button("Try an example (a 1-minute test VOD)", size="sm")
                with gr.Accordion("Settings", open=False):
                    top_n = gr.Slider(
                        1, MAX_CLIPS, value=selection.TOP_N, step=1, label="Number of clips"
                    )
                    window_sec = gr.Slider(
                        MIN_WINDOW,
                        scoring.MAX_WINDOW_SEC,
                        value=scoring.WINDOW_SEC,
                        step=1,
                        label="Clip length (seconds)",
                        info="Changing this needs Find highlights again (the slow part is reused).",
                    )
                    picky_by = gr.Radio(
                        [(label, key) for key, label in PICKY_BY.items()],
                        value="percentile",
                        label="How picky",
                    )
                    percentile = gr.Slider(
                        MIN_PERCENTILE,
                        100,
                        value=selection.PERCENTILE,
                        step=0.5,
                        label="Keep moments scoring better than this % of the VOD",
                    )
                    threshold = gr.Slider(
                        0, 1, value=0.5, step=0.01, label="Minimum score (0 to 1)", visible=False
                    )
                    gap = gr.Slider(
                        0,
                        MAX_GAP,
                        value=selection.NMS_SEC,
                        step=1,
                        label="Minimum gap between clips (seconds)",
                    )
                    with gr.Row():
                        pad_before = gr.Slider(
                            0, MAX_PADDING, value=0, step=1, label="Extra seconds before"
                        )
                        pad_after = gr.Slider(
                            0, MAX_PADDING, value=0, step=1, label="Extra seconds after"
                        )
                    cut = gr.Radio(
                        [(label, key) for key, label in CUTS.items()],
                        value="exact",
                        label="How to cut the clips",
                    )
            with gr.Column(scale=3):
                status = gr.Markdown(elem_id="status")
                plot = gr.Plot(label="Highlight probability over the VOD", elem_id="score-plot")
        gallery = gr.Gallery(
            label="Your highlights (click one to play it)",
            columns=3,
            fit_columns=False,
            object_fit="contain",
            elem_id="highlights-gallery",
        )
        with gr.Row():
            table = gr.Dataframe(
                headers=["Rank", "Start", "End", "Confidence"],
                datatype=["number", "str", "str", "number"],
                label="Highlights (select a row to look at it)",
                interactive=False,
                scale=3,
                elem_id="highlights-table",
            )
            downloads = gr.File(label="Downloads", file_count="multiple", scale=2)
        gr.Markdown("### Why this clip?")
        with gr.Row():
            with gr.Column(scale=2):
                picker = gr.Dropdown(label="Clip", choices=[], allow_custom_value=True)
                clip_video = gr.Video(label="Clip", interactive=False, elem_id="clip-player")
                clip_audio = gr.Audio(label="Clip", interactive=False, visible=False)
            why = gr.Plot(label="What the model listened to", scale=3, elem_id="why-plot")

        tuning = [top_n, picky_by, percentile, threshold, gap, pad_before, pad_after, cut]
        view = [status, plot, gallery, table, downloads, picker]
        job_inputs = [upload, link, top_n, window_sec, *tuning[1:]]

        def run_after(trigger, suffix: str = "") -> gr.events.Dependency:
            """trigger: new job → analysis → a re-tune to the controls as they are at its end.
            Only the button's chain is public (API names without ``suffix``)."""
            visibility = "private" if suffix else "public"
            run = trigger(
                new_job,
                [job_state],
                [job_state, *view, clip_video, clip_audio, why],
                api_name="new_job" + suffix,
                api_visibility=visibility,
                concurrency_limit=None,
            ).success(
                find_highlights,
                [job_state, *job_inputs],
                [job_state, *view],
                api_name="find_highlights" + suffix,
                api_visibility=visibility,
                concurrency_id="analysis",
                concurrency_limit=1,
            )
            run.success(
                retune,
                [job_state, *tuning],
                view,
                api_name="retune_after_run" + suffix,
                api_visibility="private",
                concurrency_id="retune",
                concurrency_limit=2,
            )
            return run

        by_button = run_after(find.click)
        with_example = example.click(
            lambda: (str(example_vod()), ""),
            None,
            [upload, link],
            api_visibility="private",
            concurrency_limit=None,
        )
        by_example = run_after(with_example.success, "_example")
        cancel.click(
            cancel_job,
            [job_state],
            [status],
            cancels=[by_button, by_example],
            api_name="cancel",
            concurrency_limit=None,
        )
        gr.on(
            [
                top_n.release,
                picky_by.input,
                percentile.release,
                threshold.release,
                gap.release,
                pad_before.release,
                pad_after.release,
                cut.input,
            ],
            retune,
            [job_state, *tuning],
            view,
            api_name="retune",
            trigger_mode="always_last",
            concurrency_id="retune",
            concurrency_limit=2,
        )
        picky_by.change(
            toggle_pickiness, [picky_by], [percentile, threshold], api_visibility="private"
        )
        picker.change(
            show_clip,
            [job_state, picker],
            [clip_video, clip_audio, why],
            api_name="show_clip",
            concurrency_limit=None,
        )
        table.select(picked_row, None, [picker], api_visibility="private")
        gallery.select(picked_clip, None, [picker], api_visibility="private")
        demo.load(
            restore,
            [job_state],
            [job_state, *view, timer],
            api_name="results",
            concurrency_limit=None,
        )
        timer.tick(restore, [job_state], [job_state, *view, timer], api_visibility="private")
    demo.queue(max_size=int(_env_float(QUEUE_SIZE_ENV, QUEUE_SIZE)), default_concurrency_limit=1)
    return demo


# The app's own lines at INFO (jobs started and finished: the tests count them), others' at WARNING.
logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s %(message)s")
LOG.setLevel(logging.INFO)
lend_ffprobe()
GPU_LIMIT = _env_float(GPU_SECONDS_ENV, GPU_MAX_SECONDS)  # s, the longest ZeroGPU call asked for
WORK_DIR = _work_dir()
JOBS = Jobs(WORK_DIR, ttl=_env_float(TTL_ENV, TTL_HOURS) * 3600)
JOBS.prune()
threading.Thread(target=sweep_jobs, name="sweep-jobs", daemon=True).start()
try:
    load_models()
except UserError as err:  # the page still opens, and says why when it is used
    LOG.warning("the models could not be loaded: %s", err)
except Exception:
    LOG.exception("the models could not be loaded")
demo = build_app()

if __name__ == "__main__":
    demo.launch(
        max_file_size=os.environ.get(MAX_UPLOAD_ENV) or MAX_UPLOAD,
        show_error=True,
        run_history=False,
        css=CSS,
    )
