"""The separator's network run by OpenVINO: HTDemucs cut at its STFT, exported once per model and
kept in the cache, compiled for this CPU. In bf16 it took 1.7-2.0x less CPU per segment than
torch's bf16 autocast on an Intel CPU with AMX, 1.4x on an AMD one with AVX512-BF16, with a
smaller error against fp32 (benchmarks/README.md, issue 25).

torch keeps what does not export to ONNX, the complex STFT and iSTFT: a segment goes through
``HTDemucs._spec`` and ``_magnitude`` in torch, :class:`Network` (the encoders, the
cross-transformer and the decoders) in OpenVINO, then ``_mask``, ``_ispec`` and the sum of the
two branches in torch again (:func:`split_forward`; all in torch it equals ``model(mix)``).

The network is exported for the full segment (HTDemucs always sees one) with torch's legacy ONNX
exporter, read by OpenVINO's ONNX frontend and kept as OpenVINO IR; the network compiled for this
CPU is kept beside it. Both are cache entries of our own format, checked with sha256 when read
back (as :mod:`highlightsense.cache` does): a damaged or foreign entry is a miss, exported or
compiled again, never trusted. OpenVINO's own ``CACHE_DIR`` is not used: it does not check its
files, and a damaged one gave NaN stems.

Importing OpenVINO's Python package sends a usage event to Google Analytics and writes a client
id under the home folder (``openvino.tools.ovc`` with ``openvino-telemetry``), unless the user ran
``opt_in_out --opt_out``. :func:`import_openvino` imports it with ``openvino-telemetry`` blocked, so
OpenVINO falls back to its own no-op stub: nothing is sent or written.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import io
import os
import queue
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from demucs.htdemucs import HTDemucs
from einops import rearrange
from torch import nn

from . import cpu
from .errors import SettingsError
from .files import atomic_path, cache_dir, entry_header, read_entry_header
from .separator import Separator, members

OPSET = 17  # ONNX opset of the export (LayerNormalization needs 17)
EXPORT_VERSION = 1  # bump when Network, the export or the entries change: old entries are unused
HINTS = {"fp32": "f32", "bf16": "bf16"}  # separation precision → OpenVINO's inference precision
INPUTS, OUTPUTS = ("mag", "mix"), ("x", "xt")  # the exported network's tensor names
EXAMPLE_SEED = 0  # of the random segment the export traces (every input traces the same graph)
MAGIC = b"HSOVINO\x01"  # first bytes of an entry
MAX_ENTRY = 2 << 30  # bytes of an entry read back at most (htdemucs: ≈ 150 MB)
IR_SUFFIX = ".ir"  # the exported network: OpenVINO IR's xml and weights
COMPILED_SUFFIX = ".compiled"  # the network compiled for one CPU, precision and stream count
MAX_BYTES = 4 << 30  # bytes of entries kept (htdemucs: ≈ 110 MB of IR, ≈ 150 MB compiled)
RUNTIMES = ("torch", "openvino")  # what runs the network, once resolved


def available() -> bool:
    """Whether OpenVINO is installed (its wheels exist for x86-64 Linux, Windows and macOS)."""
    return importlib.util.find_spec("openvino") is not None


@functools.cache
def import_openvino() -> ModuleType:
    """The ``openvino`` package, imported with its telemetry blocked (see the module's doc):
    import it only through this."""
    sys.modules.setdefault("openvino_telemetry", None)  # its importers fall back to a stub
    import openvino

    return openvino


@functools.cache
def _core() -> Any:
    return import_openvino().Core()


# --- the cut -------------------------------------------------------------------------------


class Network(nn.Module):
    """``HTDemucs.forward`` between ``_magnitude`` and ``_mask`` (demucs 4.1.0), eval mode, full
    segment: mag (B, 2C, F, T) the complex-as-channels spectrogram and mix (B, C, L) the segment
    → x (B, S, 2C, F, T) the sources' spectrograms and xt (B, S, C, L) the time branch, both
    de-normalised."""

    def __init__(self, model: HTDemucs) -> None:
        super().__init__()
        self.m = model

    def forward(self, mag: torch.Tensor, mix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.m
        x = mag
        B, C, Fq, T = x.shape
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) / (1e-5 + std)
        xt = mix
        meant = xt.mean(dim=(1, 2), keepdim=True)
        stdt = xt.std(dim=(1, 2), keepdim=True)
        xt = (xt - meant) / (1e-5 + stdt)
        saved, saved_t, lengths, lengths_t = [], [], [], []
        for idx, encode in enumerate(m.encoder):
            lengths.append(x.shape[-1])
            inject = None
            if idx < len(m.tencoder):
                lengths_t.append(xt.shape[-1])
                tenc = m.tencoder[idx]
                xt = tenc(xt)
                if not tenc.empty:
                    saved_t.append(xt)
                else:
                    inject = xt
            x = encode(x, inject)
            if idx == 0 and m.freq_emb is not None:
                frs = torch.arange(x.shape[-2], device=x.device)
                emb = m.freq_emb(frs).t()[None, :, :, None].expand_as(x)
                x = x + m.freq_emb_scale * emb
            saved.append(x)
        if m.crosstransformer:
            if m.bottom_channels:
                f = x.shape[2]
                x = rearrange(x, "b c f t-> b c (f t)")
                x = m.channel_upsampler(x)
                x = rearrange(x, "b c (f t)-> b c f t", f=f)
                xt = m.channel_upsampler_t(xt)
            x, xt = m.crosstransformer(x, xt)
            if m.bottom_channels:
                x = rearrange(x, "b c f t-> b c (f t)")
                x = m.channel_downsampler(x)
                x = rearrange(x, "b c (f t)-> b c f t", f=f)
                xt = m.channel_downsampler_t(xt)
        for idx, decode in enumerate(m.decoder):
            x, pre = decode(x, saved.pop(-1), lengths.pop(-1))
            offset = m.depth - len(m.tdecoder)
            if idx >= offset:
                tdec = m.tdecoder[idx - offset]
                length_t = lengths_t.pop(-1)
                if tdec.empty:
                    xt, _ = tdec(pre[:, :, 0], None, length_t)
                else:
                    xt, _ = tdec(xt, saved_t.pop(-1), length_t)
        S = len(m.sources)
        x = x.view(B, S, -1, Fq, T) * std[:, None] + mean[:, None]
        xt = xt.view(B, S, -1, mix.shape[-1]) * stdt[:, None] + meant[:, None]
        return x, xt


NetworkCall = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def split_forward(
    model: HTDemucs, network: NetworkCall, mix: torch.Tensor, voice: int | None = None
) -> torch.Tensor:
    """mix (B, C, L), L the full segment → (B, S, C, L): ``HTDemucs.forward`` with
    ``network(mag, mix) → (x, xt)`` in place of its encoders, transformer and decoders.

    With ``voice`` (a source's index; only where :func:`can_pair` says so): (B, 2, C, L), that
    source and the sum of the others. Masking and the iSTFT are linear, so the others are summed
    before them: two iSTFTs instead of four, the slowest part left in torch (HTDemucs-sized, one
    thread: 0.19 → 0.09 s of a segment's 0.21 s of masking and iSTFT).
    """
    z = model._spec(mix)
    x, xt = network(model._magnitude(z), mix)
    if voice is not None:
        x, xt = _voice_and_rest(x, voice), _voice_and_rest(xt, voice)
    return xt + model._ispec(model._mask(z, x), mix.shape[-1])


def can_pair(model: HTDemucs) -> bool:
    """Whether ``model``'s masking is linear in the network's output (complex-as-channels, or a
    plain mask without Wiener filtering), so sources may be summed before it."""
    return bool(model.cac) or model.wiener_iters < 0


def _voice_and_rest(t: torch.Tensor, voice: int) -> torch.Tensor:
    """(B, S, …) → (B, 2, …): source ``voice`` and the sum of the others, in source order."""
    rest = torch.zeros_like(t[:, voice])
    for index in range(t.shape[1]):
        if index != voice:
            rest += t[:, index]
    return torch.stack([t[:, voice], rest], 1)


class CompiledNetwork:
    """One HTDemucs with its network compiled by OpenVINO: mix (B, C, L) → (B, S, C, L) float32,
    L the full segment. Several threads may call it at once: each call takes an infer request of
    its own (as many are made as calls ever ran at once: the workers)."""

    def __init__(self, model: HTDemucs, compiled: Any, buffers: list[np.ndarray]) -> None:
        self.model = model
        self.compiled = compiled
        # the memory OpenVINO reads the weights from (it does not own it): kept while it runs
        self._buffers = buffers
        self._idle: queue.SimpleQueue = queue.SimpleQueue()

    def __call__(self, mix: torch.Tensor, voice: int | None = None) -> torch.Tensor:
        """(B, S, C, L), or with ``voice`` (B, 2, C, L) (see :func:`split_forward`)."""
        with torch.no_grad():  # the network was exported for one segment at a time
            return torch.cat(
                [split_forward(self.model, self._network, row[None], voice) for row in mix]
            )

    def _network(self, mag: torch.Tensor, mix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            request = self._idle.get_nowait()
        except queue.Empty:
            request = self.compiled.create_infer_request()
        try:
            request.infer({0: np.ascontiguousarray(mag.numpy()), 1: mix.numpy()})
            # copies: the request's output buffers are overwritten by its next call
            x, xt = (torch.from_numpy(request.get_output_tensor(i).data.copy()) for i in (0, 1))
        finally:
            self._idle.put(request)
        return x, xt


# --- choosing the runtime ------------------------------------------------------------------


def choose(
    requested: str,
    separator: Separator | None,
    device: str,
    precision: str,
    streams: int,
    threads: int,
) -> str:
    """What runs the separator's network: ``openvino`` or ``torch``, for ``streams`` workers of
    ``threads`` threads each (the plan's).

    ``requested`` auto: OpenVINO where it was measured to help (installed, on a CPU, an HTDemucs
    separator, bf16), else torch, silently. openvino: OpenVINO, or torch with a warning saying
    why not. Either way a failed export or compile warns and falls back to torch. The networks
    are exported (first time) and compiled here, once per process.
    """
    if requested == "torch" or separator is None:
        return "torch"
    reason = None
    if torch.device(device).type != "cpu":
        reason = f"it runs the separator on CPUs only, not on {device}"
    elif not _all_htdemucs(separator):
        reason = f"it runs HTDemucs models only, and {_name(separator)} is not one"
    elif not available():
        reason = "it is not installed: pip install -r requirements.txt on x86-64 Linux or Windows"
    elif requested == "auto" and precision != "bf16":
        return "torch"  # fp32: OpenVINO was ≤ 1.24x torch's fp32, and slower with 2 workers
    if reason is not None:
        if requested == "openvino":
            _warn_once(f"OpenVINO cannot separate this run ({reason}); torch separates it.")
        return "torch"
    built = _built(separator, precision, streams, threads)
    if isinstance(built, str):
        _warn_once(
            f"OpenVINO could not export or compile the separator ({built}); torch separates it."
        )
        return "torch"
    return "openvino"


def networks(
    separator: Separator, precision: str, streams: int, threads: int
) -> tuple[CompiledNetwork, ...]:
    """One compiled network per model of the separator's bag, built once per process for
    ``streams`` workers calling at once with ``threads`` threads each (as torch's workers run).
    SettingsError where OpenVINO cannot run it."""
    if not _all_htdemucs(separator):
        raise SettingsError(
            f"OpenVINO runs HTDemucs models only, and {_name(separator)} is not one: "
            "separate with runtime='torch'."
        )
    built = _built(separator, precision, streams, threads)
    if isinstance(built, str):
        raise SettingsError(
            f"OpenVINO could not export or compile the separator ({built}): "
            "separate with runtime='torch'."
        )
    return built


@functools.lru_cache(maxsize=4)
def _built(
    separator: Separator, precision: str, streams: int, threads: int
) -> tuple[CompiledNetwork, ...] | str:
    """The compiled networks, or why they could not be made (remembered: not tried again)."""
    samples = int(separator.samplerate * separator.segment)
    try:
        return tuple(
            CompiledNetwork(
                model,
                *_compiled(
                    model, f"{separator.identity}|{index}", samples, precision, streams, threads
                ),
            )
            for index, (model, _) in enumerate(members(separator.model))
        )
    except Exception as exc:  # the exporter and OpenVINO raise many types; each means torch
        lines = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {lines[0] if lines else ''}".strip(": ")


def _all_htdemucs(separator: Separator) -> bool:
    return all(isinstance(model, HTDemucs) for model, _ in members(separator.model))


def _name(separator: Separator) -> str:
    return separator.identity.split("@", 1)[0]


@functools.cache
def _warn_once(message: str) -> None:
    warnings.warn(message, stacklevel=3)


# --- export, compile and the cache -----------------------------------------------------------


def export(model: HTDemucs, samples: int) -> bytes:
    """The ONNX bytes of ``Network(model)`` for one segment of ``samples``."""
    network = Network(model).eval()
    generator = torch.Generator().manual_seed(EXAMPLE_SEED)
    mix = torch.randn(1, model.audio_channels, samples, generator=generator)
    buffer = io.BytesIO()
    with torch.no_grad(), _without_onnx_package(), _mha_fast_path(False):
        mag = model._magnitude(model._spec(mix))
        with warnings.catch_warnings():
            # the tracer's notes on Python ints taken from shapes: the segment length is fixed
            warnings.simplefilter("ignore")
            torch.onnx.export(
                network, (mag, mix), buffer, input_names=list(INPUTS),
                output_names=list(OUTPUTS), opset_version=OPSET, dynamo=False,
            )  # fmt: skip
    return buffer.getvalue()


@contextlib.contextmanager
def _without_onnx_package() -> Iterator[None]:
    """torch's legacy exporter builds the ONNX protobuf in C++, then opens it with the ``onnx``
    package only to append the onnx-script functions of custom operators. There are none here,
    so that step is skipped and ``onnx`` (with ml_dtypes) is not a dependency."""
    try:
        from torch.onnx._internal.torchscript_exporter import onnx_proto_utils
    except ImportError:  # another torch: its exporter as it is
        yield
        return
    step = getattr(onnx_proto_utils, "_add_onnxscript_fn", None)
    if step is None:
        yield
        return
    onnx_proto_utils._add_onnxscript_fn = lambda proto, custom_opsets: proto
    try:
        yield
    finally:
        onnx_proto_utils._add_onnxscript_fn = step


@contextlib.contextmanager
def _mha_fast_path(enabled: bool) -> Iterator[None]:
    """Attention's fused fast path has no ONNX form; without it attention goes through
    scaled_dot_product_attention, as it does on CPUs anyway (stems._attention_through_sdpa)."""
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(enabled)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def _folder() -> Path:
    return cache_dir() / "openvino"


def _key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _compiled(
    model: HTDemucs, member: str, samples: int, precision: str, streams: int, threads: int
) -> tuple[Any, list[np.ndarray]]:
    """The compiled network of one bag member (``member``: separator identity and index), from
    the cache when an entry there checks out, else compiled from the cached IR, else exported;
    with the arrays it was made from, which must outlive it."""
    ov = import_openvino()
    versions = f"torch {torch.__version__}|openvino {ov.__version__}|v{EXPORT_VERSION}"
    ir_key = _key(f"{member}|{samples} samples|{versions}")
    vendor, flags = cpu.cpu_flags()
    target = f"{vendor}|{' '.join(sorted(flags))}|{HINTS[precision]}|{streams}x{threads}"
    ir_path = _folder() / f"{ir_key}{IR_SUFFIX}"
    compiled_path = _folder() / f"{ir_key}-{_key(target)}{COMPILED_SUFFIX}"
    config = {
        "INFERENCE_PRECISION_HINT": HINTS[precision],  # OpenVINO picks bf16 on AMX unless told
        "NUM_STREAMS": streams,  # one per worker, each with as many threads as torch's had
        "INFERENCE_NUM_THREADS": streams * threads,
        "ENABLE_CPU_PINNING": False,  # the decoder, torch and other programs use these cores
    }
    expected = _shapes(model, samples)
    blob = _read_entry(compiled_path, 1)
    if blob is not None:
        with contextlib.suppress(RuntimeError, ValueError):  # not for this OpenVINO or CPU
            compiled = _core().import_model(ov.Tensor(blob[0], shared_memory=True), "CPU", config)
            if _io_shapes(compiled) == expected:
                return compiled, blob
    ir = _read_entry(ir_path, 2)
    compiled = None
    if ir is not None:
        with contextlib.suppress(RuntimeError, ValueError):  # not an IR OpenVINO can compile
            compiled = _compile_ir(ir, config)
    if compiled is None or _io_shapes(compiled) != expected:
        ir = _to_ir(export(model, samples))
        _write_entry(ir_path, ir)
        compiled = _compile_ir(ir, config)
        if _io_shapes(compiled) != expected:
            raise RuntimeError(f"the exported network has the shapes {_io_shapes(compiled)}")
    _write_entry(compiled_path, [np.frombuffer(compiled.export_model().getvalue(), np.uint8)])
    return compiled, ir


def _shapes(model: HTDemucs, samples: int) -> list[tuple[int, ...]]:
    """The network's input and output shapes for one segment: mag, mix, x, xt."""
    with torch.no_grad():
        mix = torch.zeros(1, model.audio_channels, samples)
        mag = model._magnitude(model._spec(mix))
    sources, channels = len(model.sources), model.audio_channels
    x = (1, sources, mag.shape[1], *mag.shape[2:])
    return [tuple(mag.shape), tuple(mix.shape), x, (1, sources, channels, samples)]


def _io_shapes(compiled: Any) -> list[tuple[int, ...]]:
    ports = [*compiled.inputs, *compiled.outputs]
    if [port.get_element_type().get_type_name() for port in ports] != ["f32"] * 4:
        return []
    return [tuple(port.get_partial_shape().to_shape()) for port in ports]


def _to_ir(onnx: bytes) -> list[np.ndarray]:
    """ONNX bytes → OpenVINO IR (xml, weights) as uint8 arrays, weights kept in float32."""
    ov = import_openvino()
    model = _core().read_model(onnx, b"")
    with tempfile.TemporaryDirectory() as folder:
        xml = Path(folder) / "network.xml"
        ov.save_model(model, xml, compress_to_fp16=False)  # fp16 weights would move the stems
        return [np.fromfile(xml, np.uint8), np.fromfile(xml.with_suffix(".bin"), np.uint8)]


def _compile_ir(ir: list[np.ndarray], config: dict[str, Any]) -> Any:
    ov = import_openvino()
    xml, weights = ir
    model = _core().read_model(xml.tobytes().decode(), ov.Tensor(weights, shared_memory=True))
    return _core().compile_model(model, "CPU", config)


def _starts_with_magic(path: Path) -> bool:
    with open(path, "rb") as file:
        return file.read(len(MAGIC)) == MAGIC


def _read_entry(path: Path, parts: int) -> list[np.ndarray] | None:
    """The ``parts`` uint8 arrays an entry holds, or None when anything about it is wrong: not a
    plain file, another format, a size or checksum that does not match."""
    try:
        if path.is_symlink() or not path.is_file():
            return None
        with open(path, "rb") as file:
            header = read_entry_header(file, MAGIC)
            sizes = header.get("sizes") if isinstance(header, dict) else None
            if (
                not isinstance(sizes, list)
                or len(sizes) != parts
                or not all(type(n) is int and n > 0 for n in sizes)
                or sum(sizes) > MAX_ENTRY
                or os.fstat(file.fileno()).st_size != file.tell() + sum(sizes)
            ):
                return None
            # read, not mapped: OpenVINO reads its weights from this memory while it runs, and
            # a mapped file cut short meanwhile would crash the process
            payload = np.fromfile(file, np.uint8, count=sum(sizes))
    except (OSError, ValueError):  # a folder in the way, a broken header: a miss
        return None
    if payload.size != sum(sizes) or hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # least recently used goes first
    edges = np.cumsum([0, *sizes])
    return [payload[a:b] for a, b in zip(edges[:-1], edges[1:], strict=True)]


def _write_entry(path: Path, parts: list[np.ndarray]) -> None:
    """Keep ``parts`` (uint8 arrays) as one entry, atomically; a cache that cannot be written
    only warns (once): the next run exports or compiles again."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    header = entry_header(
        MAGIC, {"sizes": [part.size for part in parts], "sha256": digest.hexdigest()}
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as temporary, open(temporary, "wb") as file:
            file.write(header)
            for part in parts:
                file.write(part.tobytes())
    except OSError as err:
        _warn_once(
            f"The OpenVINO cache in {path.parent} could not be written ({err.strerror or err}); "
            "each run will export or compile the separator again."
        )
        return
    with contextlib.suppress(OSError):  # another process pruned or replaced an entry meanwhile
        _prune(path.parent, path)


def _prune(folder: Path, keep: Path) -> None:
    """Remove the least recently used entries beyond MAX_BYTES (never ``keep``, and only files
    that start as our entries do: the cache folder may be one a user named)."""
    entries = [
        entry
        for suffix in (IR_SUFFIX, COMPILED_SUFFIX)
        for entry in folder.glob(f"*{suffix}")
        if entry.is_file()
        and not entry.is_symlink()
        and not entry.name.startswith(".")
        and _starts_with_magic(entry)
    ]
    entries.sort(key=lambda entry: entry.stat().st_mtime, reverse=True)
    total = 0
    for entry in entries:
        total += entry.stat().st_size
        if total > MAX_BYTES and entry != keep:
            entry.unlink(missing_ok=True)
