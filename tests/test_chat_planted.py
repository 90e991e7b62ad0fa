"""Chat fused with the audio on the planted-shouts VOD, with a generated chat.

The VOD has four full shouts (4 s, the learned model scores their windows ≈ 1) and one short
shout (1 s, scored lower: the audio alone ranks it 5th), and a quiet decoy moment. The chat is a
steady trickle with one burst, put on the short shout or on the decoy. At the default weight the
burst lifts the short shout into the top 3 but cannot lift the quiet decoy over a full shout; at
weight 0 every table is the audio-only run's, byte for byte.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from highlightsense import chat, pipeline
from highlightsense.engine import Engine
from highlightsense.settings import AnalysisSettings, Selection

SECONDS = 300.0
FULL = ((12.0, 16.0), (57.0, 61.0), (102.0, 106.0), (147.0, 151.0))  # (start, end) s
SHORT = (192.0, 193.0)  # the audio's 5th moment
DECOY = 250.0  # s, nothing in the audio
BURST_MESSAGES = 60  # in 8 s, from 40 chatters, each with a KEKW emote
RANK_ALL = {"threshold": 0.0, "top_n": 10, "nms_sec": 10.0, "clips": False}


def chat_rows(moment: float | None) -> list[dict]:
    """chat-downloader items: a message every 2 s from 30 viewers; the burst at ``moment``
    (plus chat's lag) when given."""
    rows = [
        {"time_in_seconds": float(t), "author": {"name": f"viewer{i % 30}"}, "message": "hi"}
        for i, t in enumerate(np.arange(1.0, SECONDS, 2.0))
    ]
    if moment is not None:
        at = moment + chat.CHAT_LAG_SEC
        rows += [
            {
                "time_in_seconds": at + 8.0 * i / BURST_MESSAGES,
                "author": {"name": f"fan{i % 40}"},
                "message": "KEKW no way",
                "emotes": [{"id": "1", "name": "KEKW"}],
            }
            for i in range(BURST_MESSAGES)
        ]
    return sorted(rows, key=lambda r: r["time_in_seconds"])


@pytest.fixture(scope="module")
def setup(tmp_path_factory, learned_checkpoint, tiny_separator):
    from model_fixtures import write_planted_media

    folder = tmp_path_factory.mktemp("chat-planted")
    vod = write_planted_media(folder / "chat vod.mp4", SECONDS, (*FULL, SHORT))
    repo, name = tiny_separator
    settings = AnalysisSettings(weights=str(learned_checkpoint), separator=name,
                                separator_repo=str(repo))  # fmt: skip
    analysis = Engine.create(settings).analyze(vod)
    chats = {}
    for label, moment in (("short", SHORT[0]), ("decoy", DECOY), ("none", None)):
        path = folder / f"chat-{label}.json"
        path.write_text(json.dumps(chat_rows(moment)))
        chats[label] = path
    return folder, vod, analysis, chats


def window_of(analysis, highlight) -> tuple[float, float]:
    start, end, _ = analysis.windows[highlight.window]
    return float(start), float(end)


def covers(span: tuple[float, float], moment: tuple[float, float]) -> bool:
    return span[0] <= moment[0] and span[1] >= moment[1]


def picks(analysis, extra=None, **values):
    chosen = Selection(**{**RANK_ALL, **values})
    if extra is None:
        extra, _ = pipeline.extra_signals(analysis, chosen)
    highlights, _, _ = pipeline.choose(analysis, chosen, extra)
    return [window_of(analysis, h) for h in highlights]


def test_the_audio_alone_ranks_the_short_shout_fifth(setup):
    _, _, analysis, _ = setup
    ranked = picks(analysis)
    assert len(ranked) >= 5
    for span in ranked[:4]:  # the four full shouts, in some order
        assert sum(covers(span, full) for full in FULL) == 1, ranked
    assert covers(ranked[4], SHORT), ranked
    probability = analysis.windows[:, 2]
    full_p = min(probability[[i for i, w in enumerate(analysis.windows) if covers(w, f)]].max()
                 for f in FULL)  # fmt: skip
    short_p = max(p for w, p in zip(analysis.windows, probability, strict=True) if covers(w, SHORT))
    assert full_p - short_p > 0.02  # the short shout is clearly behind, not a tie


def test_a_burst_on_the_5th_moment_lifts_it_into_the_top_3(setup):
    _, _, analysis, chats = setup
    ranked = picks(analysis, chat=str(chats["short"]))
    assert any(covers(span, SHORT) for span in ranked[:3]), ranked


def test_a_burst_on_a_decoy_does_not_outrank_a_shout(setup):
    _, _, analysis, chats = setup
    ranked = picks(analysis, chat=str(chats["decoy"]))
    for span in ranked[:4]:
        assert sum(covers(span, full) for full in FULL) == 1, ranked
    assert any(covers(span, (DECOY, DECOY + 1.0)) for span in ranked[4:]), ranked  # it ranks


def test_the_default_weight_sits_inside_the_range_where_both_hold(setup):
    """Sweep the weight: the burst lifts the short shout into the top 3 from some weight on,
    and the decoy stays behind every full shout up to some weight; the default is inside, with
    room on both sides (the README's justification)."""
    _, _, analysis, chats = setup
    signals = {
        label: chat.load(chats[label], analysis.windows, analysis.duration)
        for label in ("short", "decoy")
    }
    weights = np.round(np.arange(0.05, 1.0, 0.05), 2)
    lifts, holds = [], []
    for w in weights:
        short = picks(analysis, extra=[signals["short"].as_signal(w)])
        decoy = picks(analysis, extra=[signals["decoy"].as_signal(w)])
        lifts.append(any(covers(span, SHORT) for span in short[:3]))
        holds.append(all(sum(covers(s, f) for f in FULL) == 1 for s in decoy[:4]))
    good = weights[np.array(lifts) & np.array(holds)]
    assert len(good) >= 3, list(zip(weights, lifts, holds, strict=True))
    assert good.min() < chat.CHAT_WEIGHT < good.max(), good
    # the upper end is where a full chat burst (score 1) outweighs a sure shout over silence:
    # w / (1 − w) ≥ p_shout − p_quiet ≈ 1, so w ≈ 0.5
    assert good.max() < 0.55


def render_tables(analysis, out, **values) -> dict[str, bytes]:
    chosen = Selection(**{"percentile": 90.0, "top_n": 3, "clips": False, **values})
    pipeline.render(analysis, chosen, out)
    summary = json.loads((out / "highlights.json").read_text())
    del summary["seconds"]  # wall time
    return {
        "scores.csv": (out / "scores.csv").read_bytes(),
        "highlights.csv": (out / "highlights.csv").read_bytes(),
        "highlights.json": json.dumps(summary).encode(),
    }


def test_weight_0_reproduces_the_audio_only_tables_byte_for_byte(setup, tmp_path):
    _, _, analysis, chats = setup
    alone = render_tables(analysis, tmp_path / "alone")
    zero = render_tables(analysis, tmp_path / "zero", chat=str(chats["short"]), chat_weight=0.0)
    fused = render_tables(analysis, tmp_path / "fused", chat=str(chats["short"]))
    assert zero == alone
    assert fused["scores.csv"] != alone["scores.csv"]  # the comparison can fail


def test_the_command_line_fuses_explains_and_falls_back(setup, tmp_path, learned_checkpoint,
                                                        tiny_separator):  # fmt: skip
    folder, vod, analysis, chats = setup
    repo, name = tiny_separator
    models = ["--weights", str(learned_checkpoint), "--separator", name,
              "--separator-repo", str(repo), "--no-clips", "-q"]  # fmt: skip

    def run(out, *extra):
        return subprocess.run(
            [sys.executable, "-m", "highlightsense", "detect", str(vod), "-o", str(out),
             "--percentile", "90", "--top-n", "3", *models, *extra],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip

    out = tmp_path / "fused"
    proc = run(out, "--chat", str(chats["short"]), "--chat-words", "no way")
    assert proc.returncode == 2, proc.stderr  # argparse's usage, then the sentence
    assert proc.stderr.splitlines()[-1].endswith("Give chat words without spaces, at most 50 of "
                                                 "at most 40 characters each, separated by commas "
                                                 "(e.g. KEKW,Pog,monkaS).")  # fmt: skip
    proc = run(out, "--chat", str(chats["short"]), "--chat-words", "monkaS")
    assert proc.returncode == 0, proc.stderr
    assert f"Fused with the chat at weight {chat.CHAT_WEIGHT:g}." in proc.stdout
    with open(out / "scores.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == ["window_index", "start_sec", "end_sec", "confidence", "chat", "fused"]
    assert len(rows) == len(analysis.windows)
    w = chat.CHAT_WEIGHT
    for row in rows:
        expected = (1 - w) * float(row["confidence"]) + w * float(row["chat"])
        assert float(row["fused"]) == pytest.approx(expected, abs=2e-6)
    summary = json.loads((out / "highlights.json").read_text())
    assert summary["chat"]["file"] == chats["short"].name and summary["chat"]["weight"] == w
    assert summary["chat"]["messages"] == len(chat_rows(SHORT[0]))
    assert summary["chat"]["words"] == ["monkaS"] and "chat" not in summary["settings"]
    lifted = [h for h in summary["highlights"] if covers((h["start_sec"], h["end_sec"]), SHORT)]
    assert len(lifted) == 1
    (h,) = lifted
    parts = h["signals"]
    assert parts["chat"]["score"] > 0.9
    assert parts["chat"]["contribution"] == pytest.approx(w * parts["chat"]["score"], abs=2e-6)
    assert parts["audio"]["contribution"] + parts["chat"]["contribution"] == pytest.approx(
        h["confidence"], abs=2e-6
    )
    assert f"chatters, KEKW ×{BURST_MESSAGES}." in h["why"]
    assert "Chat burst: " in h["why"]
    html = (out / "scores.html").read_text()
    assert '"name":"chat"' in html and '"name":"fused score"' in html

    # a chat file that cannot be used: stops (one line, exit 2, nothing written) …
    broken = folder / "broken.json"
    broken.write_text('{"comments": [{"content_offset_seconds": "soon"}]}')
    proc = run(tmp_path / "stopped", "--chat", str(broken))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: Message 1 of the chat file broken.json")
    assert proc.stderr.count("\n") == 1 and not (tmp_path / "stopped").exists()
    # … or, when asked, the run goes on with the audio alone and says so
    proc = run(tmp_path / "audio", "--chat", str(broken), "--chat-on-error", "audio")
    assert proc.returncode == 0, proc.stderr
    assert "The highlights are from the audio alone." in proc.stderr
    proc_alone = run(tmp_path / "alone")
    assert proc_alone.returncode == 0, proc_alone.stderr
    for table in ("scores.csv", "highlights.csv"):
        assert (tmp_path / "audio" / table).read_bytes() == (
            tmp_path / "alone" / table
        ).read_bytes()
    assert json.loads((tmp_path / "audio" / "highlights.json").read_text())["notes"]


def test_the_apps_weight_retune_reselects_from_the_kept_chat(setup, tmp_path):
    """The app reads the chat once per analysis (``library.read_chat``) and a new weight only
    re-selects: weight 0 gives the audio-only picks, the default lifts the short shout."""
    from highlightsense.web import controls, library
    from highlightsense.web.jobs import Job

    _, _, analysis, chats = setup
    job = Job(id="0" * 32, folder=tmp_path / "job", owner="test")
    job.folder.mkdir()
    job.analysis, job.name = analysis, "chat vod.mp4"
    library.read_chat(job, chats["short"])
    by_weight = {}
    for weight in (0.0, chat.CHAT_WEIGHT):
        picks = controls.picks(top_n=3, percentile=50.0, gap=10.0, cut="fast", chat_weight=weight)
        library.render(job, picks, preview=True)
        by_weight[weight] = [window_of(analysis, h) for h in job.result.highlights]
        assert len(job.result.signals) == (1 if weight else 0)
    alone, _, _ = pipeline.choose(analysis, Selection(percentile=50.0, top_n=3))
    assert len(alone) == 3 and by_weight[0.0] == [window_of(analysis, h) for h in alone]
    assert any(covers(span, SHORT) for span in by_weight[chat.CHAT_WEIGHT])
    assert not any(covers(span, SHORT) for span in by_weight[0.0])
