"""The pipeline in-process: the engine, slices for GPU calls equal the one-pass features,
progress and cancel, and what the restructuring fixed."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_media
from demucs.states import save_with_checksum
from demucs_fixtures import SOURCES, demucs_package

from highlightsense import extract, media, openvino_separator, outputs, pipeline, scoring, slices
from highlightsense.engine import Engine
from highlightsense.engine import ReadAhead as engine_read_ahead
from highlightsense.errors import Cancelled
from highlightsense.results import Analysis
from highlightsense.settings import AnalysisSettings, Selection


@pytest.fixture(scope="module")
def settings(tiny_separator, checkpoint):
    repo, name = tiny_separator
    return AnalysisSettings(
        weights=str(checkpoint), separator=name, separator_repo=str(repo), use_cache=False
    )


@pytest.fixture(scope="module")
def vod(tmp_path_factory):
    return make_media(tmp_path_factory.mktemp("p") / "vod.mp4", 70, loud_spans=((30, 40),))


def test_plan_slices_cover_every_frame_once():
    assert slices.plan_slices(10, 4) == [(0, 4), (4, 8), (8, None)]
    assert slices.plan_slices(3, 100) == [(0, None)]


def test_slices_concatenate_to_the_whole_track_features(vod, settings):
    info = media.probe(vod)
    engine = Engine.create(settings)
    whole = engine.features(info)
    mix = extract.measure_mix(info, engine.separator.samplerate)
    assert mix.frames == whole.shape[2]
    # slice edges placed off the Demucs and frame grids on purpose
    edges = [0, 1111, 2300, None]
    parts = [
        engine.features_range(info, mix, (a, b)) for a, b in zip(edges, edges[1:], strict=False)
    ]
    sliced = np.concatenate(parts, axis=2)
    assert sliced.shape == whole.shape
    above = whole > np.log(1e-6)  # ignore the log floor, where tiny differences blow up
    assert np.abs(sliced - whole)[above].max() < 1e-3


def test_engine_pickles_small_and_gpu_runner_path_gives_the_same_scores(vod, settings):
    """The ZeroGPU path: every call's arguments and result go through pickle, as they do there,
    and each call says how many seconds of VOD it covers (what its time limit is sized from)."""
    engine = Engine.create(settings)
    assert len(pickle.dumps(engine)) < 2000  # names, paths and the plan: no model inside
    calls = []

    def gpu(seconds, fn, *args):
        calls.append((fn.__name__, round(seconds)))
        fn, args = pickle.loads(pickle.dumps((fn, args)))
        return pickle.loads(pickle.dumps(fn(*args)))

    # GPU calls separate with torch on a CPU (they may run in a forked process, where OpenVINO
    # cannot): the one-pass run to compare with is torch's too
    plain = Engine.create(dataclasses.replace(settings, separator_runtime="torch")).analyze(vod)
    sliced = engine.analyze(vod, gpu=gpu, slice_sec=30.0)
    assert calls == [("features_range", 30), ("features_range", 30), ("features_range", 10),
                     ("score", 70)]  # fmt: skip
    assert sliced.settings.separator_runtime == "torch" and sliced.producer == plain.producer
    np.testing.assert_allclose(sliced.windows, plain.windows, atol=1e-4)


def test_progress_is_monotonic_and_raising_in_it_cancels(vod, settings, tmp_path):
    seen = []

    def progress(fraction, message):
        seen.append(fraction)

    models = {k: getattr(settings, k) for k in ("weights", "separator", "separator_repo")}
    pipeline.analyze(vod, out_dir=tmp_path / "ok", progress=progress, clips=False, **models)
    assert seen[-1] == pytest.approx(1.0) and all(
        b >= a - 1e-9 for a, b in zip(seen, seen[1:], strict=False)
    )

    def cancel(fraction, message):
        if fraction > 0.3:
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        pipeline.analyze(
            vod, out_dir=tmp_path / "cancelled", progress=cancel, use_cache=False, **models
        )
    assert not (tmp_path / "cancelled").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ok"]  # no staging folder left behind


def test_unknown_settings_are_refused():
    from highlightsense.errors import SettingsError

    with pytest.raises(SettingsError, match="slice_sec"):
        pipeline.analyze("vod.mp4", slice_sec=60)


# --- bugs fixed by the restructuring ----------------------------------------------------------


def _fake_analysis(tmp_path: Path, count: int) -> Analysis:
    """An analysis of ``count`` scored, non-overlapping windows of a (never read) video."""
    info = media.MediaInfo(tmp_path / "vod.mp4", "mov", count * 10.0, 1, [], has_video=True)
    starts = np.arange(count) * 10.0
    windows = np.stack([starts, starts + 5, np.linspace(0.9, 0.1, count)], axis=1)
    return Analysis(
        source=info.path, info=info, windows=windows, attention=np.zeros((count, 4)),
        loudness=np.zeros((2, 8)), model_identity="m", producer="p",
        settings=AnalysisSettings(), step_frames=16, seconds={"probe": 0.5},
    )  # fmt: skip


def test_render_names_more_than_99_clips_so_they_sort(tmp_path):
    """render named clips highlight_{rank:02d}: highlight_100 sorted before highlight_11."""
    analysis = _fake_analysis(tmp_path, 120)
    chosen = Selection(percentile=0, nms_sec=0, top_n=120)
    store = tmp_path / "store"
    store.mkdir()
    highlights, _, _ = pipeline.choose(analysis, chosen)
    for h in highlights:  # already cut: render only links them
        (store / outputs._store_name(h, False, ".mp4")).write_bytes(b"%d" % h.rank)
    result = pipeline.render(analysis, chosen, tmp_path / "out", store=store)
    names = [p.name for p in result.clip_paths]
    assert names[0] == "highlight_001.mp4" and names[-1] == "highlight_120.mp4"
    assert sorted(names) == names
    assert (tmp_path / "out" / "clips" / "highlight_100.mp4").read_bytes() == b"100"


def test_rendering_time_reaches_highlights_json(tmp_path):
    """seconds["clips+tables"] used to be set after highlights.json was written."""
    analysis = _fake_analysis(tmp_path, 5)
    pipeline.render(analysis, Selection(clips=False), tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "highlights.json").read_text())
    assert set(summary["seconds"]) == {"probe", "clips"}
    assert summary["settings"]["top_n"] == Selection.top_n
    assert summary["settings"]["window_sec"] == AnalysisSettings.window_sec


def test_score_windows_accepts_numpy_and_torch():
    from model_fixtures import random_crnn

    model = random_crnn()
    spec = np.random.default_rng(0).normal(-5, 2, (2, 80, 1500)).astype(np.float32)
    from_numpy = scoring.score_windows(model, spec)
    from_torch = scoring.score_windows(model, torch.from_numpy(spec))
    np.testing.assert_array_equal(from_numpy, from_torch)
    assert from_numpy.shape == (2, 3)


def test_the_read_ahead_gives_the_same_mix_and_stops_when_not_wanted(
    vod, settings, monkeypatch, tmp_path
):
    """The first pass over the audio runs while the models load: the same Mix as reading it
    then; the waiting caller sees its progress and can cancel it; a run whose features come
    from the cache stops it, with no thread or decoder left."""
    engine = Engine.create(settings)
    info = media.probe(vod)
    separator = engine.separator
    expected = extract.measure_mix(info, separator.samplerate)
    assert engine_read_ahead(info, separator).result() == expected

    # a slow read: the caller's progress hears of it while waiting, and its raise stops it
    chunks_read = []

    def slow(info, rate, progress):
        for chunk in range(100):
            chunks_read.append(chunk)
            progress(chunk / 100, "Reading the audio")
            time.sleep(0.05)
        return expected

    monkeypatch.setattr(extract, "measure_mix", slow)
    ahead = engine_read_ahead(info, separator)
    heard = []

    def cancel(fraction, message):
        heard.append(fraction)
        if fraction > 0.1:
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        ahead.result(cancel)
    ahead.stop()
    assert heard and len(chunks_read) < 100  # cancelled part way, not at the end
    monkeypatch.undo()

    # features from the cache: the (slow) read started beside the loads is stopped part way,
    # and no thread or decoder is left
    cached = dataclasses.replace(settings, use_cache=True)
    monkeypatch.setenv("HIGHLIGHTSENSE_CACHE", str(tmp_path / "cache"))  # other tests cache vod
    first = Engine.create(cached).analyze(vod)
    started = []
    original = engine_read_ahead.__init__

    def counting(self, *args):
        original(self, *args)
        started.append(self)

    monkeypatch.setattr(engine_read_ahead, "__init__", counting)
    monkeypatch.setattr(extract, "measure_mix", slow)
    chunks_read.clear()
    second = Engine.create(cached).analyze(vod)
    assert not first.features_from_cache and second.features_from_cache
    assert len(started) == 1 and not started[0]._thread.is_alive()
    assert 0 < len(chunks_read) < 100
    assert not [t for t in threading.enumerate() if t.name == "read-ahead"]
    ffmpeg_children = subprocess.run(
        ["pgrep", "-P", str(os.getpid()), "ffmpeg"], capture_output=True, text=True
    ).stdout.split()
    assert ffmpeg_children == []
    np.testing.assert_array_equal(first.windows, second.windows)


def test_the_mix_is_decoded_at_the_separators_own_rate(tmp_path, checkpoint):
    """A 48 kHz Demucs model got 44.1 kHz audio: the decoding rate was a constant."""
    from demucs.htdemucs import HTDemucs

    torch.manual_seed(0)
    model = HTDemucs(sources=SOURCES, channels=4, depth=3, nfft=512, dconv_comp=2, t_layers=1,
                     t_heads=2, segment=1.2, samplerate=48000).eval()  # fmt: skip
    repo = tmp_path / "demucs48"
    repo.mkdir()
    save_with_checksum(demucs_package(model), repo / "48k00001.th")
    (repo / "k48.yaml").write_text("models: ['48k00001']\n")
    vod = make_media(tmp_path / "vod.mp4", 20, video=False)
    settings = AnalysisSettings(weights=str(checkpoint), separator="k48", separator_repo=str(repo),
                                use_cache=False)  # fmt: skip
    engine = Engine.create(settings)
    info = media.probe(vod)
    spec = engine.features(info, stems_dir=tmp_path / "stems")
    with wave.open(str(tmp_path / "stems" / "vocals.wav")) as stem:
        assert stem.getframerate() == 48000
        stem_frames = stem.getnframes()
    assert stem_frames == pytest.approx(20 * 48000, abs=2048)  # AAC priming/padding aside
    assert abs(spec.shape[-1] - extract.frames_for(stem_frames, 48000)) <= 1


def test_loading_the_model_imports_no_heavy_library(checkpoint):
    code = (
        "import sys, highlightsense\n"
        f"highlightsense.load_model({str(checkpoint)!r})\n"
        "print(sorted(m for m in ('yt_dlp', 'demucs', 'gradio', 'plotly', 'librosa')"
        " if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_scoring_pads_to_the_models_own_training_length():
    """Scoring padded every window to 2584 frames whatever the model was trained on, while
    evaluate padded to the model's max_frames: block 0 instance-normalises over the padded map,
    so a model trained with another length scored differently in detect than in evaluate."""
    from highlightsense.model import CRNN, ModelConfig, pad_with_minimum

    torch.manual_seed(3)
    model = CRNN(ModelConfig(channels=(4, 8, 8, 8), rnn_hidden=8, max_frames=1024)).eval()
    spec = torch.randn(2, 80, 2000, generator=torch.Generator().manual_seed(4))
    scored = scoring.score(model, spec, window_sec=20, stride_sec=10, batch_size=3).windows
    first = spec[:, :, : scoring.window_frames(20)]
    with torch.inference_mode():
        padded, mask = pad_with_minimum(first[None], model.config.max_frames)
        expected = torch.sigmoid(model(padded, mask)[0]).item()
    assert scored[0, 2] == pytest.approx(expected, abs=1e-5)


# bf16's effect on the scores, bounded from the rounding of the stems:
# 1. The stems. bf16 keeps 8 significant bits (unit roundoff u = 2^-9); tests/test_stems.py
#    asserts the bf16 stems' error is below 4u rms against the stem's rms (measured 0.7-1.4u,
#    so a 3x margin for other CPUs' kernels). Model that error as white noise of that rms.
# 2. The features. The error is relative to the stem's level, not to each value, so in the
#    nearly empty mel cells (most of a log-mel: silence is log(1e-9)) a log-mel value moves by
#    far more than u: up to 0.48 on the planted VOD, median 0.012 ≈ 6u. Block 0's instance norm
#    averages over those cells, so every logit feels them.
# 3. The logits. No closed form: measured on this fixture model by scoring the fp32 stems plus
#    BF16_NOISE_DRAWS seeded draws of that noise, all in fp32 (the same on every CPU): a window's
#    logit moves by up to 2.2-3.7 (the largest over 12 draws; 6 seeds). White noise moves the
#    logits less than bf16's own error of the same rms (here: bf16 at 1.0-1.35u moved one by
#    1.8, white noise at 1u by at most 1.7 in 8 draws), so the bound is BF16_NOISE_MARGIN times
#    the largest change over the draws.
# 4. The probabilities. |Δp| ≤ |Δz| · max σ' over [z - |Δz|, z + |Δz|] (σ' ≤ 1/4): saturated
#    windows (z ≈ ±8) may move by < 0.08, a window near the threshold by much more. So the test
#    asserts the logits within the bound, and the picks identical: what a user sees.
# (A fixed 0.02 on probabilities held on the CPU that chose it, failed on an AMD EPYC at 0.0205,
# and failed on an Intel CPU with AMX at 0.18.)
BF16_STEM_NOISE = 4 * 2.0**-9  # rms of the simulated stem error, against the stem's rms
BF16_NOISE_DRAWS = 12  # seeded draws of that noise
BF16_NOISE_MARGIN = 2.0  # bf16's structured error against white noise of the same rms
PROBABILITY_CLIP = 1e-6  # float32's sigmoid saturates near z = ±16; ours stay within ±9


def logits(windows: np.ndarray) -> np.ndarray:
    """(N, 3) windows → (N,) logits of their probabilities."""
    p = np.clip(windows[:, 2], PROBABILITY_CLIP, 1 - PROBABILITY_CLIP)
    return np.log(p / (1 - p))


def rms(stem: torch.Tensor) -> torch.Tensor:
    return stem.square().mean().sqrt()


@pytest.fixture(scope="module")
def fp32_planted(learned_checkpoint, tiny_separator, planted_vod):
    """The planted VOD's fp32 windows, and the largest change in their logits that bf16's
    rounding of the stems explains (the derivation above): (models, windows, bound)."""
    repo, name = tiny_separator
    models = {"weights": str(learned_checkpoint), "separator": name, "separator_repo": str(repo)}
    engine = Engine.create(AnalysisSettings(**models, precision="fp32", device="cpu"))
    # Engine.features' steps by hand, keeping the stems for the noise
    info = media.probe(planted_vod.path)
    mix = extract.measure_mix(info, engine.separator.samplerate)
    pairs = list(extract.separated(info, engine.separator, mix, engine.plan, "fp32"))
    stems = [torch.cat([torch.as_tensor(pair[i]) for pair in pairs], dim=-1) for i in (0, 1)]

    def scored(voice: torch.Tensor, game: torch.Tensor) -> np.ndarray:
        spec = extract.to_features([(voice, game)], mix.rate, "cpu", mix.frames)
        return engine.score(spec).windows

    windows = scored(*stems)
    generator = torch.Generator().manual_seed(0)
    moved = []
    for _ in range(BF16_NOISE_DRAWS):
        noisy = [
            stem + torch.randn(stem.shape, generator=generator) * BF16_STEM_NOISE * rms(stem)
            for stem in stems
        ]
        moved.append(np.abs(logits(scored(*noisy)) - logits(windows)).max())
    return models, windows, BF16_NOISE_MARGIN * max(moved)


@pytest.mark.parametrize(
    "runtime",
    [
        "torch",
        pytest.param(
            "openvino",
            marks=pytest.mark.skipif(
                not openvino_separator.available(), reason="OpenVINO is not installed"
            ),
        ),
    ],
)
def test_bf16_separation_keeps_the_planted_picks(fp32_planted, planted_vod, runtime):
    """``--precision auto`` picks bf16 on some CPUs, where torch's autocast or OpenVINO runs
    Demucs' network: the learned model must pick the same shouts, and every window's logit must
    stay within what bf16's rounding of the stems explains (the derivation above)."""
    models, windows, bound = fp32_planted
    settings = AnalysisSettings(
        **models, precision="bf16", separator_runtime=runtime, use_cache=False, device="cpu"
    )
    bf16 = Engine.create(settings).analyze(planted_vod.path)
    assert bf16.producer.endswith("+openvino") == (runtime == "openvino")
    fp32 = dataclasses.replace(bf16, windows=windows)  # choose() reads only the windows
    chosen = Selection(threshold=0.5)
    picks = {
        precision: [(h.start_sec, h.end_sec) for h in pipeline.choose(analysis, chosen)[0]]
        for precision, analysis in (("fp32", fp32), ("bf16", bf16))
    }
    assert len(picks["fp32"]) == 3 and picks["bf16"] == picks["fp32"]

    change = np.abs(logits(bf16.windows) - logits(fp32.windows))
    print(f"{runtime} bf16 vs fp32: max |Δ logit| {change.max():.3f}, noise bound {bound:.3f}")
    assert len(change) == len(fp32.windows) == 20 and bound > 0 and change.max() > 0
    assert change.max() <= bound
