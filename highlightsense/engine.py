"""The engine: models, device and plan resolved once from the analysis settings, then
:meth:`Engine.analyze` turns a VOD into every window's score (the way ``demucs.api.Separator`` or
whisper's ``load_model`` + ``transcribe`` work).

An engine is small and cheap to pickle (names, paths and the plan): ZeroGPU pickles what it sends
to the process holding the GPU, and the models themselves stay behind the per-process caches of
:func:`highlightsense.weights.load` and :func:`highlightsense.separator.load_separator`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import (
    cache,
    cpu,
    extract,
    features,
    media,
    openvino_separator,
    scoring,
    slices,
    sources,
    weights,
)
from .errors import SettingsError
from .files import cache_dir
from .progress import STAGE_WEIGHTS, Progress, Stages
from .results import Analysis
from .runtime import Plan, resolve_device, torch_threads, trimming_progress
from .separator import Separator, load_separator
from .settings import AnalysisSettings
from .voice import VoiceKeeper

# gpu(vod_seconds, fn, *args) → fn(*args), run where the GPU is; vod_seconds is how much of the
# VOD the call covers, so a per-call time limit can be sized without looking inside the call.
GpuRunner = Callable[..., Any]
LOAD_THREADS = 1  # torch threads while the models are built (see Engine.load)


@dataclass(frozen=True)
class Engine:
    """Analysis settings resolved: the device and the plan, and (on first use) the weights file."""

    settings: AnalysisSettings
    device: str  # resolved: "cpu", "cuda:0", …
    plan: Plan
    precision: str  # resolved for separation: fp32 or bf16

    @classmethod
    def create(
        cls, settings: AnalysisSettings | None = None, *, device: str | None = None
    ) -> Engine:
        """Resolve ``settings`` (defaults when None). ``device``, when given, is taken as already
        resolved (ZeroGPU lends its GPU only inside its calls, so it cannot be probed before)."""
        settings = settings or AnalysisSettings()
        resolved = device or str(resolve_device(settings.device))
        plan = Plan.for_device(resolved, settings.batch_size)
        precision = settings.precision
        if precision == "auto":
            precision = cpu.default_precision(torch.device(resolved).type)
        return cls(settings, resolved, plan, precision)

    # --- the models, loaded once per process ----------------------------------------------

    @functools.cached_property
    def weights(self) -> Path:
        """The weights file or folder, resolved once (finding the default may download it; an
        engine that only separates, for preprocessing, never asks)."""
        return weights.resolve(self.settings.weights).resolve()

    @property
    def model(self) -> weights.LoadedModel:
        return weights.load(self.weights, self.device)

    @property
    def separator(self) -> Separator | None:
        """Demucs, or None when the file's own tracks are the voice and the game."""
        if self.settings.tracks is not None:
            return None
        s = self.settings
        return load_separator(s.separator_name, s.separator_folder, device=self.device)

    @functools.cached_property
    def runtime(self) -> str:
        """What runs the separator's network, resolved once (loading the separator, and the first
        time exporting its network): ``openvino`` or ``torch``
        (:func:`highlightsense.openvino_separator.choose`)."""
        return openvino_separator.choose(
            self.settings.separator_runtime,
            self.separator,
            self.device,
            self.precision,
            self.plan.workers,
            self.plan.threads,
        )

    @property
    def producer(self) -> str:
        """What makes the stems: the separator's identity (and bf16, OpenVINO when they run it:
        their stems differ, so the cache must not mix them), or the tracks used."""
        if self.settings.tracks is not None:
            voice, game = self.settings.tracks
            return f"tracks:voice={voice},game={game}"
        return (
            self.separator.identity
            + ("+bf16" if self.precision == "bf16" else "")
            + ("+openvino" if self.runtime == "openvino" else "")
        )

    def load(self) -> Engine:
        """Load both models now (they are cached), so a bad file fails before any work.

        On one torch thread: building them is thousands of small ops (random initialisation,
        copies), and with two threads each one's OpenMP region spun (htdemucs-sized and the
        CRNN: 1.70 → 0.58 s of CPU; benchmarks/README.md, issue 25). The separator's runtime is
        resolved here too (it loads the separator), so OpenVINO's network is exported and
        compiled before any work.
        """
        with torch_threads(LOAD_THREADS):
            _ = self.model, self.runtime
        return self

    # --- the steps ----------------------------------------------------------------------------

    def features(
        self,
        info: media.MediaInfo,
        progress: Progress | None = None,
        stems_dir: Path | None = None,
        keeper: VoiceKeeper | None = None,
        ahead: ReadAhead | None = None,
    ) -> np.ndarray:
        """media → (2, 80, T) float32 log-mel (voice, game), in one streaming pass; the
        ``keeper`` keeps the separated voice on the way (not the voice of ``--tracks``: that
        track is decoded directly when needed). ``ahead``: the first pass over the audio,
        started before (see :class:`ReadAhead`)."""
        stages = Stages(progress, {k: STAGE_WEIGHTS[k] for k in ("read", "separate")})
        separator = self.separator
        taps = []
        if separator is None:
            voice, game = (track - 1 for track in self.settings.tracks)
            pairs = extract.from_tracks(info, voice, game, stages("separate"))
            rate, frames = extract.TRACKS_RATE, None  # the length is known only at the end
        else:
            if ahead is not None:
                mix = ahead.result(stages("read"))
            else:
                mix = extract.measure_mix(info, separator.samplerate, stages("read"))
            pairs = extract.separated(
                info, separator, mix, self.plan, self.precision, self.runtime, stages("separate")
            )
            rate, frames = mix.rate, mix.frames
            if keeper is not None:
                keeper.open(mix.rate, mix.samples)
                taps.append(keeper)
        with torch_threads(self.plan.threads):  # the pairs are made lazily inside this block
            return extract.to_features(pairs, rate, self.device, frames, stems_dir, taps)

    def features_range(
        self,
        info: media.MediaInfo,
        mix: extract.Mix,
        frames: tuple[int, int | None],
        keep_voice: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray | None]:
        """Frames [start, end) of :meth:`features`' result, and with ``keep_voice`` the kept
        voice over them (see :func:`highlightsense.slices.features_range`)."""
        return slices.features_range(
            info, self.separator, mix, frames, self.plan, self.precision, self.device, keep_voice,
            self.runtime,
        )  # fmt: skip

    def _features_in_slices(
        self,
        info: media.MediaInfo,
        progress: Progress,
        gpu: GpuRunner,
        slice_sec: float,
        key: str | None,
        keeper: VoiceKeeper | None = None,
    ) -> np.ndarray:
        """The whole track's features as consecutive slices, each computed in one GPU call.
        With a cache ``key`` each slice is kept as it arrives, so a run stopped part way (a
        refused GPU call) resumes after the last slice it finished. The ``keeper`` keeps the
        voice the calls return with their slices (none when a slice came from the cache)."""
        stages = Stages(progress, {k: STAGE_WEIGHTS[k] for k in ("read", "separate")})
        mix = extract.measure_mix(info, self.separator.samplerate, stages("read"))
        slice_frames = max(1, round(slice_sec * features.FRAMES_PER_SECOND))
        planned = slices.plan_slices(mix.frames, slice_frames)
        report = stages("separate")
        pieces, voices = [], []
        for number, frames in enumerate(planned, start=1):
            report(
                (number - 1) / len(planned),
                f"Separating voice and game, part {number} of {len(planned)}",
            )
            end = mix.frames if frames[1] is None else frames[1]
            seconds = (end - frames[0]) / features.FRAMES_PER_SECOND
            piece_key = None if key is None else cache.piece_key(key, frames)
            piece = None if piece_key is None else cache.load(piece_key)
            if piece is None:
                piece = gpu(seconds, self.features_range, info, mix, frames, keeper is not None)
                if keeper is not None:
                    piece, voice = piece
                    voices.append(voice)
                if piece_key is not None:
                    cache.store(piece_key, piece)
            else:
                voices.append(None)  # a slice from the cache: its voice was not kept
            pieces.append(piece)
        report(1.0, "Separated voice and game")
        if keeper is not None and all(voice is not None for voice in voices):
            keeper.join(voices)
        spec = np.concatenate(pieces, axis=2)
        if key is not None and cache.store(key, spec):  # the whole replaces its pieces
            for frames in planned:
                cache.forget(cache.piece_key(key, frames))
        return spec

    def score(self, spec: np.ndarray, progress: Progress | None = None) -> scoring.Scores:
        """(2, 80, T) features → every window's probability and attention."""
        with torch_threads(self.plan.threads):
            return scoring.score(
                self.model.model,
                torch.from_numpy(spec),
                window_sec=self.settings.window_sec,
                stride_sec=self.settings.stride_sec,
                batch_size=self.plan.windows,
                workers=self.plan.workers,
                # bf16 autocast makes the CRNN several times slower on CPUs (benchmarks/README.md).
                precision=self.precision if self.device != "cpu" else "fp32",
                keep_attention=True,
                progress=trimming_progress(progress),
            )

    def analyze(
        self,
        source: str | os.PathLike,
        *,
        progress: Progress | None = None,
        stems_dir: Path | None = None,
        download_dir: Path | None = None,
        gpu: GpuRunner | None = None,
        slice_sec: float = slices.SLICE_SEC,
        keep_voice: bool = False,
        voice_dir: Path | None = None,
    ) -> Analysis:
        """Fetch (for a link), probe, separate, featurize (or load the cache) and score every
        window of ``source``.

        With ``gpu`` (on ZeroGPU, a ``spaces.GPU`` function) separation runs in slices of
        ``slice_sec`` seconds of VOD, one call each, so each call fits a per-call time limit,
        and scoring in one more call. Without it, one streaming pass does everything here.

        ``keep_voice`` (captions will be wanted): the separated voice is kept on the
        :class:`Analysis`, in memory or, with ``voice_dir``, in a file there (see
        :class:`~highlightsense.voice.VoiceKeeper`), when it is separated at all (not from the
        cache); in slices, each GPU call returns its slice's voice with its features. It
        changes neither the scores nor the cache.

        GPU calls may each run in a forked process (ZeroGPU's do), where OpenVINO's thread pool
        is not there to run a network: an engine on the CPU given ``gpu`` separates with torch,
        as it would on a GPU (its settings say so).
        """
        if gpu is not None and self.settings.separator_runtime != "torch" and self.device == "cpu":
            settings = dataclasses.replace(self.settings, separator_runtime="torch")
            return dataclasses.replace(self, settings=settings).analyze(
                source, progress=progress, stems_dir=stems_dir, download_dir=download_dir,
                gpu=gpu, slice_sec=slice_sec, keep_voice=keep_voice, voice_dir=voice_dir,
            )  # fmt: skip
        text = str(source)
        is_url = sources.is_url(text)
        weights_ = {"fetch": STAGE_WEIGHTS["fetch"] if is_url else 0.0}
        weights_ |= {"features": STAGE_WEIGHTS["read"] + STAGE_WEIGHTS["separate"]}
        stages = Stages(progress, weights_ | {"score": STAGE_WEIGHTS["score"]})
        seconds: dict[str, float] = {}
        began = time.perf_counter()
        if is_url:
            folder = download_dir or cache_dir() / "downloads"
            path = sources.fetch(text, folder, progress=stages("fetch"))
        else:
            path = Path(text).expanduser()
        info = media.probe(path)
        tracks = self.settings.tracks
        if tracks is not None and max(tracks) > len(info.audio_streams):
            raise SettingsError(
                f"{path.name} has {len(info.audio_streams)} audio track(s); choose voice and game "
                f"tracks between 1 and {len(info.audio_streams)}."
            )
        # one pass over the audio (ffmpeg's decode and Demucs' normalisation) runs while the
        # models load: the decoder is another process, and the loads leave a core idle
        ahead = None
        if gpu is None and tracks is None:
            with torch_threads(LOAD_THREADS):  # as load() builds it (the separator is cached)
                ahead = ReadAhead(info, self.separator)
        try:
            self.load()  # fail on bad models before separating
            cpu.tune_allocator()  # big freed buffers reused, not unmapped and faulted in again
            seconds["probe"] = time.perf_counter() - began

            began = time.perf_counter()
            key, spec = None, None
            if self.settings.use_cache:
                key = cache.feature_key(cache.content_hash(path), self.producer)
                if stems_dir is None:  # stems were asked for: separate again to write them
                    spec = cache.load(key)
            from_cache = spec is not None
            keeper = VoiceKeeper(voice_dir) if keep_voice else None
            if spec is None:
                sliced = gpu is not None and tracks is None and stems_dir is None
                if sliced and slices.can_slice(self.separator.samplerate):
                    spec = self._features_in_slices(
                        info, stages("features"), gpu, slice_sec, key, keeper
                    )
                else:
                    spec = self.features(info, stages("features"), stems_dir, keeper, ahead)
                    if key is not None:
                        cache.store(key, spec)
        finally:
            if ahead is not None:
                ahead.stop()  # not needed (the features came from the cache) or failed
        seconds["separate+features"] = time.perf_counter() - began
        info = _with_decoded_length(info, spec.shape[-1])

        began = time.perf_counter()
        if gpu is None:
            scores = self.score(spec, stages("score"))
        else:
            scores = gpu(spec.shape[-1] / features.FRAMES_PER_SECOND, self.score, spec)
        seconds["score"] = time.perf_counter() - began
        return Analysis(
            source=path,
            info=info,
            windows=scores.windows,
            attention=scores.attention,
            loudness=extract.loudness(spec),
            model_identity=self.model.identity,
            producer=self.producer,
            settings=self.settings,
            step_frames=self.model.model.time_reduction,
            seconds=seconds,
            features_from_cache=from_cache,
            voice=None if keeper is None else keeper.kept(),
        )


class ReadAhead:
    """:func:`extract.measure_mix` of ``info`` at the separator's rate, in a thread of its own
    from now on; :meth:`result` waits for it, reporting its progress in the caller's thread
    (where a cancel raises) and raising its exceptions there; :meth:`stop` ends it at its next
    chunk when nobody will ask."""

    POLL = 0.25  # s between two progress reports while waiting

    def __init__(self, info: media.MediaInfo, separator: Separator) -> None:
        self._stopped = threading.Event()
        self._done = threading.Event()
        self._progress = (0.0, "Reading the audio")
        self._mix: extract.Mix = None  # type: ignore[assignment]  # set once done, or an error
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(info, separator.samplerate), name="read-ahead", daemon=True
        )
        self._thread.start()

    def _run(self, info: media.MediaInfo, rate: int) -> None:
        def check(fraction: float, message: str) -> None:
            self._progress = (fraction, message)
            if self._stopped.is_set():
                raise _Stopped

        try:
            self._mix = extract.measure_mix(info, rate, check)
        except BaseException as exc:  # handed to result(), where the caller is
            self._error = exc
        finally:
            self._done.set()

    def result(self, progress: Progress | None = None) -> extract.Mix:
        report = progress or (lambda fraction, message: None)
        while not self._done.wait(self.POLL):
            report(*self._progress)
        if self._error is not None:
            raise self._error
        report(*self._progress)
        return self._mix

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()


class _Stopped(Exception):
    """ReadAhead was stopped: its read is not wanted."""


def _with_decoded_length(info: media.MediaInfo, frames: int) -> media.MediaInfo:
    """``info`` with the length its audio really has when that is longer than its header says.

    A container may understate it (an mkv saying 4 s held 120 s); windows cover what was
    decoded, so clips are clamped to that too.
    """
    decoded = (frames - 1) / features.FRAMES_PER_SECOND  # s, within one frame of the truth
    if decoded <= info.duration:
        return info
    return dataclasses.replace(info, duration=decoded)
