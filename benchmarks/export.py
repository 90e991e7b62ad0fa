"""Issue 25 lever: HTDemucs' network without its STFT, exported to ONNX Runtime and OpenVINO.

    /tmp/venv-export/bin/python benchmarks/export.py --repeats 3 --threads 1 2
    /tmp/venv-export/bin/python benchmarks/export.py --separator tiny --repeats 1 --threads 1

One segment (batch 1: 7.8 s for the htdemucs-sized random-weight separator of
``common.make_separator``, 1.2 s for the tiny one) is separated by each runtime in turn,
interleaved (A B C ... A B C ...) after one warm-up call each, at each thread count. torch always
computes the spectrogram and the normalised time-domain input before the network and the iSTFT
and the recombination after it (complex STFTs do not export to ONNX); only :class:`Network`
(HTDemucs' encoders, cross-transformer and decoders, ``(mag, mix) → (x, xt)``) runs in the
runtime under test. Prints, per runtime: wall and CPU (user + system of the whole process, so
every runtime's own threads count) seconds per segment, median and min, and the separated
output's error against torch fp32 eager: max |Δ| relative to the output's peak, and the voice and
game stems' rms error relative to their rms, in units of bf16's 2^-9 (the measure of
tests/test_stems.py). Asserts nothing.

It runs in its own virtual environment, not the project's (none of these runtimes is a project
dependency). Measured with Python 3.11.7 and: torch==2.13.0+cpu, demucs==4.1.0, numpy==2.4.6,
onnx==1.23.2, onnxruntime==1.32.0, openvino==2026.4.1 (``python3 -m venv /tmp/venv-export``,
then ``pip install`` those). The project package itself is not imported (its dependencies are
not in that venv); the model is built and loaded from the same local Demucs repository.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (after the path set-up above)

OPSET = 17  # ONNX opset of the export (LayerNormalization needs 17)
BF16_UNIT = 2.0**-9  # bf16's relative rounding: the unit tests/test_stems.py measures errors in
VOICE = "vocals"
SEED = 0
# single: one segment per runtime and thread count; pairs: 2 workers x 1 thread, as the project
# runs on CPUs; direct: OpenVINO's conversion straight from torch against the ONNX route
SECTIONS = ("single", "pairs", "direct")


def _network_class():
    import torch
    from einops import rearrange
    from torch import nn

    class Network(nn.Module):
        """HTDemucs.forward between ``_magnitude`` and ``_mask`` (demucs 4.1.0, htdemucs.py),
        eval mode, full-segment input. mag: (B, 2C, F, T) the CaC spectrogram, mix: (B, C, L)
        → x: (B, S, 2C, F, T) the sources' CaC spectrograms, xt: (B, S, C, L) the time branch,
        both de-normalised."""

        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.m = model

        def forward(self, mag: torch.Tensor, mix: torch.Tensor) -> tuple[torch.Tensor, ...]:
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

    return Network


def load_model(scratch: Path, size: str):
    """The random-weight HTDemucs of common.make_separator (``tiny`` or ``htdemucs``), eval
    mode, loaded from the Demucs repository it writes."""
    import torch
    import yaml
    from demucs.htdemucs import HTDemucs
    from demucs.states import load_model as demucs_load

    repo, name = common.make_separator(scratch, size)
    (signature,) = yaml.safe_load((repo / f"{name}.yaml").read_text())["models"]
    (file,) = repo.glob(f"{signature}*.th")
    with torch.serialization.safe_globals([HTDemucs, Fraction]):
        package = torch.load(file, map_location="cpu", weights_only=True)
    return demucs_load(package).eval()


def split_runner(model, network: Callable) -> Callable:
    """mix (B, C, L) → (B, S, C, L): torch STFT, `network(mag, mix) → (x, xt)`, torch iSTFT."""
    import torch

    def run(mix: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            z = model._spec(mix)
            mag = model._magnitude(z)
            x, xt = network(mag, mix)
            return xt + model._ispec(model._mask(z, x), mix.shape[-1])

    return run


def torch_runner(model, bf16: bool) -> Callable:
    import torch

    def run(mix: torch.Tensor) -> torch.Tensor:
        # the project's forward (stems.StemStream._forward)
        with (
            torch.no_grad(),
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16, cache_enabled=False),
        ):
            return model(mix).float()

    return run


def export(model, mix, path: Path) -> None:
    import torch

    network = _network_class()(model).eval()
    z = model._spec(mix)
    mag = model._magnitude(z)
    with torch.no_grad(), warnings.catch_warnings():
        # the tracer's notes on Python ints taken from shapes: the segment length is fixed
        warnings.simplefilter("ignore")
        torch.onnx.export(
            network,
            (mag, mix),
            str(path),
            input_names=["mag", "mix"],
            output_names=["x", "xt"],
            opset_version=OPSET,
            dynamo=False,
        )


def ort_network(path: Path, threads: int) -> Callable:
    import onnxruntime as ort
    import torch

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def network(mag, mix):
        x, xt = session.run(None, {"mag": mag.numpy(), "mix": mix.numpy()})
        return torch.from_numpy(x), torch.from_numpy(xt)

    return network


def ov_network(source, threads: int, precision: str, streams: int = 1) -> Callable:
    """An OpenVINO network from an .onnx path or an ``ov.Model``; with ``streams`` > 1, one
    infer request per calling thread (the threads of ``streams`` parallel workers)."""
    import threading

    import openvino as ov
    import torch

    core = ov.Core()
    began = cpu_seconds()
    compiled = core.compile_model(
        core.read_model(str(source)) if isinstance(source, Path) else source,
        "CPU",
        {
            "INFERENCE_PRECISION_HINT": precision,  # OpenVINO picks bf16 on AMX unless told
            "INFERENCE_NUM_THREADS": threads,
            "NUM_STREAMS": streams,
            "ENABLE_CPU_PINNING": False,  # a shared machine: do not pin to cores others use
        },
    )
    print(
        f"openvino {precision} compile ({threads} threads, {streams} streams): "
        f"{cpu_seconds() - began:.1f} s CPU"
    )
    local = threading.local()

    def network(mag, mix):
        if not hasattr(local, "request"):
            local.request = compiled.create_infer_request()
        result = local.request.infer({0: mag.numpy(), 1: mix.numpy()})
        x, xt = (result[out] for out in compiled.outputs)
        return torch.from_numpy(x.copy()), torch.from_numpy(xt.copy())

    return network


def convert_direct(model, mix) -> tuple:
    """``ov.convert_model`` straight from the torch module (no ONNX file): (ov.Model, CPU s)."""
    import openvino as ov
    import torch

    network = _network_class()(model).eval()
    z = model._spec(mix)
    began = cpu_seconds()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted = ov.convert_model(network, example_input=(model._magnitude(z), mix))
    return converted, cpu_seconds() - began


def pairs(runners: dict[str, Callable], mixes: list, repeats: int) -> dict[str, list]:
    """The project's CPU plan: 2 workers x 1 thread, each separating its own segment; wall and
    CPU seconds per pair of segments, interleaved."""
    from concurrent.futures import ThreadPoolExecutor

    times: dict[str, list] = {label: [] for label in runners}
    with ThreadPoolExecutor(len(mixes)) as pool:
        for run in runners.values():  # warm-up, one request per worker thread
            list(pool.map(run, mixes))
        for _ in range(repeats):
            for label, run in runners.items():
                wall, cpu = time.perf_counter(), cpu_seconds()
                list(pool.map(run, mixes))
                times[label].append((time.perf_counter() - wall, cpu_seconds() - cpu))
    return times


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def errors(out, ref, sources: list[str]) -> dict[str, float]:
    """max |Δ| / peak of the whole output; rms error / rms of the voice and game stems."""
    vocals = sources.index(VOICE)
    others = [i for i in range(len(sources)) if i != vocals]

    def rms(t):
        return t.square().mean().sqrt().item()

    found = {"max_rel": ((out - ref).abs().max() / ref.abs().max()).item()}
    for name, pick in (("voice", lambda t: t[:, vocals]), ("game", lambda t: t[:, others].sum(1))):
        found[name] = rms(pick(out) - pick(ref)) / rms(pick(ref)) / BF16_UNIT
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--separator", choices=common.SEPARATORS, default="htdemucs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--only", nargs="+", default=None, help="runtimes to run (by label)")
    parser.add_argument(
        "--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="what to run"
    )
    parser.add_argument("--scratch", type=Path, default=None, help="reused between runs")
    args = parser.parse_args(argv)

    import torch

    torch.backends.mha.set_fastpath_enabled(False)  # as stems.py does on CPUs
    scratch = args.scratch or Path(tempfile.gettempdir()) / "highlightsense-bench"
    model = load_model(scratch, args.separator)
    length = int(model.samplerate * model.segment)
    mix = torch.randn(
        1, model.audio_channels, length, generator=torch.Generator().manual_seed(SEED)
    )

    onnx_path = scratch / f"{args.separator}_network.onnx"
    began = time.perf_counter(), cpu_seconds()
    export(model, mix, onnx_path)
    print(
        f"export: {time.perf_counter() - began[0]:.1f} s wall, {cpu_seconds() - began[1]:.1f} s "
        f"CPU, {onnx_path.stat().st_size / 2**20:.1f} MiB"
    )

    torch.set_num_threads(1)
    reference = torch_runner(model, bf16=False)(mix)
    split_check = split_runner(model, _network_class()(model).eval())(mix)
    print(f"torch split vs torch forward: max |Δ| {(split_check - reference).abs().max():.2e}")

    for threads in args.threads if "single" in args.sections else []:
        torch.set_num_threads(threads)
        runners: dict[str, Callable] = {
            "torch fp32": torch_runner(model, bf16=False),
            "torch bf16 autocast": torch_runner(model, bf16=True),
            "onnxruntime fp32": split_runner(model, ort_network(onnx_path, threads)),
            "openvino fp32": split_runner(model, ov_network(onnx_path, threads, "f32")),
            "openvino bf16": split_runner(model, ov_network(onnx_path, threads, "bf16")),
        }
        if args.only:
            runners = {k: v for k, v in runners.items() if k in args.only}
        walls: dict[str, list[float]] = {label: [] for label in runners}
        cpus: dict[str, list[float]] = {label: [] for label in runners}
        found: dict[str, dict[str, float]] = {}
        for label, run in runners.items():  # warm-up: primitive creation, allocators
            found[label] = errors(run(mix), reference, list(model.sources))
        for _ in range(args.repeats):
            for label, run in runners.items():
                wall, cpu = time.perf_counter(), cpu_seconds()
                run(mix)
                walls[label].append(time.perf_counter() - wall)
                cpus[label].append(cpu_seconds() - cpu)
        base = (
            statistics.median(cpus["torch bf16 autocast"])
            if "torch bf16 autocast" in cpus
            else None
        )
        rows = []
        for label in runners:
            cpu_median = statistics.median(cpus[label])
            rows.append(
                (
                    label,
                    f"{statistics.median(walls[label]):.2f} / {min(walls[label]):.2f}",
                    f"{cpu_median:.2f} / {min(cpus[label]):.2f}",
                    f"{base / cpu_median:.2f}x" if base else "-",
                    f"{found[label]['max_rel']:.1e}",
                    f"{found[label]['voice']:.3f} / {found[label]['game']:.3f}",
                )
            )
        common.print_table(
            f"one {length}-sample segment, {threads} thread(s), {args.repeats} interleaved "
            f"repeats, load average {common.load_average():.1f} (shared machine)",
            rows,
            (
                "runtime",
                "wall s med / min",
                "CPU s med / min",
                "vs bf16 (CPU)",
                "max|Δ|/peak",
                "rms err voice/game (2^-9)",
            ),
        )

    torch.set_num_threads(1)
    if "direct" in args.sections:
        converted, seconds = convert_direct(model, mix)
        direct = split_runner(model, ov_network(converted, 1, "bf16"))(mix)
        via_onnx = split_runner(model, ov_network(onnx_path, 1, "bf16"))(mix)
        found = errors(direct, reference, list(model.sources))
        print(
            f"openvino convert_model from torch: {seconds:.1f} s CPU; its bf16 output against "
            f"the ONNX route's: max |Δ| {(direct - via_onnx).abs().max():.1e}; against torch "
            f"fp32: max |Δ|/peak {found['max_rel']:.1e}, rms voice/game "
            f"{found['voice']:.3f} / {found['game']:.3f} (2^-9)"
        )
    if "pairs" in args.sections:
        second = torch.randn(mix.shape, generator=torch.Generator().manual_seed(SEED + 1))
        runners = {
            "torch bf16 autocast": torch_runner(model, bf16=True),
            "openvino bf16": split_runner(model, ov_network(onnx_path, 2, "bf16", streams=2)),
            "openvino fp32": split_runner(model, ov_network(onnx_path, 2, "f32", streams=2)),
        }
        if args.only:
            runners = {k: v for k, v in runners.items() if k in args.only}
        times = pairs(runners, [mix, second], args.repeats)
        base = statistics.median(cpu for _, cpu in times.get("torch bf16 autocast", [(0, 0)]))
        rows = []
        for label, measured in times.items():
            walls, cpus = zip(*measured, strict=True)
            rows.append(
                (
                    label,
                    f"{statistics.median(walls):.2f} / {min(walls):.2f}",
                    f"{statistics.median(cpus):.2f} / {min(cpus):.2f}",
                    f"{base / statistics.median(cpus):.2f}x" if base else "-",
                )
            )
        common.print_table(
            f"two segments at once, 2 workers x 1 thread, {args.repeats} interleaved repeats, "
            f"load average {common.load_average():.1f} (shared machine)",
            rows,
            ("runtime", "wall s/pair med / min", "CPU s/pair med / min", "vs bf16 (CPU)"),
        )


if __name__ == "__main__":
    main()
