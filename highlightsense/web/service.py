"""The handlers behind the page and the /detect endpoint, and the app's start-up work.

Every handler answers any input: a bad value or a failure becomes one sentence (in the page's
status line, or a ``gr.Error`` for API callers), never a traceback or a tool's raw output.

A page handler answers through :mod:`.page` (one value per entry of its ``PAGE``); the
Vertical (9:16) panel's handlers are :class:`.vertical_panel.VerticalPanel`'s, the Captions
panel's :class:`.captions_panel.CaptionsPanel`'s. A new attempt never touches the results on
screen until it has succeeded.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder

from .. import scoring, selection, signals, sources
from ..chat import CHAT_WEIGHT
from ..errors import Cancelled
from ..files import cache_dir
from . import api, controls, downloads, example, framing, library, view, zerogpu
from .captions_panel import CaptionsPanel
from .config import Config, lend_ffprobe, size_in_bytes
from .controls import BadInput, Picks
from .jobs import Job, Jobs, keep_input
from .page import (  # noqa: F401  (PAGE: for app.py, which wires it)
    CONTROLS,
    LOG,
    PAGE,
    busy,
    idle,
    page,
    page_handler,
    quiet_handler,
    read_state,
    sentence,
)
from .vertical_panel import VerticalPanel

SWEEP_SECONDS = 600.0  # between sweeps of expired jobs, orphaned uploads and the disk ceiling
ORPHAN_SECONDS = 3600.0  # an upload no job holds is removed after this long
MAX_FAILURES = 1000  # visitors whose last failed attempt is remembered
POLL_SECONDS = 1.0  # how often a page with a running job asks for its progress

EXAMPLE_PICKS = Picks(top_n=3, percentile=80.0, gap=10.0)
EXAMPLE_WINDOW = 15.0  # s
EXAMPLE_NAME = "highlightsense-example.mp4"  # what the summary and downloads call it

NO_VIDEO = (
    "This VOD has no picture, so its clips are audio only (.m4a): pick one in the table or the "
    "list beside it to listen."
)


# --- the service -----------------------------------------------------------------------------


class Service(VerticalPanel, CaptionsPanel, api.ApiCalls):
    """The app's state (jobs, models, the example) and the handlers the page and API call."""

    def __init__(self, config: Config):
        self.config = config
        self.jobs = Jobs(
            config.work_dir,
            ttl=config.ttl,
            max_bytes=config.max_disk,
            uploads=Path(get_upload_folder()),
            orphan_age=ORPHAN_SECONDS,
        )
        self.models = library.Models(config.device, config.retry_every)
        self.gpu = None
        # One analysis (and its clip cutting) at a time, even when Gradio has let go of a
        # cancelled one: the next job never competes with its ffmpeg runs.
        self.busy = threading.Lock()
        self.example_path: Path | None = None
        self.example_job: Job | None = None  # analysed once, copied for each visitor
        self._example_lock = threading.Lock()
        # visitor → (sentence, (job id, generation) of the selection on screen) of its last
        # failed attempt, so that exact cuts of that selection finishing later never hide it
        # (bounded: the oldest go first)
        self.failures: OrderedDict[str, tuple[str, tuple | None]] = OrderedDict()

    def start(self) -> None:
        """Start-up work, none of it blocking: models, sweeps and the example."""
        self.config.work_dir.mkdir(parents=True, exist_ok=True)
        lend_ffprobe()
        downloads.limit_link_downloads(size_in_bytes(self.config.max_upload))
        self.gpu = zerogpu.runner(self.config.gpu_limit)
        if self.gpu is not None:
            # ZeroGPU packs the weights put on its emulated CUDA before launch() and moves them
            # to each call's GPU at once; loading later would copy them call by call.
            self.models.load_once()
        if self.gpu is None or self.models.error is not None:
            self.models.start()  # in the background; retried while it fails
        threading.Thread(target=self._sweep, name="sweep-jobs", daemon=True).start()
        threading.Thread(target=self.prepare_example, name="example", daemon=True).start()

    def _sweep(self) -> None:
        while True:
            try:
                self.jobs.prune()
            except Exception:
                LOG.exception("sweeping old jobs failed")
            time.sleep(SWEEP_SECONDS)

    # --- the example ---------------------------------------------------------------------

    def prepare_example(self) -> None:
        """Make the demo VOD (kept in the cache folder), then analyse it once."""
        try:
            self.example_path = example.make(cache_dir() / "example")
        except Exception:
            LOG.exception("could not make the example VOD")
            return
        self.models.check()
        with self._example_lock, self.busy:
            if self.example_job is None:
                self.example_job = self._analyse_example()

    def _analyse_example(self) -> Job:
        """The example's analysis, made once at start-up. On ZeroGPU the GPU is lent only to
        visitors' calls, out of their daily quota: the 75 s example runs on the CPU instead, so
        the first visitor sees it at once and pays nothing for it."""
        job = Job("example", self.config.work_dir / "example-job", "example", state="done")
        shutil.rmtree(job.folder, ignore_errors=True)
        job.folder.mkdir(parents=True)
        job.name, job.source, job.window = EXAMPLE_NAME, self.example_path, EXAMPLE_WINDOW
        job.analysis = library.analyze(
            job,
            str(self.example_path),
            False,
            EXAMPLE_WINDOW,
            "cpu" if self.gpu is not None else self.config.device,
            job.progress(self.config.job_limit),
            None,
            self.config.gpu_limit,
        )
        return job

    # --- page: loading and polling ---------------------------------------------------------

    @page_handler
    def load(self, state: object) -> tuple:
        """What a (re)loaded page shows: the results its browser had, with the controls set as
        they were; a job still running, with its progress; what is wrong with the Space."""
        state = read_state(state)
        shown = self.jobs.find(state["job"])
        values: dict[str, object] = {}
        if shown is not None and shown.state == "done":
            values |= self.results(shown) | self.controls(shown)
        elif state["job"]:
            values["status"] = view.message("Your earlier results have expired.")
            state["job"] = ""
        running = self.jobs.find(state["pending"])
        if running is not None and running.state == "running":
            values |= busy(state, running.id)
            values["status"] = view.progress(running.read_progress())
        else:
            if running is not None and running.state in ("failed", "cancelled"):
                values["status"] = view.message(running.message, "error")
            values |= idle(state)
        if self.models.loaded.is_set() and self.models.error:
            values["status"] = view.message(self.models.error, "error")
        return page(**values)

    @page_handler
    def poll(self, state: object) -> tuple:
        """The running job's progress; its results once a reloaded page is still waiting."""
        state = read_state(state)
        if state["pending"] == "queued":
            return page()  # "Waiting for your turn…" is on screen; a late tick must not undo more
        job = self.jobs.find(state["pending"])
        if job is None:
            return page(timer=gr.update(active=False))
        if job.state == "running":
            return page(status=view.progress(job.read_progress()))
        if job.state == "done":
            state["job"] = job.id
            return page(**idle(state), **self.results(job), **self.controls(job))
        return page(**idle(state), status=view.message(job.message, "error"))

    # --- page: running a job ---------------------------------------------------------------

    @page_handler
    def begin(self, state: object) -> tuple:
        """Find highlights was pressed: say at once what is wrong with the Space, else wait."""
        state = read_state(state)
        if self.models.loaded.is_set() and self.models.error:
            return page(status=view.message(self.models.error, "error"), **idle(state))
        running = self.jobs.find(state["pending"])
        if state["pending"] == "queued" or (running is not None and running.state == "running"):
            return page()  # already waiting or running: the next click is queued behind it
        return page(status=view.message("Waiting for your turn…", "busy"), **busy(state, "queued"))

    @page_handler
    def run(
        self,
        state: object,
        upload: object,
        link: object,
        chat_upload: object,
        window: object,
        *values: object,
    ):
        """Analyse the VOD given (an upload, a link, or the VOD of the results on screen), with
        its chat replay when one is given, and show quick previews of its clips; the exact cuts
        follow in :meth:`finish_cuts`."""
        state = read_state(state)
        running = self.jobs.find(state["pending"])
        if running is not None and running.state == "running":
            yield page(status=view.message("Your VOD is still being analysed; wait, or Cancel it."))
            return
        try:
            picks = controls.picks(*values)
            window = controls.window(window)
            source, is_link, name = self.source(state, upload, link)
            chat_path = controls.chat_file(chat_upload)
            self.models.check()
        except Exception as error:
            yield page(**idle(state), status=self._failed(state, sentence(error, "run")))
            return
        yield from self._run(state, picks, window, source, is_link, name, chat_path)

    def _run(
        self, state: dict, picks: Picks, window: float, source, is_link, name, chat_path=None
    ) -> Iterator:
        try:
            job = self.jobs.start(state["visitor"])
        except Exception as error:
            yield page(**idle(state), status=self._failed(state, sentence(error, "run")))
            return
        # the job's id reaches the browser first, so a reloaded page finds its progress
        yield page(**busy(state, job.id), status=view.progress({"stage": "Starting"}))
        try:
            self._work(job, picks, window, source, is_link, name, chat_path=chat_path)
        except Exception:
            yield page(**idle(state), status=self._failed(state, job.message))
            return
        state["job"] = job.id
        yield page(**idle(state), **self.results(job), **self.controls(job))

    def _failed(self, state: dict, sentence: str) -> str:
        """The status line for a failed attempt, remembered for :meth:`finish_cuts`."""
        shown = view.message(sentence, "error")
        # the selection on screen when it failed: its exact cuts, made after, keep the sentence
        job = self.jobs.find(state["job"])
        self.failures[state["visitor"]] = (shown, None if job is None else (job.id, job.generation))
        self.failures.move_to_end(state["visitor"])
        while len(self.failures) > MAX_FAILURES:
            self.failures.popitem(last=False)
        return shown

    def _work(
        self,
        job: Job,
        picks: Picks,
        window: float,
        source,
        is_link,
        name,
        quick_first=True,
        chat_path=None,
    ) -> None:
        """Analyse (and score the chat replay at ``chat_path`` on the same windows) and cut
        quick previews (or, not ``quick_first``, the clips asked for), one job at a time; a
        failure is kept in the job."""
        with self.busy:
            try:
                job.name, job.window = name, window
                if not is_link:
                    source = str(keep_input(job, Path(source)))
                LOG.info("analysis started: job %s", job.id)
                progress = job.progress(self.config.job_limit)
                job.analysis = library.analyze(
                    job, source, is_link, window, self.config.device, progress, self.gpu,
                    self.config.gpu_limit,
                )  # fmt: skip
                job.source = Path(job.analysis.source)
                job.name = name or job.source.name
                library.read_chat(job, chat_path)
                preview = quick_first and picks.cut == "exact"
                with job.lock:
                    library.render(
                        job, picks, preview=preview, progress=progress, cancel=progress.check
                    )
                self.jobs.succeeded(job)
            except Exception as error:
                job.state = "cancelled" if isinstance(error, Cancelled) else "failed"
                job.message = sentence(error, f"job {job.id}")
                LOG.info("job %s %s: %s", job.id, job.state, job.message)
                raise

    @page_handler
    def run_example(self, state: object):
        """The demo: its analysis was made at start-up, so only its clips are cut now."""
        state = read_state(state)
        if self.example_path is None:
            yield page(
                **idle(state),
                status=view.message("The example is still being made; try again in a moment."),
            )
            return
        with self._example_lock:
            template = self.example_job
        if template is None:  # not analysed yet: analyse it as a visitor's VOD
            yield from self._run(
                state, EXAMPLE_PICKS, EXAMPLE_WINDOW, str(self.example_path), False, EXAMPLE_NAME
            )
            return
        job = self.jobs.start(state["visitor"])
        job.name, job.source, job.window = EXAMPLE_NAME, template.source, EXAMPLE_WINDOW
        job.analysis = template.analysis
        with job.lock:
            library.render(job, EXAMPLE_PICKS, preview=True)
        self.jobs.succeeded(job)
        state["job"] = job.id
        yield page(**idle(state), **self.results(job), **self.controls(job))

    def source(self, state: dict, upload: object, link: object) -> tuple[str, bool, str]:
        """(path or link, is it a link, the VOD's name) of what the visitor gave; with
        nothing given, the VOD of the results on screen (to analyse with another clip length)."""
        link = controls.link_text(link)
        given = upload not in (None, "")
        if given and link:
            raise BadInput("Give either a file or a link, not both: clear one of them.")
        if given:
            path = controls.uploaded_file(upload)
            return str(path), False, path.name
        if link:
            return sources.check_url(link), True, ""
        shown = self.jobs.find(state["job"])
        if shown is not None and shown.source is not None and shown.source.is_file():
            return str(shown.source), False, shown.name
        raise BadInput("Upload a VOD or paste a Twitch, Kick or YouTube link first.")

    @page_handler
    def cancel(self, state: object) -> tuple:
        """Stop the visitor's job (its ffmpeg runs stop at once); the results on screen stay."""
        state = read_state(state)
        job = self.jobs.find(state["pending"])
        if job is not None and job.state == "running":
            job.cancel_flag.touch()
            return page(
                **idle(state),
                status=view.message("Cancelled; your earlier results are still here."),
            )
        if state["pending"] == "queued":
            return page(**idle(state), status=view.message("Cancelled before it started."))
        return page(
            **idle(state), status=view.message("Nothing is running, so there is nothing to cancel.")
        )

    # --- page: re-tuning -----------------------------------------------------------------

    @page_handler
    def retune(self, state: object, *values: object) -> tuple:
        """Pick again from the scores on screen: quick previews now, exact cuts after."""
        state = read_state(state)
        picks = controls.picks(*values)
        job = self.jobs.find(state["job"])
        if job is None or job.state != "done" or picks == job.picks:
            return page()
        job.generation += 1
        with job.lock:
            began = time.perf_counter()
            library.render(job, picks, preview=True)
            LOG.info("re-tuned: job %s in %.2f s", job.id, time.perf_counter() - began)
        return page(**self.results(job))

    @page_handler
    def finish_cuts(self, state: object):
        """Replace quick previews by the exact cuts asked for, saying so meanwhile."""
        state = read_state(state)
        job = self.jobs.find(state["job"])
        if job is None or job.state != "done" or job.exact or job.result is None:
            yield page()  # a generator must yield: Gradio clears the outputs of one that does not
            return
        count = len(job.result.highlights)
        generation = job.generation
        # an attempt that failed since this selection was shown (before this event or while it
        # cuts) keeps its sentence on screen: the visitor must see why their new VOD was refused
        shown, failed_on = self.failures.get(state["visitor"], ("", None))
        kept = shown if failed_on == (job.id, generation) else ""
        yield page(
            status=kept or self.summary(job, f"Cutting the {self.cutting_what(job)} ({count})…")
        )

        def superseded() -> None:
            if job.generation != generation:
                raise Cancelled("a newer selection replaced this one")

        with job.lock:
            if job.generation != generation or job.exact:
                yield page()
                return
            try:
                library.render(job, job.picks, preview=False, cancel=superseded)
            except Cancelled:
                yield page()
                return
            except Exception:
                # back to landscape without captions, so later events do not try the same
                # vertical cut or transcription again (the previews still get their exact cuts
                # at the next one)
                job.framing = job.captions = None
                raise
        values = self.results(job)
        shown, failed_on = self.failures.get(state["visitor"], ("", None))
        if failed_on == (job.id, generation):  # failed since this selection: the sentence stays
            values["status"] = shown
        yield page(**values)

    # --- page: one clip ------------------------------------------------------------------

    @page_handler
    def show_clip(self, state: object, rank: object) -> tuple:
        """One clip of the results on screen, and why the model picked it."""
        state = read_state(state)
        job = self.jobs.find(state["job"])
        if job is None or job.result is None or rank in (None, ""):
            return page()
        return page(**self.clip(job, rank))

    def clip(self, job: Job, rank: object) -> dict:
        highlights = job.result.highlights
        if not highlights:
            return {"clip_video": None, "clip_audio": None, "why": None} | self.caption_of(job, -1)
        index = int(controls.number(rank, "The clip", 1, len(highlights), whole=True)) - 1
        paths = shown_clips(job.result)
        clip = str(paths[index]) if paths else None
        video = job.analysis.info.has_video
        return {
            "clip_video": gr.update(value=clip if video else None, visible=video),
            "clip_audio": gr.update(value=None if video else clip, visible=not video),
            "why": view.why_plot(
                job.analysis,
                highlights[index],
                signals.reasons(job.result.signals, highlights[index].window),
            ),
        } | self.caption_of(job, index)

    # --- what the page shows -------------------------------------------------------------

    def summary(self, job: Job, note: str = "") -> str:
        result = job.result
        text = view.summary(
            job.name, job.analysis.duration, result.threshold, job.picks, len(result.highlights)
        )
        if note:
            text = text.replace("</div>", f'<div class="hs-note">{note}</div></div>', 1)
        return text

    def results(self, job: Job) -> dict:
        result, analysis = job.result, job.analysis
        highlights = result.highlights
        videos = analysis.info.has_video
        captions = [view.caption(h.rank, h.start_sec, h.end_sec, h.confidence) for h in highlights]
        previews = not job.exact and highlights
        note = "These are quick previews; the exact clips are being cut." if previews else ""
        if previews and job.framing is not None:
            note = "These are landscape previews; the vertical clips are being cut."
        elif previews and job.captions is not None:
            note = "What each clip says is being transcribed; its captions follow."
        said = [t.text for t in result.transcripts]
        values = {
            "status": self.summary(job, note),
            "results": gr.update(visible=True),
            "results_below": gr.update(visible=True),
            "plot": view.score_plot(analysis, result),
            "gallery": gr.update(
                value=[(str(p), c) for p, c in zip(shown_clips(result), captions, strict=True)],
                visible=videos and bool(highlights),
            ),
            "audio_note": gr.update(visible=not videos and bool(highlights)),
            "table": gr.update(
                value=view.table(highlights, said),
                datatype=view.TABLE_TYPES + ["str"] * bool(said),
                visible=bool(highlights),
            ),
            "downloads": view.downloads(job.files),
            "picker": gr.update(
                choices=[(c, h.rank) for c, h in zip(captions, highlights, strict=True)],
                value=1 if highlights else None,
                visible=bool(highlights),
            ),
            "vertical_box": gr.update(visible=videos),
        }
        return values | self.captions_view(job) | self.clip(job, 1)

    def controls(self, job: Job) -> dict:
        picks = job.picks
        values = dict(zip(CONTROLS, (picks.top_n, job.window, *picks.values()[1:]), strict=True))
        values["percentile"] = gr.update(
            value=picks.percentile, visible=picks.picky_by != "threshold"
        )
        values["threshold"] = gr.update(
            value=picks.threshold, visible=picks.picky_by == "threshold"
        )
        chosen = job.framing or framing.Framing("off")
        across = float(chosen.center_x) * 100 if chosen.center_x else framing.DEFAULT_CENTRE
        shown = {"facecam": chosen.facecam or "", "gameplay": chosen.gameplay or ""}
        shown["slice_at"] = round(across, 1)
        values["layout"] = chosen.layout
        if job.framing is None or job.frame is None:
            return values | shown
        return values | self.framing_view(job, chosen.layout, *shown.values(), shown)

    # --- the API ---------------------------------------------------------------------------

    def detect(
        self,
        file: str | None = None,
        link: str = "",
        top_n: float = selection.TOP_N,
        percentile: float = selection.PERCENTILE,
        threshold: float | None = None,
        gap: float = selection.NMS_SEC,
        pad_before: float = 0.0,
        pad_after: float = 0.0,
        cut: str = "exact",
        vertical: str = "off",
        chat: str | None = None,
        chat_weight: float = CHAT_WEIGHT,
        captions: str = "off",
    ) -> tuple:
        """Find the highlights of a game-stream VOD and cut them into clips.

        Args:
            file: the VOD, a video or audio file (or leave empty and give link)
            link: a Twitch, Kick or YouTube VOD link (or leave empty and give file)
            top_n: clips at most, 1-50 (default 20)
            percentile: keep moments scoring above this percentile of the VOD, 50-100 (default 99)
            threshold: a minimum score 0-1 to use instead of the percentile (default none)
            gap: minimum seconds between two clips, 0-600 (default 10)
            pad_before: seconds added before each clip, 0-60 (default 0)
            pad_after: seconds added after each clip, 0-60 (default 0)
            cut: exact (re-encoded, frame-accurate) or fast (stream copy); default exact
            vertical: off, stack, crop or fit: also cut 9:16 clips (default off)
            chat: the VOD's chat replay, fused with the audio (default none)
            chat_weight: the chat's share of the score, 0-1 (default 0.35; 0: the audio alone)
            captions: off, burn (drawn in), soft (subtitle track) or files (.srt, .vtt); default off
        Returns:
            report: {job, vod, duration, threshold, message, vertical, highlights; chat}
            each highlight: {rank, start_sec, end_sec, confidence, clip, vertical_clip; signals;
            with captions: text, language, words [{word, start, end} s in the clip], subtitles}
            the zip of the clips, tables, subtitles and timelines
            the clips by rank, then the vertical clips by rank
            the editor timelines (otio, fcp7xml, fcpxml, edl, chapters), then with captions the
            rough cut's captions.srt and each clip's .srt and .vtt by rank
            the score plot (HTML)
        """
        try:
            return self._detect(
                file, link, top_n, percentile, threshold, gap, pad_before, pad_after, cut, vertical,
                chat, chat_weight, captions,
            )  # fmt: skip
        except Exception as error:
            raise api.as_api_error(error, "detect") from None

    def _detect(
        self, file, link, top_n, percentile, threshold, gap, pad_before, pad_after, cut, vertical,
        chat=None, chat_weight=CHAT_WEIGHT, captions="off",
    ) -> tuple:  # fmt: skip
        by = "percentile" if threshold is None else "threshold"
        picks = controls.picks(top_n, by, percentile, threshold, gap, pad_before, pad_after, cut,
                               chat_weight)  # fmt: skip
        chosen = api.vertical_layout(vertical)
        mode = api.caption_mode(captions)
        source, is_link, name = self.source({"job": ""}, file, link)
        chat_path = controls.chat_file(chat)
        self.models.check()
        if mode is not None:
            library.check_whisper()  # a bad Whisper model is refused before the analysis
        job = self.jobs.start(api.API_OWNER)
        job.captions = mode
        self._work(job, picks, scoring.WINDOW_SEC, source, is_link, name, quick_first=False,
                   chat_path=chat_path)  # fmt: skip
        notes = []
        if chosen is not None and job.analysis.info.has_video:
            with job.lock:  # the landscape clips are in the job's store: only 9:16 is cut
                job.framing = chosen
                library.render(job, picks, preview=False)
        elif chosen is not None:
            notes.append(api.NO_PICTURE)
        if mode in ("burn", "soft") and not job.analysis.info.has_video:
            notes.append(api.NO_PICTURE_CAPTIONS)
        answer = api.answer(job, " ".join(notes))
        result = job.result
        if result.signals:  # the chat's summary, and each highlight's share of audio and chat
            answer.report["chat"] = {k: v for k, v in job.chat.about.items() if k != "file"}
            for row, h in zip(answer.report["highlights"], result.highlights, strict=True):
                row["signals"] = signals.contributions(result.windows, result.signals, h.window)
        return answer.values()


def shown_clips(result) -> list[Path]:
    """The clips the page shows: the vertical ones once made, else the landscape ones."""
    return result.vertical_paths or result.clip_paths


@quiet_handler
def rank_of_row(event: gr.EventData) -> object:
    """The rank in a selected table row (its first column, whatever the sort order). Plain
    EventData: Gradio builds a SelectData from whatever a caller sends, before any check."""
    data = event._data if isinstance(event._data, dict) else {}
    row = data.get("row_value")
    return (
        int(controls.number(row[0], "The clip", 1, controls.MAX_CLIPS, whole=True))
        if row
        else gr.skip()
    )


@quiet_handler
def rank_of_item(event: gr.EventData) -> object:
    data = event._data if isinstance(event._data, dict) else {}
    index = data.get("index")
    return index + 1 if isinstance(index, int) and 0 <= index < controls.MAX_CLIPS else gr.skip()


@quiet_handler
def pickiness(picky_by: object) -> tuple:
    by = picky_by if picky_by in controls.PICKY_BY else "percentile"
    return gr.update(visible=by != "threshold"), gr.update(visible=by == "threshold")
