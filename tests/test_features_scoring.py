"""Features against librosa, batched scoring against one window at a time, selection invariants."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from model_fixtures import random_crnn

from highlightsense import features, scoring, selection
from highlightsense.errors import SettingsError
from highlightsense.model import ModelConfig, pad_with_minimum


def librosa_log_mel(wave: np.ndarray) -> np.ndarray:
    """SPEC §2 training recipe, the reference."""
    mel = librosa.feature.melspectrogram(y=wave, sr=22050, n_fft=1024, hop_length=512, n_mels=80)
    return np.log(mel + 1e-9)


@pytest.mark.filterwarnings("ignore:n_fft=1024 is too large")
@pytest.mark.parametrize("n", [100, 512, 513, 22050 * 3 + 17])
def test_log_mel_equals_librosa(n):
    rng = np.random.default_rng(n)
    t = np.arange(n) / 22050
    wave = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)
    expected = librosa_log_mel(wave)
    got = features.log_mel_spectrogram(wave).numpy()
    assert got.shape == expected.shape == (80, 1 + n // 512)
    above = expected > np.log(1e-6)  # "above the floor"
    assert np.abs(got - expected)[above].max() <= 1e-3


def test_streaming_features_equal_whole_file_features():
    rng = np.random.default_rng(1)
    stereo = (0.1 * rng.standard_normal((2, 44100 * 7 + 333))).astype(np.float32)
    mono_22k = librosa.resample(stereo.mean(0), orig_sr=44100, target_sr=22050)
    expected = librosa_log_mel(mono_22k)
    stream = features.LogMelStream(44100)
    pieces, offset = [], 0
    for size in (5, 1000, 44100, 99_999, 10**7):  # odd sizes: seams must not matter
        pieces.append(stream.push(stereo[:, offset : offset + size]))
        offset += size
    pieces.append(stream.finish())
    got = torch.cat(pieces, dim=1).numpy()
    assert got.shape == expected.shape
    assert np.abs(got - expected)[expected > np.log(1e-6)].max() <= 1e-3


def test_stems_to_features_stacks_voice_then_game():
    rng = np.random.default_rng(2)
    voice = (0.5 * rng.standard_normal((2, 44100 * 3))).astype(np.float32)
    game = np.zeros_like(voice)
    spec = torch.cat(list(features.stems_to_features([(voice, game)], 44100)), dim=2)
    assert spec.shape == (2, 80, 1 + 66150 // 512)
    assert spec[0].mean() > -10 and torch.all(spec[1] == np.log(1e-9).astype(np.float32))


def test_window_layout_matches_the_published_arithmetic():
    assert scoring.window_frames(30) == 1292 and scoring.stride_frames(5) == 215
    n_frames = int(7530 * 22050 / 512)  # a 2 h 05 min 30 s VOD
    published = (n_frames - 1292) // 215 + 1
    assert published == 1503  # the published dry run's window count (SPEC §5)
    starts = scoring.window_starts(n_frames, 1292, 215)
    assert len(starts) == 1504 and starts[-1] == n_frames - 1292  # plus the scored tail


@given(st.integers(1, 20_000), st.integers(2, 2585), st.integers(1, 500))
def test_window_starts_cover_the_whole_input(n_frames, window, stride):
    starts = scoring.window_starts(n_frames, window, stride)
    assert starts[0] == 0 and np.all(np.diff(starts) > 0)
    assert starts[-1] + min(window, n_frames) == n_frames  # the tail is scored
    assert np.all(starts + min(window, n_frames) <= n_frames)


@pytest.fixture(scope="module")
def model():
    return random_crnn(3)


@torch.no_grad()
@pytest.mark.parametrize("n_frames", [300, 1292, 1292 + 215 * 4 + 50])
def test_batched_scoring_equals_one_window_at_a_time(model, n_frames):
    spec = torch.randn(2, 80, n_frames) * 3 - 8
    table = scoring.score_windows(model, spec, batch_size=4)
    starts = scoring.window_starts(n_frames, 1292, 215)
    expected = []
    for start in starts:  # SPEC §4: pad each window to 2584 with its own minimum
        window = spec[:, :, start : start + 1292]
        padded, mask = pad_with_minimum(window, ModelConfig.max_frames)
        assert padded[:, :, window.shape[-1] :].eq(window.min()).all()
        expected.append(torch.sigmoid(model(padded[None], mask[None])[0]).item())
    assert table.shape == (len(starts), 3)
    np.testing.assert_allclose(table[:, 2], expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(table[:, 0], starts * 512 / 22050)
    parallel = scoring.score(model, spec, batch_size=1, workers=2).windows
    np.testing.assert_allclose(parallel[:, 2], expected, atol=1e-5, rtol=0)


def test_window_longer_than_training_is_refused(model):
    with pytest.raises(SettingsError, match="60"):
        scoring.score_windows(model, torch.zeros(2, 80, 5000), window_sec=61)


def test_published_selection_example():
    windows = np.array(
        [[0, 30, 0.2], [5, 35, 0.95], [10, 40, 0.9], [40, 70, 0.91], [47, 77, 0.5], [80, 110, 0.99]]
    )
    chosen = selection.select(windows, threshold=0.9, nms_sec=10, top_n=20)
    assert chosen.indices == (5, 1, 3)  # window 2 overlaps window 1
    assert selection.select(windows, threshold=0.9, top_n=2).indices == (5, 1)
    by_percentile = selection.select(windows, percentile=50)
    assert by_percentile.threshold == pytest.approx(np.percentile(windows[:, 2], 50))
    spans = selection.clip_spans(windows, chosen, pad_before=2, pad_after=3, duration=112)
    assert spans == [(78, 112), (3, 38), (38, 73)]


windows_strategy = st.lists(
    st.tuples(st.floats(0, 5000), st.floats(1, 60), st.floats(0, 1)), min_size=1, max_size=60
).map(lambda rows: np.array([[s, s + d, p] for s, d, p in rows]))


@settings(max_examples=200, deadline=None)
@given(windows_strategy, st.floats(0, 100), st.floats(0, 30), st.integers(1, 30))
def test_selection_invariants(windows, percentile, nms_sec, top_n):
    chosen = selection.select(windows, percentile=percentile, nms_sec=nms_sec, top_n=top_n)
    picked = windows[list(chosen.indices)]
    assert len(chosen.indices) <= top_n and len(set(chosen.indices)) == len(chosen.indices)
    assert np.all(picked[:, 2] >= chosen.threshold)  # nothing below the threshold
    assert np.all(np.diff(picked[:, 2]) <= 0)  # ranked best first
    for i in range(len(picked)):
        for j in range(i):
            a, b = picked[i], picked[j]
            assert not (a[0] < b[1] and a[1] > b[0])  # no overlaps
            assert abs(a[0] - b[0]) >= nms_sec
    if len(windows):
        best = int(np.argmax(windows[:, 2]))
        assert windows[chosen.indices[0], 2] == windows[best, 2]  # the best window always wins


@pytest.mark.parametrize(
    "kwargs",
    [{"threshold": 1.5}, {"percentile": 101}, {"nms_sec": -1}, {"top_n": 0}],
)
def test_selection_settings_are_checked(kwargs):
    with pytest.raises(SettingsError):
        selection.select(np.array([[0, 30, 0.5]]), **kwargs)
