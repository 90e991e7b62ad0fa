"""What scripts and agents receive: the /detect answer (a JSON report and real files: each clip,
the zip, the timelines, the score plot) and the calls on an earlier answer's job (one clip, one
timeline, vertical clips), which the app's MCP server offers as tools.

Mixed into :class:`~highlightsense.web.service.Service`, whose ``jobs`` it uses; the job's
files are :func:`.library.package`'s. An API job belongs to no visitor: it stays until it
expires or the app needs its room, and its id (in the report) is what the other calls take.
"""

from __future__ import annotations

import functools
import inspect
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import gradio.utils
from gradio.components import Component

from . import framing, library
from .controls import BadInput, choice, number
from .jobs import Job
from .page import sentence

API_OWNER = "api"  # the jobs of API and MCP callers (kept until they expire or room is needed)
VERTICAL = framing.LAYOUTS  # off, stack, crop, fit
NO_PICTURE = "This VOD has no picture, so no vertical clips were made."
CAPTIONS = {  # /detect's captions: "off", or one of the library's caption modes
    "off": "no captions",
    "burn": "drawn into the clips",
    "soft": "a subtitle track in each mp4",
    "files": "subtitle files only",
}
NO_PICTURE_CAPTIONS = "This VOD has no picture, so its captions are subtitle files only."


@dataclass(frozen=True)
class Answer:
    """/detect's outputs, in the order app.py wires them."""

    report: dict
    archive: str
    clips: list[str]  # rank order
    vertical_clips: list[str]  # rank order; empty unless asked for
    timelines: list[str]  # in library.TIMELINES' order; then captions.srt and the subtitles
    plot: str  # the interactive score plot, a self-contained HTML page

    def values(self) -> tuple:
        return (
            self.report, self.archive, self.clips, self.vertical_clips, self.timelines, self.plot
        )  # fmt: skip


def vertical_layout(value: object) -> framing.Framing | None:
    """The API's ``vertical`` choice (None: off); a stack finds its facecam on its own."""
    layout = choice(value if value not in (None, "") else "off", VERTICAL, "vertical")
    return None if layout == "off" else framing.Framing(layout)


def caption_mode(value: object) -> str | None:
    """The API's ``captions`` choice as the library's mode (None: off)."""
    mode = choice(value if value not in (None, "") else "off", CAPTIONS, "captions")
    return None if mode == "off" else mode


def downloads(job: Job, paths: list[Path], prefix: str = "") -> list[Path]:
    """The job's vod-named downloads of ``paths`` (files of its latest render)."""
    stem = library.download_stem(job.name)
    folder = job.result.out_dir / "downloads"
    return [folder / f"{stem}-{prefix}{path.name}" for path in paths]


def plot_file(job: Job) -> Path:
    """The score plot of the job's latest render, named after the VOD like the other files."""
    (target,) = downloads(job, [job.result.out_dir / "scores.html"])
    if not target.exists():
        try:
            os.link(job.result.out_dir / "scores.html", target)
        except OSError:  # a file system without hard links
            shutil.copyfile(job.result.out_dir / "scores.html", target)
    return target


def answer(job: Job, note: str = "") -> Answer:
    """The report and files of ``job``'s latest render."""
    result = job.result
    clips = downloads(job, result.clip_paths)
    vertical = downloads(job, result.vertical_paths, library.VERTICAL_PREFIX)
    found = len(result.highlights)
    message = (
        f"{found} highlight{'s' if found != 1 else ''} found."
        if found
        else "No highlights with these settings; lower the percentile or the threshold."
    )
    report = {
        "job": job.id,
        "vod": job.name,
        "duration": round(job.analysis.duration, 3),
        "threshold": round(result.threshold, 6),
        "message": f"{message} {note}".strip(),
        "vertical": job.framing.layout if job.framing is not None and vertical else None,
        "vertical_note": result.vertical_note if vertical else "",
        "highlights": [
            {
                "rank": h.rank,
                "start_sec": round(h.start_sec, 3),
                "end_sec": round(h.end_sec, 3),
                "confidence": round(h.confidence, 6),
                "clip": clips[i].name if i < len(clips) else None,
                "vertical_clip": vertical[i].name if i < len(vertical) else None,
            }
            for i, h in enumerate(result.highlights)
        ],
    }
    subtitles = downloads(job, result.subtitle_paths)  # each clip's .srt and .vtt, by rank
    for i, heard in enumerate(result.transcripts):  # none without captions
        row = report["highlights"][i]
        row["text"], row["language"] = heard.text, heard.language
        row["words"] = [  # s from the clip's start, as in highlights.json
            {"word": w.text.strip(), "start": round(w.start, 3), "end": round(w.end, 3)}
            for w in heard.words
        ]
        row["subtitles"] = [path.name for path in subtitles[2 * i : 2 * i + 2]]
    # appended to the timelines, so a caller's scripts reading six outputs keep working
    timelines = downloads(job, result.timeline_paths) + subtitles
    return Answer(
        report,
        str(job.files[0]),
        [str(p) for p in clips],
        [str(p) for p in vertical],
        [str(p) for p in timelines],
        str(plot_file(job)),
    )


def document(fn: Callable, inputs: list[Component]) -> list[Component]:
    """``inputs``, each described by its line in ``fn``'s docstring (Args) for
    ``Client.view_api()`` too: Gradio hands those lines to MCP clients only."""
    _, lines, _ = gradio.utils.get_function_description(fn)
    names = list(inspect.signature(fn).parameters)
    for name, component in zip(names, inputs, strict=True):
        info = {**component.api_info(), "additional_description": lines[name]}
        component.api_info = functools.partial(dict, info)  # what the config and view_api read
    return inputs


def as_api_error(error: Exception, where: str) -> gr.Error:
    return gr.Error(sentence(error, where), print_exception=False)


class ApiCalls:
    """The calls on an earlier /detect answer (see the module's docstring)."""

    def api_job(self, job_id: object) -> Job:
        """A finished API job by its id (a visitor's jobs are not the API's to hand out)."""
        job = self.jobs.find(job_id.strip() if isinstance(job_id, str) else job_id)
        if job is None or job.owner != API_OWNER:
            raise BadInput(
                "That job is not known here (results expire after a while); call detect and "
                "use the job of its report."
            )
        if job.state != "done" or job.result is None:
            raise BadInput("That job has no results yet; wait for its detect call to finish.")
        return job

    def get_clip(self, job: str, rank: float = 1, vertical: bool = False) -> str:
        """One clip of an earlier detect call, as a file.

        Args:
            job: the "job" value of a detect report
            rank: which highlight, 1 for the best (1-50, default 1)
            vertical: the 9:16 clip instead (made by detect or vertical_clips); default false
        Returns:
            the clip (.mp4, or .m4a for audio-only VODs)
        """
        try:
            found = self.api_job(job)
            files = answer(found)
            clips = files.vertical_clips if vertical is True else files.clips
            if vertical is True and not clips:
                raise BadInput("This job has no vertical clips; call vertical_clips first.")
            if not clips:
                raise BadInput("This job found no highlights, so it has no clips.")
            index = int(number(rank, "The rank", 1, len(clips), whole=True)) - 1
            return clips[index]
        except Exception as error:
            raise as_api_error(error, "clip") from None

    def get_timeline(self, job: str, kind: str = "otio") -> str:
        """An editor timeline of an earlier detect call's highlights, as a file.

        Args:
            job: the "job" value of a detect report
            kind: otio, fcp7xml (Premiere), fcpxml (Final Cut), edl or chapters; default otio
        Returns:
            the timeline file, with a marker per highlight and a rough cut of their spans
        """
        try:
            found = self.api_job(job)
            kind = choice(kind, dict.fromkeys(library.TIMELINES), "kind")
            paths = answer(found).timelines
            if not paths:
                raise BadInput("This job found no highlights, so it has no timeline.")
            return paths[list(found.result.selection.timelines).index(kind)]
        except Exception as error:
            raise as_api_error(error, "timeline") from None

    def vertical_clips(self, job: str, layout: str = "fit") -> tuple[dict, list[str]]:
        """Cut 9:16 (1080x1920) clips of an earlier detect call's highlights, for phones.

        Args:
            job: the "job" value of a detect report
            layout: stack (facecam over gameplay), crop (the middle) or fit (blurred); default fit
        Returns:
            the report, with each highlight's vertical_clip
            the vertical clips by rank
        """
        try:
            found = self.api_job(job)
            chosen = vertical_layout(layout)
            if chosen is None:
                raise BadInput("The layout must be one of: stack, crop, fit.")
            if not found.analysis.info.has_video:
                raise BadInput(NO_PICTURE.replace("were made", "can be made"))
            with found.lock:
                if found.framing != chosen or not found.result.vertical_paths:
                    found.framing = chosen
                    found.generation += 1
                    library.render(found, found.picks, preview=False)
            files = answer(found)
            return files.report, files.vertical_clips
        except Exception as error:
            raise as_api_error(error, "vertical clips") from None
