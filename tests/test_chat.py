"""The chat replay: each format read into the same message table, hostile files refused in one
sentence, the per-window chat score against the stream's own baseline, and the fusion rule.

The chat files are built here from the fields the tools document (TwitchDownloader's JSON,
twitch-dl's JSON, chat-downloader's JSON list and JSON lines, a plain text log); every name and
message is made up.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from highlightsense import chat, signals
from highlightsense.errors import ChatError, SettingsError
from highlightsense.settings import Selection

# (offset s, user, text, first-party emotes): whole seconds, so the text log can say them too;
# each emote at most once per message (chat-downloader lists an emote once, with its places)
MESSAGES = [
    (3.0, "Alpha", "hello chat", ()),
    (5.0, "beta_2", "KEKW what was that", ("KEKW",)),
    (5.0, "Gamma", "Pog Pog", ()),
    (61.0, "Alpha", "gg wp LUL", ("LUL",)),
    (3725.0, "Delta", "nice 🔥 play", ()),
]


def _fragments(text: str, emotes: tuple[str, ...], emote_key: str, empty: object) -> list:
    """Text fragments as Twitch gives them: each emote its own fragment, the rest in between."""
    fragments: list[dict] = []
    words = text.split(" ")
    for i, word in enumerate(words):
        piece = word + (" " if i < len(words) - 1 else "")
        if word in emotes:
            fragments.append({"text": word, emote_key: {"emoticon_id": "25", "emoteID": "25"}})
            if i < len(words) - 1:
                fragments.append({"text": " ", emote_key: empty})
        elif fragments and fragments[-1][emote_key] == empty:
            fragments[-1]["text"] += piece
        else:
            fragments.append({"text": piece, emote_key: empty})
    return fragments


def twitchdownloader(messages=MESSAGES) -> dict:
    comments = [
        {
            "_id": f"c{i}",
            "created_at": "2026-01-01T00:00:00Z",
            "channel_id": "1",
            "content_type": "video",
            "content_id": "2",
            "content_offset_seconds": offset,
            "commenter": {"display_name": user, "_id": str(100 + i), "name": user.lower()},
            "message": {
                "body": text,
                "bits_spent": 0,
                "fragments": _fragments(text, emotes, "emoticon", None),
                "user_badges": [],
                "user_color": "#1E90FF",
                "emoticons": [],
            },
        }
        for i, (offset, user, text, emotes) in enumerate(messages)
    ]
    return {
        "FileInfo": {"Version": {"Major": 1, "Minor": 4, "Patch": 0}},
        "streamer": {"name": "made_up_streamer", "id": 1},
        "video": {"title": "made up", "id": "2", "start": 0, "end": 4000},
        "comments": comments,
        "embeddedData": None,
    }


def twitch_dl(messages=MESSAGES) -> dict:
    comments = [
        {
            "id": f"c{i}",
            "contentOffsetSeconds": offset,
            "commenter": {"id": str(100 + i), "login": user.lower(), "displayName": user},
            "message": {
                "fragments": _fragments(text, emotes, "emote", None),
                "userBadges": [],
                "userColor": "#1E90FF",
            },
        }
        for i, (offset, user, text, emotes) in enumerate(messages)
    ]
    return {"video": {"id": "2", "title": "made up"}, "comments": comments}


def chat_downloader(messages=MESSAGES) -> list:
    return [
        {
            "message_id": f"m{i}",
            "message": text,
            "time_in_seconds": offset,
            "time_text": f"{int(offset) // 60}:{int(offset) % 60:02d}",
            "author": {"name": user, "display_name": user, "id": str(100 + i)},
            "emotes": [{"id": "25", "name": e, "locations": ["0-3"]} for e in emotes],
            "message_type": "text_message",
        }
        for i, (offset, user, text, emotes) in enumerate(messages)
    ]


def text_log(messages=MESSAGES) -> str:
    lines = []
    for offset, user, text, _ in messages:
        o = int(offset)
        lines.append(f"[{o // 3600}:{o // 60 % 60:02d}:{o % 60:02d}] {user}: {text}")
    return "\n".join(lines) + "\n"


def write_format(folder, kind: str, messages=MESSAGES):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{kind}.any"  # the content tells the format, not the name
    if kind == "twitchdownloader":
        path.write_text(json.dumps(twitchdownloader(messages), ensure_ascii=False))
    elif kind == "twitch-dl":
        path.write_text(json.dumps(twitch_dl(messages), indent=2, ensure_ascii=False))
    elif kind == "chat-downloader":
        path.write_text(json.dumps(chat_downloader(messages), indent=4, ensure_ascii=False))
    elif kind == "chat-downloader-lines":
        lines = [json.dumps(item, ensure_ascii=False) for item in chat_downloader(messages)]
        path.write_text("\n".join(lines) + "\n")
    else:
        path.write_text(text_log(messages))
    return path


JSON_FORMATS = ("twitchdownloader", "twitch-dl", "chat-downloader", "chat-downloader-lines")


@pytest.mark.parametrize("kind", [*JSON_FORMATS, "text"])
def test_each_format_reads_into_the_same_table(tmp_path, kind):
    messages = chat.read_chat(write_format(tmp_path, kind))
    assert messages.format == kind
    expected = MESSAGES
    if kind == "text":  # a text log has no emote fragments
        expected = [(o, u, t, ()) for o, u, t, _ in MESSAGES]
    assert messages.rows() == expected
    assert messages.names == ["Alpha", "beta_2", "Gamma", "Delta"]


def test_messages_are_sorted_and_those_past_the_vod_ignored(tmp_path):
    shuffled = [MESSAGES[3], MESSAGES[0], MESSAGES[4], MESSAGES[1], MESSAGES[2]]
    messages = chat.read_chat(write_format(tmp_path, "twitch-dl", shuffled), duration=100.0)
    assert [r[0] for r in messages.rows()] == [3.0, 5.0, 5.0, 61.0]
    assert messages.ignored == 1  # the one at 1:02:05


def _one_sentence(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and text.endswith(".") and len(text) < 400, text
    return text


def _twitch_json(offset: object) -> str:
    return json.dumps(twitchdownloader([(0.0, "a", "x", ())])).replace(
        '"content_offset_seconds": 0.0', f'"content_offset_seconds": {offset}'
    )


HOSTILE = {
    "cut short": ('{"comments": [{"content_offset_seconds": 1, "message": {"bo', "not valid JSON"),
    "not chat": ('{"name": "a settings file", "values": [1, 2]}', "neither"),
    "string for a number": (_twitch_json('"12.5"'), "no time offset in seconds"),
    "negative offset": (_twitch_json("-3"), "not a time in the VOD"),
    "NaN offset": (_twitch_json("NaN"), "not valid JSON"),
    "infinite offset": (_twitch_json("1e999"), "not valid JSON"),
    "a number for a user": (
        json.dumps([{"time_in_seconds": 1, "author": {"name": 7}, "message": "x"}]),
        "not a string",
    ),
    "emotes not names": (
        json.dumps([{"time_in_seconds": 1, "message": "x", "emotes": [{"name": [1]}]}]),
        "emotes that are not names",
    ),
    "a comment that is a number": ('{"comments": [5]}', "no time offset"),
    "deep nesting in a comment": (
        '{"comments": [{"content_offset_seconds": 1, "message": {"fragments": '
        + "[" * 100_000
        + "]" * 100_000
        + "}}]}",
        "too deep",
    ),
    "deep nesting at the top": ("[" * 100_000 + "]" * 100_000, "too deep"),
    "deep nesting before the comments": ('{"a": ' + "[" * 100_000, "too deep"),
    "binary": ("\x00\x01\x02PK", "neither JSON nor"),
    "empty": ("  \n", "empty"),
    "a bad log line": ("[0:00:01] a: hi\nthis is not a chat line\n", "Line 2"),
    "a log line too long": ("[0:00:01] a: " + "x" * 70_000 + "\n", "Line 1"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_chat_files_get_one_sentence(tmp_path, name):
    text, words = HOSTILE[name]
    path = tmp_path / "chat.json"
    path.write_text(text)
    with pytest.raises(ChatError) as err:
        chat.read_chat(path)
    assert words in _one_sentence(err)


def test_a_million_messages_in_one_second_are_refused(tmp_path):
    path = tmp_path / "flood.txt"
    with open(path, "w") as file:
        file.writelines("[0:00:07] bot: spam\n" for _ in range(1_000_000))
    with pytest.raises(ChatError) as err:
        chat.read_chat(path)
    assert f"more than {chat.MAX_PER_SECOND} messages at 00:00:07" in _one_sentence(err)


def test_a_file_over_the_size_limit_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.json"
    with open(path, "wb") as file:  # sparse: no disk spent
        file.truncate(chat.MAX_CHAT_BYTES + 1)
    with pytest.raises(ChatError) as err:
        chat.read_chat(path)
    assert "at most 1000 MB" in _one_sentence(err)


def test_the_message_count_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(chat, "MAX_MESSAGES", 4)
    with pytest.raises(ChatError) as err:
        chat.read_chat(write_format(tmp_path, "chat-downloader"))
    assert "more than 4 messages" in _one_sentence(err)
    monkeypatch.setattr(chat, "MAX_MESSAGES", 5)
    assert len(chat.read_chat(write_format(tmp_path, "chat-downloader"))) == 5


def test_a_missing_file_is_one_sentence(tmp_path):
    with pytest.raises(ChatError) as err:
        chat.read_chat(tmp_path / "nope.json")
    assert "cannot be read" in _one_sentence(err)


def test_long_texts_and_names_are_cut_to_the_limits(tmp_path):
    long = [(1.0, "n" * 300, "w" * 5000, ())]
    messages = chat.read_chat(write_format(tmp_path, "chat-downloader", long))
    ((_, user, text, _),) = messages.rows()
    assert len(user) == chat.MAX_NAME_CHARS and len(text) == chat.MAX_TEXT_CHARS


# --- the signal --------------------------------------------------------------------------------


def grid(seconds: float, window: float = 30.0, stride: float = 5.0) -> np.ndarray:
    """(N, 3) windows as the scorer lays them out (start, end, probability 0)."""
    starts = np.arange(0.0, seconds - window + 1e-9, stride)
    return np.stack([starts, starts + window, np.zeros_like(starts)], axis=1)


def steady_chat(seconds: float, every: float, users: int, start: float = 0.0) -> list:
    """One ordinary message every ``every`` s, from ``users`` chatters in turn."""
    times = np.arange(start, seconds, every)
    return [(float(t), f"viewer{i % users}", "hello there", ()) for i, t in enumerate(times)]


def burst(at: float, count: int, users: int, span: float = 8.0, emote: str = "KEKW") -> list:
    """``count`` messages in ``span`` s from ``at``, from ``users`` distinct chatters."""
    return [
        (at + span * i / count, f"fan{i % users}", f"{emote} omg", (emote,)) for i in range(count)
    ]


def table(rows: list) -> chat.Messages:
    rows = sorted(rows, key=lambda r: r[0])
    names: dict[str, int] = {}
    users = [names.setdefault(r[1], len(names)) for r in rows]
    return chat.Messages(
        offsets=np.array([r[0] for r in rows]),
        users=np.array(users, dtype=np.int32),
        names=list(names),
        texts=[r[2] for r in rows],
        emotes=[r[3] for r in rows],
    )


@pytest.mark.parametrize("every", [0.1, 4.0])  # a big channel's constant chat, a small one's
def test_a_burst_stands_out_against_the_streams_own_baseline(every):
    """The same relative burst (10× the usual rate for 8 s) scores near 1 whether chat usually
    runs at 10 messages/s or at one every 4 s; ordinary windows score 0."""
    windows = grid(1200.0)
    rate = 1 / every
    moment = 600.0
    extra = max(int(10 * rate * 8), 20)
    rows = steady_chat(1200.0, every, 50) + burst(moment + chat.CHAT_LAG_SEC, extra, 40)
    signal = chat.chat_signal(table(rows), windows)
    inside = (windows[:, 0] <= moment) & (windows[:, 1] >= moment + 8)
    away = (windows[:, 1] < moment - 60) | (windows[:, 0] > moment + 60)
    assert inside.sum() >= 4 and away.sum() >= 150
    assert np.all(signal.score[inside] > 0.9), signal.score[inside]
    assert np.all(signal.score[away] == 0.0), signal.score[away].max()
    best = int(np.argmax(signal.messages))
    assert signal.score[best] > 0.9
    usual = 30 * rate  # messages in an ordinary window
    assert signal.messages[best] == pytest.approx(usual + extra, abs=rate + 1)
    assert signal.ratio[best] == pytest.approx((usual + extra) / max(usual, 1), rel=0.1)
    assert signal.chatters[best] >= min(extra, 40) and signal.top[best] == ("KEKW", extra)
    assert signal.reason(best) == (
        f"Chat burst: {signal.ratio[best]:.1f}× its usual rate, "
        f"{signal.chatters[best]} chatters, KEKW ×{extra}."
    )
    assert signal.reason(int(np.flatnonzero(away)[0])) == ""


def test_the_lag_is_taken_off_before_windowing():
    """A message at 34 s is about the moment at 30 s: it belongs to the window [30, 60), not to
    [0, 30)."""
    windows = np.array([[0.0, 30.0, 0.0], [30.0, 60.0, 0.0]])
    signal = chat.chat_signal(table([(34.0, "a", "x", ())]), windows, lag_sec=4.0)
    assert list(signal.messages) == [0, 1]
    signal = chat.chat_signal(table([(33.9, "a", "x", ())]), windows, lag_sec=4.0)
    assert list(signal.messages) == [1, 0]


def test_reaction_words_lexicon_and_the_communitys_own():
    windows = np.array([[0.0, 30.0, 0.0]])
    rows = [
        (5.0, "a", "that was LUL", ()),  # lexicon word
        (6.0, "b", "kekw", ()),  # any case
        (7.0, "c", "monkaS no", ()),  # a community word only with chat_words
        (8.0, "d", "nothing here", ()),
        (9.0, "e", "x", ("catJAM",)),  # a first-party emote always counts
    ]
    plain = chat.chat_signal(table(rows), windows, lag_sec=0.0)
    assert plain.reactions[0] == 3
    own = chat.chat_signal(table(rows), windows, words=("monkaS",), lag_sec=0.0)
    assert own.reactions[0] == 4


def test_chat_words_are_checked():
    assert chat.parse_words(" KEKW, Pog ,,KEKW") == ("KEKW", "Pog")
    with pytest.raises(ChatError):
        chat.parse_words(",".join(f"w{i}" for i in range(chat.MAX_WORDS + 1)))
    with pytest.raises(ChatError):
        Selection(chat_words=("two words",))


# --- fusion ------------------------------------------------------------------------------------


def test_fusion_is_the_documented_weighted_sum():
    windows = np.array([[0.0, 30.0, 0.8], [5.0, 35.0, 0.2], [10.0, 40.0, 0.5]])
    chat_score = np.array([0.0, 1.0, 0.5])
    w = 0.35
    fused = signals.fuse(windows, [signals.Signal("chat", chat_score, w)])
    assert np.allclose(fused[:, 2], (1 - w) * windows[:, 2] + w * chat_score)
    assert np.array_equal(fused[:, :2], windows[:, :2])
    parts = signals.contributions(windows, [signals.Signal("chat", chat_score, w)], 1)
    assert parts["audio"]["contribution"] + parts["chat"]["contribution"] == pytest.approx(
        fused[1, 2]
    )
    # weight 0: the audio's own array, untouched
    assert signals.fuse(windows, [signals.Signal("chat", chat_score, 0.0)]) is windows
    with pytest.raises(SettingsError):
        signals.fuse(windows, [signals.Signal("chat", chat_score[:2], w)])


@pytest.mark.parametrize("weight", [-0.1, 1.5, math.nan])
def test_chat_weight_out_of_range(weight):
    with pytest.raises(SettingsError):
        Selection(chat_weight=weight)


def test_a_window_holding_the_whole_burst_beats_one_holding_part_of_it():
    """No plateau at the top: selection can tell the window that holds the burst."""
    windows = grid(1200.0)
    rows = steady_chat(1200.0, 1.0, 50) + burst(600.0 + chat.CHAT_LAG_SEC, 200, 80)
    signal = chat.chat_signal(table(rows), windows)
    whole = int(np.flatnonzero(windows[:, 0] == 590.0)[0])  # [590, 620) holds 600-608
    part = int(np.flatnonzero(windows[:, 0] == 575.0)[0])  # [575, 605) holds 5 s of 8
    assert signal.messages[whole] > signal.messages[part]
    assert 1.0 > signal.score[whole] > signal.score[part] > 0.5
