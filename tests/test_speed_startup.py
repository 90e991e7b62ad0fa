"""A run's fixed cost: what analysing a local file imports, and the mel filter bank made without
librosa (importing it costs ≈ 1.3 s of CPU per process: benchmarks/README.md)."""

from __future__ import annotations

import subprocess
import sys

import librosa
import numpy as np
import pytest
import torch

from highlightsense import features

# imported by a run on a local file only if something regressed (seconds of CPU each)
HEAVY_UNUSED = ("yt_dlp", "librosa", "scipy", "numba", "gradio")


def test_mel_filter_bank_is_librosas_bit_for_bit() -> None:
    ours = features.mel_filter_bank()
    expected = librosa.filters.mel(
        sr=features.SAMPLE_RATE, n_fft=features.N_FFT, n_mels=features.N_MELS
    )
    assert ours.dtype == expected.dtype == np.float32
    assert ours.shape == (80, 513)
    assert np.array_equal(ours, expected)
    assert (ours > 0).sum(axis=1).min() >= 1  # no empty band: every row was compared


def test_features_and_pipeline_import_no_downloader_nor_librosa() -> None:
    """What a local file's run imports: the pipeline, the features of a second of audio."""
    code = (
        "import sys, numpy as np\n"
        "from highlightsense import features, pipeline, sources\n"
        "spec = features.log_mel_spectrogram(np.ones(22050, np.float32))\n"
        "assert spec.shape == (80, 44), spec.shape\n"
        f"print(sorted(m for m in {HEAVY_UNUSED!r} if m in sys.modules))\n"
        "print(sources.yt_dlp.__name__)\n"  # still there on first use
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]", "yt_dlp"]


def test_weights_with_an_infinity_in_any_float_type_are_refused() -> None:
    """The finite check runs in numpy (cheaper than torch's: see weights.build_model), after a
    conversion to float32 that keeps inf and NaN; both are refused whatever the tensor's type."""
    from model_fixtures import random_crnn

    from highlightsense import weights
    from highlightsense.errors import WeightsError

    state = random_crnn().state_dict()
    assert weights.build_model(state, weights.ModelConfig()).training is False  # finite: loads
    for bad in (float("inf"), float("-inf"), float("nan")):
        for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
            broken = {**state, "classifier.4.bias": torch.tensor([bad], dtype=dtype)}
            with pytest.raises(WeightsError, match="NaN or infinite"):
                weights.build_model(broken, weights.ModelConfig())


def test_models_are_built_on_one_torch_thread(
    checkpoint, tiny_separator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Engine.load builds both models on LOAD_THREADS torch threads and gives the process its
    thread count back."""
    from highlightsense import engine, separator, weights
    from highlightsense.settings import AnalysisSettings

    seen = []

    def counting(load):
        def wrapper(*args, **kwargs):
            seen.append(torch.get_num_threads())
            return load(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(weights, "load", counting(weights.load))
    monkeypatch.setattr(engine, "load_separator", counting(separator.load_separator))
    repo, name = tiny_separator
    settings = AnalysisSettings(
        weights=str(checkpoint), separator=name, separator_repo=str(repo), device="cpu"
    )
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        loaded = engine.Engine.create(settings).load()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert seen == [engine.LOAD_THREADS] * 2 == [1, 1]
    assert loaded.model.model.training is False
