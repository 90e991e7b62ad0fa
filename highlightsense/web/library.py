"""The one place the web app calls the analysis library: loading the models, analysing a VOD
(on ZeroGPU in GPU calls sized to the VOD), and rendering a selection into clips and tables."""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from .. import captions, chat, outputs, pipeline, scoring, signals, transcripts
from ..engine import Engine
from ..errors import UserError
from ..progress import STAGE_WEIGHTS
from ..results import Analysis, Highlight, Result
from ..settings import AnalysisSettings, Selection
from ..slices import SLICE_SEC
from ..transcripts import Transcript
from .controls import Picks
from .jobs import KEEP_RENDERS, Job, JobProgress
from .messages import for_visitor
from .zerogpu import gpu_speed, slice_seconds

LOG = logging.getLogger("highlightsense.app")

RETRY_SECONDS = 600.0  # between two background attempts to load models that failed
LOAD_WAIT = 300.0  # s a job waits for models still loading at start-up
MODELS_BROKEN = (
    "This Space cannot analyse VODs yet because its models could not be loaded; the Space's "
    "owner should check its logs and its HIGHLIGHTSENSE_WEIGHTS and HIGHLIGHTSENSE_SEPARATOR "
    "settings."
)

# Share of the job's bar: the analysis, then the first cut of the clips.
ANALYSIS_SHARE = 0.92
SAFE_NAME = re.compile(r"[^A-Za-z0-9._ -]+")
NAME_CHARS = 60  # of the VOD's name kept in download names
# Editor timelines offered with every result (milliseconds to write): OpenTimelineIO, Final Cut 7
# XML (Premiere, Resolve), Final Cut Pro XML, a CMX 3600 EDL and YouTube chapters.
TIMELINES = ("otio", "fcp7xml", "fcpxml", "edl", "chapters")
VERTICAL_PREFIX = "vertical-"  # of the 9:16 clips' download names, after the VOD's
CORRECTION_LIMIT = 500  # characters of a visitor's corrected caption
MAX_CORRECTIONS = 100  # corrected clips remembered per job (the oldest go first)
# what the job's store holds: landscape cuts, 9:16 cuts, and their captioned copies
# (outputs.caption_cuts names those after the caption mode)
STORE_PATTERNS = ("span_*", "vertical_*", "burn_*", "soft_*")


class ModelsMissing(UserError):
    """The models failed to load at start-up (remembered; retried now and then)."""


class Models:
    """The CRNN and Demucs, loaded once in the background (the library caches both per
    process); a failure is remembered and said at once, and retried every ``retry_every`` s."""

    def __init__(self, device: str, retry_every: float = RETRY_SECONDS):
        self.device, self.retry_every = device, retry_every
        self.error: str | None = None
        self.loaded = threading.Event()  # set after the first attempt, whatever its outcome

    def load_once(self) -> None:
        try:
            Engine.create(AnalysisSettings(device=self.device), device=self.device).load()
        except UserError as err:
            LOG.warning("the models could not be loaded: %s", err)
            self.error = for_visitor(err)
        except Exception:
            LOG.exception("the models could not be loaded")
            self.error = MODELS_BROKEN
        else:
            self.error = None
        finally:
            self.loaded.set()

    def start(self) -> None:
        """Load now in a thread; while that fails, try again now and then."""

        def keep_trying() -> None:
            self.load_once()
            while self.error is not None:
                time.sleep(self.retry_every)
                self.load_once()

        threading.Thread(target=keep_trying, name="load-models", daemon=True).start()

    def check(self, wait: float = LOAD_WAIT) -> None:
        if not self.loaded.wait(wait):
            raise ModelsMissing("The models are still loading; try again in a minute.")
        if self.error is not None:
            raise ModelsMissing(self.error)


def analysis_settings(window: float, device: str) -> AnalysisSettings:
    return AnalysisSettings(
        window_sec=window, stride_sec=min(scoring.STRIDE_SEC, window), device=device
    )


def analysis_stages(is_link: bool) -> tuple[tuple[str, float], ...]:
    """Plain stage names over Engine.analyze's bar, which weighs its stages like this."""
    shares = [
        ("Downloading the VOD", STAGE_WEIGHTS["fetch"] if is_link else 0.0),
        ("Separating voice from game sound", STAGE_WEIGHTS["read"] + STAGE_WEIGHTS["separate"]),
        ("Scoring every moment", STAGE_WEIGHTS["score"]),
    ]
    total = sum(share for _, share in shares)
    stages, end = [], 0.0
    for name, share in shares:
        end += share / total
        if share:
            stages.append((name, end))
    return tuple(stages)


def analyze(
    job: Job,
    source: str,
    is_link: bool,
    window: float,
    device: str,
    progress: JobProgress,
    gpu: Callable | None,
    gpu_limit: float,
) -> Analysis:
    """Separate, featurize and score ``source`` (a local file or a checked link) for ``job``;
    with ``gpu`` (on ZeroGPU), in GPU calls that each reserve at most ``gpu_limit`` s."""
    engine = Engine.create(analysis_settings(window, device), device=device)
    bar = progress.part(0.0, ANALYSIS_SHARE, analysis_stages(is_link))
    bar(0.0)
    began = time.perf_counter()
    analysis = engine.analyze(
        source,
        progress=bar,
        download_dir=job.folder / "download",
        gpu=gpu,
        slice_sec=slice_seconds(gpu_speed(), gpu_limit) if gpu is not None else SLICE_SEC,
        # for captions asked for after the analysis: on disk, as 64 jobs of 6 hours would need
        # 44 GB of memory (115 MB per hour each); the job's folder goes with the job
        keep_voice=True,
        voice_dir=job.folder,
    )
    LOG.info("analysis finished: job %s in %.1f s", job.id, time.perf_counter() - began)
    return analysis


def read_chat(job: Job, path: Path | None) -> None:
    """The chat replay at ``path`` scored on the job's windows, kept with the job so a new
    chat weight re-selects at once (None: no chat)."""
    job.chat = None if path is None else chat.load(path, job.analysis.windows,
                                                   job.analysis.duration)  # fmt: skip


def render(
    job: Job,
    picks: Picks,
    *,
    preview: bool,
    progress: JobProgress | None = None,
    cancel: Callable[[], None] | None = None,
) -> None:
    """Choose and cut clips for ``picks`` (only spans not cut before) into a new folder of the
    job, with downloads named after the VOD; then show it. A ``preview`` cuts by stream copy
    (seconds for twenty clips) whatever the cut asked for, and leaves the job's vertical clips
    (``job.framing``) to the full render. Whatever ``cancel`` raises stops the ffmpeg runs at
    once."""
    vertical = job.framing.selection() if job.framing is not None and not preview else {}
    # captions are transcribed (and drawn) by the full render only, like the 9:16 cuts
    captioned = {"captions": job.captions} if job.captions is not None and not preview else {}
    chosen = Selection(
        **(picks.settings() | ({"copy": True} if preview else {}) | vertical | captioned),
        timelines=TIMELINES,
    )
    extra = () if job.chat is None else (job.chat.as_signal(picks.chat_weight),)
    bar = None
    if progress is not None:
        bar = progress.part(ANALYSIS_SHARE, 1 - ANALYSIS_SHARE, (("Cutting the clips", 1.0),))
    job.renders += 1
    out_dir = job.folder / f"render-{job.renders}"
    result = pipeline.render(
        job.analysis,
        chosen,
        out_dir,
        store=job.folder / "store",
        progress=bar,
        cancel=cancel,
        media_url=job.analysis.source.name,  # timelines never show the server's folders
        extra=extra,
        transcripts=corrected(job, chosen, extra, cancel),
    )
    files = package(result, out_dir, job.name)
    job.result, job.picks, job.files = result, picks, files
    # nothing is left to cut after a full render, or after a preview that was all stream copies
    # anyway (vertical and captioned clips are made by the full render, so never previews)
    copies = picks.cut == "fast" and job.framing is None and job.captions is None
    job.exact = not preview or copies or not result.highlights
    for old in range(1, job.renders - KEEP_RENDERS + 1):
        shutil.rmtree(job.folder / f"render-{old}", ignore_errors=True)
    _prune_store(job.folder / "store")


def corrected(
    job: Job, chosen: Selection, extra: tuple, cancel: Callable[[], None] | None
) -> list[Transcript] | None:
    """The clips' transcripts for ``chosen`` with the visitor's corrections in place of what
    was heard, in rank order; None (the library transcribes) when nothing was corrected."""
    if chosen.captions is None or not job.corrections:
        return None
    highlights, _, _ = pipeline.choose(job.analysis, chosen, signals.active(extra))
    heard = outputs.transcribe_highlights(job.analysis, highlights, chosen.language,
                                          cancel=cancel)  # fmt: skip
    return [job.corrections.get(span_key(h), t) for h, t in zip(highlights, heard, strict=True)]


def span_key(highlight: Highlight) -> tuple[int, int]:
    """A clip's span in milliseconds: what a correction is kept by."""
    return round(highlight.start_sec * 1000), round(highlight.end_sec * 1000)


def correct_caption(job: Job, index: int, text: str) -> Transcript:
    """Keep the visitor's ``text`` as the transcript of the shown clip ``index`` (0-based), its
    words spread over the times the old ones were spoken; the next full render re-cuts that clip
    alone (the others' captioned cuts are in the store). Markup stays the letters it is; too
    long a text is a TranscriptError."""
    fixed = captions.check_correction(text, CORRECTION_LIMIT)
    highlight = job.result.highlights[index]
    duration = highlight.end_sec - highlight.start_sec
    transcript = captions.retimed(job.result.transcripts[index], fixed, duration)
    job.corrections.pop(span_key(highlight), None)
    job.corrections[span_key(highlight)] = transcript
    while len(job.corrections) > MAX_CORRECTIONS:
        job.corrections.pop(next(iter(job.corrections)))
    return transcript


def check_whisper() -> None:
    """Load the Whisper model named by HIGHLIGHTSENSE_WHISPER (once per process), so a bad one
    is refused before an analysis; a TranscriptError naming the variable."""
    transcripts.load_model(transcripts.model_name())


def package(result: Result, out_dir: Path, vod_name: str) -> list[Path]:
    """The downloads, named after the VOD so two VODs' files never collide: a zip of the clips,
    tables, subtitles and timelines, the two highlight tables, each clip, each clip's .srt and
    .vtt, the timelines (and the rough cut's captions), then each vertical clip."""
    stem = download_stem(vod_name)
    folder = out_dir / "downloads"
    folder.mkdir()
    tables = [out_dir / name for name in ("highlights.csv", "highlights.json", "scores.csv")]
    tables += result.timeline_paths
    named_tables = [folder / f"{stem}-{path.name}" for path in tables]
    named_clips = [folder / f"{stem}-{path.name}" for path in result.clip_paths]
    named_subtitles = [folder / f"{stem}-{path.name}" for path in result.subtitle_paths]
    named_vertical = [
        folder / f"{stem}-{VERTICAL_PREFIX}{path.name}" for path in result.vertical_paths
    ]
    sources = [*tables, *result.clip_paths, *result.subtitle_paths, *result.vertical_paths]
    named = [*named_tables, *named_clips, *named_subtitles, *named_vertical]
    for source, target in zip(sources, named, strict=True):
        try:
            os.link(source, target)
        except OSError:  # a file system without hard links
            shutil.copyfile(source, target)
    archive_path = folder / f"{stem}-highlights.zip"
    # Clips are compressed already: store them, do not deflate them again.
    with zipfile.ZipFile(archive_path, "w", zipfile.ZIP_STORED) as archive:
        for path in named:
            archive.write(path, f"{stem}-highlights/{path.name}")
    return [archive_path, *named_tables[:2], *named_clips, *named_subtitles, *named_tables[3:],
            *named_vertical]  # fmt: skip


def download_stem(vod_name: str) -> str:
    """What every download of a VOD's results starts with: its name, made safe and short."""
    return SAFE_NAME.sub("_", Path(vod_name).stem)[:NAME_CHARS].strip(" ._") or "vod"


def _prune_store(store: Path) -> None:
    """Cut clips no kept selection links to any more: re-tuning, re-framing or correcting
    captions must not grow the store (:data:`STORE_PATTERNS`)."""
    for path in [path for pattern in STORE_PATTERNS for path in store.glob(pattern)]:
        try:
            if path.stat().st_nlink == 1:
                path.unlink()
        except OSError:
            continue
