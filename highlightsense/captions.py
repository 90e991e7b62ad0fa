"""Captions of the clips from their transcripts: subtitle files, burned-in and soft captions.

- Subtitle files (``.srt``, ``.vtt``, and the ``.ass`` the burn draws) are written by pysubs2,
  one cue per transcript segment, times relative to the clip and clamped inside it.
- ``burn`` draws short-form captions into a cut clip (a second ffmpeg pass over it): large bold
  Roboto with a dark outline, one to three words at a time, the word being spoken in yellow,
  inside the platform's safe area (on 9:16, clear of the bottom third where TikTok, Shorts and
  Reels put their buttons and text).
- ``soft`` muxes the ``.srt`` into the mp4 as a mov_text track (stream copy: fast, and the way
  for ``--copy`` cuts).

The font is the project's own: Roboto Bold from the ``font-roboto`` package (Apache-2.0), given
to libass as its font folder and named in the style. Without it ffmpeg exits 0 and draws nothing
on a machine with no fonts, so a missing font is an error here, not a blank clip.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pysubs2

from .errors import MediaError, ToolError, TranscriptError
from .files import atomic_path, write_atomic
from .tools import ffmpeg_path, run_tool, stderr_tail
from .transcripts import Segment, Transcript, Word, clean_text

FONT_NAME = "Roboto"  # family named in the ASS style (libass looks it up in FONT_FILE's folder)
FONT_FILE = "Roboto-Bold.ttf"
WORDS_PER_CUE = 3  # short-form captions show one to three words at a time
CUE_GAP = 0.6  # s of silence between words that starts a new cue
FONT_FRACTION = 0.09  # font size as a fraction of the frame's shorter side (97 px on 1080)
OUTLINE_FRACTION = 0.09  # outline width as a fraction of the font size
MARGIN_SIDE = 0.08  # of the width, left and right
MARGIN_BOTTOM = 0.08  # of the height, landscape
MARGIN_BOTTOM_TALL = 0.30  # of the height on 9:16: clear of the platforms' bottom UI
TEXT_COLOR = pysubs2.Color(255, 255, 255)
SPOKEN_COLOR = pysubs2.Color(255, 221, 0)  # the word being spoken
OUTLINE_COLOR = pysubs2.Color(0, 0, 0)
CRF = 20  # x264 quality of a burned clip (the cuts' own)
BURN_TIMEOUT = 60.0  # s allowed to burn captions into a clip, plus
BURN_TIMEOUT_PER_SECOND = 10.0  # s per second of clip (1080x1920 on a slow CPU)
MUX_TIMEOUT = 60.0  # s allowed to mux a subtitle track (stream copy)
MAX_CUES = 5000  # cues of one clip at most


@dataclass(frozen=True)
class Cue:
    start: float  # s within the clip
    end: float
    words: tuple[str, ...]  # one to three words, stripped
    spoken: int  # index into words of the one being spoken


def font_folder() -> Path:
    """The folder holding the project's caption font; MediaError when it is not installed."""
    try:
        import font_roboto
    except ImportError as err:
        raise MediaError(
            "The caption font is not installed; run `pip install font-roboto` (it is in "
            "requirements.txt)."
        ) from err
    folder = Path(font_roboto.__file__).parent / "files"
    if not (folder / FONT_FILE).is_file():
        raise MediaError(f"The caption font {FONT_FILE} is missing; reinstall font-roboto.")
    return folder


def _ass_safe(text: str) -> str:
    """Plain text that libass draws as it is: braces open override blocks and a backslash starts
    an escape (\\N), so they are replaced by look-alikes."""
    return text.replace("\\", "\u29f5").replace("{", "(").replace("}", ")")


def _clamped(start: float, end: float, duration: float) -> tuple[float, float] | None:
    first, last = min(max(start, 0.0), duration), min(max(end, 0.0), duration)
    return (first, last) if last > first else None


def _groups(segments: Sequence[Segment]) -> list[list[Word]]:
    """Each segment's words in groups of at most WORDS_PER_CUE, a new group after a pause of
    CUE_GAP (a cue never spans two segments: they are sentences)."""
    groups: list[list[Word]] = []
    for segment in segments:
        first = len(groups)
        for word in (w for w in segment.words if clean_text(w.text)):
            last = groups[-1] if len(groups) > first else None
            if last and len(last) < WORDS_PER_CUE and word.start - last[-1].end < CUE_GAP:
                last.append(word)
            else:
                groups.append([word])
    return groups


def word_cues(transcript: Transcript, duration: float) -> list[Cue]:
    """The short-form cues: one per word, showing its group with that word spoken, from the
    word's start to the next word's start (or the group's end), clamped to [0, duration]."""
    cues = []
    for group in _groups(transcript.segments):
        shown = tuple(_ass_safe(clean_text(w.text, 100)) for w in group)
        for i, word in enumerate(group):
            end = group[i + 1].start if i + 1 < len(group) else word.end
            span = _clamped(word.start, max(end, word.end), duration)
            if span is not None:
                cues.append(Cue(span[0], span[1], shown, i))
    return cues[:MAX_CUES]


def _subtitles(transcript: Transcript, duration: float) -> pysubs2.SSAFile:
    """Segment cues (readable subtitles for players), clamped to the clip."""
    subs = pysubs2.SSAFile()
    for segment in transcript.segments[:MAX_CUES]:
        span = _clamped(segment.start, segment.end, duration)
        text = clean_text(segment.text)
        if span is not None and text:
            event = pysubs2.SSAEvent(start=round(span[0] * 1000), end=round(span[1] * 1000))
            event.plaintext = _ass_safe(text)
            subs.append(event)
    return subs


def subtitle_text(transcript: Transcript, duration: float, kind: str) -> str:
    """The ``srt`` or ``vtt`` file's text for a clip of ``duration`` seconds."""
    return _subtitles(transcript, duration).to_string(kind)


def write_subtitles(transcript: Transcript, duration: float, stem: Path) -> list[Path]:
    """``stem``.srt and ``stem``.vtt (written whole or not at all); returns their paths."""
    written = []
    for kind in ("srt", "vtt"):
        target = stem.with_suffix(f".{kind}")
        write_atomic(target, subtitle_text(transcript, duration, kind))
        written.append(target)
    return written


def ass_text(transcript: Transcript, duration: float, width: int, height: int) -> str:
    """The short-form captions as an ASS script for a ``width`` x ``height`` clip."""
    tall = height > width
    size = FONT_FRACTION * min(width, height)
    subs = pysubs2.SSAFile()
    subs.info.update({"PlayResX": str(width), "PlayResY": str(height), "WrapStyle": "0",
                      "ScaledBorderAndShadow": "yes"})  # fmt: skip
    subs.styles["Default"] = pysubs2.SSAStyle(
        fontname=FONT_NAME,
        fontsize=round(size),
        bold=True,
        primarycolor=TEXT_COLOR,
        outlinecolor=OUTLINE_COLOR,
        backcolor=OUTLINE_COLOR,
        outline=round(size * OUTLINE_FRACTION, 1),
        shadow=0,
        alignment=pysubs2.Alignment.BOTTOM_CENTER,
        marginl=round(MARGIN_SIDE * width),
        marginr=round(MARGIN_SIDE * width),
        marginv=round((MARGIN_BOTTOM_TALL if tall else MARGIN_BOTTOM) * height),
    )
    c = SPOKEN_COLOR
    spoken = f"{{\\c&H{c.b:02X}{c.g:02X}{c.r:02X}&}}"  # ASS colours are blue, green, red
    for cue in word_cues(transcript, duration):
        text = " ".join(
            f"{spoken}{w}{{\\r}}" if i == cue.spoken else w for i, w in enumerate(cue.words)
        )
        subs.append(pysubs2.SSAEvent(start=round(cue.start * 1000), end=round(cue.end * 1000),
                                     text=text))  # fmt: skip
    return subs.to_string("ass")


def escape_filter_value(value: str) -> str:
    """``value`` as one option value inside an ffmpeg filter graph (both levels of escaping:
    the option's, then the graph's), so a path can never add options or filters."""
    quoted = re.sub(r"([\\':])", r"\\\1", value)
    return re.sub(r"([\\'\[\],;])", r"\\\1", quoted)


def burn_command(clip: Path, ass: Path, target: Path) -> list[str]:
    """ffmpeg re-encoding ``clip`` with the captions of ``ass`` drawn on it into ``target``."""
    fonts = font_folder()
    graph = (
        f"ass=filename={escape_filter_value(str(ass))}:fontsdir={escape_filter_value(str(fonts))}"
    )
    return [
        ffmpeg_path(), "-nostdin", "-hide_banner", "-nostats", "-loglevel", "error", "-y",
        "-i", f"file:{clip}", "-map", "0:V:0", "-map", "0:a?", "-sn", "-dn",
        "-vf", graph, "-c:v", "libx264", "-preset", "veryfast", "-crf", str(CRF),
        "-pix_fmt", "yuv420p", "-c:a", "copy", "-movflags", "+faststart", "-f", "mp4",
        f"file:{target}",
    ]  # fmt: skip


def mux_command(clip: Path, srt: Path, target: Path, language: str | None) -> list[str]:
    """ffmpeg copying ``clip`` with ``srt`` added as a mov_text subtitle track into ``target``."""
    cmd = [
        ffmpeg_path(), "-nostdin", "-hide_banner", "-nostats", "-loglevel", "error", "-y",
        "-i", f"file:{clip}", "-f", "srt", "-i", f"file:{srt}",
        "-map", "0:V?", "-map", "0:a?", "-map", "1:0", "-c", "copy", "-c:s", "mov_text",
    ]  # fmt: skip
    if language:
        cmd += ["-metadata:s:s:0", f"language={language}"]
    return [*cmd, "-movflags", "+faststart", "-f", "mp4", f"file:{target}"]


def _run(cmd: list[str], target: Path, timeout: float, cancel: Callable[[], None] | None,
         what: str) -> None:  # fmt: skip
    with atomic_path(target) as partial:
        cmd = [*cmd[:-1], f"file:{partial}"]
        try:
            run_tool(cmd, timeout=timeout, cancel=cancel)
        except ToolError as err:
            raise MediaError(f"could not {what} ({stderr_tail(str(err).encode())})") from err


def burn(
    clip: Path,
    transcript: Transcript,
    duration: float,
    size: tuple[int, int],
    target: Path,
    cancel: Callable[[], None] | None = None,
) -> Path:
    """``target``: ``clip`` (``size`` = width, height) with its short-form captions drawn in."""
    ass = target.with_name(f".{target.stem}.ass")
    write_atomic(ass, ass_text(transcript, duration, *size))
    try:
        timeout = BURN_TIMEOUT + BURN_TIMEOUT_PER_SECOND * duration
        _run(burn_command(clip, ass, target), target, timeout, cancel,
             f"draw the captions into {clip.name}")  # fmt: skip
    finally:
        ass.unlink(missing_ok=True)
    return target


def mux(
    clip: Path,
    transcript: Transcript,
    duration: float,
    target: Path,
    cancel: Callable[[], None] | None = None,
) -> Path:
    """``target``: ``clip`` with its captions as a soft subtitle track (stream copy)."""
    srt = target.with_name(f".{target.stem}.srt")
    write_atomic(srt, subtitle_text(transcript, duration, "srt") or "\n")
    try:
        language = _iso639_2(transcript.language)
        _run(mux_command(clip, srt, target, language), target, MUX_TIMEOUT, cancel,
             f"add the subtitle track to {clip.name}")  # fmt: skip
    finally:
        srt.unlink(missing_ok=True)
    return target


_ISO639_2 = {"en": "eng", "de": "deu", "fr": "fra", "es": "spa", "it": "ita", "pt": "por",
             "nl": "nld", "pl": "pol", "ru": "rus", "ja": "jpn", "ko": "kor", "zh": "zho",
             "tr": "tur", "sv": "swe", "uk": "ukr", "ar": "ara"}  # fmt: skip


def _iso639_2(code: str | None) -> str | None:
    """The three-letter tag mp4 wants for the languages streams are mostly in (None: untagged)."""
    return _ISO639_2.get(code or "")


def rough_cut_srt(pieces: Sequence[tuple[float, float, Transcript]]) -> str:
    """One ``.srt`` on a rough cut's time base: ``pieces`` are (offset s of the clip in the cut,
    its duration s, its transcript), in the cut's order."""
    subs = pysubs2.SSAFile()
    for offset, duration, transcript in pieces:
        part = _subtitles(transcript, duration)
        part.shift(ms=round(offset * 1000))
        subs.events.extend(part.events)
    return subs.to_string("srt")


def check_correction(text: str, limit: int) -> str:
    """A visitor's corrected caption as plain text: control characters and line breaks become
    spaces; markup is kept as the letters it is (never read as ASS or filter syntax); more than
    ``limit`` characters is refused."""
    if len(text) > limit:
        raise TranscriptError(
            f"A caption can be at most {limit} characters (got {len(text)}); shorten it."
        )
    return clean_text(text, limit)


def retimed(transcript: Transcript, text: str, duration: float) -> Transcript:
    """``transcript`` with its words replaced by ``text``'s, spread over the time its words were
    spoken (evenly by character count); with no words heard, over the whole clip."""
    words = text.split()
    if not words:
        return Transcript((), transcript.language, transcript.model)
    heard = transcript.words
    start = heard[0].start if heard else 0.0
    end = heard[-1].end if heard else duration
    weights = [len(w) + 1 for w in words]
    total = sum(weights)
    times = [start + (end - start) * sum(weights[:i]) / total for i in range(len(words) + 1)]
    spread = tuple(Word(" " + w, round(times[i], 3), round(times[i + 1], 3))
                   for i, w in enumerate(words))  # fmt: skip
    return Transcript((Segment(" ".join(words), start, end, spread),), transcript.language,
                      transcript.model)  # fmt: skip
