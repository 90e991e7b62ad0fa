"""Stems → log-mel spectrograms, the training recipe of SPEC §2, computed in torch.

Each stem is made mono (mean of channels), resampled to 22 050 Hz with soxr HQ (what
``librosa.load``/``librosa.resample`` use), and turned into an 80-band mel power spectrogram
(n_fft 1024, hop 512, centred frames with zero padding, periodic Hann window, Slaney mel), then
``log(mel + 1e-9)``. :class:`LogMelStream` does the same on a stream of chunks, frame-exactly:
it keeps the half-window of samples a frame needs on each side, so chunk seams change nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator

import numpy as np
import soxr
import torch

SAMPLE_RATE = 22050  # Hz, the model's feature rate
N_FFT = 1024  # samples per STFT frame
HOP = 512  # samples between frames
N_MELS = 80  # mel bands
LOG_FLOOR = 1e-9  # added before the log: silence maps to log(1e-9) ≈ -20.7
FRAMES_PER_SECOND = SAMPLE_RATE / HOP  # ≈ 43.07; one frame ≈ 23.2 ms
HALF_WINDOW = N_FFT // 2  # samples of context a centred frame needs on each side
# Slaney's mel scale (librosa's default, htk=False): linear below 1 kHz, logarithmic above
MEL_LINEAR_HZ = 200.0 / 3  # Hz per mel below MEL_LOG_START_HZ
MEL_LOG_START_HZ = 1000.0  # Hz where the logarithmic part begins
MEL_LOG_START = MEL_LOG_START_HZ / MEL_LINEAR_HZ  # mels at that frequency
MEL_LOG_STEP = np.log(6.4) / 27.0  # natural log of the frequency ratio per mel above it


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    mels = hz / MEL_LINEAR_HZ
    high = hz >= MEL_LOG_START_HZ
    mels[high] = MEL_LOG_START + np.log(hz[high] / MEL_LOG_START_HZ) / MEL_LOG_STEP
    return mels


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    hz = MEL_LINEAR_HZ * mels
    high = mels >= MEL_LOG_START
    hz[high] = MEL_LOG_START_HZ * np.exp(MEL_LOG_STEP * (mels[high] - MEL_LOG_START))
    return hz


def mel_filter_bank() -> np.ndarray:
    """(80, 513) float32 Slaney-normalised mel filter bank, bit-identical to
    ``librosa.filters.mel(sr=22050, n_fft=1024, n_mels=80)`` (tests/test_features_scoring.py)
    in the same float64 steps, without importing librosa, which imports scipy.signal: ≈ 1.3 s
    of CPU per process for a constant (benchmarks/README.md)."""
    edges = _hz_to_mel(np.array([0.0, SAMPLE_RATE / 2]))
    band_hz = _mel_to_hz(np.linspace(edges[0], edges[1], N_MELS + 2))  # (82,) band edges, Hz
    bin_hz = np.fft.rfftfreq(n=N_FFT, d=1.0 / SAMPLE_RATE)  # (513,) centre of each FFT bin
    widths = np.diff(band_hz)  # (81,)
    ramps = np.subtract.outer(band_hz, bin_hz)  # (82, 513)
    rising = -ramps[:N_MELS] / widths[:N_MELS, None]
    falling = ramps[2:] / widths[1:, None]
    filters = np.maximum(0, np.minimum(rising, falling)).astype(np.float32)  # triangles
    filters *= 2.0 / (band_hz[2:] - band_hz[:N_MELS])[:, None]  # equal area per band (Slaney)
    return filters


@functools.lru_cache(maxsize=8)
def _mel_filters(device: str) -> torch.Tensor:
    """(80, 513) Slaney-normalised mel filter bank, exactly librosa's."""
    return torch.from_numpy(mel_filter_bank()).to(device)


@functools.lru_cache(maxsize=8)
def _window(device: str) -> torch.Tensor:
    return torch.hann_window(N_FFT, periodic=True, device=device)


def _log_mel_frames(samples: torch.Tensor) -> torch.Tensor:
    """samples: (n,) already padded (no centring here) → (80, 1 + (n - N_FFT) // HOP)."""
    device = str(samples.device)
    spec = torch.stft(
        samples, N_FFT, HOP, window=_window(device), center=False, return_complex=True
    )
    power = spec.real.square() + spec.imag.square()  # (513, frames)
    return torch.log(_mel_filters(device) @ power + LOG_FLOOR)


def log_mel_spectrogram(wave: np.ndarray | torch.Tensor, device: str | None = None) -> torch.Tensor:
    """wave: (n,) float at 22 050 Hz → (80, 1 + n // 512) float32 log-mel, on ``device``."""
    samples = torch.as_tensor(wave, dtype=torch.float32)
    if device is not None:
        samples = samples.to(device)
    if samples.ndim != 1:
        raise ValueError(f"expected a 1-D waveform, got shape {tuple(samples.shape)}")
    padded = torch.nn.functional.pad(samples, (HALF_WINDOW, HALF_WINDOW))
    if padded.numel() < N_FFT:  # fewer than 512 samples: librosa still gives one frame
        padded = torch.nn.functional.pad(padded, (0, N_FFT - padded.numel()))
    return _log_mel_frames(padded)


class LogMelStream:
    """Streaming version of mono → 22 050 Hz → :func:`log_mel_spectrogram` for one stem.

    ``push(chunk)`` takes (channels, n) float audio at ``input_rate`` and returns the frames that
    are now final, (80, k); ``finish()`` returns the rest. Concatenated, they equal the one-shot
    result on the whole stem (the resampler is soxr's streaming HQ, bit-identical to librosa).
    """

    def __init__(self, input_rate: int, device: str = "cpu"):
        self.device = device
        self._resampler = (
            None
            if input_rate == SAMPLE_RATE
            else soxr.ResampleStream(input_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
        )
        # centred frames: frame f covers samples [f*HOP - 512, f*HOP + 512) of the stem, with
        # zeros before the start. The buffer starts at absolute sample _start (-512 at first).
        self._buffer = torch.zeros(HALF_WINDOW, device=device)
        self._start = -HALF_WINDOW
        self._next_frame = 0
        self._samples = 0  # stem samples seen at 22 050 Hz

    def _resample(self, mono: np.ndarray, last: bool) -> np.ndarray:
        if self._resampler is None:
            return mono
        return self._resampler.resample_chunk(mono, last=last)

    def push(self, chunk: np.ndarray | torch.Tensor, last: bool = False) -> torch.Tensor:
        audio = torch.as_tensor(chunk, dtype=torch.float32)
        mono = audio.mean(0) if audio.ndim == 2 else audio
        resampled = self._resample(mono.cpu().numpy(), last)
        self._samples += len(resampled)
        new = torch.from_numpy(np.ascontiguousarray(resampled)).to(self.device)
        self._buffer = torch.cat([self._buffer, new])
        return self._emit()

    def finish(self) -> torch.Tensor:
        """Flush the resampler and pad the end with zeros, as centred framing does."""
        tail = self.push(np.zeros(0, dtype=np.float32), last=True)
        self._buffer = torch.cat([self._buffer, torch.zeros(HALF_WINDOW, device=self.device)])
        rest = self._emit(limit=1 + self._samples // HOP)
        return torch.cat([tail, rest], dim=1)

    def _emit(self, limit: int | None = None) -> torch.Tensor:
        end = self._start + self._buffer.numel()  # absolute index one past the last sample
        ready = (end - HALF_WINDOW) // HOP + 1  # frames whose whole window has arrived
        if limit is not None:
            ready = min(ready, limit)
        count = ready - self._next_frame
        if count <= 0:
            return torch.zeros(N_MELS, 0, device=self.device)
        first = self._next_frame * HOP - HALF_WINDOW - self._start
        span = self._buffer[first : first + (count - 1) * HOP + N_FFT]
        frames = _log_mel_frames(span)
        self._next_frame = ready
        keep_from = self._next_frame * HOP - HALF_WINDOW - self._start
        self._buffer = self._buffer[keep_from:]
        self._start += keep_from
        return frames


def stems_to_features(
    stem_chunks: Iterable[tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor]],
    input_rate: int,
    device: str = "cpu",
) -> Iterator[torch.Tensor]:
    """(voice (C, n), game (C, n)) chunks → final feature chunks (2, 80, k), k ≥ 0.

    Channel 0 is the voice (Demucs' ``vocals``), channel 1 the game (``no_vocals``).
    """
    voice, game = LogMelStream(input_rate, device), LogMelStream(input_rate, device)
    pending = [torch.zeros(N_MELS, 0, device=device), torch.zeros(N_MELS, 0, device=device)]

    def aligned() -> torch.Tensor:
        # both stems have the same length, so they yield the same frames; align defensively
        n = min(pending[0].shape[1], pending[1].shape[1])
        out = torch.stack([pending[0][:, :n], pending[1][:, :n]])
        pending[0], pending[1] = pending[0][:, n:], pending[1][:, n:]
        return out

    for voice_chunk, game_chunk in stem_chunks:
        pending[0] = torch.cat([pending[0], voice.push(voice_chunk)], dim=1)
        pending[1] = torch.cat([pending[1], game.push(game_chunk)], dim=1)
        yield aligned()
    pending[0] = torch.cat([pending[0], voice.finish()], dim=1)
    pending[1] = torch.cat([pending[1], game.finish()], dim=1)
    yield aligned()
