"""VOD links: checking a Twitch, Kick or YouTube URL and downloading the video with yt-dlp.

Only three kinds of link are accepted, checked without touching the network; yt-dlp is then
limited to the three matching extractors, so a link cannot lead it anywhere else. The download
lands in a private temporary folder and only a complete, probed file leaves it.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from . import media, tools
from .errors import SourceError

MAX_BYTES = 8 * 2**30  # bytes of download accepted by default
MAX_URL_LENGTH = 2048  # characters

# 720p is plenty to watch a clip and keeps a 6 h download to a few GB.
VIDEO_FORMAT = "bv*[height<=720]+ba/b[height<=720]/b"  # yt-dlp format selector
MERGE_FORMATS = "mp4/mkv"  # mp4 when the codecs allow it, else mkv
EXTRACTORS = ["twitch:vod", "kick:vod", "youtube"]  # the only yt-dlp extractors allowed to run
SOCKET_TIMEOUT = 30.0  # s without data before yt-dlp gives up on a connection
RETRIES = 3  # yt-dlp's retries per download and per fragment

ACCEPTED_LINKS = (
    "a Twitch VOD (https://www.twitch.tv/videos/<number>), a Kick VOD "
    "(https://kick.com/<channel>/videos/<id>) or a YouTube video (https://youtu.be/<id>)"
)
TWITCH_HOSTS = frozenset({"twitch.tv", "www.twitch.tv", "m.twitch.tv"})
KICK_HOSTS = frozenset({"kick.com", "www.kick.com"})
YOUTUBE_HOSTS = frozenset({"youtube.com", "www.youtube.com", "m.youtube.com"})
SHORT_YOUTUBE_HOST = "youtu.be"
SCHEME = re.compile(r"[a-z][a-z0-9+.-]+://", re.IGNORECASE)
TWITCH_VOD_PATH = re.compile(r"/videos/(\d{1,15})/?")
# a channel's slug, then the VOD's UUID (what yt-dlp's kick:vod extractor matches)
KICK_VOD_PATH = re.compile(
    r"/([A-Za-z0-9_-]{1,64})/videos/([0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12})/?", re.IGNORECASE
)
YOUTUBE_ID = re.compile(r"[A-Za-z0-9_-]{11}")
LIVE_STATES = frozenset({"is_live", "is_upcoming", "post_live"})  # yt-dlp's live_status values
SHOWN_CHARS = 80  # characters of a user's text quoted in an error
REASON_CHARS = 200  # characters of yt-dlp's error quoted in ours

logger = logging.getLogger(__name__)


def _shown(text: str) -> str:
    """User text for an error message: printable, one line, not too long."""
    text = "".join(c if c.isprintable() else "?" for c in text)
    return "`" + (text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…") + "`"


def is_url(text: str) -> bool:
    """Whether ``text`` looks like a link (``scheme://…`` or an accepted host), not a path."""
    text = text.strip()
    hosts = (*TWITCH_HOSTS, *KICK_HOSTS, *YOUTUBE_HOSTS, SHORT_YOUTUBE_HOST)
    return bool(SCHEME.match(text)) or text.lower().startswith(tuple(h + "/" for h in hosts))


def check_url(url: str) -> str:
    """The canonical https URL of a Twitch VOD, Kick VOD or YouTube video link; SourceError
    otherwise.

    Pure: no network. Refuses other hosts and schemes, credentials, ports, IP addresses,
    channel, live, clip and playlist pages. A link without a scheme is read as https.
    """
    refused = SourceError(f"{_shown(url.strip())} is not a supported link; paste {ACCEPTED_LINKS}.")
    text = url.strip()
    if not text or len(text) > MAX_URL_LENGTH or not text.isascii():
        raise refused
    if any(c.isspace() or not c.isprintable() for c in text):
        raise refused
    if "://" not in text:
        text = "https://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:  # an unbalanced "[" (IPv6 syntax) or a port that is not a number
        raise refused from None
    if parts.scheme.lower() != "https" or "@" in parts.netloc or port is not None:
        raise refused
    host = (parts.hostname or "").rstrip(".")
    if host in TWITCH_HOSTS:
        vod = TWITCH_VOD_PATH.fullmatch(parts.path)
        if vod:
            return f"https://www.twitch.tv/videos/{vod.group(1)}"
    elif host in KICK_HOSTS:
        vod = KICK_VOD_PATH.fullmatch(parts.path)
        if vod:
            return f"https://kick.com/{vod.group(1).lower()}/videos/{vod.group(2).lower()}"
    elif host in YOUTUBE_HOSTS:
        ids = parse_qs(parts.query).get("v", [])
        if parts.path in ("/watch", "/watch/") and len(ids) == 1 and YOUTUBE_ID.fullmatch(ids[0]):
            return f"https://www.youtube.com/watch?v={ids[0]}"
    elif host == SHORT_YOUTUBE_HOST:
        video_id = parts.path.strip("/")
        if YOUTUBE_ID.fullmatch(video_id):
            return f"https://www.youtube.com/watch?v={video_id}"
    raise refused


def _hours(seconds: float) -> str:
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min" if minutes else f"{hours} h"


def check_info(info: Mapping[str, Any], max_duration: float | None = None) -> None:
    """Refuse what yt-dlp describes as a playlist, a live or upcoming stream, or too long.

    ``max_duration`` (s) defaults to the one limit uploads have too (:func:`media.max_duration`).
    """
    if max_duration is None:
        max_duration = media.max_duration()
    name = _shown(str(info.get("title") or info.get("id") or "this video"))
    if info.get("_type") in ("playlist", "multi_video") or "entries" in info:
        raise SourceError(f"{name} is a playlist; paste the link of a single video.")
    if info.get("is_live") or info.get("live_status") in LIVE_STATES:
        raise SourceError(
            f"{name} is a live or upcoming stream; try again once the broadcast has ended "
            "and its VOD is complete."
        )
    duration = info.get("duration")
    if not isinstance(duration, int | float) or not math.isfinite(duration) or duration <= 0:
        raise SourceError(
            f"{name} does not say how long it is (it may still be live); "
            "try again once the VOD is complete."
        )
    if duration > max_duration:
        raise SourceError(
            f"{name} lasts {_hours(duration)}, more than the {_hours(max_duration)} limit; "
            "choose a shorter VOD or upload a part of it."
        )


class _YtDlpLog:
    """yt-dlp's messages, at debug level: its errors reach the user as a SourceError anyway."""

    def debug(self, message: str) -> None:
        logger.debug("yt-dlp: %s", message)

    info = warning = error = debug


def ydl_params(
    work: Path, max_bytes: int, hook: Callable[[dict[str, Any]], None]
) -> dict[str, Any]:
    """yt-dlp options: one video from the three allowed sites, at most 720p, into ``work``."""
    return {
        "format": VIDEO_FORMAT,
        "merge_output_format": MERGE_FORMATS,
        "paths": {"home": str(work), "temp": str(work)},
        "outtmpl": {"default": "%(extractor_key)s-%(id)s.%(ext)s"},
        "restrictfilenames": True,
        "noplaylist": True,
        "max_filesize": max_bytes,
        "allowed_extractors": EXTRACTORS,
        "ffmpeg_location": tools.ffmpeg_path(),
        "progress_hooks": [hook],
        "socket_timeout": SOCKET_TIMEOUT,
        "retries": RETRIES,
        "fragment_retries": RETRIES,
        "cachedir": False,  # nothing written outside ``work``
        "quiet": True,
        "noprogress": True,
        "logger": _YtDlpLog(),
    }


def _download_error(url: str, err: Exception) -> SourceError:
    lines = str(err).removeprefix("ERROR: ").splitlines() or [type(err).__name__]
    # The first line says what failed; yt-dlp's "(caused by …)" repeats it as a repr.
    reason = lines[0].split(" (caused by ")[0][:REASON_CHARS]
    return SourceError(
        f"could not download {url} ({reason}); check the link is public and try again."
    )


def fetch(
    url: str,
    dest_dir: Path,
    *,
    max_duration: float | None = None,
    max_bytes: int = MAX_BYTES,
    progress: Callable[[float, str], None] | None = None,
    cancel: Callable[[], None] | None = None,
) -> Path:
    """Download a Twitch or Kick VOD or a YouTube video into ``dest_dir``; return the probed file.

    The link is checked before any network access, then the video's description before any
    download (no live streams, at most ``max_duration`` seconds, by default the limit uploads
    have too). Video is fetched at up to 720p and merged with its audio into mp4 (mkv when the
    codecs need it), at most ``max_bytes``. ``progress(fraction, message)`` follows each
    downloaded file; whatever it or ``cancel`` raises stops the download. Partial files never
    reach ``dest_dir``.
    """
    canonical = check_url(url)
    limit = f"{max_bytes / 2**30:.1f} GiB"
    dest_dir.mkdir(parents=True, exist_ok=True)
    failures: list[BaseException] = []  # what our hook raised: yt-dlp may wrap it in its own

    def hook(status: dict[str, Any]) -> None:
        try:
            if cancel is not None:
                cancel()
            # max_filesize only stops plain HTTP downloads of known size; HLS (Twitch) needs this.
            if (status.get("downloaded_bytes") or 0) > max_bytes:
                raise SourceError(f"{canonical} is larger than {limit}; choose a shorter VOD.")
            if progress is not None and status.get("status") == "downloading":
                total = status.get("total_bytes") or status.get("total_bytes_estimate")
                fraction = min(1.0, (status.get("downloaded_bytes") or 0) / total) if total else 0.0
                progress(fraction, f"downloading {Path(status.get('filename', '')).name}")
        except BaseException as err:
            failures.append(err)
            raise

    import yt_dlp  # here, not at the top: a local file never needs it (≈ 0.3 s of CPU to import)

    work = Path(tempfile.mkdtemp(prefix=".download-", dir=dest_dir))
    try:
        try:
            with yt_dlp.YoutubeDL(ydl_params(work, max_bytes, hook)) as ydl:
                info = ydl.extract_info(canonical, download=False, process=False)
                check_info(info, max_duration)
                if cancel is not None:
                    cancel()
                result = ydl.process_ie_result(info, download=True)
        except yt_dlp.utils.YoutubeDLError as err:
            if failures:
                raise failures[0] from None
            raise _download_error(canonical, err) from err
        filepath = (result.get("requested_downloads") or [{}])[0].get("filepath")
        if not filepath or not Path(filepath).is_file():
            raise SourceError(
                f"{canonical} was not downloaded, most likely because it is larger than "
                f"{limit}; choose a shorter VOD."
            )
        downloaded = Path(filepath)
        if downloaded.stat().st_size > max_bytes:
            raise SourceError(
                f"{canonical} is larger than {limit} once downloaded; choose a shorter VOD."
            )
        target = dest_dir / downloaded.name
        os.replace(downloaded, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    try:
        media.probe(target)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    if progress is not None:
        progress(1.0, f"downloaded {target.name}")
    return target


def __getattr__(name: str) -> Any:
    """``sources.yt_dlp``, imported on first use (tests replace its YoutubeDL)."""
    if name == "yt_dlp":
        import yt_dlp

        return yt_dlp
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
