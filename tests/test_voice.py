"""The voice kept during analysis for captions: what it holds (the full-VOD separation's voice,
resampled without seams), where it lives (memory or the app job's folder), its limit, and that
it changes neither the scores nor the cache, while captions without it still separate again."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest
import soxr
import torch
from conftest import make_media

from highlightsense import extract, media, pipeline, transcripts, voice
from highlightsense.engine import Engine
from highlightsense.runtime import torch_threads
from highlightsense.settings import AnalysisSettings, Selection

RATE = transcripts.SAMPLE_RATE
SPAN = (7.3, 19.05)  # s: edges on no chunk, segment or sample grid
QUANTUM = 0.5 / voice.FULL_SCALE  # the most rounding to int16 moves a sample below full scale
# soxr's streaming and one-shot resamplers run the same filter, but add its products in another
# order in float32: each output sample is a sum of a few hundred products, each rounded by at most
# 2^-24 of the running sum, so about 1e-5 of the signal's peak at worst (measured with soxr 1.1:
# none, the stream is bit-identical to the one-shot; the whole difference was half an int16 step).
ROUNDING = 1e-5


@pytest.fixture(scope="module")
def settings(tiny_separator, checkpoint) -> AnalysisSettings:
    repo, name = tiny_separator
    return AnalysisSettings(weights=str(checkpoint), separator=name, separator_repo=str(repo),
                            window_sec=10, precision="fp32", use_cache=False)  # fmt: skip


@pytest.fixture(scope="module")
def vod(tmp_path_factory):
    return make_media(tmp_path_factory.mktemp("voice") / "vod.mp4", 40, loud_spans=((5, 25),))


@pytest.fixture(scope="module")
def kept(vod, settings):
    return Engine.create(settings).analyze(vod, keep_voice=True)


@pytest.fixture(scope="module")
def reference(vod, settings) -> np.ndarray:
    """The full-VOD separation's voice, mono, resampled to 16 kHz in one piece: (n,) float32."""
    engine = Engine.create(settings)
    info = media.probe(vod)
    mix = extract.measure_mix(info, engine.separator.samplerate)
    with torch_threads(engine.plan.threads):  # as the analysis separates
        pairs = list(extract.separated(info, engine.separator, mix, engine.plan, "fp32"))
    whole = torch.cat([v for v, _ in pairs], dim=1).numpy().mean(axis=0)
    return soxr.resample(whole, mix.rate, RATE, quality="HQ").astype(np.float32)


def test_the_kept_voice_is_the_full_separation_resampled_within_int16_rounding(kept, reference):
    """Stream against one piece, and the span captions take against the same span of it: they
    differ by int16 rounding (half a step) plus float rounding in the resampling filter."""
    assert kept.voice.dtype == np.int16 and kept.voice.ndim == 1
    assert abs(len(kept.voice) - len(reference)) <= 1  # soxr may round the total either way
    n = min(len(kept.voice), len(reference))
    peak = float(np.abs(reference).max())
    assert 0.005 < peak < 1 - 2 * QUANTUM  # hundreds of int16 steps, and no clipping to excuse
    bound = QUANTUM + ROUNDING * peak
    assert np.abs(kept.voice[:n] / voice.FULL_SCALE - reference[:n]).max() <= bound
    heard = voice.voice_of(kept, SPAN)
    first, last = round(SPAN[0] * RATE), round(SPAN[1] * RATE)
    assert heard.dtype == np.float32 and len(heard) == last - first
    assert np.abs(heard - reference[first:last]).max() <= bound


def test_zerogpu_slices_keep_the_one_pass_voice(vod, settings, kept):
    """ZeroGPU's sliced separation: each call returns its slice's voice with its features
    (through pickle, as there), and the slices joined are the one-pass voice. The slices'
    Demucs runs see the same segments, so the voices differ by float rounding (the ROUNDING
    bound, about 1e-5 of a peak below 1), less than one int16 step (3.1e-5): rounded to int16
    they are equal or one step apart."""
    calls = []

    def gpu(seconds, fn, *args):
        calls.append(fn.__name__)
        fn, args = pickle.loads(pickle.dumps((fn, args)))
        return pickle.loads(pickle.dumps(fn(*args)))

    sliced = Engine.create(settings).analyze(vod, gpu=gpu, slice_sec=13.0, keep_voice=True)
    assert calls == ["features_range"] * 4 + ["score"]  # 40 s in slices of 13 s
    assert sliced.voice is not None and abs(len(sliced.voice) - len(kept.voice)) <= 1
    n = min(len(sliced.voice), len(kept.voice))
    assert np.abs(sliced.voice[:n].astype(np.int32) - kept.voice[:n]).max() <= 1
    assert np.abs(kept.voice).max() > 100  # a voice to compare, not silence


def test_keeping_is_chunk_blind():
    """The same signal in chunks of any size is kept the same as in one (no seams)."""
    rng = np.random.default_rng(3)
    sound = (0.3 * rng.standard_normal((2, 44100 * 3))).astype(np.float32)
    whole = voice.VoiceKeeper()
    whole.open(44100, sound.shape[1])
    whole.write((sound, sound))
    pieces = voice.VoiceKeeper()
    pieces.open(44100, sound.shape[1])
    edges = [0, 1, 999, 44100, 50000, 101234, sound.shape[1]]
    for a, b in zip(edges, edges[1:], strict=False):
        pieces.write((sound[:, a:b], sound[:, a:b]))
    one, many = whole.kept(), pieces.kept()
    assert len(one) == len(many) == 3 * RATE
    # at most one int16 step apart: float rounding may tip a sample across a rounding boundary
    assert np.abs(one.astype(np.int32) - many).max() <= 1


def test_kept_voice_is_sliced_not_separated_again(kept, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("decoded the span again")

    monkeypatch.setattr(voice, "decode_span", refuse)
    heard = voice.voice_of(kept, (38.0, 45.0))  # past the end: clamped to the recording
    end = min(len(kept.voice), round(kept.duration * RATE))
    assert len(heard) == end - 38 * RATE
    np.testing.assert_array_equal(heard * voice.FULL_SCALE, kept.voice[38 * RATE : end])


def test_the_app_keeps_it_in_a_file_equal_to_the_one_in_memory(vod, settings, kept, tmp_path):
    analysis = Engine.create(settings).analyze(vod, keep_voice=True, voice_dir=tmp_path)
    assert isinstance(analysis.voice, np.memmap)
    assert (tmp_path / voice.KEPT_FILE).stat().st_size >= 2 * len(analysis.voice)
    np.testing.assert_array_equal(analysis.voice, kept.voice)
    np.testing.assert_array_equal(analysis.windows, kept.windows)


def test_app_jobs_keep_the_voice_in_their_folder(vod, settings, monkeypatch, tmp_path):
    from highlightsense.web import library
    from highlightsense.web.jobs import Job

    monkeypatch.setenv("HIGHLIGHTSENSE_WEIGHTS", settings.weights)
    monkeypatch.setenv("HIGHLIGHTSENSE_SEPARATOR", settings.separator)
    monkeypatch.setenv("HIGHLIGHTSENSE_SEPARATOR_REPO", settings.separator_repo)
    job = Job("0" * 32, tmp_path / "job", "visitor")
    job.folder.mkdir()
    analysis = library.analyze(job, str(vod), False, 10.0, "cpu", job.progress(600), None, 60)
    assert isinstance(analysis.voice, np.memmap)
    assert (job.folder / voice.KEPT_FILE).exists()


def test_beyond_the_limit_nothing_is_kept_and_captions_separate_again(
    vod, settings, kept, monkeypatch
):
    monkeypatch.setattr(voice, "MAX_KEPT_IN_MEMORY", 30.0)  # s, shorter than the 40 s VOD
    with pytest.warns(UserWarning, match="not kept"):
        analysis = Engine.create(settings).analyze(vod, keep_voice=True)
    assert analysis.voice is None
    np.testing.assert_array_equal(analysis.windows, kept.windows)
    heard = voice.voice_of(analysis, SPAN)  # separated again: another segment split, so only
    assert len(heard) == pytest.approx((SPAN[1] - SPAN[0]) * RATE, abs=2)  # its length is known
    assert np.isfinite(heard).all() and np.abs(heard).max() > 0.01


def test_keeping_changes_neither_the_scores_nor_the_cache(vod, settings, kept, tmp_path,
                                                          monkeypatch):  # fmt: skip
    monkeypatch.setenv("HIGHLIGHTSENSE_CACHE", str(tmp_path / "cache"))
    cached = dataclasses.replace(settings, use_cache=True)
    first = Engine.create(cached).analyze(vod, keep_voice=True)
    assert not first.features_from_cache and first.voice is not None
    again = Engine.create(cached).analyze(vod)  # no keeping: the same cache entry
    assert again.features_from_cache
    np.testing.assert_array_equal(again.windows, first.windows)
    np.testing.assert_array_equal(first.windows, kept.windows)
    from_cache = Engine.create(cached).analyze(vod, keep_voice=True)
    assert from_cache.features_from_cache and from_cache.voice is None  # nothing separated
    heard = voice.voice_of(from_cache, SPAN)  # so captions separate the span again
    assert len(heard) == pytest.approx((SPAN[1] - SPAN[0]) * RATE, abs=2)


def test_with_tracks_nothing_is_kept_and_the_track_is_decoded(tmp_path, checkpoint):
    from test_captions import obs_recording

    path = obs_recording(tmp_path / "obs.mkv")
    engine = Engine.create(AnalysisSettings(weights=str(checkpoint), tracks=(1, 2),
                                            use_cache=False))  # fmt: skip
    analysis = engine.analyze(path, keep_voice=True)
    assert analysis.voice is None
    sound = voice.voice_of(analysis, (5.0, 7.5))
    spectrum = np.abs(np.fft.rfft(sound))
    assert np.argmax(spectrum) * RATE / len(sound) == pytest.approx(300, abs=2)


def test_a_captioned_run_keeps_the_voice_and_never_separates_a_span_again(
    settings, scripted_whisper, monkeypatch, tmp_path
):
    monkeypatch.setenv(transcripts.WHISPER_ENV, str(scripted_whisper))
    # loud throughout: whichever windows the random model picks hold a voice to transcribe
    vod = make_media(tmp_path / "loud.mp4", 30, loud_spans=((0, 30),))

    def refuse(*args, **kwargs):
        raise AssertionError("decoded a span to separate it again")

    monkeypatch.setattr(voice, "decode_span", refuse)
    chosen = Selection(percentile=0, top_n=2, clips=False, captions="files")
    result = pipeline.detect(vod, settings, chosen, out_dir=tmp_path / "out")
    assert result.analysis.voice is not None
    assert [t.text for t in result.transcripts] == ["gg wp"] * 2
    assert len(result.subtitle_paths) == 4  # .srt and .vtt per clip
