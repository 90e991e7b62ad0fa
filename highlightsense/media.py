"""Reading input media: finding ffmpeg, vetting a file, probing it and decoding its audio.

Everything that hands a user's file to ffmpeg or ffprobe goes through this module, so the
safety rules live in one place: a file is sniffed before any tool sees it (text playlists are
refused outright), every invocation is limited to the ``file`` protocol and to an allowlist of
demuxers, the path is passed as ``file:<absolute path>`` and every process runs in its own
process group with a timeout, so it can be killed with anything it started, and on Linux dies
with the thread that started it (a killed parent leaves no encoder running on). What a hostile
file can cost is bounded here too: its duration (one limit, set by the deployment), its frame
size and its sample rate are checked at probe time, and the decoded audio may not run past the
duration limit whatever the container claims.
"""

from __future__ import annotations

import codecs
import fractions
import json
import math
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import MediaError, SettingsError, ToolError
from .tools import ffmpeg_path, ffprobe_path, run_tool, stream_tool, tool_reason

# Demuxers ffprobe may pick (its ``format_name`` values). ffmpeg refuses any other demuxer via
# ``-format_whitelist``, so HLS, concat, DASH, SDP, image sequences etc. are never opened even
# if a playlist slips past the sniffing below.
ALLOWED_FORMATS = (
    "mov", "mp4", "m4a", "3gp", "3g2", "mj2",  # one demuxer: "mov,mp4,m4a,3gp,3g2,mj2"
    "matroska", "webm",  # one demuxer: "matroska,webm"
    "flv", "mpegts", "wav", "mp3", "ogg", "flac", "aac",
)  # fmt: skip
FORMAT_WHITELIST = ",".join(ALLOWED_FORMATS)
ACCEPTED_KINDS = "an mp4, mov, mkv, webm, flv, ts, wav, mp3, ogg, flac or aac file"

MAX_FRAME_RATE = 1000  # frames/s; a higher rate in a header is broken, not a recording
MAX_HOURS_ENV = "HIGHLIGHTSENSE_MAX_HOURS"  # the one duration limit, for files and links alike
MAX_HOURS_DEFAULT = 6.0  # h: a long stream; a free Space cannot analyse more in reasonable time
MAX_HOURS_CEILING = 48.0  # h: the most a deployment may set (longer is a hostile header)
MAX_STREAMS = 16  # streams per file; real recordings have a handful
MAX_SIDE = 8192  # pixels of a frame's width or height
MAX_PIXELS = 4096 * 2160  # pixels per frame (DCI 4K): one cut of it stays under a gigabyte
MIN_SAMPLE_RATE = 4000  # Hz: below this no speech survives (telephone audio is 8000)
MAX_SAMPLE_RATE = 384000  # Hz: the highest rate studio equipment records
SNIFF_BYTES = 4096  # bytes read to recognise text playlists before any tool runs

PROBE_TIMEOUT = 30.0  # s for one ffprobe run
READ_TIMEOUT = 120.0  # s ffmpeg may take to deliver one chunk of decoded audio

SAMPLE_BYTES = 4  # bytes per float32 sample

# Only the fields probe() reads: tags can be megabytes in a hostile file.
PROBE_ENTRIES = (
    "format=format_name,duration,nb_streams"
    ":stream=index,codec_type,codec_name,channels,sample_rate,duration"
    ",width,height,avg_frame_rate,r_frame_rate"
    ":stream_tags=title:stream_disposition=attached_pic"
)

# Text formats that would make ffmpeg open other files or the network, by their first bytes.
PLAYLIST_SIGNATURES = (
    (b"#EXTM3U", "an HLS/M3U playlist"),
    (b"#EXTINF", "an M3U playlist"),
    (b"ffconcat", "an ffmpeg concat list"),
    (b"<MPD", "a DASH manifest"),
    (b"v=0", "an SDP session description"),
    (b"[playlist]", "a PLS playlist"),
)


@dataclass(frozen=True)
class AudioStream:
    """One audio track of a file, as ffprobe reports it."""

    index: int  # the stream's index in the container (ffprobe "index"), not among audio tracks
    channels: int
    sample_rate: int  # Hz
    codec: str
    title: str | None


@dataclass(frozen=True)
class MediaInfo:
    """A vetted input file: safe to hand to ffmpeg with :func:`input_args`."""

    path: Path  # absolute
    format_name: str  # ffprobe's demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    duration: float  # s
    size: int  # bytes
    audio_streams: list[AudioStream]
    has_video: bool  # a real picture stream (cover art does not count)
    width: int | None = None  # pixels of the picture stream; None for audio-only
    height: int | None = None  # pixels of the picture stream; None for audio-only
    frame_rate: fractions.Fraction | None = None  # frames/s (avg_frame_rate, else r_frame_rate)


def max_duration() -> float:
    """The longest recording accepted, in seconds: ``$HIGHLIGHTSENSE_MAX_HOURS`` or 6 h.

    One limit for uploaded files and downloaded links, checked at probe time and while decoding.
    """
    text = os.environ.get(MAX_HOURS_ENV, "").strip()
    if not text:
        return MAX_HOURS_DEFAULT * 3600.0
    hours = _number(text)
    if hours is None or not 0 < hours <= MAX_HOURS_CEILING:
        raise SettingsError(
            f"{MAX_HOURS_ENV} must be a number of hours above 0 and at most "
            f"{MAX_HOURS_CEILING:.0f} (it is {text[:20]!r}); fix the setting."
        )
    return hours * 3600.0


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


# --- vetting and probing -----------------------------------------------------------------------


def _shown(path: Path) -> str:
    """A file's name for an error message: printable, on one line."""
    name = path.name or str(path)
    return "`" + "".join(c if c.isprintable() else "?" for c in name) + "`"


def _text_kind(head: bytes) -> str | None:
    """What a file is if its first bytes are text (a playlist, a manifest), else None."""
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    for signature, kind in PLAYLIST_SIGNATURES:
        if start.startswith(signature):
            return kind
    if b"\0" in head:
        return None
    try:
        # Not final: the sniffed prefix may end inside a multi-byte character.
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return None
    # Every accepted container starts with binary magic (NULs or bytes invalid in UTF-8).
    return "a DASH manifest" if b"<MPD" in head else "a text file"


def _vet(path: Path) -> os.stat_result:
    """Refuse what is not a non-empty regular file of binary media; return its stat."""
    shown = _shown(path)
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise MediaError(f"{shown} is a folder; choose a video or audio file.")
        if not stat.S_ISREG(info.st_mode):
            raise MediaError(
                f"{shown} is not a regular file (a device, pipe or socket); "
                "choose a video or audio file."
            )
        if info.st_size == 0:
            raise MediaError(f"{shown} is empty; choose a complete recording.")
        with path.open("rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except FileNotFoundError:
        raise MediaError(f"{shown} does not exist; check the file name and folder.") from None
    except OSError as err:
        raise MediaError(
            f"{shown} cannot be opened ({err.strerror}); check its permissions."
        ) from None
    kind = _text_kind(head)
    if kind is not None:
        raise MediaError(f"{shown} is {kind}, not a recording; choose {ACCEPTED_KINDS}.")
    return info


def _number(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _positive_int(value: object) -> int | None:
    number = _number(value)
    return int(number) if number is not None and number >= 1 else None


def _rate(value: object) -> fractions.Fraction | None:
    """ffprobe's "30000/1001" as a Fraction; None for "0/0", nonsense or a rate above 1000/s."""
    try:
        rate = fractions.Fraction(str(value))
    except (ValueError, ZeroDivisionError):
        return None
    return rate if 0 < rate <= MAX_FRAME_RATE else None


def input_args(info: MediaInfo) -> list[str]:
    """ffmpeg input options and ``-i`` for a probed file: file protocol and its demuxer only."""
    return [
        "-protocol_whitelist", "file",
        "-format_whitelist", FORMAT_WHITELIST,
        "-f", info.format_name.split(",")[0],
        "-i", f"file:{info.path}",
    ]  # fmt: skip


def probe(path: str | Path) -> MediaInfo:
    """Vet and probe an input file; raise :class:`MediaError` for anything unusable or unsafe."""
    path = Path(os.path.abspath(path))
    shown = _shown(path)
    size = _vet(path).st_size
    cmd = [
        ffprobe_path(), "-hide_banner", "-loglevel", "error",
        "-protocol_whitelist", "file", "-format_whitelist", FORMAT_WHITELIST,
        "-show_entries", PROBE_ENTRIES, "-of", "json", f"file:{path}",
    ]  # fmt: skip
    try:
        report = json.loads(run_tool(cmd, timeout=PROBE_TIMEOUT).stdout)
    except ToolError as err:
        raise MediaError(
            f"{shown} could not be read ({tool_reason(err, path)}); choose {ACCEPTED_KINDS}."
        ) from err
    except ValueError as err:
        raise MediaError(
            f"{shown} could not be read (ffprobe: {err}); choose {ACCEPTED_KINDS}."
        ) from err

    fmt = report.get("format") or {}
    streams = report.get("streams") or []
    format_name = str(fmt.get("format_name", ""))
    if not set(format_name.split(",")) & set(ALLOWED_FORMATS):
        raise MediaError(f"{shown} is in the {format_name!r} format; choose {ACCEPTED_KINDS}.")
    if max(len(streams), int(_number(fmt.get("nb_streams")) or 0)) > MAX_STREAMS:
        raise MediaError(
            f"{shown} has more than {MAX_STREAMS} streams, which no recording needs; "
            "re-export it with one video and one audio track."
        )
    duration = _number(fmt.get("duration"))
    if duration is None:
        duration = max((_number(s.get("duration")) or 0.0 for s in streams), default=0.0)
    if duration <= 0:
        raise MediaError(
            f"{shown} does not say how long it is; remux it to mp4 "
            "(`ffmpeg -i <file> -c copy out.mp4`) and try again."
        )
    audio = [
        AudioStream(
            index=int(s["index"]),
            channels=int(s.get("channels") or 0),
            sample_rate=int(_number(s.get("sample_rate")) or 0),
            codec=str(s.get("codec_name", "unknown")),
            title=(s.get("tags") or {}).get("title"),
        )
        for s in streams
        if s.get("codec_type") == "audio"
    ]
    if not any(a.channels > 0 and a.sample_rate > 0 for a in audio):
        raise MediaError(f"{shown} has no audio track; choose a recording that includes sound.")
    for track in audio:
        # ffmpeg's resampler needs memory in proportion to the ratio of the rates: a 1 Hz track
        # took 3.5 GB; a rate outside what recorders produce is a broken or hostile header.
        if track.sample_rate and not MIN_SAMPLE_RATE <= track.sample_rate <= MAX_SAMPLE_RATE:
            raise MediaError(
                f"{shown} has an audio track at {track.sample_rate} Hz, outside the "
                f"{MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz of real recordings; re-export it at "
                "44100 or 48000 Hz."
            )
    # After the rates: a wrong rate is what makes a small file claim a long duration.
    limit = max_duration()
    if duration > limit:
        raise MediaError(
            f"{shown} lasts {_hours(duration)}, more than the {_hours(limit)} limit; "
            "cut it into shorter parts."
        )
    pictures = [
        s
        for s in streams
        if s.get("codec_type") == "video" and not (s.get("disposition") or {}).get("attached_pic")
    ]
    for s in pictures:
        _check_frame(shown, int(_number(s.get("width")) or 0), int(_number(s.get("height")) or 0))
    picture = pictures[0] if pictures else {}
    return MediaInfo(
        path,
        format_name,
        duration,
        size,
        audio,
        has_video=bool(pictures),
        width=_positive_int(picture.get("width")),
        height=_positive_int(picture.get("height")),
        frame_rate=_rate(picture.get("avg_frame_rate")) or _rate(picture.get("r_frame_rate")),
    )


def _check_frame(shown: str, width: int, height: int) -> None:
    """Refuse a picture so large that cutting it would exhaust memory (8000x8000 took 6.5 GB)."""
    if max(width, height) > MAX_SIDE or width * height > MAX_PIXELS:
        raise MediaError(
            f"{shown} has {width}x{height} pixel frames, more than the {MAX_PIXELS:,} pixels "
            f"(or {MAX_SIDE} on a side) accepted; scale it down to 4K or less and try again."
        )


# --- decoding ----------------------------------------------------------------------------------


def read_audio(
    info: MediaInfo,
    *,
    sample_rate: int = 44100,
    channels: int = 2,
    stream: int = 0,
    chunk_seconds: float = 30.0,
    cancel: Callable[[], None] | None = None,
) -> Iterator[np.ndarray]:
    """Decode one audio track as consecutive float32 chunks of shape (channels, n).

    ``stream`` counts audio tracks only (0 = the first). Every chunk holds
    ``round(chunk_seconds * sample_rate)`` frames except the last, which may be shorter. One
    ffmpeg process streams raw samples through a pipe, so memory stays bounded whatever the
    file's length; it is killed if the consumer stops early, on cancel or on a stall.
    """
    if not 0 <= stream < len(info.audio_streams):
        count = len(info.audio_streams)
        raise MediaError(
            f"{_shown(info.path)} has {count} audio track(s), so there is no track {stream}; "
            f"choose a track from 0 to {count - 1}."
        )
    if sample_rate <= 0 or channels <= 0 or chunk_seconds <= 0:
        raise ValueError("sample_rate, channels and chunk_seconds must be positive")
    cmd = [
        ffmpeg_path(), "-nostdin", "-hide_banner", "-nostats", "-loglevel", "error",
        *input_args(info),
        # By container index: the audio list above is in container order but may hold tracks
        # that ffmpeg's "0:a:N" would number differently.
        "-map", f"0:{info.audio_streams[stream].index}", "-vn", "-sn", "-dn",
        "-ac", str(channels), "-ar", str(sample_rate),
        "-c:a", "pcm_f32le", "-f", "f32le", "pipe:1",
    ]  # fmt: skip
    frames = max(1, round(chunk_seconds * sample_rate))
    limit = max_duration()
    blocks = stream_tool(
        cmd, block_bytes=frames * channels * SAMPLE_BYTES, timeout=READ_TIMEOUT, cancel=cancel
    )
    # A plain function returning a generator: bad arguments fail at the call, not at next().
    return _decode(blocks, info.path, channels, max_frames=math.ceil(limit * sample_rate))


def _decode(
    blocks: Iterator[bytes], path: Path, channels: int, *, max_frames: int
) -> Iterator[np.ndarray]:
    """Raw float32 blocks from ffmpeg as (channels, n) arrays.

    Refuses non-finite samples (a float WAV may hold NaN or infinity, which no model survives)
    and audio running past ``max_frames``: a container may understate its length.
    """
    decoded = 0
    try:
        for block in blocks:
            samples = np.frombuffer(block, dtype="<f4").reshape(-1, channels)  # (n, channels)
            decoded += samples.shape[0]
            if decoded > max_frames:
                raise MediaError(
                    f"{_shown(path)} holds more audio than the {_hours(max_duration())} limit, "
                    "whatever its header says; cut it into shorter parts."
                )
            if not np.isfinite(samples).all():
                raise MediaError(
                    f"{_shown(path)} contains invalid audio samples (NaN or infinity); "
                    "re-export it as 16-bit or 24-bit audio."
                )
            yield np.ascontiguousarray(samples.T, dtype=np.float32)  # (channels, n)
    except ToolError as err:
        raise MediaError(
            f"{_shown(path)} could not be decoded ({tool_reason(err, path)}); "
            "the recording may be damaged, try re-exporting it."
        ) from err
    finally:
        # Stop ffmpeg now, not whenever the garbage collector finalises the inner generator.
        blocks.close()  # type: ignore[attr-defined]


def read_audio_all(
    info: MediaInfo,
    *,
    sample_rate: int = 44100,
    channels: int = 2,
    stream: int = 0,
    cancel: Callable[[], None] | None = None,
) -> np.ndarray:
    """The whole track at once, float32 (channels, n): for short inputs and tests."""
    chunks = list(
        read_audio(info, sample_rate=sample_rate, channels=channels, stream=stream, cancel=cancel)
    )
    if not chunks:
        return np.zeros((channels, 0), dtype=np.float32)
    return np.concatenate(chunks, axis=1)
