"""The page's *Vertical (9:16)* panel: a frame of the VOD with the layout's boxes, moved by
clicks, a phone picture of the result, and vertical clips cut for the results on screen without
analysing again (landscape previews at once, the vertical cuts in ``Service.finish_cuts``).

Mixed into :class:`~highlightsense.web.service.Service`, whose ``jobs`` and ``results`` it uses;
the pictures and the checks are :mod:`highlightsense.web.framing`'s.
"""

from __future__ import annotations

import gradio as gr

from . import framing, library, view
from .controls import BadInput
from .jobs import Job
from .page import page, page_handler, read_state


class VerticalPanel:
    """The panel's handlers (see the module's docstring)."""

    def shown_job(self, state: dict) -> Job | None:
        """The visitor's finished job on screen, if it has a picture."""
        job = self.jobs.find(state["job"])
        ok = job is not None and job.state == "done" and job.analysis is not None
        return job if ok and job.analysis.info.has_video else None

    @page_handler
    def vertical_preview(self, state: object, *choice: object) -> tuple:
        """The vertical choice drawn on a frame of the VOD on screen and on a phone; a stack
        without a facecam box starts from the face detector's suggestion."""
        job = self.shown_job(read_state(state))
        if job is None:
            return page()
        layout, facecam, gameplay, slice_at = choice
        values: dict[str, object] = {}
        if layout == "stack" and not facecam:
            facecam = values["facecam"] = self.suggested_facecam(job) or ""
        return page(**self.framing_view(job, layout, facecam, gameplay, slice_at, values))

    @page_handler
    def vertical_click(
        self, state: object, layout: object, place: object, facecam: object, gameplay: object,
        slice_at: object, event: gr.EventData,
    ) -> tuple:  # fmt: skip
        """A click on the frame moves the box being placed there (or the 9:16 slice)."""
        job = self.shown_job(read_state(state))
        if job is None or job.frame is None:
            return page()
        data = event._data if isinstance(event._data, dict) else {}
        box = facecam if place == "facecam" else gameplay
        change = framing.click(
            job.analysis.info, job.frame.shape[1], str(layout), str(place),
            box if isinstance(box, str) else None, data.get("index"),
        )  # fmt: skip
        if change is None:
            return page()
        values: dict[str, object] = {}
        if layout == "crop":
            slice_at = values["slice_at"] = change
        elif place == "facecam":
            facecam = values["facecam"] = change
        else:
            gameplay = values["gameplay"] = change
        return page(**self.framing_view(job, layout, facecam, gameplay, slice_at, values))

    @page_handler
    def make_vertical(self, state: object, *choice: object) -> tuple:
        """Cut the results on screen as vertical clips (or back to landscape only), without
        analysing again: landscape previews at once, the vertical cuts in :meth:`finish_cuts`."""
        job = self.shown_job(read_state(state))
        if job is None:
            return page(status=view.message("Find the highlights of a video first."))
        chosen, _ = framing.checked(job.analysis.info, *choice)
        if chosen == job.framing:
            return page()
        job.framing = chosen
        job.generation += 1  # exact cuts of the earlier choice in flight stop
        with job.lock:
            library.render(job, job.picks, preview=True)
        return page(**self.results(job))

    def suggested_facecam(self, job: Job) -> str | None:
        """The face detector's facecam box for the job's VOD, asked for once."""
        if job.facecam is None:
            from .. import faces  # OpenCV: only when a visitor asks for vertical clips

            job.facecam = faces.suggest_facecam(job.analysis.info)
        return job.facecam.region.text() if job.facecam.region is not None else None

    def framing_view(
        self, job: Job, layout: object, facecam: object, gameplay: object, slice_at: object,
        changed: dict | None = None,
    ) -> dict:  # fmt: skip
        """The frame with the choice's boxes, the phone picture and the controls it uses,
        showing the ``changed`` values of those controls."""
        choice = (layout, facecam, gameplay, slice_at)
        layout = layout if layout in framing.LAYOUTS else "off"
        if job.frame is None:
            from .. import faces

            highlights = job.result.highlights if job.result is not None else []
            at = (
                (highlights[0].start_sec + highlights[0].end_sec) / 2
                if highlights
                else job.analysis.duration / 2
            )
            job.frame = faces.frame_at(job.analysis.info, at)
        info = job.analysis.info
        uses = {"place": "stack", "facecam": "stack", "gameplay": "stack", "slice_at": "crop"}
        changed = changed or {}
        values: dict[str, object] = {
            name: gr.update(
                visible=layout == used, **({"value": changed[name]} if name in changed else {})
            )
            for name, used in uses.items()
        }
        values["vertical_note"] = framing.note(layout, job.facecam)
        try:
            _, drawn = framing.checked(info, *choice)
        except BadInput as error:
            drawn = None
            if layout != "stack" or facecam:  # not just a facecam still to be placed
                values["vertical_note"] = str(error)
        values["frame_view"] = gr.update(
            value=framing.annotated(job.frame, info, drawn), visible=layout != "off"
        )
        values["phone_view"] = gr.update(
            value=framing.phone(job.frame, info, drawn) if drawn is not None else None,
            visible=drawn is not None,
        )
        return values
