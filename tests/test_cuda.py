"""CUDA against the CPU, and autocast against fp32, with stated bounds: the CRNN's logits, the
log-mel features, the separated stems. Skipped without a GPU (``benchmarks/gpu_check.sh`` runs
them on one; with ``HIGHLIGHTSENSE_CHECK_DEVICE=cpu`` they run with the CPU on both sides, which
checks only that they run).

Where TF32 is allowed (cuDNN's convolutions, by default) a GPU's float32 keeps 10 mantissa bits
in the products, so the bounds allow ~1e-3 relative; bfloat16 keeps 8 bits (~4e-3 per
rounding), float16 11. Each test records what it measured when ``HIGHLIGHTSENSE_CHECK_FIGURES``
names a JSON file (gpu_check.sh gathers them).
"""

from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from demucs_fixtures import SOURCES, demucs_package, make_tiny_demucs_repo
from model_fixtures import random_crnn

from highlightsense import extract, features, scoring, stems
from highlightsense.separator import load_separator, members

DEVICE = os.environ.get("HIGHLIGHTSENSE_CHECK_DEVICE") or (
    "cuda" if torch.cuda.is_available() else ""
)
pytestmark = pytest.mark.skipif(not DEVICE, reason="no CUDA device (gpu_check.sh runs these)")

RATE = 44100  # Hz, Demucs' input
# s of generated stereo mix: several Demucs segments (a CPU-only run checks only that the
# tests run, on less)
SECONDS = 10 if DEVICE == "cpu" else 40
BATCH = 2 if DEVICE == "cpu" else 8  # CRNN windows per comparison
# bounds (absolute unless said otherwise)
LOGIT_FP32 = 5e-3  # CRNN logit, device vs CPU (logits of the random model are O(1))
FEATURE_FP32 = 1e-3  # log-mel above the log floor, device vs CPU (log: relative error of mel)
STEM_FP32 = 2e-3  # stems, max |Δ| over the mix's peak, device vs CPU
LOGIT_AUTOCAST = {"bf16": 0.1, "fp16": 0.02}  # CRNN logit under autocast vs fp32, same device
PROB_AUTOCAST = {"bf16": 0.02, "fp16": 0.005}  # probability, same
STEM_AUTOCAST = {"bf16": 0.05, "fp16": 0.01}  # stems, ‖Δ‖ / ‖fp32‖ under autocast


@pytest.fixture(scope="module")
def figures():
    found: dict = {}
    yield found
    if path := os.environ.get("HIGHLIGHTSENSE_CHECK_FIGURES"):
        old = json.loads(Path(path).read_text()) if Path(path).is_file() else {}
        Path(path).write_text(json.dumps(old | found, indent=1, sort_keys=True))


def mix(seconds: float = SECONDS, seed: int = 0) -> np.ndarray:
    """(2, n) float32 stereo at 44.1 kHz: a voice-like harmonic tone, a beat and noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    voice = 0.3 * np.sin(2 * np.pi * 220 * t * (1 + 0.1 * np.sin(2 * np.pi * 0.5 * t)))
    beat = 0.4 * (np.mod(t, 0.5) < 0.05) * np.sin(2 * np.pi * 60 * t)
    noise = 0.05 * rng.standard_normal((2, t.size))
    return (voice + beat + noise).astype(np.float32)


def spec(seed: int = 0) -> torch.Tensor:
    """(2, 80, T) log-mel of a generated mix (as if voice and game)."""
    audio = mix(seed=seed)
    return torch.stack([features.log_mel_spectrogram(extract_mono(audio[i])) for i in (0, 1)])


def extract_mono(samples: np.ndarray) -> np.ndarray:
    import soxr

    return soxr.resample(samples, RATE, features.SAMPLE_RATE).astype(np.float32)


@pytest.fixture(scope="module")
def separators(tmp_path_factory):
    """(name, repo) of the tests' tiny HTDemucs and of an htdemucs-sized one (random weights;
    on a CPU-only run the tiny one again)."""
    import yaml
    from demucs.htdemucs import HTDemucs
    from demucs.states import save_with_checksum

    folder = tmp_path_factory.mktemp("cuda-demucs")
    tiny_repo, tiny = make_tiny_demucs_repo(folder / "tiny")
    if DEVICE == "cpu":  # only checking that the tests run: the tiny one stands in
        return {"tiny": (tiny, tiny_repo), "htdemucs": (tiny, tiny_repo)}
    big = folder / "big"
    big.mkdir()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = HTDemucs(sources=SOURCES, segment=Fraction(39, 5)).eval()
    save_with_checksum(demucs_package(model), big / "5eed0001.th")
    (big / "htdemucs_random.yaml").write_text(yaml.safe_dump({"models": ["5eed0001"]}))
    return {"tiny": (tiny, tiny_repo), "htdemucs": ("htdemucs_random", big)}


def separate(separator, audio: np.ndarray, precision: str = "fp32") -> torch.Tensor:
    """(2 stems, 2, n) of ``audio`` through the library's streaming separation."""
    tensor = torch.from_numpy(audio)
    mean, std = stems.mix_stats([tensor])
    pairs = stems.separate_stream(
        separator, [tensor], total_samples=tensor.shape[-1], mean=mean, std=std,
        batch_size=4, precision=precision,
    )  # fmt: skip
    voice, game = (torch.cat(parts, dim=-1) for parts in zip(*pairs, strict=True))
    return torch.stack([voice, game])


def test_crnn_logits_match_the_cpu(figures):
    model = random_crnn()
    windows = spec()[:, :, : scoring.window_frames(30)].unsqueeze(0).repeat(BATCH, 1, 1, 1)
    windows[1:] += 0.3 * torch.randn_like(windows[1:])
    with torch.inference_mode():
        cpu, _ = model.forward_unpadded(windows)
        on_device, _ = model.to(DEVICE).forward_unpadded(windows.to(DEVICE))
    diff = (on_device.float().cpu() - cpu).abs().max().item()
    figures["crnn_logit_max_abs_diff"] = diff
    assert diff <= LOGIT_FP32


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_crnn_under_autocast_stays_near_fp32(figures, precision):
    if precision == "fp16" and DEVICE == "cpu":
        pytest.skip("float16 autocast is for GPUs")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    model = random_crnn().to(DEVICE)
    windows = spec(seed=1)[:, :, : scoring.window_frames(30)].to(DEVICE)
    windows = windows.unsqueeze(0) + 0.3 * torch.randn(BATCH, *windows.shape, device=DEVICE)
    with torch.inference_mode():
        full, _ = model.forward_unpadded(windows)
        with torch.autocast(torch.device(DEVICE).type, dtype=dtype):
            low, _ = model.forward_unpadded(windows)
    logit = (low.float() - full).abs().max().item()
    prob = (torch.sigmoid(low.float()) - torch.sigmoid(full)).abs().max().item()
    figures[f"crnn_{precision}_logit_max_abs_diff"] = logit
    figures[f"crnn_{precision}_prob_max_abs_diff"] = prob
    assert logit <= LOGIT_AUTOCAST[precision] and prob <= PROB_AUTOCAST[precision]


def test_features_match_the_cpu(figures):
    audio = extract_mono(mix()[0])
    cpu = features.log_mel_spectrogram(audio, device="cpu")
    on_device = features.log_mel_spectrogram(audio, device=DEVICE).cpu()
    assert on_device.shape == cpu.shape
    above = cpu > np.log(1e-6)  # the log floor magnifies rounding of near-zero bands
    diff = (on_device - cpu).abs()[above].max().item()
    figures["features_max_abs_diff"] = diff
    assert above.float().mean() > 0.5 and diff <= FEATURE_FP32


@pytest.mark.parametrize("size", ["tiny", "htdemucs"])
def test_stems_match_the_cpu(figures, separators, size):
    name, repo = separators[size]
    audio = mix()
    cpu = separate(load_separator(name, repo, device="cpu"), audio)
    on_device = separate(load_separator(name, repo, device=DEVICE), audio)
    diff = (on_device - cpu).abs().max().item() / float(np.abs(audio).max())
    figures[f"stems_{size}_max_abs_diff_over_peak"] = diff
    assert cpu.abs().max() > 0 and diff <= STEM_FP32


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_stems_under_autocast_stay_near_fp32(figures, separators, precision):
    if precision == "fp16" and DEVICE == "cpu":
        pytest.skip("float16 autocast is for GPUs")
    name, repo = separators["htdemucs"]
    separator = load_separator(name, repo, device=DEVICE)
    if precision == "bf16":  # the library's own bf16 separation
        full, low = (separate(separator, mix(), p) for p in ("fp32", "bf16"))
    else:  # one Demucs segment through the model itself under float16 autocast
        segment = int(separator.segment * separator.samplerate)
        x = torch.from_numpy(mix()[None, :, :segment]).to(DEVICE)
        x = (x - x.mean()) / x.std()
        with torch.inference_mode():
            full = members(separator.model)[0][0](x)
            with torch.autocast("cuda", dtype=torch.float16):
                low = members(separator.model)[0][0](x).float()
    error = ((low - full).norm() / full.norm()).item()
    figures[f"stems_{precision}_relative_error"] = error
    assert error <= STEM_AUTOCAST[precision]


def test_a_whole_slice_scores_like_the_cpu(figures, separators):
    """Separation, features and scoring chained as a ZeroGPU call runs them."""
    name, repo = separators["tiny"]
    audio = torch.from_numpy(mix())
    results = {}
    for device in ("cpu", DEVICE):
        separator = load_separator(name, repo, device=device)
        mean, std = stems.mix_stats([audio])
        pairs = stems.separate_stream(
            separator, [audio], total_samples=audio.shape[-1], mean=mean, std=std
        )
        spec_ = torch.from_numpy(extract.to_features(pairs, RATE, device))
        model = random_crnn().to(device)
        results[device] = scoring.score(model, spec_, window_sec=5, stride_sec=2).windows[:, 2]
    diff = float(np.abs(results[DEVICE] - results["cpu"]).max())
    figures["slice_probability_max_abs_diff"] = diff
    assert len(results["cpu"]) >= 3 and diff <= 2e-3
