"""The files of a result: the clips (cut once into a store, linked under their rank names) and
the tables: scores.csv, highlights.csv, highlights.json and scores.html."""

from __future__ import annotations

import collections
import csv
import dataclasses
import functools
import hashlib
import json
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from . import clips, files, signals, transcripts
from .features import FRAMES_PER_SECOND
from .plots import score_figure
from .progress import Progress
from .results import Analysis, Highlight, Result
from .settings import Selection
from .timecode import format_timestamp
from .transcripts import Transcript

# recorded in the "chat" section when the chat was fused, so a run without stays as it was
CHAT_SETTINGS = ("chat", "chat_weight", "chat_words", "chat_on_error")
CAPTIONS_FILE = "captions.srt"  # beside the timelines: the rough cut's captions
HIGHLIGHT_FIELDS = (
    "rank", "start_sec", "end_sec", "start_ts", "end_ts", "duration_sec", "confidence", "clip_path",
)  # fmt: skip


def clip_extension(analysis: Analysis) -> str:
    return ".mp4" if analysis.info.has_video else ".m4a"


def _store_name(highlight: Highlight, copy: bool, extension: str) -> str:
    start_ms, end_ms = round(highlight.start_sec * 1000), round(highlight.end_sec * 1000)
    return f"span_{start_ms}_{end_ms}_{'copy' if copy else 'exact'}{extension}"


def cut_highlights(
    analysis: Analysis,
    highlights: list[Highlight],
    store: Path,
    *,
    copy: bool,
    progress: Progress | None = None,
    cancel: Callable[[], None] | None = None,
) -> list[Path]:
    """Clip files for ``highlights`` in ``store``, cutting only spans not cut before."""
    extension = clip_extension(analysis)
    targets = [store / _store_name(h, copy, extension) for h in highlights]
    missing = [(h, t) for h, t in zip(highlights, targets, strict=True) if not t.exists()]
    if missing:
        clips.cut_clips(
            analysis.info,
            [(h.start_sec, h.end_sec) for h, _ in missing],
            store,
            copy=copy,
            names=[t.name for _, t in missing],
            progress=progress,
            cancel=cancel,
        )
    return targets


def why_summary(analysis: Analysis, highlight: Highlight) -> str:
    """One line on why the model picked a window: where its attention peaked, and how loud the
    voice and the game were there against their usual level in this VOD."""
    start = analysis.windows[highlight.window, 0]
    attention = analysis.attention[highlight.window]
    step = int(np.argmax(attention))
    frame = round(start * FRAMES_PER_SECOND) + step * analysis.step_frames
    frames = slice(frame, frame + analysis.step_frames)
    median = np.median(analysis.loudness, axis=1)
    voice, game = (float(np.max(analysis.loudness[i, frames], initial=-np.inf)) - median[i]
                   for i in range(2))  # fmt: skip
    peak = start + (step + 0.5) * analysis.step_frames / FRAMES_PER_SECOND
    return (
        f"The model listened hardest at {format_timestamp(peak)}: the voice was {voice:+.0f} dB "
        f"and the game {game:+.0f} dB against their usual level in this VOD."
    )


def cut_vertical_highlights(
    analysis: Analysis,
    highlights: list[Highlight],
    store: Path,
    chosen: Selection,
    progress: Progress | None = None,
    cancel: Callable[[], None] | None = None,
) -> tuple[list[Path], str]:
    """9:16 clip files for ``highlights`` in ``store`` (cutting only those not cut before with
    the same framing) and one sentence on how they were framed."""
    from . import faces, vertical  # here: OpenCV and the graph builder only when asked for

    info = analysis.info
    layout, note = vertical.layout_for(info, chosen.vertical, chosen.facecam, chosen.gameplay,
                                       chosen.center_x, suggest=faces.suggest_facecam)  # fmt: skip
    framing = hashlib.sha256(repr(layout).encode()).hexdigest()[:12]
    targets = [store / f"vertical_{_store_name(h, False, '')}_{framing}.mp4" for h in highlights]
    missing = [(h, t) for h, t in zip(highlights, targets, strict=True) if not t.exists()]
    if missing:
        clips.cut_clips(
            info,
            [(h.start_sec, h.end_sec) for h, _ in missing],
            store,
            names=[t.name for _, t in missing],
            progress=progress,
            cancel=cancel,
            command=functools.partial(vertical.vertical_command, layout=layout),
            out_pixels=vertical.WIDTH * vertical.HEIGHT,
        )
    return targets, note


def link_clips(cut: list[Path], folder: Path) -> list[Path]:
    """The cut files under their rank names (``highlight_01.mp4`` …) in ``folder``: hard links
    where the file system allows, copies elsewhere."""
    folder.mkdir(parents=True, exist_ok=True)
    names = clips.clip_names(len(cut), cut[0].suffix if cut else ".mp4")
    targets = [folder / name for name in names]
    for source, target in zip(cut, targets, strict=True):
        target.unlink(missing_ok=True)
        try:
            os.link(source, target)
        except OSError:  # another file system, or links not allowed
            shutil.copyfile(source, target)
    return targets


def highlight_rows(result: Result, out_dir: Path) -> list[dict]:
    rows = []
    for i, h in enumerate(result.highlights):
        clip = result.clip_paths[i] if i < len(result.clip_paths) else None
        rows.append(
            {
                "rank": h.rank,
                "start_sec": round(h.start_sec, 3),
                "end_sec": round(h.end_sec, 3),
                "start_ts": format_timestamp(h.start_sec),
                "end_ts": format_timestamp(h.end_sec),
                "duration_sec": round(h.end_sec - h.start_sec, 3),
                "confidence": round(h.confidence, 6),
                "clip_path": str(clip.relative_to(out_dir)) if clip else "",
                "why": " ".join(
                    [why_summary(result.analysis, h), *signals.reasons(result.signals, h.window)]
                ),
            }
        )
        if result.signals:
            rows[-1]["signals"] = signals.contributions(result.windows, result.signals, h.window)
        if result.vertical_paths:
            rows[-1]["vertical_clip_path"] = str(result.vertical_paths[i].relative_to(out_dir))
        if result.transcripts:
            heard = result.transcripts[i]
            rows[-1]["text"] = heard.text
            rows[-1]["language"] = heard.language
            rows[-1]["words"] = [  # s from the clip's start
                {"word": w.text.strip(), "start": round(w.start, 3), "end": round(w.end, 3)}
                for w in heard.words
            ]
    return rows


def write_timelines(result: Result, out_dir: Path, media_url: str | None = None) -> list[Path]:
    """The editor timelines the selection asks for, with a marker per highlight."""
    from . import timelines  # here: OpenTimelineIO only when asked for

    rows = highlight_rows(result, out_dir)
    written = timelines.write_timelines(
        result.selection.timelines,
        out_dir,
        result.analysis.info,
        rows,
        order=result.selection.timeline_order,
        media_url=media_url,
    )
    if result.transcripts:
        written.append(write_rough_cut_captions(result, rows, out_dir))
    return written


def write_rough_cut_captions(result: Result, rows: list[dict], out_dir: Path) -> Path:
    """``captions.srt`` beside the timelines, on their rough cut's time base."""
    from . import captions, timelines

    places = timelines.rough_cut_places(result.analysis.info, rows, result.selection.timeline_order)
    by_rank = {h.rank: (h, t) for h, t in zip(result.highlights, result.transcripts, strict=True)}
    pieces = []
    for rank, at, first in places:
        highlight, heard = by_rank[rank]
        # the cut starts on a whole frame: the clip's times shift by what rounding moved
        pieces.append((at + highlight.start_sec - first, highlight.end_sec - highlight.start_sec,
                       heard))  # fmt: skip
    target = out_dir / CAPTIONS_FILE
    files.write_atomic(target, captions.rough_cut_srt(pieces))
    return target


def write_tables(result: Result, out_dir: Path) -> None:
    """scores.csv, highlights.csv, highlights.json and scores.html into ``out_dir``."""
    analysis = result.analysis
    out_dir.mkdir(parents=True, exist_ok=True)
    # one column per signal and the fused score only when signals were fused: otherwise the
    # published table, unchanged
    names = [s.name for s in result.signals] + (["fused"] if result.signals else [])
    columns = [s.values for s in result.signals] + [result.scores[:, 2]] * bool(result.signals)
    with open(out_dir / "scores.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["window_index", "start_sec", "end_sec", "confidence", *names])
        for i, (start, end, p) in enumerate(analysis.windows):
            extra = [f"{column[i]:.6f}" for column in columns]
            writer.writerow([i, f"{start:.3f}", f"{end:.3f}", f"{p:.6f}", *extra])
    rows = highlight_rows(result, out_dir)
    with open(out_dir / "highlights.csv", "w", newline="") as file:
        fields = [*HIGHLIGHT_FIELDS, *(["text"] if result.transcripts else [])]
        writer = csv.DictWriter(file, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    # names only, no folders: the file may be served to someone else than the one who ran it
    settings = dataclasses.asdict(analysis.settings) | dataclasses.asdict(result.selection)
    for key in ("weights", "separator_repo"):
        settings[key] = Path(settings[key]).name if settings[key] else None
    for key in CHAT_SETTINGS:
        settings.pop(key)
    summary = {
        "input": analysis.source.name,
        "input_duration_sec": round(analysis.duration, 3),
        "model": analysis.model_identity,
        "separator": analysis.producer,
        "settings": settings,
        "windows": len(analysis.windows),
        "threshold": result.threshold,
        "windows_above_threshold": result.above,
        "features_from_cache": analysis.features_from_cache,
        "seconds": {k: round(v, 3) for k, v in result.seconds.items()},
        "highlights": rows,
    }
    if result.vertical_note:
        summary["vertical"] = result.vertical_note
    for signal in result.signals:  # what each fused signal came from (a run without: unchanged)
        summary[signal.name] = {"weight": signal.weight, **signal.about}
    if result.notes:
        summary["notes"] = result.notes
    (out_dir / "highlights.json").write_text(json.dumps(summary, indent=2) + "\n")
    figure = score_figure(
        result.scores,
        result.threshold,
        [h.window for h in result.highlights],
        analysis.duration,
        curves=result.curves(),
    )
    figure.write_html(out_dir / "scores.html", include_plotlyjs=True, full_html=True)


# --- captions -------------------------------------------------------------------------------

MAX_TRANSCRIPTS = 256  # transcripts remembered per process (re-selection reuses them)
_transcripts: collections.OrderedDict[tuple, Transcript] = collections.OrderedDict()
_transcripts_lock = threading.Lock()


def _transcript_key(analysis: Analysis, highlight: Highlight, language: str | None) -> tuple:
    """What a transcript depends on: the input (path, size, time), what made the voice, the
    span, the Whisper model and the language asked for."""
    stat = analysis.source.stat()
    span = (round(highlight.start_sec * 1000), round(highlight.end_sec * 1000))
    return (str(analysis.source), stat.st_size, stat.st_mtime_ns, analysis.producer, span,
            transcripts.model_name(), language)  # fmt: skip


def transcribe_highlights(
    analysis: Analysis,
    highlights: list[Highlight],
    language: str | None,
    progress: Progress | None = None,
    cancel: Callable[[], None] | None = None,
) -> list[Transcript]:
    """Each highlight's transcript (from its span's voice), transcribing only spans not heard
    before in this process with the same model and language."""
    from . import voice  # here: separation of spans only when captions are asked for

    heard = []
    for i, highlight in enumerate(highlights):
        key = _transcript_key(analysis, highlight, language)
        with _transcripts_lock:
            known = _transcripts.get(key)
        if known is None:
            audio = voice.voice_of(analysis, (highlight.start_sec, highlight.end_sec), cancel)
            if cancel is not None:
                cancel()
            known = transcripts.transcribe(audio, language=language)
            with _transcripts_lock:
                _transcripts[key] = known
                while len(_transcripts) > MAX_TRANSCRIPTS:
                    _transcripts.popitem(last=False)
        heard.append(known)
        if progress is not None:
            progress((i + 1) / len(highlights), f"transcribed {i + 1} of {len(highlights)} clips")
    return heard


def _fingerprint(transcript: Transcript) -> str:
    words = [(w.text, w.start, w.end) for w in transcript.words]
    return hashlib.sha256(repr((transcript.text, words)).encode()).hexdigest()[:12]


def caption_cuts(
    cut: list[Path],
    highlights: list[Highlight],
    heard: list[Transcript],
    mode: str,
    size: tuple[int, int],
    cancel: Callable[[], None] | None = None,
    progress: Progress | None = None,
) -> list[Path]:
    """The cut clips with their captions burned in (``burn``, frames of ``size``) or as a
    subtitle track (``soft``), beside them in their store; made only once per transcript."""
    from . import captions

    made = []
    for i, (clip, highlight, transcript) in enumerate(zip(cut, highlights, heard, strict=True)):
        duration = highlight.end_sec - highlight.start_sec
        target = clip.with_name(f"{mode}_{_fingerprint(transcript)}_{clip.name}")
        if not target.exists():
            if mode == "burn":
                captions.burn(clip, transcript, duration, size, target, cancel)
            else:
                captions.mux(clip, transcript, duration, target, cancel)
        made.append(target)
        if progress is not None:
            progress((i + 1) / len(cut), f"captioned {i + 1} of {len(cut)} clips")
    return made


def write_subtitles(result: Result, folder: Path) -> list[Path]:
    """``highlight_01.srt`` / ``.vtt`` … in ``folder``, times relative to each clip."""
    from . import captions

    folder.mkdir(parents=True, exist_ok=True)
    names = clips.clip_names(len(result.highlights), "")
    written = []
    for name, highlight, transcript in zip(names, result.highlights, result.transcripts,
                                           strict=True):  # fmt: skip
        duration = highlight.end_sec - highlight.start_sec
        written += captions.write_subtitles(transcript, duration, folder / name)
    return written
