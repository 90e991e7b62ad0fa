"""The audience's signal: a chat replay read into a message table, then scored per window.

:func:`read_chat` streams a chat file (never the whole file in memory) into :class:`Messages`,
one row per message: offset (s from the VOD's start), user, text, first-party emotes. The format
is told from the content, not the file name:

- TwitchDownloader JSON: ``{"comments": [{"content_offset_seconds", "commenter":
  {"display_name"}, "message": {"body", "fragments": [{"text", "emoticon"}]}}]}``
- twitch-dl JSON: ``{"comments": [{"contentOffsetSeconds", "commenter": {"displayName"},
  "message": {"fragments": [{"text", "emote"}]}}]}``
- chat-downloader: a JSON list, or JSON lines, of ``{"time_in_seconds", "author": {"name"},
  "message", "emotes": [{"name"}]}``
- a plain text log, one ``[H:MM:SS] name: message`` per line.

:func:`chat_signal` turns the messages into a :class:`ChatSignal` on the audio's scoring windows
(the same 30 s windows every 5 s): per window the messages, the distinct chatters and the
reactions (a message holding a first-party emote or a word of :data:`LAUGHTER`, :data:`HYPE`
or the community's own words), with chat's lag behind the moment taken off first. Each count is
compared with the stream's own rolling baseline (median and MAD of the windows within
:data:`BASELINE_SEC`), so a big channel's constant chat and a small one's trickle both work; the
mean of the three robust z-scores becomes a score in [0, 1): 0 up to z = 2, then
tanh((z − 2) / 6). :func:`load` does both.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .errors import ChatError
from .signals import Signal
from .timecode import format_timestamp

# --- limits: a chat file comes from a stranger ---------------------------------------------------
MAX_CHAT_BYTES = 1_000_000_000  # bytes (1 GB): a 10-hour stream's TwitchDownloader JSON is ~300 MB
MAX_MESSAGES = 3_000_000  # messages kept at most (a 10-hour stream at 80 messages/s)
MAX_PER_SECOND = 2_000  # messages in any one second of the VOD (Twitch's busiest peak far below)
MAX_TEXT_CHARS = 500  # characters kept of one message (Twitch allows 500)
MAX_NAME_CHARS = 64  # characters kept of a user name (Twitch allows 25)
MAX_EMOTES = 100  # first-party emotes kept of one message
MAX_LINE_BYTES = 65_536  # bytes of one line of a text log
MAX_DEPTH = 32  # nesting of JSON containers (a TwitchDownloader comment needs 6)
SNIFF_BYTES = 4_096  # bytes read to tell the format

# --- the signal ---------------------------------------------------------------------------------
CHAT_LAG_SEC = 4.0  # s: chat reacts this long after the moment (reading, typing); taken off
BASELINE_SEC = 600.0  # s: the rolling baseline is the windows starting within ±300 s
MAD_TO_SD = 1.4826  # MAD → standard deviation of a normal distribution
Z_START = 2.0  # robust z at which the chat score starts rising from 0 (ordinary wobble below)
Z_SCALE = 6.0  # robust z above Z_START per unit of tanh: 0.76 at z = 8, 0.96 at 14, 0.995 at 20
CHAT_WEIGHT = 0.35  # default share of the chat score in the fused score (README: Chat)
MAX_WORDS = 50  # community words at most
MAX_WORD_CHARS = 40  # characters of one community word

# A small lexicon of reactions, matched as whole words, case-insensitively.
LAUGHTER = ("KEKW", "LUL", "LULW", "OMEGALUL", "ICANT", "LOL", "LMAO", "LMFAO", "ROFL",
            "HAHA", "HAHAHA", "XD", "😂", "🤣")  # fmt: skip
HYPE = ("POG", "POGGERS", "POGCHAMP", "POGU", "KREYGASM", "HYPE", "HYPERS", "WOW", "OMG",
        "CLIP", "CLIPIT", "GG", "EZ", "🔥")  # fmt: skip

FORMATS = {
    "twitchdownloader": "TwitchDownloader JSON",
    "twitch-dl": "twitch-dl JSON",
    "chat-downloader": "chat-downloader JSON",
    "chat-downloader-lines": "chat-downloader JSON lines",
    "text": "text log",
}
TEXT_LINE = re.compile(r"\[(\d{1,3}):([0-5]\d):([0-5]\d)(?:\.\d+)?\] ([^:\n]{1,200}): ?(.*)")
TEXT_START = re.compile(rb"\[\d{1,3}:\d\d:\d\d")
WORD = re.compile(r"[\w']+|[^\w\s]", re.UNICODE)
HINT = "export it again with TwitchDownloader, twitch-dl or chat-downloader, or leave the chat out"


@dataclass
class Messages:
    """The message table, sorted by offset. offsets: (M,) s; users: (M,) indices into
    ``names``; texts and emotes: one entry per message."""

    offsets: np.ndarray
    users: np.ndarray
    names: list[str]
    texts: list[str]
    emotes: list[tuple[str, ...]]
    format: str = ""  # a key of FORMATS
    ignored: int = 0  # messages past the VOD's end

    def __len__(self) -> int:
        return len(self.offsets)

    def rows(self) -> list[tuple[float, str, str, tuple[str, ...]]]:
        """(offset, user, text, emotes) per message: what every format must agree on."""
        return [
            (float(o), self.names[u], t, e)
            for o, u, t, e in zip(self.offsets, self.users, self.texts, self.emotes, strict=True)
        ]


# --- reading ------------------------------------------------------------------------------------


def check_file(path: str | os.PathLike) -> str:
    """The format of the chat file at ``path`` (a key of FORMATS, "twitch" for either Twitch
    JSON), told from its first bytes; ChatError when it is missing, too big or unknown."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as err:
        raise ChatError(f"The chat file {path.name} cannot be read ({err.strerror}).") from None
    if not path.is_file():
        raise ChatError(f"The chat file {path.name} is not a file; give a chat replay file.")
    if size > MAX_CHAT_BYTES:
        raise ChatError(
            f"The chat file {path.name} is {size / 1e6:.0f} MB; at most "
            f"{MAX_CHAT_BYTES / 1e6:.0f} MB is read: export the VOD's chat alone."
        )
    with open(path, "rb") as file:
        return _sniff(file, path.name)


def read_chat(path: str | os.PathLike, duration: float | None = None) -> Messages:
    """A chat file → its :class:`Messages` (format told from the content), keeping messages
    up to ``duration`` s. ChatError, one sentence, when the file breaks a rule or a limit."""
    from ijson import JSONError

    path = Path(path)
    kind = check_file(path)
    table = _Table(path.name, duration)
    with open(path, "rb") as file:
        try:
            table.add_all(_READERS[kind](file))
        except ChatError:
            raise
        except (JSONError, ValueError) as err:
            what = "JSON" if kind == "twitch" else FORMATS[kind]
            raise ChatError(
                f"The chat file {path.name} is not valid {what} ({_short(err)}); {HINT}."
            ) from None
        except RecursionError:
            raise ChatError(f"The chat file {path.name} is nested too deeply; {HINT}.") from None
    return table.done(kind)


def _short(err: Exception) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text[:120]


def _sniff(file: BinaryIO, name: str) -> str:
    head = file.read(SNIFF_BYTES).lstrip(b"\xef\xbb\xbf \t\r\n")
    if TEXT_START.match(head):
        return "text"
    if head.startswith(b"["):
        return "chat-downloader"
    if head.startswith(b"{"):
        file.seek(0)
        return _json_kind(file, name)
    if not head:
        raise ChatError(f"The chat file {name} is empty; {HINT}.")
    raise ChatError(
        f"The chat file {name} is neither JSON nor a [H:MM:SS] name: message log; {HINT}."
    )


def _json_kind(file: BinaryIO, name: str) -> str:
    """A JSON object: TwitchDownloader / twitch-dl (a "comments" list) or chat-downloader's
    JSON lines (objects with "time_in_seconds"), told by the first object's keys."""
    import ijson

    depth = 0
    try:
        for event, value in ijson.basic_parse(file, multiple_values=True):
            if event in ("start_map", "start_array"):
                depth += 1
                if depth > MAX_DEPTH:
                    raise ChatError(
                        f"The chat file {name} nests JSON too deeply (over {MAX_DEPTH}); {HINT}."
                    )
            elif event in ("end_map", "end_array"):
                depth -= 1
                if depth == 0:
                    break
            elif event == "map_key" and depth == 1:
                if value == "comments":
                    return "twitch"
                if value in ("time_in_seconds", "message_id", "author"):
                    return "chat-downloader-lines"
    except (ijson.JSONError, ValueError) as err:
        raise ChatError(
            f"The chat file {name} is not valid JSON ({_short(err)}); {HINT}."
        ) from None
    raise ChatError(
        f"The chat file {name} is JSON but neither a TwitchDownloader/twitch-dl export (no "
        f'"comments") nor chat-downloader output (no "time_in_seconds"); {HINT}.'
    )


Row = tuple[Any, Any, Any, Any]  # offset, user, text, emotes, as found (checked by _Table)


def _dig(item: Any, *keys: str) -> Any:
    for key in keys:
        item = item.get(key) if isinstance(item, dict) else None
    return item


def _values_at(
    file: BinaryIO, target: tuple[str | None, ...], multiple_values: bool = False
) -> Iterator[Any]:
    """Each JSON value at ``target`` (keys from the top, None for any list item), built from the
    parser's events one at a time, so memory holds one message; nesting past MAX_DEPTH is a
    ChatError (ijson's own ``items`` spends memory quadratic in the depth)."""
    import ijson

    levels: list[list] = []  # per open container: [is it a map, its current key (maps)]
    built: list[Any] = []  # the containers of the value being built, outermost first
    events = ijson.basic_parse(file, use_float=True, multiple_values=multiple_values)
    for event, value in events:
        if event == "map_key":
            levels[-1][1] = value
            if built:
                built[-1][1] = value
            continue
        if event in ("end_map", "end_array"):
            levels.pop()
            if built:
                done = built.pop()[0]
                if not built:
                    yield done
            continue
        start = event in ("start_map", "start_array")
        if built:
            parent, key = built[-1]
            item = ({} if event == "start_map" else []) if start else value
            if isinstance(parent, dict):
                parent[key] = item
            else:
                parent.append(item)
            if start:
                built.append([item, None])
        elif tuple(level[1] for level in levels) == target:
            if not start:
                yield value
            else:
                built.append([{} if event == "start_map" else [], None])
        if start:
            if len(levels) >= MAX_DEPTH:
                raise ChatError(f"The chat file nests JSON too deeply (over {MAX_DEPTH}); {HINT}.")
            levels.append([event == "start_map", None])


def _twitch_rows(file: BinaryIO) -> Iterator[tuple[str, Row]]:
    for comment in _values_at(file, ("comments", None)):
        if not isinstance(comment, dict):
            yield "twitchdownloader", (None, None, None, None)
            continue
        message = comment.get("message") if isinstance(comment.get("message"), dict) else {}
        fragments = message.get("fragments") or []
        if not isinstance(fragments, list):
            fragments = [None]
        if "content_offset_seconds" in comment:  # TwitchDownloader
            commenter = comment.get("commenter")
            user = _dig(commenter, "display_name") or _dig(commenter, "name")
            text = message.get("body")
            if text is None:
                text = "".join(str(_dig(f, "text") or "") for f in fragments)
            emotes = [_dig(f, "text") for f in fragments if _dig(f, "emoticon")]
            yield "twitchdownloader", (comment["content_offset_seconds"], user, text, emotes)
        else:  # twitch-dl (Twitch's GraphQL shape)
            commenter = comment.get("commenter")
            user = _dig(commenter, "displayName") or _dig(commenter, "login")
            text = "".join(str(_dig(f, "text") or "") for f in fragments)
            emotes = [_dig(f, "text") for f in fragments if _dig(f, "emote")]
            yield "twitch-dl", (comment.get("contentOffsetSeconds"), user, text, emotes)


def _chat_downloader_item(item: Any) -> Row:
    if not isinstance(item, dict):
        return None, None, None, None
    emotes = item.get("emotes") or []
    names = [_dig(e, "name") for e in emotes] if isinstance(emotes, list) else [None]
    return item.get("time_in_seconds"), _dig(item, "author", "name"), item.get("message"), names


def _chat_downloader_rows(file: BinaryIO) -> Iterator[tuple[str, Row]]:
    for item in _values_at(file, (None,)):
        yield "chat-downloader", _chat_downloader_item(item)


def _chat_downloader_lines(file: BinaryIO) -> Iterator[tuple[str, Row]]:
    for item in _values_at(file, (), multiple_values=True):
        yield "chat-downloader-lines", _chat_downloader_item(item)


def _text_rows(file: BinaryIO) -> Iterator[tuple[str, Row]]:
    number = 0
    while line := file.readline(MAX_LINE_BYTES):
        number += 1
        if len(line) == MAX_LINE_BYTES and not line.endswith(b"\n"):
            raise ChatError(
                f"Line {number} of the chat file is over {MAX_LINE_BYTES} bytes; {HINT}."
            )
        text = line.decode("utf-8", errors="replace").strip("\ufeff\r\n")
        if not text.strip():
            continue
        match = TEXT_LINE.fullmatch(text)
        if match is None:
            raise ChatError(
                f"Line {number} of the chat file is not '[H:MM:SS] name: message'; {HINT}."
            )
        hours, minutes, seconds, user, body = match.groups()
        offset = int(hours) * 3600 + int(minutes) * 60 + int(seconds)
        yield "text", (float(offset), user, body, [])


_READERS = {
    "twitch": _twitch_rows,
    "chat-downloader": _chat_downloader_rows,
    "chat-downloader-lines": _chat_downloader_lines,
    "text": _text_rows,
}


@dataclass
class _Table:
    """Checks each message as it streams in and keeps what the signal needs."""

    name: str
    duration: float | None
    offsets: list[float] = field(default_factory=list)
    users: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    emotes: list[tuple[str, ...]] = field(default_factory=list)
    ids: dict[str, int] = field(default_factory=dict)
    per_second: Counter = field(default_factory=Counter)
    kind: str = ""
    seen: int = 0
    ignored: int = 0

    def add_all(self, rows: Iterable[tuple[str, Row]]) -> None:
        for kind, row in rows:
            self.kind = kind
            self.add(*row)

    def _bad(self, what: str) -> ChatError:
        return ChatError(f"Message {self.seen} of the chat file {self.name} {what}; {HINT}.")

    def add(self, offset: Any, user: Any, text: Any, emotes: Any) -> None:
        self.seen += 1
        if isinstance(offset, bool) or not isinstance(offset, int | float):
            raise self._bad(f"has no time offset in seconds (got {type(offset).__name__})")
        if not math.isfinite(offset) or offset < 0:
            raise self._bad(f"is at {offset} s, not a time in the VOD")
        if not isinstance(user, str | None) or not isinstance(text, str | None):
            raise self._bad("has a user or text that is not a string")
        if not isinstance(emotes, list) or not all(isinstance(e, str) for e in emotes):
            raise self._bad("has emotes that are not names")
        if self.duration is not None and offset > self.duration:
            self.ignored += 1
            return
        if len(self.offsets) >= MAX_MESSAGES:
            raise ChatError(
                f"The chat file {self.name} holds more than {MAX_MESSAGES:,} messages; "
                "export the VOD's chat alone."
            )
        second = int(offset)
        self.per_second[second] += 1
        if self.per_second[second] > MAX_PER_SECOND:
            raise ChatError(
                f"The chat file {self.name} has more than {MAX_PER_SECOND} messages at "
                f"{format_timestamp(second)} (no real chat is that fast); {HINT}."
            )
        name = (user or "")[:MAX_NAME_CHARS]
        self.offsets.append(float(offset))
        self.users.append(self.ids.setdefault(name, len(self.ids)))
        self.texts.append((text or "")[:MAX_TEXT_CHARS])
        self.emotes.append(tuple(emotes[:MAX_EMOTES]))

    def done(self, kind: str) -> Messages:
        order = np.argsort(np.asarray(self.offsets, dtype=np.float64), kind="stable")
        return Messages(
            offsets=np.asarray(self.offsets, dtype=np.float64)[order],
            users=np.asarray(self.users, dtype=np.int32)[order],
            names=list(self.ids),
            texts=[self.texts[i] for i in order],
            emotes=[self.emotes[i] for i in order],
            format=self.kind or ("twitchdownloader" if kind == "twitch" else kind),
            ignored=self.ignored,
        )


# --- the signal ---------------------------------------------------------------------------------


def check_words(words: Sequence[str]) -> tuple[str, ...]:
    """A community's own reaction words, checked: at most MAX_WORDS of MAX_WORD_CHARS."""
    kept = tuple(dict.fromkeys(w.strip() for w in words if w.strip()))
    if len(kept) > MAX_WORDS or any(len(w) > MAX_WORD_CHARS or " " in w for w in kept):
        raise ChatError(
            f"Give chat words without spaces, at most {MAX_WORDS} of at most {MAX_WORD_CHARS} "
            "characters each, separated by commas (e.g. KEKW,Pog,monkaS)."
        )
    return kept


def parse_words(text: str) -> tuple[str, ...]:
    """``"KEKW, Pog"`` → ``("KEKW", "Pog")``."""
    return check_words(text.split(","))


@dataclass
class ChatSignal:
    """The chat on the scoring windows, each (N,): ``score`` in [0, 1], ``messages``,
    ``chatters``, ``reactions`` (counts in the window), ``ratio`` (messages against the
    baseline's), ``top`` (the commonest reaction and its count, or None)."""

    score: np.ndarray
    messages: np.ndarray
    chatters: np.ndarray
    reactions: np.ndarray
    ratio: np.ndarray
    top: list[tuple[str, int] | None]
    about: dict[str, object]

    def reason(self, index: int) -> str:
        """One plain line on the chat of window ``index``, or "" when it was ordinary."""
        if self.score[index] <= 0.0:
            return ""
        parts = [f"{self.ratio[index]:.1f}× its usual rate", f"{self.chatters[index]} chatters"]
        if self.top[index] is not None:
            token, count = self.top[index]
            parts.append(f"{token} ×{count}")
        return "Chat burst: " + ", ".join(parts) + "."

    def as_signal(self, weight: float) -> Signal:
        reasons = tuple(self.reason(i) for i in range(len(self.score)))
        return Signal("chat", self.score, weight, reasons, self.about)


def _reaction(text: str, emotes: tuple[str, ...], lexicon: dict[str, str]) -> str | None:
    """The message's reaction: its first first-party emote, else its first lexicon word."""
    if emotes:
        return emotes[0]
    for token in WORD.findall(text):
        found = lexicon.get(token.upper())
        if found is not None:
            return found
    return None


def _rolling_z(counts: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Robust z of each window's count against the windows starting within ±BASELINE_SEC/2:
    (x − median) / max(1.4826·MAD, √(median + 1)); the floor is a count's Poisson noise, so a
    trickle of chat (MAD 0) does not turn every message into a burst."""
    lo = np.searchsorted(starts, starts - BASELINE_SEC / 2, side="left")
    hi = np.searchsorted(starts, starts + BASELINE_SEC / 2, side="right")
    z = np.empty(len(counts))
    for i, (a, b) in enumerate(zip(lo, hi, strict=True)):
        around = counts[a:b]
        median = np.median(around)
        spread = max(MAD_TO_SD * np.median(np.abs(around - median)), math.sqrt(median + 1.0))
        z[i] = (counts[i] - median) / spread
    return z


def _rolling_median(counts: np.ndarray, starts: np.ndarray) -> np.ndarray:
    lo = np.searchsorted(starts, starts - BASELINE_SEC / 2, side="left")
    hi = np.searchsorted(starts, starts + BASELINE_SEC / 2, side="right")
    return np.array([np.median(counts[a:b]) for a, b in zip(lo, hi, strict=True)])


def chat_signal(
    messages: Messages,
    windows: np.ndarray,
    words: Sequence[str] = (),
    lag_sec: float = CHAT_LAG_SEC,
) -> ChatSignal:
    """messages + windows: (N, 3) start_sec, end_sec, … → the :class:`ChatSignal` per window."""
    lexicon = {w.upper(): w for w in (*LAUGHTER, *HYPE)}
    lexicon |= {w.upper(): w for w in check_words(words)}
    times = messages.offsets - lag_sec  # when the moment chat reacts to happened
    reaction_names: dict[str, int] = {}
    reactions = np.array(
        [
            -1 if (r := _reaction(t, e, lexicon)) is None
            else reaction_names.setdefault(r, len(reaction_names))
            for t, e in zip(messages.texts, messages.emotes, strict=True)
        ],
        dtype=np.int64,
    )  # fmt: skip
    tokens = list(reaction_names)
    starts, ends = windows[:, 0], windows[:, 1]
    first = np.searchsorted(times, starts, side="left")
    last = np.searchsorted(times, ends, side="left")
    count = (last - first).astype(np.float64)
    chatters = np.array(
        [len(np.unique(messages.users[a:b])) for a, b in zip(first, last, strict=True)]
    )
    inside = [reactions[a:b] for a, b in zip(first, last, strict=True)]
    reacted = np.array([int(np.count_nonzero(r >= 0)) for r in inside])
    top: list[tuple[str, int] | None] = []
    for r in inside:
        r = r[r >= 0]
        if len(r):
            counts = np.bincount(r)
            top.append((tokens[int(np.argmax(counts))], int(counts.max())))
        else:
            top.append(None)
    z = np.mean(
        [_rolling_z(x, starts) for x in (count, chatters.astype(float), reacted.astype(float))],
        axis=0,
    )
    # tanh rather than a clip at 1: a window holding the whole burst still beats one holding half
    score = np.tanh(np.maximum(z - Z_START, 0.0) / Z_SCALE)
    usual = np.maximum(_rolling_median(count, starts), 1.0)
    about = {
        "format": FORMATS.get(messages.format, messages.format),
        "messages": len(messages),
        "ignored_past_end": messages.ignored,
        "chatters": len(messages.names),
        "lag_sec": lag_sec,
        "words": list(check_words(words)),
    }
    return ChatSignal(score, count.astype(np.int64), chatters, reacted, count / usual, top, about)


def load(
    path: str | os.PathLike,
    windows: np.ndarray,
    duration: float | None = None,
    words: Sequence[str] = (),
) -> ChatSignal:
    """The one call: read the chat file at ``path`` and score it on ``windows`` (N, 3)."""
    signal = chat_signal(read_chat(path, duration), windows, words)
    signal.about["file"] = Path(path).name
    return signal
