"""Separation: the stereo mix → the streamer's voice and the game's sound, with Demucs.

The voice is Demucs' ``vocals`` source and the game is the sum of all the others, which is what
``demucs --two-stems vocals --other-method add`` writes. :func:`separate_stream` reproduces
``demucs.api.Separator(model, shifts=0, overlap=0.25, split=True).separate_tensor`` (same
normalisation, segment grid, padding, cross-fade weights, bag averaging), but on a stream of
chunks, so a multi-hour VOD never has to sit in memory: it holds only the samples of the segments
in flight and yields each region as soon as no later segment can touch it.

The model itself is loaded and checked by :mod:`highlightsense.separator`; with
``runtime="openvino"`` HTDemucs' network runs compiled by OpenVINO
(:mod:`highlightsense.openvino_separator`), the rest of the stream as it is.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from demucs.htdemucs import HTDemucs
from demucs.utils import center_trim
from torch import nn

from . import openvino_separator
from .errors import MediaError, SettingsError
from .progress import Progress
from .separator import VOICE_SOURCE, Separator, members

OVERLAP = 0.25  # fraction of a segment shared with the next one (Demucs' default)
TRANSITION_POWER = 1.0  # exponent of the triangular cross-fade (Demucs' default: linear)
STD_EPS = 1e-8  # added to the mix std before dividing, as demucs.api does
PRECISIONS = ("fp32", "bf16")


def _as_chunk(chunk: np.ndarray | torch.Tensor, channels: int | None = None) -> torch.Tensor:
    """chunk: (C, n) array or tensor → (C, n) float32 CPU tensor."""
    if isinstance(chunk, np.ndarray):
        # torch.from_numpy warns on read-only arrays (e.g. np.frombuffer over ffmpeg's output).
        chunk = torch.from_numpy(chunk if chunk.flags.writeable else chunk.copy())
    if chunk.ndim != 2 or (channels is not None and chunk.shape[0] != channels):
        raise ValueError(f"audio chunks must be ({channels or 'C'}, n), got {tuple(chunk.shape)}")
    return chunk.to(device="cpu", dtype=torch.float32)


def mix_stats(chunks: Iterable[np.ndarray | torch.Tensor]) -> tuple[float, float]:
    """Mean and std of the mono mix of the whole track, as demucs.api normalises with.

    chunks: consecutive (C, n) float32 pieces of the track. Returns ``(mean, std + 1e-8)``,
    ready for :func:`separate_stream`: ``ref = wav.mean(0); ref.mean(), ref.std() + 1e-8``.
    Accumulated in float64 with Chan's parallel update, so any chunking gives the same numbers.
    """
    count, mean, m2 = 0, 0.0, 0.0
    for chunk in chunks:
        # Channel mean in float32 first, exactly like demucs' `wav.mean(0)`.
        mono = _as_chunk(chunk).mean(0).double()  # (n,)
        n = mono.numel()
        if n == 0:
            continue
        chunk_mean = mono.mean().item()
        chunk_m2 = ((mono - chunk_mean) ** 2).sum().item()
        delta = chunk_mean - mean
        total = count + n
        mean += delta * n / total
        m2 += chunk_m2 + delta * delta * count * n / total
        count = total
    if count == 0:
        raise MediaError("The audio stream is empty: use a file with an audio track.")
    # torch's unbiased std is NaN for one sample; a constant track has no spread either.
    std = math.sqrt(m2 / (count - 1)) if count > 1 else 0.0
    return mean, std + STD_EPS


class _Window(NamedTuple):
    """One model call of Demucs' split: `TensorChunk(mix, offset, segment).padded(target)`."""

    offset: int  # first output sample
    length: int  # output samples, ≤ one segment (shorter at the end of the track)
    start: int  # first input sample fed to the model; < 0 means zero padding
    stop: int  # one past the last input sample fed; > total means zero padding


def _windows(model: nn.Module, total: int, segment_length: int) -> list[_Window]:
    """Demucs' segment grid for one model over a track of `total` samples."""
    stride = int((1 - OVERLAP) * segment_length)
    windows = []
    for offset in range(0, total, stride):
        length = min(segment_length, total - offset)
        # apply_model's rule: HTDemucs always sees a full segment, older models their
        # valid_length; the padding is centred and takes real context from around the chunk.
        if isinstance(model, HTDemucs):
            target = segment_length
        elif hasattr(model, "valid_length"):
            target = model.valid_length(length)
        else:
            target = length
        start = offset - (target - length) // 2
        windows.append(_Window(offset, length, start, start + target))
    return windows


class StemStream(Iterator[tuple[torch.Tensor, torch.Tensor]]):
    """The consecutive (voice (2, m), game (2, m)) float32 CPU pieces of one separation.

    Made by :func:`separate_stream`. ``max_input_held`` and ``max_output_held`` report the most
    samples (per channel) it ever held in its input buffer and its overlap-add accumulator.
    """

    def __init__(
        self,
        separator: Separator,
        chunks: Iterable[np.ndarray | torch.Tensor],
        *,
        total_samples: int,
        mean: float,
        std: float,
        batch_size: int,
        workers: int,
        precision: str,
        runtime: str,
        cancel: Callable[[], None] | None,
        progress: Progress | None,
    ) -> None:
        self._separator = separator
        self._total = total_samples
        self._batch_size = batch_size
        self._workers = min(workers, batch_size)
        self._autocast = precision == "bf16"
        self._cancel = cancel
        self._progress = progress
        self._mean = torch.tensor(mean, dtype=torch.float32, device=separator.device)
        self._std = torch.tensor(std, dtype=torch.float32, device=separator.device)
        self._models = members(separator.model)
        self._source_weights = torch.tensor([w for _, w in self._models])[..., None, None]
        self._segment_length = int(separator.samplerate * separator.segment)  # samples
        self._windows = [_windows(m, self._total, self._segment_length) for m, _ in self._models]
        self.max_input_held = 0
        self.max_output_held = 0
        self._chunks = iter(chunks)
        if separator.device.type == "cpu":
            _attention_through_sdpa()
        # one forward per model of the bag: mix (B, C, target) → (B, S, C, target); OpenVINO's
        # workers get the torch threads the caller runs torch's with (runtime.Plan.threads)
        self._forwards: list[Callable[[torch.Tensor], torch.Tensor]] = (
            list(
                openvino_separator.networks(separator, precision, workers, torch.get_num_threads())
            )
            if runtime == "openvino"
            else [functools.partial(self._forward, model) for model, _ in self._models]
        )
        # OpenVINO's networks hand back the voice and the sum of the others (two sources, not
        # S) where that sum commutes with the bag's averaging; the stems are the same
        self._voice = separator.sources.index(VOICE_SOURCE)
        self._paired = runtime == "openvino" and all(
            openvino_separator.can_pair(model) and _even_rest(weights, self._voice)
            for model, weights in self._models
        )
        if self._paired:
            self._forwards = [functools.partial(f, voice=self._voice) for f in self._forwards]
            self._source_weights = torch.tensor(
                [[w[self._voice], _rest_weight(w, self._voice)] for _, w in self._models]
            )[..., None, None]
        self._pieces = self._run()

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        return next(self._pieces)

    def _run(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self._workers == 1:
            yield from self._loop(None)
            return
        with ThreadPoolExecutor(self._workers, thread_name_prefix="demucs") as pool:
            yield from self._loop(pool)

    def _loop(self, pool: Executor | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        device = self._separator.device
        channels = self._separator.audio_channels
        sources = 2 if self._paired else len(self._separator.sources)
        weight = _crossfade(self._segment_length, device)  # (segment_length,)
        # Offsets and lengths are the same for every model of a bag; only the padding differs.
        grid = self._windows[0]
        count = len(grid)
        # keep_from[k]: earliest input sample that any window from index k on still reads.
        keep_from = [min(ws[k].start for ws in self._windows) for k in range(count)] + [self._total]
        for k in range(count - 2, -1, -1):
            keep_from[k] = min(keep_from[k], keep_from[k + 1])

        # (C, n) normalised mix from input_start on, kept on the model's device
        inputs = torch.zeros(channels, 0, device=device)
        input_start = 0
        # Overlap-add sums from out_start on: one (S, C, n) per model, weights shared.
        sums = [torch.zeros(sources, channels, 0, device=device) for _ in self._models]
        weight_sum = torch.zeros(0, device=device)  # (n,)
        out_start = 0
        k = 0
        while k < count:
            batch = self._next_batch(k)
            needed = min(self._total, max(ws[j].stop for ws in self._windows for j in batch))
            inputs = self._read_until(inputs, input_start, needed)
            self.max_input_held = max(self.max_input_held, inputs.shape[-1])
            if self._cancel is not None:
                self._cancel()

            out_end = max(grid[j].offset + grid[j].length for j in batch)
            sums = [_grow(s, out_end - out_start) for s in sums]
            weight_sum = _grow(weight_sum, out_end - out_start)
            self.max_output_held = max(self.max_output_held, weight_sum.shape[-1])
            for forward, windows, acc in zip(self._forwards, self._windows, sums, strict=True):
                mix = torch.stack(
                    [_padded(inputs, input_start, windows[j], self._total) for j in batch]
                )  # (B, C, target)
                out = self._separate_batch(forward, mix, pool)  # (B, S, C, target)
                for row, j in enumerate(batch):
                    at, length = grid[j].offset - out_start, grid[j].length
                    acc[..., at : at + length] += weight[:length] * center_trim(out[row], length)
            for j in batch:
                at, length = grid[j].offset - out_start, grid[j].length
                weight_sum[at : at + length] += weight[:length]

            k = batch[-1] + 1
            # No window from k on starts before this, so everything before it is final.
            final = grid[k].offset if k < count else self._total
            n = final - out_start
            voice, game = self._two_stems([acc[..., :n] for acc in sums], weight_sum[:n])
            sums = [acc[..., n:] for acc in sums]
            weight_sum = weight_sum[n:]
            out_start = final
            drop = max(keep_from[k], input_start) - input_start
            inputs = inputs[:, drop:]
            input_start += drop
            if self._progress is not None:
                self._progress(final / self._total, "Separating the voice from the game sound")
            yield voice, game

        self._check_exhausted()

    def _two_stems(
        self, sums: list[torch.Tensor], weight_sum: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Finished overlap-add sums (S, C, n) per model → (voice (C, n), game (C, n)) on CPU.

        The same operations in the same order as apply_model's bag averaging, separate_tensor's
        de-normalisation and the CLI's ``--other-method add``. Paired sums (voice, rest) hold
        the other sources already summed: the rest, de-normalised once, gets the mean each of
        them would have added.
        """
        device = weight_sum.device
        source_weights = self._source_weights.to(device)  # (models, S, 1, 1)
        estimate: torch.Tensor | float = 0.0
        for acc, weights in zip(sums, source_weights, strict=True):
            estimate = estimate + acc / weight_sum * weights
        estimate = estimate / source_weights.sum(0) * self._std.to(device) + self._mean.to(device)
        if self._paired:
            others = len(self._separator.sources) - 1
            return estimate[0].to("cpu", copy=True), (estimate[1] + (others - 1) * self._mean).cpu()
        vocals = self._voice
        game = torch.zeros_like(estimate[vocals])
        for index, source in enumerate(estimate):
            if index != vocals:
                game += source
        return estimate[vocals].to("cpu", copy=True), game.cpu()

    def _next_batch(self, k: int) -> list[int]:
        """Indices of up to batch_size windows from k whose model inputs share one length."""

        def size(j: int) -> tuple[int, ...]:
            return tuple(ws[j].stop - ws[j].start for ws in self._windows)

        batch = [k]
        while (
            len(batch) < self._batch_size
            and batch[-1] + 1 < len(self._windows[0])
            and size(batch[-1] + 1) == size(k)
        ):
            batch.append(batch[-1] + 1)
        return batch

    def _read_until(self, inputs: torch.Tensor, input_start: int, needed: int) -> torch.Tensor:
        """Pull chunks until the buffer reaches sample `needed`; returns the (C, n) buffer."""
        pieces = [inputs]
        received = input_start + inputs.shape[-1]
        while received < needed:
            chunk = next(self._chunks, None)
            if chunk is None:
                raise self._length_error(received)
            chunk = _as_chunk(chunk, self._separator.audio_channels)
            received += chunk.shape[-1]
            if received > self._total:
                raise self._length_error(received)
            chunk = _to_device(chunk, self._separator.device)
            # Same elementwise op as demucs.api's `(wav - mean) / std` on the whole track.
            pieces.append((chunk - self._mean) / self._std)
        return torch.cat(pieces, dim=-1) if len(pieces) > 1 else inputs

    def _check_exhausted(self) -> None:
        extra = sum(_as_chunk(chunk).shape[-1] for chunk in self._chunks)
        if extra:
            raise self._length_error(self._total + extra)

    def _length_error(self, received: int) -> MediaError:
        return MediaError(
            f"The audio stream held {'at least ' if received > self._total else ''}{received} "
            f"samples where {self._total} were expected: the file changed while it was read "
            "or decodes differently each time; copy it to a local file and try again."
        )

    def _separate_batch(
        self,
        forward: Callable[[torch.Tensor], torch.Tensor],
        mix: torch.Tensor,
        pool: Executor | None,
    ) -> torch.Tensor:
        """mix: (B, C, target) → (B, S, C, target) by one model's ``forward``, its rows split
        between the workers.

        Each segment is separated independently, so splitting the batch changes nothing but
        speed: on a CPU, workers running single-threaded kernels on different segments keep every
        core busy without the per-operation thread synchronisation that makes one multi-threaded
        forward slow (measured in benchmarks/README.md).
        """
        if pool is None or len(mix) == 1:
            return forward(mix)
        parts = mix.tensor_split(min(self._workers, len(mix)))
        return torch.cat(list(pool.map(forward, parts)))

    def _forward(self, model: nn.Module, mix: torch.Tensor) -> torch.Tensor:
        """mix: (B, C, target) on the model's device → (B, S, C, target) float32."""
        device_type = self._separator.device.type
        # No autocast weight cache: it keeps a bf16 copy of every weight per worker thread until
        # the forward ends (htdemucs-sized, 2 workers, 90 s, 3 runs each: peak RSS 1735-2067 MiB
        # without it, 2109-2425 MiB with it, no faster with it).
        with (
            torch.no_grad(),
            torch.autocast(
                device_type, dtype=torch.bfloat16, enabled=self._autocast, cache_enabled=False
            ),
        ):
            return model(mix).float()


def _even_rest(weights: list[float], voice: int) -> bool:
    """Whether a bag member weighs every source but the voice alike: then summing them before
    the bag's per-source averaging gives the same game."""
    return len({w for index, w in enumerate(weights) if index != voice}) == 1


def _rest_weight(weights: list[float], voice: int) -> float:
    return next(w for index, w in enumerate(weights) if index != voice)


def _attention_through_sdpa() -> None:
    """Send HTDemucs' self-attention through ``scaled_dot_product_attention`` on CPUs.

    In eval mode ``nn.MultiheadAttention`` takes torch's "fast path", whose CPU kernel forms the
    whole (heads, T, T) score matrix with two bmm and a softmax; with the fast path off it calls
    scaled_dot_product_attention, whose CPU flash kernel is much faster at HTDemucs' lengths
    (2688 and 1344 tokens): one htdemucs segment 19.9 → 12.3 s single-threaded, stems within
    4e-7 (float rounding; benchmarks/README.md). The switch is process-wide and nothing else
    in the project uses multi-head attention, so it is set once and left on.
    """
    torch.backends.mha.set_fastpath_enabled(False)


def _to_device(chunk: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A decoded CPU chunk on the model's device: once per chunk, through pinned memory for a
    GPU so the copy is asynchronous; the segments are then cut and stacked on the device."""
    if device.type == "cpu":
        return chunk
    if device.type == "cuda":
        chunk = chunk.pin_memory()
    return chunk.to(device, non_blocking=True)


def _crossfade(segment_length: int, device: torch.device) -> torch.Tensor:
    """Demucs' triangular overlap-add weight, peak 1 in the middle: (segment_length,)."""
    ramp = torch.cat(
        [
            torch.arange(1, segment_length // 2 + 1, device=device),
            torch.arange(segment_length - segment_length // 2, 0, -1, device=device),
        ]
    )
    return (ramp / ramp.max()) ** TRANSITION_POWER


def _padded(inputs: torch.Tensor, input_start: int, window: _Window, total: int) -> torch.Tensor:
    """The model input of one window, as TensorChunk.padded builds it: (C, stop - start).

    inputs: (C, n) normalised mix starting at sample `input_start` of a `total`-sample track.
    """
    first, last = max(window.start, 0), min(window.stop, total)
    piece = inputs[:, first - input_start : last - input_start]
    return F.pad(piece, (first - window.start, window.stop - last))


def _grow(tensor: torch.Tensor, length: int) -> torch.Tensor:
    """Zero-extend the last dimension to `length`; a fresh copy, so dropped heads are freed."""
    grown = tensor.new_zeros((*tensor.shape[:-1], length))
    grown[..., : tensor.shape[-1]] = tensor
    return grown


def separate_stream(
    separator: Separator,
    chunks: Iterable[np.ndarray | torch.Tensor],
    *,
    total_samples: int,
    mean: float,
    std: float,
    device: str | torch.device | None = None,
    batch_size: int = 1,
    workers: int = 1,
    precision: str = "fp32",
    runtime: str = "torch",
    cancel: Callable[[], None] | None = None,
    progress: Progress | None = None,
) -> StemStream:
    """Split a stream of the stereo mix into the voice and the game, as Demucs would.

    chunks: consecutive (2, n) float32 pieces of the mix at ``separator.samplerate``, any n,
    ``total_samples`` in all. mean, std: from :func:`mix_stats` over the same track.
    Yields consecutive (voice (2, m), game (2, m)) float32 CPU tensors, ``total_samples`` in all:
    voice = the ``vocals`` source, game = the sum of the others. Equal (float rounding aside) to
    ``demucs.api.Separator(model, shifts=0, overlap=0.25, split=True).separate_tensor`` on the
    whole track. ``batch_size`` segments go through the model per call (faster on GPUs),
    split between ``workers`` threads (faster on CPUs with one torch thread per worker);
    ``precision="bf16"`` runs it under bfloat16 autocast, or with ``runtime="openvino"`` (CPUs,
    HTDemucs) OpenVINO runs the network at that precision, compiled once per process for
    ``workers`` (:func:`highlightsense.openvino_separator.networks`). ``cancel()`` is called
    before each model call (it raises to stop); ``progress(fraction, message)`` after each.
    """
    if device is not None and torch.device(device) != separator.device:
        raise SettingsError(
            f"The separator was loaded on {separator.device} but asked to run on {device}: "
            f"load it with load_separator(..., device={str(device)!r})."
        )
    if batch_size < 1:
        raise SettingsError(f"The separation batch size must be at least 1, not {batch_size}.")
    if workers < 1:
        raise SettingsError(f"The separation needs at least 1 worker, not {workers}.")
    if precision not in PRECISIONS:
        raise SettingsError(
            f"The separation precision must be one of {', '.join(PRECISIONS)}, not {precision!r}."
        )
    if runtime not in openvino_separator.RUNTIMES:
        raise SettingsError(
            f"The separation runtime must be one of {', '.join(openvino_separator.RUNTIMES)}, "
            f"not {runtime!r}."
        )
    if runtime == "openvino" and separator.device.type != "cpu":
        raise SettingsError(
            f"OpenVINO separates on CPUs only, and the separator was loaded on {separator.device}:"
            " separate with runtime='torch'."
        )
    if total_samples < 1:
        raise MediaError("The audio stream is empty: use a file with an audio track.")
    return StemStream(
        separator,
        chunks,
        total_samples=total_samples,
        mean=mean,
        std=std,
        batch_size=batch_size,
        workers=workers,
        precision=precision,
        runtime=runtime,
        cancel=cancel,
        progress=progress,
    )
