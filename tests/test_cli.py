"""The command line end to end, as a user runs it: real subprocesses on real media."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from conftest import ffmpeg_binary, make_media

from highlightsense import cli, media, tools
from highlightsense.timecode import format_timestamp


def run_cli(
    *args: str, env: dict | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "highlightsense", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory, checkpoint, tiny_separator) -> dict:
    repo, name = tiny_separator
    return {
        "HIGHLIGHTSENSE_CACHE": str(tmp_path_factory.mktemp("cache")),
        "HIGHLIGHTSENSE_WEIGHTS": str(checkpoint),
        "HIGHLIGHTSENSE_SEPARATOR": name,
        "HIGHLIGHTSENSE_SEPARATOR_REPO": str(repo),
    }


@pytest.fixture(scope="module")
def two_minute_run(tmp_path_factory, cli_env):
    """A 2-minute VOD (with a path full of spaces and non-ASCII characters) through the CLI."""
    folder = tmp_path_factory.mktemp("run")
    vod = make_media(folder / "mon stream ä 日本.mp4", 120, loud_spans=((30, 40), (80, 90)))
    out = folder / "out"
    args = [str(vod), "-o", str(out), "--percentile", "75", "--top-n", "3", "--keep-stems"]
    proc = run_cli("detect", *args, "--pad-before", "1", "--pad-after", "0.5", env=cli_env)
    return vod, out, proc


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_end_to_end_outputs(two_minute_run):
    vod, out, proc = two_minute_run
    assert proc.returncode == 0, proc.stderr
    assert "3 highlights from" in proc.stdout
    names = {p.name for p in out.iterdir()}
    assert names == {
        ".highlightsense",  # the marker that lets a later run replace this output
        "scores.csv",
        "highlights.csv",
        "highlights.json",
        "scores.html",
        "clips",
        "stems",
    }
    assert not list(out.parent.glob(".out.partial-*"))  # staging folder renamed into place

    scores = read_csv(out / "scores.csv")
    highlights = read_csv(out / "highlights.csv")
    summary = json.loads((out / "highlights.json").read_text())
    assert len(scores) == summary["windows"] == 20  # (5168 - 1292)//215 + 1 = 19, + the tail
    confidences = np.array([float(r["confidence"]) for r in scores])
    assert summary["threshold"] == pytest.approx(np.percentile(confidences, 75), abs=1e-6)
    assert len(highlights) == len(summary["highlights"]) == 3
    assert summary["input_duration_sec"] == pytest.approx(120, abs=0.1)
    assert summary["separator"].startswith("tiny@local#") and "sha256" in summary["model"]
    assert summary["input"] == vod.name and "/" not in json.dumps(summary["settings"])
    assert "plotly" in (out / "scores.html").read_text()[:5_000_000].lower()

    by_start = {round(float(r["start_sec"]), 3): float(r["confidence"]) for r in scores}
    previous = 1.0
    for row, entry in zip(highlights, summary["highlights"], strict=True):
        assert int(row["rank"]) == entry["rank"]
        assert float(row["confidence"]) == pytest.approx(entry["confidence"])
        assert float(row["confidence"]) <= previous  # ranked best first
        previous = float(row["confidence"])
        assert float(row["confidence"]) >= summary["threshold"]
        window_start = round(float(row["start_sec"]) + 1, 3)  # 1 s of padding before
        if float(row["start_sec"]) > 0:
            assert by_start[window_start] == pytest.approx(float(row["confidence"]), abs=1e-6)
        assert row["start_ts"] == format_timestamp(float(row["start_sec"]))
        duration = float(row["end_sec"]) - float(row["start_sec"])
        assert float(row["duration_sec"]) == pytest.approx(duration, abs=1e-3)

        clip = out / row["clip_path"]
        assert clip.name == f"highlight_{int(row['rank']):02d}.mp4"
        info = media.probe(clip)
        assert info.duration == pytest.approx(duration, abs=0.1)
        assert info.has_video and info.audio_streams[0].codec == "aac"
        probe = subprocess.run(
            [tools.ffprobe_path(), "-v", "error", "-select_streams", "v:0",
             "-show_entries", "stream=codec_name,pix_fmt", "-of", "csv=p=0", str(clip)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert probe.stdout.strip() == "h264,yuv420p"
        data = clip.read_bytes()
        assert data.find(b"moov") < data.find(b"mdat")  # +faststart: plays while downloading


def test_kept_stems_cover_the_input(two_minute_run):
    _, out, _ = two_minute_run
    for name in ("vocals.wav", "game.wav"):
        with wave.open(str(out / "stems" / name)) as file:
            assert file.getnchannels() == 2 and file.getframerate() == 44100
            assert file.getnframes() / 44100 == pytest.approx(120, abs=0.1)


def test_rerun_with_other_settings_replaces_the_output(two_minute_run, cli_env):
    vod, out, _ = two_minute_run
    proc = run_cli("detect", str(vod), "-o", str(out), "--threshold", "0.0", "--top-n", "2",
                   "--no-clips", "--quiet", env=cli_env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # --quiet
    assert len(read_csv(out / "highlights.csv")) == 2
    summary = json.loads((out / "highlights.json").read_text())
    assert summary["features_from_cache"]  # no second separation
    assert not (out / "clips").exists() and not (out / "stems").exists()


def test_nothing_above_threshold_is_not_an_error(two_minute_run, cli_env, tmp_path):
    vod, _, _ = two_minute_run
    proc = run_cli(
        "detect", str(vod), "-o", str(tmp_path / "o"), "--threshold", "1.0", "-q", env=cli_env
    )
    assert proc.returncode == 0, proc.stderr
    assert "No highlights" in proc.stdout
    assert read_csv(tmp_path / "o" / "highlights.csv") == []


@pytest.mark.parametrize("separation", ["tiny demucs", "own tracks"])
def test_planted_shouts_are_the_picks_in_time_order(
    separation, cli_env, learned_checkpoint, planted_vod, planted_tracks_vod, features_cache,
    tmp_path,
):  # fmt: skip
    """With a model that has learned something, the loud moments planted in the VOD are the
    highlights: one pick per shout, in the shouts' order, and only windows with a shout pass."""
    from model_fixtures import burst_seconds

    # the run-wide features cache: this test is about the picks, not about separating
    env = {**cli_env, "HIGHLIGHTSENSE_WEIGHTS": str(learned_checkpoint),
           "HIGHLIGHTSENSE_CACHE": str(features_cache)}  # fmt: skip
    vod, extra = planted_vod, []
    if separation == "own tracks":
        vod, extra = planted_tracks_vod, ["--tracks", "voice=1,game=2"]
    out = tmp_path / "o"
    proc = run_cli("detect", str(vod.path), "-o", str(out), "--threshold", "0.5",
                   "--no-clips", "-q", *extra, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr

    for row in read_csv(out / "scores.csv"):  # every window: shout inside ⇔ above 0.5
        start, end, p = float(row["start_sec"]), float(row["end_sec"]), float(row["confidence"])
        inside = burst_seconds(start, end, vod.bursts)
        if inside >= 1.0:
            assert p > 0.5, (start, p)
        elif inside == 0.0:
            assert p < 0.5, (start, p)
    picks = sorted(
        (float(r["start_sec"]), float(r["end_sec"])) for r in read_csv(out / "highlights.csv")
    )
    assert len(picks) == len(vod.bursts)
    for (start, end), burst in zip(picks, vod.bursts, strict=True):
        assert burst_seconds(start, end, (burst,)) >= 1.0, (start, end, burst)


def test_audio_only_input_gives_audio_clips(cli_env, tmp_path):
    audio = make_media(tmp_path / "podcast.m4a", 40, video=False, loud_spans=((10, 15),))
    proc = run_cli("detect", str(audio), "-o", str(tmp_path / "o"), "--percentile", "0",
                   "--top-n", "1", "-q", env=cli_env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    clip = tmp_path / "o" / "clips" / "highlight_01.m4a"
    info = media.probe(clip)
    assert not info.has_video and info.audio_streams[0].codec == "aac"


def test_multitrack_recording_skips_separation(cli_env, tmp_path):
    """OBS-style file with voice and game on their own tracks: no Demucs involved at all."""
    path = tmp_path / "obs.mkv"
    subprocess.run(
        [ffmpeg_binary(), "-v", "error", "-y",
         "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=10:duration=40",
         "-f", "lavfi", "-i", "sine=frequency=300:duration=40:sample_rate=44100",
         "-f", "lavfi", "-i", "anoisesrc=amplitude=0.3:duration=40:sample_rate=44100",
         "-map", "0:v", "-map", "1:a", "-map", "2:a", "-c:v", "libx264", "-preset", "ultrafast",
         "-c:a", "aac", str(path)],
        check=True, timeout=60,
    )  # fmt: skip
    env = {**cli_env, "HIGHLIGHTSENSE_SEPARATOR_REPO": str(tmp_path / "no-such-repo")}
    proc = run_cli("detect", str(path), "-o", str(tmp_path / "o"), "--tracks", "voice=1,game=2",
                   "--no-clips", "-q", env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "o" / "highlights.json").read_text())
    assert summary["separator"] == "tracks:voice=1,game=2"
    bad = run_cli(
        "detect", str(path), "-o", str(tmp_path / "x"), "--tracks", "voice=1,game=5", env=env
    )
    assert bad.returncode == 2 and "audio track" in bad.stderr


def hostile_inputs(folder: Path, real: Path) -> dict[str, Path]:
    files = {
        "empty": b"",
        "random bytes": np.random.default_rng(0).bytes(50_000),
        "text renamed": b"just some notes, not a video\n" * 20,
        "truncated": real.read_bytes()[: len(real.read_bytes()) // 3],
        "hls playlist": b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nhttp://127.0.0.1:9/a.ts\n",
        "concat list": b"ffconcat version 1.0\nfile '/etc/passwd'\n",
    }
    paths = {}
    for name, data in files.items():
        paths[name] = folder / f"{name}.mp4"
        paths[name].write_bytes(data)
    silent = folder / "no audio.mp4"
    subprocess.run(
        [ffmpeg_binary(), "-v", "error", "-y", "-f", "lavfi", "-i",
         "testsrc2=size=160x90:rate=10:duration=5", "-c:v", "libx264", str(silent)],
        check=True, timeout=60,
    )  # fmt: skip
    paths["no audio"] = silent
    paths["missing"] = folder / "missing.mp4"
    paths["directory"] = folder
    return paths


def main_in_process(args: list[str], env: dict, monkeypatch, capsys) -> tuple[int, str]:
    """cli.main in this process (a subprocess per case would cost seconds of imports each)."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code = cli.main(args)
    return code, capsys.readouterr().err


def test_hostile_and_broken_inputs_exit_2_with_one_line(
    cli_env, short_vod, tmp_path, monkeypatch, capsys
):
    inputs = hostile_inputs(tmp_path, short_vod)
    for name, path in inputs.items():
        out = tmp_path / f"out-{name}"
        code, err = main_in_process(["detect", str(path), "-o", str(out), "-q"], cli_env,
                                    monkeypatch, capsys)  # fmt: skip
        assert code == 2, (name, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, err)
        assert not out.exists() and not list(tmp_path.glob(f".out-{name}.partial-*"))
    # and once as a real subprocess: no traceback, one line
    proc = run_cli("detect", str(inputs["hls playlist"]), "-q", env=cli_env, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--weights", "/nonexistent/best_model.pt"], "No weights at"),
        (["--window", "90"], "between 1 and 60"),
        (["--separator", "nope"], "nope"),
        (["https://example.com/video.mp4"], "Twitch"),
    ],
)
def test_user_mistakes_exit_2(cli_env, short_vod, tmp_path, args, fragment, monkeypatch, capsys):
    source = [] if args[0].startswith("https") else [str(short_vod)]
    argv = ["detect", *source, *args, "-o", str(tmp_path / "o"), "-q"]
    code, err = main_in_process(argv, cli_env, monkeypatch, capsys)
    assert code == 2, err
    assert fragment in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_corrupt_weights_exit_2(cli_env, short_vod, tmp_path, monkeypatch, capsys):
    bad = tmp_path / "best_model.pt"
    bad.write_bytes(b"\x80\x04garbage")
    argv = ["detect", str(short_vod), "--weights", str(bad), "-o", str(tmp_path / "o"), "-q"]
    code, err = main_in_process(argv, cli_env, monkeypatch, capsys)
    assert code == 2 and "not a loadable PyTorch checkpoint" in err


def test_export_weights(checkpoint, tmp_path):
    proc = run_cli("export-weights", str(checkpoint), str(tmp_path / "hub"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "hub" / "model.safetensors").is_file()
