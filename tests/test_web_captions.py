"""The app's Captions panel (highlightsense/web/captions_panel.py) in-process: captions for the
results on screen without analysing again, each clip's text in the table and beside the player,
one clip's caption corrected and re-cut alone, and hostile corrections that never reach the ASS
script as markup. Real media, the tiny models, the scripted Whisper (" gg wp" at 0-2 s)."""

from __future__ import annotations

import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import make_media

from highlightsense import captions, transcripts
from highlightsense.engine import Engine
from highlightsense.settings import AnalysisSettings
from highlightsense.web import captions_panel, controls, library
from highlightsense.web.config import Config
from highlightsense.web.service import PAGE, Service

VISITOR = "c" * 32
SAID = "gg wp"  # what the scripted Whisper hears in every window of speech


@pytest.fixture(scope="module")
def analysis(tmp_path_factory, checkpoint, tiny_separator):
    """A 40 s VOD loud throughout (whichever spans the random model picks hold a voice above
    the silence floor), analysed with 10 s windows."""
    vod = make_media(tmp_path_factory.mktemp("captions-vod") / "loud vod.mp4", 40,
                     loud_spans=((0, 40),))  # fmt: skip
    repo, name = tiny_separator
    settings = AnalysisSettings(
        weights=str(checkpoint),
        separator=name,
        separator_repo=str(repo),
        window_sec=10.0,
        stride_sec=5.0,
        device="cpu",
        use_cache=False,
    )
    return Engine.create(settings).analyze(vod)


@pytest.fixture
def shown(analysis, scripted_whisper, tmp_path, monkeypatch):
    """(app, the visitor's page state, its job): two exact clips on screen, no captions."""
    monkeypatch.setenv(transcripts.WHISPER_ENV, str(scripted_whisper))
    app = Service(Config(tmp_path / "work", 3600.0, 3600.0, 1e10, "1gb", 5, 60.0, 600.0, "cpu"))
    job = app.jobs.start(VISITOR)
    job.name, job.window, job.analysis = "loud vod.mp4", 10.0, analysis
    library.render(job, controls.picks(2, "threshold", 50, 0.0, 0, 0, 0, "exact"), preview=False)
    app.jobs.succeeded(job)
    assert len(job.result.highlights) == 2 and job.exact
    return app, {"visitor": VISITOR, "job": job.id, "pending": ""}, job


@pytest.fixture
def scripts(monkeypatch) -> list[str]:
    """Every ASS script the burn writes, as written."""
    written: list[str] = []
    real = captions.ass_text
    monkeypatch.setattr(captions, "ass_text", lambda *a: written.append(real(*a)) or written[-1])
    return written


def answer(values: tuple) -> dict:
    return dict(zip(PAGE, values, strict=True))


def finish(app: Service, state: dict) -> list[dict]:
    """What finish_cuts shows, step by step (the page chains it after every choice)."""
    return [answer(values) for values in app.finish_cuts(state)]


def dialogue(script: str) -> list[str]:
    return [line.split(",", 9)[9] for line in script.splitlines() if line.startswith("Dialogue:")]


def store_name(job, clip: Path) -> str:
    """The store file a shown clip links to."""
    (name,) = [p.name for p in (job.folder / "store").iterdir() if p.samefile(clip)]
    return name


def srt(job, rank: int) -> str:
    return (job.result.out_dir / "clips" / f"highlight_{rank:02d}.srt").read_text()


def test_captions_for_the_clips_on_screen_then_one_clip_corrected(shown, scripts) -> None:
    app, state, job = shown
    plain = [str(p) for p in job.result.clip_paths]
    chosen = answer(app.choose_captions(state, "burn"))
    # the clips on screen stay, saying their captions follow
    assert [path for path, _ in chosen["gallery"]["value"]] == plain
    assert "being transcribed" in chosen["status"] and chosen["captions"] == "burn"

    steps = finish(app, state)
    assert "Cutting the captioned clips" in steps[0]["status"] and "(2)…" in steps[0]["status"]
    done = steps[-1]
    assert [t.text for t in job.result.transcripts] == [SAID, SAID]
    table = done["table"]["value"]
    assert table["headers"][-1] == "What was said" and [r[-1] for r in table["data"]] == [SAID] * 2
    assert done["caption_text"]["value"] == SAID and done["caption_text"]["visible"]
    assert done["recut"]["visible"] and "Re-cut with this text" in done["captions_note"]
    assert len(scripts) == 2 and all(SAID.split()[0] in "".join(dialogue(s)) for s in scripts)
    burned = [store_name(job, clip) for clip in job.result.clip_paths]
    assert all(name.startswith("burn_") for name in burned), burned
    for rank in (1, 2):
        assert srt(job, rank).endswith(f"\n{SAID}\n\n")
    names = [path.name for path in job.files]
    assert {"loud vod-highlight_01.srt", "loud vod-highlight_02.vtt"} <= set(names)
    with zipfile.ZipFile(job.files[0]) as archive:
        assert "loud vod-highlights/loud vod-highlight_02.srt" in archive.namelist()

    heard = job.result.transcripts[0]
    other = job.result.clip_paths[1].stat().st_ino
    scripts.clear()
    fixed = answer(app.recut_caption(state, 1, "good game"))
    assert "Clip #1 is being cut with your text" in fixed["status"]
    finish(app, state)
    assert [t.text for t in job.result.transcripts] == ["good game", SAID]
    corrected = job.result.transcripts[0]
    # the new words over the time the old ones were spoken
    assert corrected.words[0].start == pytest.approx(heard.words[0].start, abs=1e-3)
    assert corrected.words[-1].end == pytest.approx(heard.words[-1].end, abs=1e-3)
    (script,) = scripts  # only the corrected clip was drawn again
    assert "good" in "".join(dialogue(script)) and "gg" not in "".join(dialogue(script))
    assert store_name(job, job.result.clip_paths[0]) != burned[0]
    assert job.result.clip_paths[1].stat().st_ino == other  # the other clip untouched
    assert srt(job, 1).endswith("\ngood game\n\n") and srt(job, 2).endswith(f"\n{SAID}\n\n")

    # off again: the plain cuts, no text column, the corrections kept for later
    app.choose_captions(state, "off")
    done = finish(app, state)[-1]
    assert job.result.transcripts == [] and done["table"]["value"]["headers"][-1] == "Score"
    assert not done["caption_text"]["visible"]
    assert [store_name(job, clip)[:5] for clip in job.result.clip_paths] == ["span_"] * 2


def test_subtitle_files_leave_the_clips_as_they_are(shown, scripts) -> None:
    app, state, job = shown
    cuts = [store_name(job, clip) for clip in job.result.clip_paths]
    app.choose_captions(state, "files")
    steps = finish(app, state)
    assert "Cutting the clips and their subtitles" in steps[0]["status"]
    assert [t.text for t in job.result.transcripts] == [SAID, SAID] and scripts == []
    assert [store_name(job, clip) for clip in job.result.clip_paths] == cuts
    assert srt(job, 2).endswith(f"\n{SAID}\n\n")


def test_hostile_corrections_are_letters_or_refused(shown, scripts) -> None:
    app, state, job = shown
    app.choose_captions(state, "burn")
    finish(app, state)
    scripts.clear()
    markup = "{\\an8}<b>x</b> \\N{\\pos(1,1)\\fs300}big"
    app.recut_caption(state, 1, markup)
    finish(app, state)
    assert job.result.transcripts[0].text == markup  # kept as the letters it is
    (script,) = scripts
    for text in dialogue(script):
        assert "\\an8" not in text and "\\pos" not in text and "\\fs" not in text
        assert "\\N" not in text and text.count("{") == 2  # our colour override and its reset
    assert "{" not in srt(job, 1) and "<b>x</b>" in srt(job, 1)

    scripts.clear()
    app.recut_caption(state, 2, "good\x00 \x1b[31mgame\u202e\r\nnow")
    finish(app, state)
    assert job.result.transcripts[1].text == "good [31mgame now"
    (script,) = scripts
    assert not any(ord(ch) < 32 or ch == "\u202e" for ch in "".join(dialogue(script)))

    generation, corrections = job.generation, dict(job.corrections)
    refusals = [
        (1, "x" * 10_000, "A caption can be at most 500 characters (got 10000); shorten it."),
        (1, None, "The caption must be text"),
        (1, ["gg"], "The caption must be text"),
        (0, "gg", "The clip must be a whole number between 1 and 2."),
        (3, "gg", "The clip must be a whole number between 1 and 2."),
        ("1; rm -rf /", "gg", "The clip must be a whole number between 1 and 2."),
        (10**400, "gg", "The clip must be a whole number between 1 and 2."),
    ]
    for rank, text, sentence in refusals:
        shown_now = answer(app.recut_caption(state, rank, text))
        assert sentence in shown_now["status"] and "hs-error" in shown_now["status"], rank
        assert "Traceback" not in shown_now["status"]
    for value in ("soft", "<b>burn</b>", None, ["burn"]):
        refused = answer(app.choose_captions(state, value))["status"]
        assert "Captions must be one of: off, burn, files." in refused, value
    # another visitor holding the job's id changes nothing
    stranger = {**state, "visitor": "d" * 32}
    assert "Find the highlights" in answer(app.recut_caption(stranger, 1, "mine"))["status"]
    assert "Find the highlights" in answer(app.choose_captions(stranger, "off"))["status"]
    assert job.generation == generation and job.corrections == corrections
    assert job.captions == "burn" and job.exact


def test_a_correction_needs_captions_first(shown) -> None:
    app, state, job = shown
    status = answer(app.recut_caption(state, 1, "good game"))["status"]
    assert "Choose captions for your clips first" in status and not job.corrections


def test_audio_only_vods_are_told_their_captions_are_files() -> None:
    audio_only = SimpleNamespace(info=SimpleNamespace(has_video=False))
    job = SimpleNamespace(captions="burn", result=None, analysis=audio_only)
    view = captions_panel.CaptionsPanel().captions_view(job)
    assert view == {"captions": "burn", "captions_note": captions_panel.NO_PICTURE}


def test_a_refused_vod_keeps_its_sentence_while_the_clips_on_screen_are_cut(shown) -> None:
    """A bad file given while the clips on screen still await their exact cuts: the cuts that
    follow (the page chains them after every run) must not hide why the file was refused; a
    new selection afterwards shows its own summary again."""
    app, state, job = shown
    job.generation += 1
    library.render(job, controls.picks(1, "threshold", 50, 0.0, 0, 0, 0, "exact"), preview=True)
    assert not job.exact
    refused = app._failed(state, "damaged.mp4 could not be read; try the file again.")
    steps = finish(app, state)
    assert len(steps) == 2 and all(step["status"] == refused for step in steps)
    assert job.exact  # the cuts were made all the same
    job.generation += 1
    library.render(job, controls.picks(2, "threshold", 50, 0.0, 0, 0, 0, "exact"), preview=True)
    steps = finish(app, state)
    assert "Cutting the exact clips" in steps[0]["status"] and steps[-1]["status"] != refused
