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

The cut, the network and its export are the project's own (highlightsense/openvino_separator.py,
which runs it since issue 25's integration); OpenVINO is imported through it, so its telemetry
stays off. It runs in the project's virtual environment: openvino is a dependency, onnxruntime
comes with faster-whisper, and the export needs no ``onnx`` package. The first figures
(benchmarks/README.md) were measured in a venv of their own with torch==2.13.0+cpu,
demucs==4.1.0, numpy==2.4.6, onnx==1.23.2, onnxruntime==1.32.0, openvino==2026.4.1.
"""

from __future__ import annotations

import argparse
import os
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

from highlightsense import openvino_separator  # noqa: E402  (common puts the repository first)

BF16_UNIT = 2.0**-9  # bf16's relative rounding: the unit tests/test_stems.py measures errors in
VOICE = "vocals"
SEED = 0
# single: one segment per runtime and thread count; pairs: 2 workers x 1 thread, as the project
# runs on CPUs; direct: OpenVINO's conversion straight from torch against the ONNX route;
# project: the integrated path (highlightsense.openvino_separator) against torch bf16 autocast
SECTIONS = ("single", "pairs", "direct", "project")


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
            return openvino_separator.split_forward(model, network, mix)

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
    """The project's ONNX export of the network (openvino_separator.export), as a file."""
    path.write_bytes(openvino_separator.export(model, mix.shape[-1]))


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

    import torch

    core = openvino_separator.import_openvino().Core()
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
    import torch

    ov = openvino_separator.import_openvino()
    network = openvino_separator.Network(model).eval()
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
    if set(args.sections) - {"project"}:  # the project section exports on its own
        began = time.perf_counter(), cpu_seconds()
        export(model, mix, onnx_path)
        print(
            f"export: {time.perf_counter() - began[0]:.1f} s wall, "
            f"{cpu_seconds() - began[1]:.1f} s CPU, {onnx_path.stat().st_size / 2**20:.1f} MiB"
        )

    torch.set_num_threads(1)
    reference = torch_runner(model, bf16=False)(mix)
    split_check = split_runner(model, openvino_separator.Network(model).eval())(mix)
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
        single_table(
            f"one {length}-sample segment, {threads} thread(s), {args.repeats} interleaved repeats",
            runners,
            mix,
            reference,
            list(model.sources),
            args.repeats,
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
        pairs_table(runners, [mix, second], args.repeats)
    if "project" in args.sections:
        project(args, scratch, mix, args.repeats)


def single_table(title: str, runners: dict, mix, reference, sources: list, repeats: int) -> None:
    """Each runner on ``mix`` in turn, after one warm-up call each, ``repeats`` times: wall and
    CPU seconds, and the error against ``reference``."""
    walls: dict[str, list[float]] = {label: [] for label in runners}
    cpus: dict[str, list[float]] = {label: [] for label in runners}
    found: dict[str, dict[str, float]] = {}
    for label, run in runners.items():  # warm-up: primitive creation, allocators
        found[label] = errors(run(mix), reference, sources)
    for _ in range(repeats):
        for label, run in runners.items():
            wall, cpu = time.perf_counter(), cpu_seconds()
            run(mix)
            walls[label].append(time.perf_counter() - wall)
            cpus[label].append(cpu_seconds() - cpu)
    base = statistics.median(cpus["torch bf16 autocast"]) if "torch bf16 autocast" in cpus else None
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
        f"{title}, load average {common.load_average():.1f} (shared machine)",
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


def pairs_table(runners: dict, mixes: list, repeats: int) -> None:
    times = pairs(runners, mixes, repeats)
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
        f"two segments at once, 2 workers x 1 thread, {repeats} interleaved repeats, "
        f"load average {common.load_average():.1f} (shared machine)",
        rows,
        ("runtime", "wall s/pair med / min", "CPU s/pair med / min", "vs bf16 (CPU)"),
    )


def project(args: argparse.Namespace, scratch: Path, mix, repeats: int) -> None:
    """The integrated path (highlightsense.openvino_separator, as ``separate_stream`` runs it)
    against the project's torch bf16 autocast: the first build's cost in a fresh cache (export,
    compile) and a warm one's, then one segment at a time and two at once."""
    import torch

    from highlightsense import separator

    repo, name = common.make_separator(scratch, args.separator)
    loaded = separator.load_separator(name, repo)
    (model, _), *_ = separator.members(loaded.model)
    spent: dict[str, float] = {}
    export_ = openvino_separator.export

    def timed_export(*args_, **kwargs):
        began = cpu_seconds()
        try:
            return export_(*args_, **kwargs)
        finally:
            spent["export"] = spent.get("export", 0.0) + cpu_seconds() - began

    openvino_separator.export = timed_export
    with tempfile.TemporaryDirectory(dir=scratch) as fresh:
        before = os.environ.get("HIGHLIGHTSENSE_CACHE")
        os.environ["HIGHLIGHTSENSE_CACHE"] = fresh
        try:
            for build in ("cold", "warm"):
                openvino_separator._built.cache_clear()
                began = time.perf_counter(), cpu_seconds()
                openvino_separator.networks(loaded, "bf16", 1, 1)
                spent[build] = cpu_seconds() - began[1]
                spent[f"{build} wall"] = time.perf_counter() - began[0]
        finally:
            openvino_separator.export = export_
            if before is None:
                os.environ.pop("HIGHLIGHTSENSE_CACHE")
            else:
                os.environ["HIGHLIGHTSENSE_CACHE"] = before
            # the networks stay usable: they hold what they read from the folder
    print(
        f"project OpenVINO bf16, first build in a fresh cache: {spent['cold']:.1f} s CPU "
        f"({spent['cold wall']:.1f} s wall), of it the export {spent['export']:.1f} s and the "
        f"compile {spent['cold'] - spent['export']:.1f} s; a later process reads the compiled "
        f"network back in {spent['warm']:.1f} s CPU ({spent['warm wall']:.1f} s wall)"
    )
    torch.set_num_threads(1)
    (single,) = openvino_separator.networks(loaded, "bf16", 1, 1)
    (double,) = openvino_separator.networks(loaded, "bf16", 2, 1)
    with torch.no_grad():
        reference = model(mix)
    runners = {
        "torch bf16 autocast": torch_runner(model, bf16=True),
        "project openvino bf16": single,
    }
    single_table(
        f"the project's paths, one {mix.shape[-1]}-sample segment, 1 thread, {repeats} "
        "interleaved repeats",
        runners,
        mix,
        reference,
        list(model.sources),
        repeats,
    )
    second = torch.randn(mix.shape, generator=torch.Generator().manual_seed(SEED + 1))
    runners = {
        "torch bf16 autocast": torch_runner(model, bf16=True),
        "project openvino bf16": double,
    }
    pairs_table(runners, [mix, second], repeats)


if __name__ == "__main__":
    main()
