"""Captions: transcripts by the real faster-whisper (a scripted tiny model), subtitle files,
burned-in and soft captions checked by decoding the clips again, and the whole path."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ffmpeg_binary, make_media
from whisper_fixtures import FRAME_SEC, SEGMENT, TEXT, WORDS

from highlightsense import captions, media, outputs, tools, transcripts, voice
from highlightsense.engine import Engine
from highlightsense.errors import MediaError, SettingsError, TranscriptError
from highlightsense.pipeline import render
from highlightsense.settings import AnalysisSettings, Selection
from highlightsense.transcripts import Segment, Transcript, Word

RATE = transcripts.SAMPLE_RATE
WINDOW = 30.0  # s: Whisper's window; the scripted model speaks once in each
# Word times come from a DTW over the alignment head's attention, whose resolution is one
# encoder frame (20 ms); the model was built to switch words at whole seconds.
FRAME = FRAME_SEC + 1e-6
CHANGED = 60  # grey levels: a pixel the captions drew on (white or black over 0x60 grey);
# re-encoding a flat grey picture moves none this far


@pytest.fixture
def whisper_env(scripted_whisper, monkeypatch) -> Path:
    monkeypatch.setenv(transcripts.WHISPER_ENV, str(scripted_whisper))
    return scripted_whisper


def speech(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise at -20 dBFS: well above the silence gate (the scripted model hears words in any
    sound)."""
    return (0.1 * np.random.default_rng(seed).standard_normal(round(seconds * RATE))).astype(
        np.float32
    )


def check_scripted(heard: Transcript, windows: int) -> int:
    """The scripted text and times in each of ``windows`` windows; returns assertions made."""
    checked = 0
    assert [s.text for s in heard.segments] == [TEXT.strip()] * windows
    for i, segment in enumerate(heard.segments):
        offset = i * WINDOW
        assert segment.start == pytest.approx(offset + SEGMENT[0], abs=FRAME)
        assert segment.end == pytest.approx(offset + SEGMENT[1], abs=FRAME)
        assert [w.text for w in segment.words] == [w for w, _, _ in WORDS]
        for word, (_, start, end) in zip(segment.words, WORDS, strict=True):
            assert word.start == pytest.approx(offset + start, abs=FRAME)
            assert word.end == pytest.approx(offset + end, abs=FRAME)
            checked += 2
        checked += 3
    return checked


# --- transcripts ------------------------------------------------------------------------------


@pytest.mark.parametrize("compute_type", ["int8", "float32"])
def test_scripted_whisper_is_read_with_its_words_and_times(whisper_env, compute_type):
    heard = transcripts.transcribe(speech(45.0), compute_type=compute_type)
    assert check_scripted(heard, windows=2) == 14
    assert heard.language == "en" and heard.text == "gg wp gg wp"
    assert heard.model == str(whisper_env)


def test_times_past_the_audio_are_clamped(whisper_env):
    """1.5 s of speech: the model says its second word ends at 2.0 s, past the end."""
    heard = transcripts.transcribe(speech(1.5))
    assert heard.text == TEXT.strip()
    assert max(w.end for w in heard.words) <= 1.5
    assert heard.segments[0].end <= 1.5


def test_silence_and_quiet_music_give_no_captions_without_error(whisper_env):
    """Zeros, and a tone at -60 dBFS (what a separated voice of pure music looks like)."""
    t = np.arange(10 * RATE) / RATE
    quiet_tone = (0.001 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for audio in (np.zeros(10 * RATE, np.float32), quiet_tone, np.zeros(0, np.float32)):
        heard = transcripts.transcribe(audio)
        assert heard.segments == () and heard.text == "" and heard.language is None


def test_language_is_used_when_given_and_checked(whisper_env):
    assert transcripts.transcribe(speech(5.0), language="de").language == "de"
    with pytest.raises(TranscriptError, match="not a language"):
        transcripts.transcribe(speech(5.0), language="qq")
    with pytest.raises(SettingsError, match="ISO code"):
        Selection(captions="files", language="English; rm -rf")


def test_a_folder_that_is_no_whisper_model_is_one_sentence_naming_the_variable(
    scripted_whisper, tmp_path, monkeypatch
):
    transcripts.load_model.cache_clear()
    empty = tmp_path / "not a model"
    empty.mkdir()
    (empty / "notes.txt").write_text("hello")
    truncated = tmp_path / "truncated"
    shutil.copytree(scripted_whisper, truncated)
    data = (truncated / "model.bin").read_bytes()
    (truncated / "model.bin").write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage"
    shutil.copytree(scripted_whisper, garbage)
    (garbage / "model.bin").write_bytes(b"\0" * 4096)
    cases = {empty: "not a CTranslate2 Whisper model", truncated: "could not be loaded",
             garbage: "could not be loaded", "no such size": "is not a Whisper size"}  # fmt: skip
    for folder, fragment in cases.items():
        monkeypatch.setenv(transcripts.WHISPER_ENV, str(folder))
        with pytest.raises(TranscriptError, match=fragment) as caught:
            transcripts.transcribe(speech(2.0))
        message = str(caught.value)
        assert transcripts.WHISPER_ENV in message and "\n" not in message
    transcripts.load_model.cache_clear()


def test_a_model_in_the_hugging_face_cache_is_used_without_downloading(
    scripted_whisper, monkeypatch
):
    """Where a Space's preload_from_hub puts a repository: the hub cache's snapshot layout."""
    from huggingface_hub import constants

    repo = "highlightsense-tests/scripted-whisper"
    folder = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40
    shutil.copytree(scripted_whisper, folder / "snapshots" / commit, dirs_exist_ok=True)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    monkeypatch.setenv(transcripts.WHISPER_ENV, repo)
    transcripts.load_model.cache_clear()
    try:
        assert transcripts.transcribe(speech(3.0)).text == TEXT.strip()
    finally:
        transcripts.load_model.cache_clear()
    assert transcripts._hub_cached("highlightsense-tests/not-there") is None


def test_clean_text_strips_control_characters():
    assert transcripts.clean_text("a\x00b\x1b[31mc\u202e d\r\n e\u200b") == "a b [31mc d e"
    assert transcripts.clean_text("x" * 50, limit=10) == "x" * 10


# --- subtitle files -----------------------------------------------------------------------------


def hand_transcript() -> Transcript:
    """Known times: a segment ending past a 10 s clip, one wholly past it, control characters
    and markup in the text."""
    return Transcript(
        (
            Segment("hello there", 1.5, 3.25,
                    (Word(" hello", 1.5, 2.0), Word(" there", 2.1, 3.25))),
            Segment("what {\\an8}a\x07 play", 8.0, 12.0,
                    (Word(" what", 8.0, 8.5), Word(" {\\an8}a", 8.5, 9.0),
                     Word(" play", 9.7, 12.0))),
            Segment("too late", 10.5, 11.0, (Word(" too", 10.5, 10.7), Word(" late", 10.7, 11.0))),
        ),
        "en",
        "hand",
    )  # fmt: skip


def test_srt_and_vtt_are_exact_and_clamped_to_the_clip(tmp_path):
    written = captions.write_subtitles(hand_transcript(), 10.0, tmp_path / "highlight_01")
    assert [p.name for p in written] == ["highlight_01.srt", "highlight_01.vtt"]
    assert written[0].read_text() == (
        "1\n00:00:01,500 --> 00:00:03,250\nhello there\n\n"
        "2\n00:00:08,000 --> 00:00:10,000\nwhat (\u29f5an8)a play\n\n"
    )
    assert written[1].read_text() == (
        "WEBVTT\n\n"
        "1\n00:00:01.500 --> 00:00:03.250\nhello there\n\n"
        "2\n00:00:08.000 --> 00:00:10.000\nwhat (\u29f5an8)a play\n\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in written]  # no leftovers


def test_scripted_speech_reaches_the_srt_with_the_words_times(whisper_env, tmp_path):
    heard = transcripts.transcribe(speech(12.0))
    check_scripted(heard, windows=1)
    srt = captions.write_subtitles(heard, 12.0, tmp_path / "clip")[0].read_text()
    end = round(heard.segments[0].end * 1000)
    assert srt == f"1\n00:00:00,000 --> 00:00:0{end // 1000},{end % 1000:03d}\ngg wp\n\n"


def test_short_form_cues_show_one_to_three_words_with_the_spoken_one_marked():
    cues = captions.word_cues(hand_transcript(), 10.0)
    # "hello there" (2 words), then "what {a" (pause of 0.6 s before "play"), then "play"
    assert [(c.words, c.spoken) for c in cues] == [
        (("hello", "there"), 0), (("hello", "there"), 1),
        (("what", "(\u29f5an8)a"), 0), (("what", "(\u29f5an8)a"), 1),
        (("play",), 0),
    ]  # fmt: skip
    assert [(c.start, c.end) for c in cues] == [
        (1.5, 2.1),
        (2.1, 3.25),
        (8.0, 8.5),
        (8.5, 9.0),
        (9.7, 10.0),
    ]
    many = Transcript((Segment("a b c d e", 0, 5, tuple(Word(f" w{i}", i, i + 0.9)
                                                        for i in range(5))),))  # fmt: skip
    assert [len(c.words) for c in captions.word_cues(many, 5.0)] == [3, 3, 3, 2, 2]


def test_ass_script_draws_only_our_overrides():
    script = captions.ass_text(hand_transcript(), 10.0, 1080, 1920)
    events = [line for line in script.splitlines() if line.startswith("Dialogue:")]
    assert len(events) == 5
    for line in events:
        text = line.split(",", 9)[9]
        assert text.count("{") == 2 and text.count("\\c&H00DDFF&") == 1  # the spoken word only
        assert "\\an8" not in text and "\\pos" not in text
    style = next(line for line in script.splitlines() if line.startswith("Style: Default"))
    assert style.startswith("Style: Default,Roboto,97,") and ",-1," in style  # bold
    assert style.split(",")[-2] == str(round(0.30 * 1920))  # clear of the bottom third


# --- burned and soft captions -----------------------------------------------------------------


def grey_clip(path: Path, width: int, height: int, seconds: float = 4.0) -> Path:
    """Flat grey picture with noisy sound (speech to the scripted model)."""
    cmd = [
        ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"color=c=0x606060:s={width}x{height}:r=10:d={seconds}",
        "-f", "lavfi", "-i", f"anoisesrc=amplitude=0.3:duration={seconds}:sample_rate=44100",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
        "-shortest", str(path),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=120)
    return path


def frame_at(path: Path, at: float, width: int, height: int) -> np.ndarray:
    cmd = [
        tools.ffmpeg_path(), "-v", "error", "-ss", str(at), "-i", str(path), "-frames:v", "1",
        "-f", "rawvideo", "-pix_fmt", "gray", "pipe:1",
    ]  # fmt: skip
    raw = subprocess.run(cmd, check=True, capture_output=True, timeout=60).stdout
    return np.frombuffer(raw, np.uint8).reshape(height, width).astype(np.float32)


def caption_band(width: int, height: int) -> slice:
    """Rows the bottom-centred captions fill: up from the bottom margin by a line and a half."""
    bottom = height - round((0.30 if height > width else 0.08) * height)
    line = round(0.09 * min(width, height))
    return slice(bottom - round(1.5 * line), bottom + round(0.2 * line))


@pytest.mark.parametrize("size", [(640, 360), (1080, 1920)], ids=["landscape", "9:16"])
def test_burned_captions_show_in_the_band_while_spoken_and_nowhere_else(
    whisper_env, tmp_path, size
):
    width, height = size
    clip = grey_clip(tmp_path / "clip.mp4", width, height)
    sound = voice.decode_span(media.probe(clip), (0.0, 4.0), channels=1, rate=RATE)[0]
    heard = transcripts.transcribe(sound)
    check_scripted(heard, windows=1)  # words at 0-1 s and 1-2 s, nothing after 2 s
    burned = captions.burn(clip, heard, 4.0, size, tmp_path / "burned.mp4")
    assert media.probe(burned).audio_streams and not list(tmp_path.glob(".*"))
    band = caption_band(width, height)
    line = round(0.09 * min(width, height))  # the font size
    checked = 0
    for at, shown in ((0.5, True), (1.5, True), (3.0, False)):
        plain, drawn = frame_at(clip, at, width, height), frame_at(burned, at, width, height)
        changed = np.abs(plain - drawn) > CHANGED
        inside = int(changed[band].sum())
        # two bold glyphs and their outline cover far more than half a square of the font size
        assert (inside > line**2 // 2) if shown else (inside == 0), (at, inside)
        above, below = changed[: band.start].sum(), changed[band.stop :].sum()
        assert above == 0 and below == 0, (at, above, below)  # the safe area kept clear
        checked += 3
    assert checked == 9


def test_the_spoken_word_is_coloured(whisper_env, tmp_path):
    """At 0.5 s the first word is yellow, at 1.5 s the second: the yellow moves right."""
    width, height = 640, 360
    clip = grey_clip(tmp_path / "clip.mp4", width, height)
    heard = transcripts.transcribe(speech(4.0))
    burned = captions.burn(clip, heard, 4.0, (width, height), tmp_path / "burned.mp4")

    def yellow_columns(at: float) -> float:
        cmd = [tools.ffmpeg_path(), "-v", "error", "-ss", str(at), "-i", str(burned),
               "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]  # fmt: skip
        rgb = np.frombuffer(subprocess.run(cmd, check=True, capture_output=True).stdout, np.uint8)
        rgb = rgb.reshape(height, width, 3).astype(int)
        yellow = (rgb[..., 0] > 180) & (rgb[..., 1] > 150) & (rgb[..., 2] < 100)
        columns = np.nonzero(yellow.any(axis=0))[0]
        assert len(columns) > 5, at
        return float(columns.mean())

    assert yellow_columns(0.5) < width / 2 < yellow_columns(1.5)


def test_missing_font_is_an_error_not_a_blank_clip(monkeypatch, tmp_path):
    assert (captions.font_folder() / captions.FONT_FILE).is_file()
    monkeypatch.setitem(sys.modules, "font_roboto", None)
    with pytest.raises(MediaError, match="font"):
        captions.font_folder()
    fake = tmp_path / "font_roboto"
    (fake / "files").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    monkeypatch.delitem(sys.modules, "font_roboto")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MediaError, match=captions.FONT_FILE):
        captions.font_folder()


def test_paths_with_filter_syntax_stay_one_value(whisper_env, tmp_path):
    """The ASS file sits in a folder whose name would end the filter's option and the graph."""
    folder = tmp_path / "it's [a], b;c:d\\e"
    folder.mkdir()
    clip = grey_clip(folder / "clip.mp4", 320, 180)
    heard = transcripts.transcribe(speech(4.0))
    burned = captions.burn(clip, heard, 4.0, (320, 180), folder / "burned.mp4")
    changed = np.abs(frame_at(clip, 0.5, 320, 180) - frame_at(burned, 0.5, 320, 180)) > CHANGED
    assert changed[caption_band(320, 180)].sum() > round(0.09 * 180) ** 2 // 2


def test_soft_captions_are_a_mov_text_track_holding_the_srt(whisper_env, tmp_path):
    clip = grey_clip(tmp_path / "clip.mp4", 320, 180)
    heard = transcripts.transcribe(speech(4.0))
    muxed = captions.mux(clip, heard, 4.0, tmp_path / "soft.mp4")
    probe = subprocess.run(
        [tools.ffprobe_path(), "-v", "error", "-show_entries",
         "stream=codec_type,codec_name:stream_tags=language", "-of", "json", str(muxed)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    streams = json.loads(probe.stdout)["streams"]
    assert [s["codec_type"] for s in streams] == ["video", "audio", "subtitle"]
    assert streams[2]["codec_name"] == "mov_text" and streams[2]["tags"]["language"] == "eng"
    back = subprocess.run(
        [tools.ffmpeg_path(), "-v", "error", "-i", str(muxed), "-map", "0:s", "-f", "srt", "-"],
        check=True,
        capture_output=True,
        timeout=30,
        text=True,
    ).stdout
    assert back.strip() == captions.subtitle_text(heard, 4.0, "srt").strip()


def test_corrections_are_plain_text_within_a_limit():
    hostile = "nice {\\pos(1,1)\\fs300}shot\x00\x1b\u202e\n[x];'y':z"
    cleaned = captions.check_correction(hostile, 200)
    assert "\x00" not in cleaned and "\n" not in cleaned and "\u202e" not in cleaned
    retimed = captions.retimed(hand_transcript(), cleaned, 10.0)
    script = captions.ass_text(retimed, 10.0, 640, 360)
    for line in (x for x in script.splitlines() if x.startswith("Dialogue:")):
        text = line.split(",", 9)[9]
        assert "\\pos" not in text and "\\fs" not in text and text.count("{") == 2
    assert retimed.words[0].start == 1.5 and retimed.words[-1].end == 11.0  # "late"
    with pytest.raises(TranscriptError, match="at most 200"):
        captions.check_correction("x" * 10_000, 200)


# --- the voice of a span, and the whole path -------------------------------------------------


def obs_recording(path: Path) -> Path:
    """An OBS-style audio file: track 1 a 300 Hz voice, track 2 noise (20 s)."""
    subprocess.run(
        [ffmpeg_binary(), "-v", "error", "-y",
         "-f", "lavfi", "-i", "sine=frequency=300:duration=20:sample_rate=44100",
         "-f", "lavfi", "-i", "anoisesrc=amplitude=0.3:duration=20:sample_rate=44100",
         "-map", "0:a", "-map", "1:a", "-c:a", "aac", str(path)],
        check=True, timeout=60,
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def tracks_analysis(tmp_path_factory, checkpoint):
    path = obs_recording(tmp_path_factory.mktemp("obs") / "obs.mkv")
    engine = Engine.create(AnalysisSettings(weights=str(checkpoint), tracks=(1, 2)))
    return engine.analyze(path)


def test_the_voice_track_is_decoded_directly_with_tracks(tracks_analysis):
    """The span's voice is track 1's tone, not the noise of track 2."""
    sound = voice.voice_of(tracks_analysis, (5.0, 7.5))
    assert abs(len(sound) - 2.5 * RATE) <= 0.05 * RATE
    spectrum = np.abs(np.fft.rfft(sound))
    assert np.argmax(spectrum) * RATE / len(sound) == pytest.approx(300, abs=2)


def test_corrected_transcripts_are_rendered_without_listening_again(
    tracks_analysis, tmp_path, monkeypatch
):
    """An audio-only input asked to burn: the corrected text reaches the subtitle files and the
    tables, the clip stays an .m4a (nothing to draw on), nothing is transcribed."""

    def refuse(*args, **kwargs):
        raise AssertionError("transcribed again")

    monkeypatch.setattr(voice, "voice_of", refuse)
    chosen = Selection(percentile=0, top_n=1, captions="burn")
    fixed = captions.retimed(Transcript(), captions.check_correction("nice <b>shot</b>", 100), 5)
    result = render(tracks_analysis, chosen, tmp_path / "out", transcripts=[fixed])
    assert [p.suffix for p in result.clip_paths] == [".m4a"]
    srt = (tmp_path / "out" / "clips" / "highlight_01.srt").read_text()
    assert srt == "1\n00:00:00,000 --> 00:00:05,000\nnice <b>shot</b>\n\n"
    row = json.loads((tmp_path / "out" / "highlights.json").read_text())["highlights"][0]
    assert row["text"] == "nice <b>shot</b>" and len(row["words"]) == 2


def test_cli_says_in_one_line_which_variable_names_a_missing_model(tmp_path, checkpoint):
    path = obs_recording(tmp_path / "obs.mkv")
    env = {**__import__("os").environ, "HIGHLIGHTSENSE_WEIGHTS": str(checkpoint),
           "HIGHLIGHTSENSE_WHISPER": str(tmp_path / "no such model"),
           "HIGHLIGHTSENSE_CACHE": str(tmp_path / "cache")}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "highlightsense", "detect", str(path), "-o", str(tmp_path / "o"),
         "--tracks", "voice=1,game=2", "--captions", "files", "-q"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and transcripts.WHISPER_ENV in lines[0]
    assert not (tmp_path / "o").exists()  # refused before any work: nothing written


@pytest.fixture(scope="module")
def captioned_run(tmp_path_factory, checkpoint, tiny_separator, scripted_whisper):
    """A 40 s VOD through the CLI with burned captions, vertical clips and a timeline."""
    import os

    folder = tmp_path_factory.mktemp("captioned")
    # loud throughout: the random model's picks are arbitrary, and a span of the quiet bed alone
    # may come out of the tiny separator below transcripts.SILENCE_DBFS (then: no captions)
    vod = make_media(folder / "vod.mp4", 40, loud_spans=((0, 40),))
    repo, name = tiny_separator
    env = {**os.environ, "HIGHLIGHTSENSE_WEIGHTS": str(checkpoint),
           "HIGHLIGHTSENSE_SEPARATOR": name, "HIGHLIGHTSENSE_SEPARATOR_REPO": str(repo),
           "HIGHLIGHTSENSE_WHISPER": str(scripted_whisper),
           "HIGHLIGHTSENSE_CACHE": str(folder / "cache")}  # fmt: skip
    out = folder / "out"
    args = [str(vod), "-o", str(out), "--window", "10", "--percentile", "0", "--top-n", "2",
            "--pad-after", "1", "--captions", "burn", "--vertical", "fit", "--timeline", "edl",
            "--timeline-order", "time", "-q"]  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "highlightsense", "detect", *args],
                          capture_output=True, text=True, timeout=600, env=env)  # fmt: skip
    return vod, out, proc, env


def test_cli_writes_captions_everywhere(captioned_run):
    vod, out, proc, _ = captioned_run
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "highlights.json").read_text())
    rows = summary["highlights"]
    assert len(rows) == 2 and summary["settings"]["captions"] == "burn"
    assert proc.stdout.count("“gg wp”") == 2
    for row in rows:
        assert row["text"] == "gg wp" and row["language"] == "en"
        assert [w["word"] for w in row["words"]] == ["gg", "wp"]
        assert row["words"][1]["end"] == pytest.approx(2.0, abs=FRAME)
        stem = out / "clips" / f"highlight_{row['rank']:02d}"
        srt = stem.with_suffix(".srt").read_text()
        assert srt.startswith("1\n00:00:00,000 --> 00:00:0") and srt.endswith("\ngg wp\n\n")
        assert stem.with_suffix(".vtt").read_text().startswith("WEBVTT\n\n1\n00:00:00.000 -->")
        for clip in (out / row["clip_path"], out / row["vertical_clip_path"]):
            assert media.probe(clip).has_video
    with open(out / "highlights.csv") as file:
        assert file.readline().strip().endswith(",clip_path,text")
        assert all(line.strip().endswith(",gg wp") for line in file)
    # the rough cut in time order: the later highlight's captions start after the first clip
    first, second = sorted(rows, key=lambda r: r["start_sec"])
    cues = (out / "captions.srt").read_text().split("\n\n")
    assert cues[0].startswith("1\n00:00:00,") and cues[0].endswith("gg wp")
    begins = cues[0].split("\n")[1].split(" --> ")[0]
    assert int(begins[9:12]) / 1000 <= 0.1 + 1e-3  # within one frame (10 fps) of the cut's start
    shifted = cues[1].split("\n")[1].split(" --> ")[0]
    seconds = int(shifted[6:8]) + int(shifted[9:12]) / 1000 + 60 * int(shifted[3:5])
    assert seconds == pytest.approx(first["duration_sec"], abs=0.1 + 1e-3)  # one frame at 10 fps
    assert not list(out.rglob(".*.ass")) and not list(out.rglob(".*.srt"))


def test_reselection_reuses_transcripts_and_a_rerun_replaces_the_output(
    captioned_run, checkpoint, tiny_separator, whisper_env, tmp_path, monkeypatch
):
    vod, out, _, _ = captioned_run
    repo, name = tiny_separator
    settings = AnalysisSettings(weights=str(checkpoint), separator=name, separator_repo=str(repo),
                                window_sec=10, use_cache=False)  # fmt: skip
    analysis = Engine.create(settings).analyze(vod)
    calls = []
    real = voice.voice_of
    monkeypatch.setattr(voice, "voice_of", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    chosen = Selection(percentile=0, top_n=2, captions="files")
    first = render(analysis, chosen, tmp_path / "a")
    again = render(analysis, dataclasses.replace(chosen, captions="soft"), tmp_path / "b")
    assert len(calls) == 2 and [t.text for t in first.transcripts] == ["gg wp"] * 2
    assert again.transcripts == first.transcripts
    for clip in again.clip_paths:
        streams = subprocess.run(
            [tools.ffprobe_path(), "-v", "error", "-show_entries", "stream=codec_name",
             "-of", "csv=p=0", str(clip)], check=True, capture_output=True, text=True,
        ).stdout.split()  # fmt: skip
        assert "mov_text" in streams
    assert outputs.CAPTIONS_FILE not in {p.name for p in (tmp_path / "a").iterdir()}


def test_readme_captions_command(captioned_run, scripted_whisper, tmp_path):
    """The README's Captions command, as written, on the VOD of the CLI run above."""
    from test_readme import run, shell_lines

    (command,) = shell_lines("Captions")
    vod, _, _, env = captioned_run
    (tmp_path / "my_vod.mp4").symlink_to(vod)
    env = {**env, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}  # as after install
    done = run(command, tmp_path, env)
    assert done.returncode == 0, done.stderr
    result = tmp_path / "highlights" / "my_vod"
    rows = json.loads((result / "highlights.json").read_text())["highlights"]
    assert rows and all(r["text"] == "gg wp" and r["language"] == "en" for r in rows)
    assert sorted(p.name for p in (result / "clips").iterdir()) == sorted(
        f"highlight_{r['rank']:02d}{ext}" for r in rows for ext in (".mp4", ".srt", ".vtt")
    )
