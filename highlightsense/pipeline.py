"""The whole run, chained: media → stems → features → model → scoring → selection → clips → plots.

:func:`analyze` is the one-call convenience the command line uses. It is three steps, so the app
can select again without analysing again: :meth:`Engine.analyze
<highlightsense.engine.Engine.analyze>` (the expensive part: separation, features, scoring),
:func:`choose` (pure: threshold, NMS, top-n, padding) and :func:`render` (cut the clips not cut
yet, write the tables and the plot).
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from . import chat, outfolder, outputs, selection, signals, sources, vertical
from .engine import Engine
from .errors import ChatError
from .progress import STAGE_WEIGHTS, Progress, Stages
from .results import Analysis, Highlight, Result
from .settings import AnalysisSettings, Selection, split
from .signals import Signal
from .transcripts import Transcript, load_model, model_name

VERTICAL_FOLDER = "clips_vertical"  # beside clips/


def extra_signals(analysis: Analysis, chosen: Selection) -> tuple[tuple[Signal, ...], list[str]]:
    """The signals fused with the audio for ``chosen`` (the chat replay, when given with a
    weight above 0), and a line for each one left out (``chat_on_error="audio"``)."""
    if chosen.chat is None or chosen.chat_weight <= 0.0:
        return (), []
    try:
        found = chat.load(chosen.chat, analysis.windows, analysis.duration, chosen.chat_words)
    except ChatError as err:
        if chosen.chat_on_error == "stop":
            raise
        note = f"{err} The highlights are from the audio alone."
        warnings.warn(note, stacklevel=2)
        return (), [note]
    return (found.as_signal(chosen.chat_weight),), []


def choose(
    analysis: Analysis, chosen: Selection, extra: Sequence[Signal] = ()
) -> tuple[list[Highlight], float, int]:
    """Pure: the highlights for ``chosen`` from already scored windows (their probability fused
    with the ``extra`` signals), and the threshold used and how many windows reached it before
    suppression."""
    windows = signals.fuse(analysis.windows, extra)
    picked = selection.select(
        windows,
        percentile=chosen.percentile,
        threshold=chosen.threshold,
        nms_sec=chosen.nms_sec,
        top_n=chosen.top_n,
    )
    spans = selection.clip_spans(
        windows,
        picked,
        pad_before=chosen.pad_before,
        pad_after=chosen.pad_after,
        duration=analysis.duration,
    )
    highlights = [
        Highlight(rank, index, float(start), float(end), float(windows[index, 2]))
        for rank, (index, (start, end)) in enumerate(zip(picked.indices, spans, strict=True), 1)
    ]
    return highlights, picked.threshold, picked.above


def render(
    analysis: Analysis,
    chosen: Selection,
    out_dir: str | os.PathLike,
    *,
    store: Path | None = None,
    progress: Progress | None = None,
    cancel: Callable[[], None] | None = None,
    media_url: str | None = None,
    extra: Sequence[Signal] | None = None,
    transcripts: Sequence[Transcript] | None = None,
) -> Result:
    """Choose, cut (reusing clips already in ``store``) and write every output into ``out_dir``:
    the clips, the 9:16 clips and the editor timelines the selection asks for, and the tables.

    ``extra``: the signals fused with the audio; None: those of ``chosen`` (:func:`extra_signals`),
    so a caller that re-selects often (the app) reads the chat once and passes its signal.

    ``out_dir`` must be a fresh folder; :func:`analyze` renames it into place only when complete.
    ``media_url`` is how the timelines name the source (default: its absolute file URL).
    With ``selection.captions``, each clip's speech is transcribed (or ``transcripts`` are used,
    in rank order: corrected ones) and captioned.
    Whatever ``cancel`` raises (it is called every few tenths of a second while clips are cut,
    also when nobody watches the progress) stops the ffmpeg runs at once.
    """
    began = time.perf_counter()
    out_dir = Path(out_dir)
    notes: list[str] = []
    if extra is None:
        extra, notes = extra_signals(analysis, chosen)
    extra = signals.active(extra)
    highlights, threshold, above = choose(analysis, chosen, extra)
    result = Result(analysis, chosen, highlights, threshold, above, out_dir=out_dir)
    result.signals, result.notes = extra, notes
    captioned = chosen.captions in ("burn", "soft") and analysis.info.has_video
    stages = Stages(
        progress,
        {
            "transcripts": 2.0 if chosen.captions else 0.0,
            "clips": 1.0,
            "vertical": 2.0 if chosen.vertical else 0.0,
            "captions": (1.0 + (chosen.vertical is not None)) if captioned else 0.0,
        },
    )
    if chosen.captions and highlights:
        result.transcripts = list(transcripts) if transcripts is not None else (
            outputs.transcribe_highlights(analysis, highlights, chosen.language,
                                          progress=stages("transcripts"), cancel=cancel)
        )  # fmt: skip
        result.subtitle_paths = outputs.write_subtitles(result, out_dir / "clips")
    if (chosen.clips or chosen.vertical) and highlights:
        own_store = store is None
        store = out_dir / ".store" if own_store else store
        if chosen.clips:
            cut = outputs.cut_highlights(
                analysis,
                highlights,
                store,
                copy=chosen.copy,
                progress=stages("clips"),
                cancel=cancel,
            )
            if captioned:
                size = (analysis.info.width or 1920, analysis.info.height or 1080)
                cut = outputs.caption_cuts(cut, highlights, result.transcripts, chosen.captions,
                                           size, cancel, stages("captions"))  # fmt: skip
            result.clip_paths = outputs.link_clips(cut, out_dir / "clips")
        if chosen.vertical:
            cut, result.vertical_note = outputs.cut_vertical_highlights(
                analysis, highlights, store, chosen, progress=stages("vertical"), cancel=cancel
            )
            if captioned:
                cut = outputs.caption_cuts(cut, highlights, result.transcripts, chosen.captions,
                                           (vertical.WIDTH, vertical.HEIGHT), cancel)  # fmt: skip
            result.vertical_paths = outputs.link_clips(cut, out_dir / VERTICAL_FOLDER)
        if own_store:
            shutil.rmtree(store)
    if chosen.timelines and highlights:
        result.timeline_paths = outputs.write_timelines(result, out_dir, media_url)
    result.seconds = {**analysis.seconds, "clips": time.perf_counter() - began}
    outputs.write_tables(result, out_dir)
    return result


def default_out_dir(source: str) -> Path:
    if sources.is_url(source):
        name = "vod-" + "".join(c for c in source.rstrip("/").rsplit("/", 1)[-1] if c.isalnum())
    else:
        name = Path(source).stem
    return Path("highlights") / (name or "vod")


def analyze(
    source: str | os.PathLike,
    *,
    progress: Progress | None = None,
    out_dir: str | os.PathLike | None = None,
    **settings: object,
) -> Result:
    """A VOD (path or URL) in, ranked highlight clips and tables out: :func:`detect` with
    ``settings`` given by the field names of :class:`~highlightsense.settings.AnalysisSettings`
    and :class:`~highlightsense.settings.Selection`."""
    analysis_settings, chosen = split(settings)
    return detect(source, analysis_settings, chosen, out_dir=out_dir, progress=progress)


def detect(
    source: str | os.PathLike,
    analysis_settings: AnalysisSettings,
    chosen: Selection,
    *,
    out_dir: str | os.PathLike | None = None,
    progress: Progress | None = None,
) -> Result:
    """Analyse ``source``, select and render into ``out_dir`` (default
    ``./highlights/<input name>``).

    Everything is written into a hidden staging folder and put in place at the end, so a failed
    or cancelled run leaves nothing that looks complete. ``out_dir`` must be new, empty or an
    earlier output of this function (replaced); anything else is refused before any work
    (:mod:`highlightsense.outfolder` has the rules).
    """
    if chosen.chat is not None and chosen.chat_weight > 0.0 and chosen.chat_on_error == "stop":
        chat.check_file(chosen.chat)  # a missing or foreign chat file stops before the analysis
    engine = Engine.create(analysis_settings)
    if chosen.captions:
        load_model(model_name())  # a bad Whisper model fails before any work
    target = Path(out_dir) if out_dir is not None else default_out_dir(str(source))
    target = Path(os.path.abspath(target.expanduser()))
    staging = outfolder.stage(target)  # refuses a folder holding anyone else's files, first
    stages = Stages(
        progress, {"analyze": 1 - STAGE_WEIGHTS["clips"], "clips": STAGE_WEIGHTS["clips"]}
    )
    try:
        with outfolder.writing(staging, target):
            analysis = engine.analyze(
                source,
                progress=stages("analyze"),
                stems_dir=staging / "stems" if analysis_settings.keep_stems else None,
                keep_voice=chosen.captions is not None,  # captions slice it, not separate again
            )
            result = render(analysis, chosen, staging, progress=stages("clips"))
            stages("clips")(1.0, "Done")
        outfolder.publish(staging, target)
    except BaseException:
        outfolder.discard(staging)
        raise
    result.out_dir = target
    for name in ("clip_paths", "vertical_paths", "timeline_paths", "subtitle_paths"):
        moved = [target / p.relative_to(staging) for p in getattr(result, name)]
        setattr(result, name, moved)
    return result
