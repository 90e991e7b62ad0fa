"""How fast is ``highlightsense.analyze`` and how much memory does it take, per stage?

    python benchmarks/pipeline.py --minutes 10 --separator tiny
    python benchmarks/pipeline.py --minutes 3 --separator htdemucs --precision fp32 bf16
    python benchmarks/pipeline.py --minutes 2 --separator tiny --separator-runtime torch openvino
    python benchmarks/pipeline.py --minutes 60 180 --separator tiny --audio-only   # RSS vs length

Every configuration (the cross product of the lists given) runs ``analyze`` in a fresh child
interpreter, so its peak RSS is its own; ``--repeat`` runs each several times, interleaved, and
the table shows the median (min in brackets). Inputs and random-weight models are generated in
``--scratch`` (reused between runs) and never downloaded. Figures are printed, never asserted.

Before each run the script waits up to ``--settle`` s for the 1-min load average to fall to
0.5 and prints it before and after the run: a run with either above 1.5 is not a quiet-machine
figure, and the medians leave such runs out while any quiet run is left (the table says so).
The total counts from the child interpreter's start: "start-up" is the interpreter and the
library's imports, the fixed cost every run pays before its first stage.

Where OpenVINO runs the separator's network, its first run in a cache exports and compiles it
(cached on disk after, like a downloaded model): before the timed runs each such configuration
loads once in a fresh cache folder (that cost is printed on its own line) and once in the
benchmark's cache (``--scratch``/cache), which the timed runs then find warm.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (after the path set-up above)

SCRIPT = Path(__file__).resolve()
# The sub-stages timed inside "separate+features", in table order.
STAGES = (
    "start-up",
    "probe+load",
    "of it OpenVINO export",
    "of it OpenVINO compile",
    "decode (stats pass) waited",
    "separate (model)",
    "separate (rest)",
    "features",
    "score",
    "clips+tables",
)


def vod_path(scratch: Path, minutes: float, video: bool) -> Path:
    return scratch / f"vod-{minutes:g}min{'' if video else '-audio'}.{'mp4' if video else 'm4a'}"


def prepare(scratch: Path, minutes: float, separator: str, video: bool) -> dict:
    """Generate (or reuse) the input, the CRNN weights and the Demucs repo."""
    began = time.perf_counter()
    vod = common.make_vod(vod_path(scratch, minutes, video), minutes, video=video)
    repo, name = common.make_separator(scratch, separator)
    weights = common.make_weights(scratch)
    return {
        "vod": str(vod),
        "repo": str(repo),
        "name": name,
        "weights": str(weights),
        "prepare_sec": time.perf_counter() - began,
    }


def _timed(stopwatch: common.Stopwatch, stage: str, function):
    def wrapper(*args, **kwargs):
        with stopwatch(stage):
            return function(*args, **kwargs)

    return wrapper


def run_ours(config: dict) -> dict:
    """Child: one ``analyze`` run, timed per stage by wrapping the library's hot functions."""
    import numpy as np

    os.environ["HIGHLIGHTSENSE_CACHE"] = config["cache"]  # OpenVINO's export, warmed up before
    from highlightsense import engine, features, openvino_separator, pipeline, runtime, stems

    startup = common.process_age()  # the interpreter, this script and the library's imports
    plan = runtime.Plan.for_device("cpu", config.get("batch_size"))
    if config.get("workers") or config.get("threads"):  # instead of the per-device default
        plan = dataclasses.replace(
            plan,
            workers=config.get("workers") or plan.workers,
            threads=config.get("threads") or plan.threads,
        )
        runtime.Plan.for_device = classmethod(lambda cls, device, batch_size=None: plan)
    inner = common.Stopwatch()
    # the stats pass runs beside the models' load (engine.ReadAhead): what is left of it
    engine.ReadAhead.result = _timed(inner, "decode (stats pass) waited", engine.ReadAhead.result)
    stems.StemStream._separate_batch = _timed(
        inner, "separate (model)", stems.StemStream._separate_batch
    )
    features.LogMelStream.push = _timed(inner, "features", features.LogMelStream.push)
    features.LogMelStream.finish = _timed(inner, "features", features.LogMelStream.finish)
    openvino_separator.export = _timed(inner, "of it OpenVINO export", openvino_separator.export)
    openvino_separator._compiled = _timed(inner, "openvino", openvino_separator._compiled)

    out_dir = Path(config["out_dir"])
    result = pipeline.analyze(
        config["vod"],
        out_dir=out_dir,
        weights=config["weights"],
        **analysis_args(config),
        batch_size=config.get("batch_size"),
        use_cache=False,
    )
    total = common.process_age()  # from the interpreter's start, as the user waits
    outer = result.analysis.seconds
    seconds = {
        "start-up": startup,
        "probe+load": outer["probe"],
        "of it OpenVINO export": inner.seconds.get("of it OpenVINO export", 0.0),
        "of it OpenVINO compile": inner.seconds.get("openvino", 0.0)
        - inner.seconds.get("of it OpenVINO export", 0.0),
        **{k: inner.seconds.get(k, 0.0) for k in STAGES[4:6]},
        "separate (rest)": outer["separate+features"]
        - sum(inner.seconds.get(k, 0.0) for k in STAGES[4:6] + ("features",)),
        "features": inner.seconds.get("features", 0.0),
        "score": outer["score"],
        "clips+tables": result.seconds["clips"],
    }
    # beside the output folder, not in it: the next run may only replace what the library wrote
    np.save(out_dir.with_name(out_dir.name + "-windows.npy"), result.windows)
    return {
        "seconds": seconds,
        "total": total,
        "audio_sec": result.analysis.duration,
        "windows": len(result.windows),
        "clips": len(result.clip_paths),
        "peak_rss_mib": common.peak_rss_mib(),
        **common.cpu_usage(),
        "parallelism": f"{plan.workers} x {plan.threads}",
        "runtime": runtime_of(result.analysis.producer),
    }


def runtime_of(producer: str) -> str:
    """What ran the separator's network, as the analysis records it in its stems' producer."""
    return "openvino" if producer.endswith("+openvino") else "torch"


def run_load(config: dict) -> dict:
    """Child: ``Engine.load`` alone in the cache folder ``config["cache"]`` (the CRNN, Demucs,
    and, where OpenVINO runs the network, its export and compile or their cached results): what
    a run pays before its first stage, cold (a fresh folder) or warm."""
    import resource

    os.environ["HIGHLIGHTSENSE_CACHE"] = config["cache"]
    from highlightsense import openvino_separator
    from highlightsense.engine import Engine
    from highlightsense.settings import AnalysisSettings

    cpu: dict[str, float] = {}

    def cpu_timed(stage: str, function):
        def wrapper(*args, **kwargs):
            usage = resource.getrusage(resource.RUSAGE_SELF)
            try:
                return function(*args, **kwargs)
            finally:
                after = resource.getrusage(resource.RUSAGE_SELF)
                spent = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
                cpu[stage] = cpu.get(stage, 0.0) + spent

        return wrapper

    openvino_separator.export = cpu_timed("export", openvino_separator.export)
    openvino_separator._compiled = cpu_timed("build", openvino_separator._compiled)
    settings = AnalysisSettings(
        weights=config["weights"],
        **analysis_args(config),
    )
    began, usage = time.perf_counter(), common.cpu_usage()
    engine = Engine.create(settings).load()
    after = common.cpu_usage()
    return {
        "runtime": engine.runtime,
        "wall_sec": time.perf_counter() - began,
        "cpu_sec": after["user_sec"] + after["sys_sec"] - usage["user_sec"] - usage["sys_sec"],
        "export_cpu_sec": cpu.get("export", 0.0),
        "compile_cpu_sec": cpu.get("build", 0.0) - cpu.get("export", 0.0),
        "peak_rss_mib": common.peak_rss_mib(),
    }


def analysis_args(config: dict) -> dict:
    """The settings of ``config`` that both the timed runs and the warm-up load pass."""
    return {
        "separator": config["name"],
        "separator_repo": config["repo"],
        "device": "cpu",
        "precision": config.get("precision", "fp32"),
        "separator_runtime": config.get("separator_runtime", "auto"),
    }


def warm_up(script: Path, config: dict, scratch: Path) -> str | None:
    """Load ``config``'s engine once in a fresh cache folder (the cold cost, returned as a line
    to print), then in ``config["cache"]`` until timed runs find OpenVINO's export there (the
    second load there is the warm cost printed); None where torch runs the network."""
    with tempfile.TemporaryDirectory(dir=scratch) as fresh:
        cold = common.run_child(script, {**config, "load": True, "cache": fresh})
    if cold["runtime"] != "openvino":
        return None
    common.run_child(script, {**config, "load": True})  # fills the timed runs' cache if empty
    warm = common.run_child(script, {**config, "load": True})  # what each timed run then does
    return (
        f"OpenVINO first run ({label(config)}), cold cache: export {cold['export_cpu_sec']:.1f} s"
        f" + compile {cold['compile_cpu_sec']:.1f} s CPU; the whole load {cold['cpu_sec']:.1f} s"
        f" CPU ({cold['wall_sec']:.1f} s wall). Warm, as the timed runs: the compiled network "
        f"read back in {warm['compile_cpu_sec']:.1f} s CPU, the whole load {warm['cpu_sec']:.1f} s"
        f" CPU ({warm['wall_sec']:.1f} s wall). Load average {common.load_average():.1f}"
    )


def stems_precision_effect(config: dict) -> dict:
    """Child: the whole input separated at fp32 and at bf16 (torch's autocast, and OpenVINO's
    where it is installed); how far apart the stems are."""
    import torch

    os.environ["HIGHLIGHTSENSE_CACHE"] = config["cache"]
    from highlightsense import media, openvino_separator, runtime, separator, stems

    separator = separator.load_separator(config["name"], Path(config["repo"]))
    mix = torch.from_numpy(media.read_audio_all(media.probe(Path(config["vod"]))))
    mean, std = stems.mix_stats([mix])
    plan = runtime.Plan.for_device("cpu")
    workers, threads = plan.workers, plan.threads
    out = {}
    torch.set_num_threads(threads)
    runs = [("fp32", "torch"), ("bf16", "torch")]
    if openvino_separator.available():
        runs.append(("bf16", "openvino"))
    for precision, separation_runtime in runs:
        pieces = stems.separate_stream(
            separator, [mix], total_samples=mix.shape[-1], mean=mean, std=std,
            batch_size=workers, workers=workers, precision=precision, runtime=separation_runtime,
        )  # fmt: skip
        out[precision, separation_runtime] = [
            torch.cat(stem, dim=-1) for stem in zip(*pieces, strict=True)
        ]
    exact = out.pop(("fp32", "torch"))
    return {
        f"{name}, bf16 {separation_runtime}": {
            "max_abs_diff": (stems_[i] - exact[i]).abs().max().item(),
            "rms_error_units": ((stems_[i] - exact[i]).square().mean().sqrt()
                                / exact[i].square().mean().sqrt()).item() / 2.0**-9,
            "peak": exact[i].abs().max().item(),
        }
        for (_, separation_runtime), stems_ in out.items()
        for i, name in enumerate(("voice", "game"))
    }  # fmt: skip


def summarize(runs: list[dict]) -> dict:
    """Median of each figure over repeated runs (only the quiet ones while there are any), plus
    the minimum total, the largest load average seen and how many runs were quiet."""
    quiet = [r for r in runs if common.quiet(r)]
    counted = quiet or runs
    return {
        **_medians(counted),
        "quiet_runs": len(quiet),
        "runs": len(runs),
        "load_max": max(max(r["load_before"], r["load_after"]) for r in runs),
    }


def _medians(runs: list[dict]) -> dict:
    stages = {k: statistics.median(r["seconds"][k] for r in runs) for k in runs[0]["seconds"]}
    totals = [r["total"] for r in runs]
    return {
        **runs[0],
        "seconds": stages,
        "total": statistics.median(totals),
        "total_min": min(totals),
        "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
        **{
            k: statistics.median(r[k] for r in runs)
            for k in ("user_sec", "sys_sec", "minor_faults")
        },
    }


def describe(run: dict) -> str:
    """One run's total and the load around it, for the progress lines."""
    busy = "" if common.quiet(run) else f" BUSY (above {common.QUIET_LOAD})"
    return (
        f"{run['total']:.1f} s, load average {run['load_before']:.2f} before "
        f"(waited {run['waited']:.0f} s), {run['load_after']:.2f} after{busy}"
    )


def label(config: dict) -> str:
    batch = config.get("batch_size") or "auto"
    workers = config.get("workers") or "auto"
    threads = config.get("threads") or "auto"
    return (
        f"{config['minutes']:g}min {config['separator']} {config.get('precision', 'fp32')} "
        f"{config.get('separator_runtime', 'auto')} b={batch} w={workers} t={threads}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[10.0])
    parser.add_argument("--separator", choices=common.SEPARATORS, nargs="+", default=["tiny"])
    parser.add_argument(
        "--precision", choices=("auto", "fp32", "bf16"), nargs="+", default=["auto"]
    )
    parser.add_argument(
        "--separator-runtime", choices=("auto", "torch", "openvino"), nargs="+", default=["auto"]
    )
    parser.add_argument("--batch-size", type=int, nargs="+", default=[None])
    parser.add_argument("--workers", type=int, nargs="+", default=[None], help="CPU workers")
    parser.add_argument("--threads", type=int, nargs="+", default=[None], help="per worker")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--stems-effect", action="store_true", help="stems bf16 against fp32, of each input"
    )
    parser.add_argument("--audio-only", action="store_true", help="an .m4a input, no video")
    parser.add_argument("--scratch", type=Path, default=None, help="reused between runs")
    parser.add_argument(
        "--settle", type=float, default=120.0, help="s to wait for a quiet machine before a run"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        config = json.loads(args.child)
        if config.get("effect"):
            run = stems_precision_effect
        else:
            run = run_load if config.get("load") else run_ours
        print(json.dumps(run(config)))
        return

    scratch = args.scratch or Path(tempfile.gettempdir()) / "highlightsense-bench"
    scratch.mkdir(parents=True, exist_ok=True)
    keys = ("minutes", "separator", "precision", "separator_runtime", "batch_size", "workers",
            "threads")  # fmt: skip
    configs = [
        dict(zip(keys, values, strict=True))
        for values in itertools.product(*(getattr(args, key) for key in keys))
    ]
    for config in configs:
        inputs = prepare(scratch, config["minutes"], config["separator"], not args.audio_only)
        config.update({k: v for k, v in inputs.items() if k != "prepare_sec"})
        config["cache"] = str(scratch / "cache")  # OpenVINO's exports, kept between runs
    if args.stems_effect:
        for config in configs:
            effect = common.run_child(SCRIPT, {**config, "effect": True})
            for stem, figures in effect.items():
                print(
                    f"{label(config)} {stem}: max |bf16 - fp32| = {figures['max_abs_diff']:.2e} "
                    f"(stem peak {figures['peak']:.3f}), rms {figures['rms_error_units']:.2f} "
                    "units of 2^-9 of the stem's rms"
                )
        return
    cold = [warm_up(SCRIPT, config, scratch) for config in configs]
    runs: dict[int, list[dict]] = {i: [] for i in range(len(configs))}
    for _ in range(args.repeat):  # interleaved, so a busy spell hits every configuration
        for i, config in enumerate(configs):
            config["out_dir"] = str(scratch / f"out-ours-{i}")
            runs[i].append(common.run_child(SCRIPT, config, settle_max=args.settle))
            print(f"ran {label(config)}: {describe(runs[i][-1])}", file=sys.stderr)

    results = [summarize(runs[i]) for i in range(len(configs))]
    header = ("stage (s)", *(label(c) for c in configs))
    rows = [(k, *(f"{r['seconds'][k]:.2f}" for r in results)) for k in STAGES]
    rows += [
        ("total (median)", *(f"{r['total']:.2f}" for r in results)),
        ("total (min)", *(f"{r['total_min']:.2f}" for r in results)),
        ("audio seconds", *(f"{r['audio_sec']:.0f}" for r in results)),
        ("realtime factor", *(f"{r['audio_sec'] / r['total']:.1f}x" for r in results)),
        ("peak RSS (MiB)", *(f"{r['peak_rss_mib']:.0f}" for r in results)),
        ("windows", *(str(r["windows"]) for r in results)),
        ("CPU user+system (s)", *(f"{r['user_sec'] + r['sys_sec']:.1f}" for r in results)),
        ("workers x threads", *(r["parallelism"] for r in results)),
        ("separator runtime", *(r["runtime"] for r in results)),
        ("quiet runs (load <= 1.5)", *(f"{r['quiet_runs']} of {r['runs']}" for r in results)),
        ("largest load average", *(f"{r['load_max']:.2f}" for r in results)),
    ]
    title = f"highlightsense.analyze, {args.repeat} run(s) each"
    if any(r["quiet_runs"] == 0 for r in results):
        title += f"; BUSY MACHINE (load > {common.QUIET_LOAD}): wall times are not quiet figures"
    common.print_table(title, rows, header)
    for line in filter(None, cold):
        print(line)
    _print_precision_effect(configs)


def _print_precision_effect(configs: list[dict]) -> None:
    """max |p_bf16 - p_fp32| over windows, for bf16 runs with an fp32 twin."""
    import numpy as np

    for i, config in enumerate(configs):
        if config["precision"] != "bf16":
            continue
        for j, twin in enumerate(configs):
            keys = ("minutes", "separator", "batch_size", "workers", "threads")
            same = all(twin[k] == config[k] for k in keys)
            if same and twin["precision"] == "fp32":
                bf16 = np.load(Path(config["out_dir"]).with_name(f"out-ours-{i}-windows.npy"))
                fp32 = np.load(Path(twin["out_dir"]).with_name(f"out-ours-{j}-windows.npy"))
                diff = np.abs(bf16[:, 2] - fp32[:, 2]).max()
                print(f"bf16 vs fp32 ({label(config)}): max |Δ window probability| = {diff:.2e}")
                break


if __name__ == "__main__":
    main()
