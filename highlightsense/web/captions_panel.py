"""The page's *Captions* panel: captions from what the streamer says, for the results on screen
without analysing again (the clips stay shown, the captioned cuts follow in
``Service.finish_cuts``), each clip's transcript in the table and beside its player, and a
visitor's correction of one clip's words, re-cut alone.

Mixed into :class:`~highlightsense.web.service.Service`, whose ``jobs``, ``results`` and
``summary`` it uses; the transcripts and captions are the library's (``web.library``).
"""

from __future__ import annotations

import gradio as gr

from . import library, view
from .controls import BadInput, choice, number
from .jobs import Job
from .page import page, page_handler, read_state

# What the page offers, as the library's caption modes ("off": none). "soft" (a subtitle track
# muxed into the mp4) is left to /detect: browsers' players ignore an mp4's mov_text track, so
# on the page it would look like nothing happened.
CHOICES = {"off": "Off", "burn": "On the clip", "files": "Subtitle files"}
NO_PICTURE = (
    "This VOD has no picture, so its captions are subtitle files (.srt and .vtt) in the downloads."
)
HOW_TO_CORRECT = (
    "A word heard wrong? Pick the clip, correct its text beside the player and press "
    "Re-cut with this text: only that clip is cut again."
)
NOTHING_SHOWN = "Find the highlights of a video first."
NOT_CAPTIONED = "Choose captions for your clips first; then their text can be corrected."


class CaptionsPanel:
    """The panel's handlers (see the module's docstring)."""

    def finished_job(self, state: dict) -> Job | None:
        """The visitor's own finished job on screen (its id alone is not enough)."""
        job = self.jobs.find(state["job"])
        ok = job is not None and job.owner == state["visitor"]
        return job if ok and job.state == "done" and job.result is not None else None

    @page_handler
    def choose_captions(self, state: object, chosen: object) -> tuple:
        """Caption the clips on screen (or take the captions off) without analysing again:
        the clips stay as they are until the captioned cuts of :meth:`finish_cuts` replace
        them."""
        job = self.finished_job(read_state(state))
        if job is None:
            return page(status=view.message(NOTHING_SHOWN))
        mode = choice(chosen, CHOICES, "Captions")
        mode = None if mode == "off" else mode
        if mode == job.captions:
            return page()
        job.captions = mode
        job.generation += 1  # cuts of the earlier choice in flight stop
        with job.lock:  # after those: nothing in flight marks the job's clips exact again
            job.exact = not job.result.highlights
        return page(**self.results(job))

    @page_handler
    def recut_caption(self, state: object, rank: object, text: object) -> tuple:
        """The visitor's text becomes clip ``rank``'s captions: checked (markup stays letters,
        too long is refused), spread over the times its speech was heard, and that clip alone
        is cut again by :meth:`finish_cuts`."""
        job = self.finished_job(read_state(state))
        if job is None:
            return page(status=view.message(NOTHING_SHOWN))
        if not job.result.transcripts:
            return page(status=view.message(NOT_CAPTIONED))
        highlights = job.result.highlights
        index = int(number(rank, "The clip", 1, len(highlights), whole=True)) - 1
        if not isinstance(text, str):
            raise BadInput("The caption must be text; type it in the box beside the player.")
        library.correct_caption(job, index, text)  # a refused text changes nothing
        job.generation += 1
        with job.lock:
            job.exact = False
        return page(status=self.summary(job, f"Clip #{index + 1} is being cut with your text…"))

    def captions_view(self, job: Job) -> dict:
        """The panel's choice and its note for the job on screen."""
        note = ""
        if job.captions is not None and not job.analysis.info.has_video:
            note = NO_PICTURE
        elif job.result is not None and job.result.transcripts:
            note = HOW_TO_CORRECT
        return {"captions": job.captions or "off", "captions_note": note}

    def caption_of(self, job: Job, index: int) -> dict:
        """The box holding clip ``index``'s (0-based) transcript, shown once it has one."""
        said = job.result.transcripts if job.result is not None else []
        shown = 0 <= index < len(said)
        return {
            "caption_text": gr.update(
                value=said[index].text if shown else "",
                label=f"What clip #{index + 1} says (correct it, then re-cut)",
                visible=shown,
            ),
            "recut": gr.update(visible=shown),
        }

    def cutting_what(self, job: Job) -> str:
        """What :meth:`finish_cuts` says it is cutting."""
        if job.framing is not None:
            return "vertical clips (a while: each is re-framed)"
        if job.captions == "burn" and job.analysis.info.has_video:
            return "captioned clips (a while: each clip's speech is transcribed and drawn in)"
        if job.captions is not None:
            return "clips and their subtitles (each clip's speech is transcribed)"
        return "exact clips"
