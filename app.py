"""HighlightSense in the browser: upload a game-stream VOD (or paste a link), get its best clips.

The Space's entry point: page layout and event wiring only. The handlers, the job registry,
the models, the limits and the example live in :mod:`highlightsense.web`. ``python app.py``
serves on 127.0.0.1:7860 (``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` change that); on a
Hugging Face Space the same file is the Space's ``app_file``. The environment variables the
Space's owner may set are listed in the README.
"""

from __future__ import annotations

import contextlib
import logging

with contextlib.suppress(ImportError):  # on Hugging Face Spaces; first, as ZeroGPU patches torch
    import spaces  # noqa: F401

import gradio as gr

from highlightsense import chat, scoring, selection, sources
from highlightsense.web import api, captions_panel, config, controls, framing, service
from highlightsense.web.controls import CUTS, MAX_CLIPS, MAX_GAP, MAX_PADDING, PICKY_BY
from highlightsense.web.library import CORRECTION_LIMIT, TIMELINES
from highlightsense.web.service import PAGE, Service

INTRO = """# HighlightSense
Find the best moments of a long game stream. Upload the recording (or paste a Twitch or Kick
VOD or YouTube link) and press **Find highlights**: the streamer's voice is separated from the
game's sound, a model listens to both, and the most exciting moments come back as clips."""

CSS = """
#find-highlights { font-size: 1.15rem; min-height: 3rem; }
.hs-status { padding: 0.6rem 0.8rem; border-radius: 0.5rem; border: 1px solid #d4d4d8; }
.hs-status:empty { display: none; }
.hs-error { border-color: #dc2626; background: #fef2f2; color: #991b1b; }
.hs-busy progress { width: 100%; height: 0.8rem; }
.hs-note { margin-top: 0.3rem; font-size: 0.9rem; opacity: 0.8; }
.hs-downloads ul { margin: 0.3rem 0 0 1rem; padding: 0; }
#highlights-table td { cursor: pointer; }
#highlights-table .cell-wrap span { cursor: pointer; }
"""

# Enter in a slider's number box applies it: blurring the box fires the slider's release.
HEAD = """<script>
document.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && event.target.matches("input[type=number]")) event.target.blur();
});
</script>"""

# After a click on a clip, bring its player into view (it may sit below on a phone).
SHOW_PLAYER = """() => {
  const player = document.getElementById("clip-player-box");
  if (player) player.scrollIntoView({behavior: "smooth", block: "nearest"});
}"""


def build(app: Service) -> gr.Blocks:
    """The page, wired to ``app``'s handlers; only /detect and the calls on its jobs are
    public."""
    with gr.Blocks(title="HighlightSense", delete_cache=(3600, int(app.config.ttl))) as demo:
        state = gr.BrowserState({}, storage_key="highlightsense")
        timer = gr.Timer(service.POLL_SECONDS, active=False)
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=2):
                upload = gr.File(
                    label="Your VOD (a video or audio file)",
                    file_types=controls.VOD_TYPES,
                    type="filepath",
                    elem_id="vod-upload",
                )
                link = gr.Textbox(
                    label="…or paste a link",
                    placeholder="A Twitch, Kick or YouTube VOD link: https://www.twitch.tv/videos/…",
                    max_length=sources.MAX_URL_LENGTH,
                )
                chat_upload = gr.File(
                    label="Its chat replay (optional: TwitchDownloader, twitch-dl or "
                    "chat-downloader JSON, or a [H:MM:SS] name: message log)",
                    file_types=controls.CHAT_TYPES,
                    type="filepath",
                    height=90,
                    elem_id="chat-upload",
                )
                find = gr.Button("Find highlights", variant="primary", elem_id="find-highlights")
                example = gr.Button("Try an example (a 75-second stream moment)", size="sm")
                with gr.Accordion("Settings", open=False):
                    top_n = gr.Slider(
                        1, MAX_CLIPS, value=selection.TOP_N, step=1, label="Number of clips"
                    )
                    window = gr.Slider(
                        controls.MIN_WINDOW,
                        controls.MAX_WINDOW,
                        value=scoring.WINDOW_SEC,
                        step=1,
                        label="Clip length (seconds)",
                        info="Takes effect at the next Find highlights (it re-uses your VOD).",
                    )
                    picky_by = gr.Radio(
                        [(label, key) for key, label in PICKY_BY.items()],
                        value="percentile",
                        label="How picky",
                    )
                    percentile = gr.Slider(
                        controls.MIN_PERCENTILE,
                        100,
                        value=selection.PERCENTILE,
                        step=0.5,
                        label="Keep moments scoring higher than this % of the VOD",
                    )
                    threshold = gr.Slider(
                        0,
                        1,
                        value=controls.DEFAULT_THRESHOLD,
                        step=0.01,
                        label="Minimum score (0 to 1: 0.6 means a score of 60%)",
                        visible=False,
                    )
                    gap = gr.Slider(
                        0, MAX_GAP, value=selection.NMS_SEC, step=1, label="Minimum gap (seconds)"
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
                    chat_weight = gr.Slider(
                        0,
                        1,
                        value=chat.CHAT_WEIGHT,
                        step=0.05,
                        label="Chat weight (with a chat replay; 0: the audio alone)",
                        elem_id="chat-weight",
                    )
            with gr.Column(scale=3):
                status = gr.HTML(elem_id="status")
                with gr.Column(visible=False) as cancel_box:
                    cancel = gr.Button("Cancel", variant="stop", size="sm", elem_id="cancel")
                with gr.Column(visible=False) as results:
                    plot = gr.Plot(label="Highlight score over the VOD", elem_id="score-plot")
        with gr.Column(visible=False) as results_below:
            with gr.Row():
                with gr.Column(scale=3):
                    gallery = gr.Gallery(
                        label="Your highlights (click one to play it beside)",
                        columns=3,
                        height=320,
                        allow_preview=False,
                        object_fit="contain",
                        elem_id="highlights-gallery",
                    )
                    audio_note = gr.Markdown(service.NO_VIDEO, visible=False)
                with gr.Column(scale=2, elem_id="clip-player-box"):
                    picker = gr.Dropdown(label="Playing", choices=[], elem_id="clip-picker")
                    clip_video = gr.Video(
                        label="Clip",
                        interactive=False,
                        elem_id="clip-player",
                        buttons=["download"],
                        height=480,  # px: a 9:16 clip must not fill the page
                    )
                    clip_audio = gr.Audio(label="Clip", interactive=False, visible=False)
                    caption_text = gr.Textbox(
                        label="What this clip says",
                        max_length=CORRECTION_LIMIT,
                        visible=False,
                        elem_id="caption-text",
                    )
                    recut = gr.Button(
                        "Re-cut with this text", size="sm", visible=False, elem_id="recut-caption"
                    )
                    why = gr.Plot(
                        label="Why this clip: where the model listened", elem_id="why-plot"
                    )
            with gr.Row(elem_id="captions-box"):
                captions = gr.Radio(
                    [(label, key) for key, label in captions_panel.CHOICES.items()],
                    value="off",
                    label="Captions (what the streamer says)",
                    elem_id="captions-choice",
                )
                captions_note = gr.Markdown(elem_id="captions-note")
            with gr.Accordion(
                "Vertical clips for phones (9:16)", open=False, elem_id="vertical-box"
            ) as vertical_box:
                with gr.Row():
                    layout = gr.Radio(
                        [(label, key) for key, label in framing.LAYOUTS.items()],
                        value="off",
                        label="Layout",
                        elem_id="vertical-layout",
                    )
                    place = gr.Radio(
                        [("Facecam", "facecam"), ("Gameplay", "gameplay")],
                        value="facecam",
                        label="A click on the picture moves the box of the",
                        visible=False,
                        elem_id="vertical-place",
                    )
                with gr.Row():
                    frame_view = gr.Image(
                        label="A frame of your VOD",
                        interactive=False,
                        visible=False,
                        buttons=[],
                        scale=3,
                        elem_id="vertical-frame",
                    )
                    phone_view = gr.Image(
                        label="On a phone",
                        interactive=False,
                        visible=False,
                        buttons=[],
                        scale=1,
                        elem_id="vertical-phone",
                    )
                vertical_note = gr.Markdown()
                with gr.Row():
                    facecam = gr.Textbox(
                        label="Facecam box: x, y, width, height (pixels)",
                        max_length=framing.MAX_BOX_CHARS,
                        visible=False,
                        elem_id="facecam-box",
                    )
                    gameplay = gr.Textbox(
                        label="Gameplay box (empty: the whole picture)",
                        max_length=framing.MAX_BOX_CHARS,
                        visible=False,
                        elem_id="gameplay-box",
                    )
                    slice_at = gr.Slider(
                        0,
                        100,
                        value=framing.DEFAULT_CENTRE,
                        step=0.5,
                        label="Slice centre (% across the picture)",
                        visible=False,
                    )
                make_vertical = gr.Button("Make vertical clips", elem_id="make-vertical")
            with gr.Row():
                table = gr.Dataframe(
                    headers=["#", "Start", "End", "Length", "Score"],
                    datatype=["number", "str", "str", "str", "str"],
                    label="Highlights (click a row to play it)",
                    interactive=False,
                    scale=3,
                    elem_id="highlights-table",
                )
                downloads = gr.HTML(elem_id="downloads")

        components = {
            "state": state,
            "status": status,
            "results": results,
            "results_below": results_below,
            "plot": plot,
            "gallery": gallery,
            "audio_note": audio_note,
            "table": table,
            "downloads": downloads,
            "picker": picker,
            "clip_video": clip_video,
            "clip_audio": clip_audio,
            "why": why,
            "timer": timer,
            "cancel": cancel_box,
            "top_n": top_n,
            "window": window,
            "picky_by": picky_by,
            "percentile": percentile,
            "threshold": threshold,
            "gap": gap,
            "pad_before": pad_before,
            "pad_after": pad_after,
            "cut": cut,
            "chat_weight": chat_weight,
            "vertical_box": vertical_box,
            "frame_view": frame_view,
            "phone_view": phone_view,
            "vertical_note": vertical_note,
            "layout": layout,
            "place": place,
            "facecam": facecam,
            "gameplay": gameplay,
            "slice_at": slice_at,
            "captions": captions,
            "captions_note": captions_note,
            "caption_text": caption_text,
            "recut": recut,
        }
        outputs = [components[name] for name in PAGE]
        tuning = [top_n, picky_by, percentile, threshold, gap, pad_before, pad_after, cut]
        tuning += [chat_weight]
        private = {"api_visibility": "private", "show_progress": "hidden"}

        by_find = find.click(app.begin, [state], outputs, concurrency_limit=None, **private)
        running = by_find.success(
            app.run,
            [state, upload, link, chat_upload, window, *tuning],
            outputs,
            concurrency_id="analysis",
            concurrency_limit=1,
            **private,
        )
        by_example = example.click(app.begin, [state], outputs, concurrency_limit=None, **private)
        running_example = by_example.success(
            app.run_example, [state], outputs, concurrency_id="analysis", **private
        )
        for run in (running, running_example):
            run.then(app.finish_cuts, [state], outputs, concurrency_id="cuts", **private)
        cancel.click(
            app.cancel,
            [state],
            outputs,
            cancels=[running, running_example],
            concurrency_limit=None,
            **private,
        )
        retuned = gr.on(
            [
                top_n.release,
                picky_by.input,
                percentile.release,
                threshold.release,
                gap.release,
                pad_before.release,
                pad_after.release,
                cut.input,
                chat_weight.release,
            ],
            app.retune,
            [state, *tuning],
            outputs,
            trigger_mode="always_last",
            concurrency_id="retune",
            concurrency_limit=2,
            **private,
        )
        retuned.then(app.finish_cuts, [state], outputs, concurrency_id="cuts", **private)
        vertical = [layout, facecam, gameplay, slice_at]
        gr.on(
            [layout.input, facecam.submit, gameplay.submit, slice_at.release],
            app.vertical_preview,
            [state, *vertical],
            outputs,
            trigger_mode="always_last",
            concurrency_id="framing",
            concurrency_limit=2,
            **private,
        )
        frame_view.select(
            app.vertical_click,
            [state, layout, place, facecam, gameplay, slice_at],
            outputs,
            concurrency_id="framing",
            **private,
        )
        made = make_vertical.click(
            app.make_vertical, [state, *vertical], outputs, concurrency_id="retune", **private
        )
        made.then(app.finish_cuts, [state], outputs, concurrency_id="cuts", **private)
        captioned = captions.input(
            app.choose_captions, [state, captions], outputs, concurrency_id="retune", **private
        )
        captioned.then(app.finish_cuts, [state], outputs, concurrency_id="cuts", **private)
        corrected = recut.click(
            app.recut_caption,
            [state, picker, caption_text],
            outputs,
            concurrency_id="retune",
            **private,
        )
        corrected.then(app.finish_cuts, [state], outputs, concurrency_id="cuts", **private)
        picky_by.change(service.pickiness, [picky_by], [percentile, threshold], **private)
        picker.change(app.show_clip, [state, picker], outputs, concurrency_limit=None, **private)
        table.select(service.rank_of_row, None, [picker], js=SHOW_PLAYER, **private)
        gallery.select(service.rank_of_item, None, [picker], js=SHOW_PLAYER, **private)
        loaded = demo.load(app.load, [state], outputs, concurrency_limit=None, **private)
        loaded.then(app.finish_cuts, [state], outputs, concurrency_id="cuts", **private)
        timer.tick(app.poll, [state], outputs, concurrency_limit=None, **private)

        # The API: /detect and the calls on its jobs, on components that never show on the page;
        # the same functions are the MCP server's tools. Their docstrings describe them.
        with gr.Column(visible=False):
            api_file = gr.File(label="file", type="filepath")
            api_link = gr.Textbox("", label="link")
            api_top_n = gr.Number(selection.TOP_N, label="top_n")
            api_percentile = gr.Number(selection.PERCENTILE, label="percentile")
            api_threshold = gr.Number(None, label="threshold")
            api_gap = gr.Number(selection.NMS_SEC, label="gap")
            api_before = gr.Number(0, label="pad_before")
            api_after = gr.Number(0, label="pad_after")
            api_cut = gr.Radio(list(CUTS), value="exact", label="cut")
            api_vertical = gr.Radio(list(api.VERTICAL), value="off", label="vertical")
            api_chat = gr.File(label="chat", type="filepath")
            api_chat_weight = gr.Number(chat.CHAT_WEIGHT, label="chat_weight")
            api_captions = gr.Radio(list(api.CAPTIONS), value="off", label="captions")
            api_report = gr.JSON(label="report")
            api_zip = gr.File(label="zip")
            api_clips = gr.File(label="clips", file_count="multiple")
            api_vertical_clips = gr.File(label="vertical_clips", file_count="multiple")
            api_timelines = gr.File(label="timelines", file_count="multiple")
            api_plot = gr.File(label="plot")
            api_job = gr.Textbox(None, label="job")
            api_rank = gr.Number(1, label="rank")
            api_vertical_clip = gr.Checkbox(False, label="vertical")
            api_kind = gr.Radio(list(TIMELINES), value="otio", label="kind")
            api_layout = gr.Radio(list(api.VERTICAL)[1:], value="fit", label="layout")
            api_one_file = gr.File(label="file")
            api_button = gr.Button("detect")
        detect_inputs = [
            api_file,
            api_link,
            api_top_n,
            api_percentile,
            api_threshold,
            api_gap,
            api_before,
            api_after,
            api_cut,
            api_vertical,
            api_chat,
            api_chat_weight,
            api_captions,
        ]
        api_button.click(
            app.detect,
            api.document(app.detect, detect_inputs),
            [api_report, api_zip, api_clips, api_vertical_clips, api_timelines, api_plot],
            api_name="detect",
            concurrency_id="analysis",
            concurrency_limit=1,
        )
        api_button.click(
            app.get_clip,
            api.document(app.get_clip, [api_job, api_rank, api_vertical_clip]),
            [api_one_file],
            api_name="get_clip",
            concurrency_id="api-files",
            concurrency_limit=4,
        )
        api_button.click(
            app.get_timeline,
            api.document(app.get_timeline, [api_job, api_kind]),
            [api_one_file],
            api_name="get_timeline",
            concurrency_id="api-files",
        )
        api_button.click(
            app.vertical_clips,
            api.document(app.vertical_clips, [api_job, api_layout]),
            [api_report, api_vertical_clips],
            api_name="vertical_clips",
            concurrency_id="retune",
        )
    demo.queue(max_size=app.config.queue_size, default_concurrency_limit=1)
    config.calm_queue(demo)
    return demo


def main() -> None:
    # The app's own lines at INFO (jobs started and finished), others' at WARNING.
    logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("highlightsense.app").setLevel(logging.INFO)
    app = Service(service.Config.from_env())
    app.start()
    build(app).launch(
        max_file_size=app.config.max_upload,
        allowed_paths=[str(app.config.work_dir)],
        show_error=True,
        run_history=False,
        mcp_server=True,  # /detect and the calls on its jobs as tools, at /gradio_api/mcp/
        css=CSS,
        head=HEAD,
    )


if __name__ == "__main__":
    main()
