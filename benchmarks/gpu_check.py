"""The GPU check in one run: the CUDA equivalence tests, then the GPU benchmark, every figure
into one JSON file. ``benchmarks/gpu_check.sh`` is the way to start it (it installs carried
wheels first); ``--dry-run`` runs the same steps at small sizes, and
``HIGHLIGHTSENSE_DEVICE=cpu`` runs them on the CPU, so the whole check can be tried anywhere.

The benchmark separates, featurizes and scores generated audio (a mix of a tone, beats and
noise) with an htdemucs-sized separator (random weights, HTDemucs' default sizes) and the
random-weight CRNN, on the device: seconds per stage, realtime factor, peak GPU memory. Decoding
the VOD is ffmpeg's work on the CPU whatever the device (benchmarks/pipeline.py measures it),
so the audio is made in memory instead and no ffmpeg is needed on the GPU machine.

The ``zerogpu`` block of the JSON is what ``highlightsense/web/zerogpu.py`` reads when copied to
``highlightsense/web/gpu_speed.json``: the fixed seconds of a cold call and the seconds per
second of VOD of separating (plus ``DECODE_S_PER_S`` for the CPU's decoding) and of scoring.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (after the path set-up above)

MINUTES = (2.0, 20.0)  # generated audio per benchmark run
DRY_MINUTES = (0.05, 0.095)  # 3 and 5.7 s: one htdemucs segment each (one every 5.85 s)
COLD_SECONDS = 10.0  # s of audio in the first, cold call (CUDA's start, weights to the device)
DRY_COLD_SECONDS = 5.0
DECODE_S_PER_S = 0.006  # s per s of VOD: one AAC decode (~200x realtime) + soxr, on the host
TESTS_TIMEOUT = 300  # s for the CUDA equivalence tests on a GPU
BATCH_SEGMENTS = 16  # Demucs segments per model call on a GPU


def device_name() -> str:
    import torch

    found = "cuda" if torch.cuda.is_available() else ""
    device = os.environ.get("HIGHLIGHTSENSE_DEVICE") or found
    if not device:
        raise SystemExit("No CUDA device: run with --dry-run or HIGHLIGHTSENSE_DEVICE=cpu.")
    return device


def environment(device: str) -> dict:
    import torch

    found = {
        "device": device,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpu_count": os.cpu_count(),
        "loadavg": os.getloadavg(),
    }
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        found |= {"gpu": props.name, "gpu_memory_gib": props.total_memory / 2**30}
    return found


def run_tests(device: str, scratch: Path) -> dict:
    """The CUDA equivalence tests (tests/test_cuda.py) on ``device``: outcome and figures."""
    # a fresh folder of our own: --scratch may be the caller's, and pytest empties its basetemp
    own = Path(tempfile.mkdtemp(prefix="cuda-tests-", dir=scratch))
    figures = own / "cuda-figures.json"
    report = own / "cuda-tests.xml"
    env = {**os.environ, "HIGHLIGHTSENSE_CHECK_DEVICE": device,
           "HIGHLIGHTSENSE_CHECK_FIGURES": str(figures)}  # fmt: skip
    command = [
        sys.executable, "-m", "pytest", "-n", "0", "-q", "-p", "no:cacheprovider",
        f"--basetemp={own / 'pytest'}", f"--junitxml={report}",
        str(common.TESTS / "test_cuda.py"),
    ]  # fmt: skip
    began = time.perf_counter()
    try:  # on a CPU (a dry run) only gpu_check.sh's own time limit applies
        done = subprocess.run(
            command, capture_output=True, text=True, cwd=common.ROOT, env=env,
            timeout=None if device == "cpu" else TESTS_TIMEOUT,
        )  # fmt: skip
    except subprocess.TimeoutExpired:  # the benchmark still runs: its figures are worth having
        return {"returncode": "timed out", "seconds": time.perf_counter() - began}
    print(done.stdout[-3000:], done.stderr[-2000:], sep="\n", flush=True)
    outcome = {"returncode": done.returncode, "seconds": time.perf_counter() - began}
    if report.is_file():
        import xml.etree.ElementTree as ElementTree

        suite = ElementTree.parse(report).getroot()
        suite = suite if suite.tag == "testsuite" else suite[0]
        outcome |= {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    if figures.is_file():
        outcome["figures"] = json.loads(figures.read_text())
    return outcome


def generated_mix(seconds: float):
    """(2, n) float32 stereo at 44.1 kHz, the recipe of common.make_vod: pink-ish noise, a tone
    and loud bursts every LOUD_PERIOD s."""
    import numpy as np

    rng = np.random.default_rng(0)
    n = int(seconds * common.SAMPLE_RATE)
    t = np.arange(n, dtype=np.float64) / common.SAMPLE_RATE
    noise = np.cumsum(rng.standard_normal((2, n)), axis=1)
    noise = 0.05 * (noise - np.convolve(noise[0], np.ones(64) / 64, "same")) / 8
    tone = 0.1 * np.sin(2 * np.pi * 440 * t)
    bursts = 0.8 * (np.mod(t, common.LOUD_PERIOD) < common.LOUD_LENGTH) * rng.standard_normal(n)
    return np.clip(noise + tone + bursts, -1, 1).astype(np.float32)


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def analyse(audio, separator, model, device: str) -> dict:
    """Separate + featurize (one streaming pass) and score ``audio``, timed per stage."""
    import torch

    from highlightsense import extract, scoring, stems

    tensor = torch.from_numpy(audio)
    stopwatch = common.Stopwatch()
    inner = stems.StemStream._separate_batch

    def timed_batch(self, *args, **kwargs):
        synchronize(device)
        with stopwatch("separate (model)"):
            out = inner(self, *args, **kwargs)
            synchronize(device)
        return out

    stems.StemStream._separate_batch = timed_batch
    try:
        with stopwatch("separate+features"):
            mean, std = stems.mix_stats([tensor])
            pairs = stems.separate_stream(
                separator, [tensor], total_samples=tensor.shape[-1], mean=mean, std=std,
                batch_size=BATCH_SEGMENTS if device.startswith("cuda") else 2,
            )  # fmt: skip
            spec = extract.to_features(pairs, separator.samplerate, device)
            synchronize(device)
    finally:
        stems.StemStream._separate_batch = inner
    with stopwatch("score"):
        scores = scoring.score(model, torch.from_numpy(spec), batch_size=64)
        synchronize(device)
    return {"seconds": stopwatch.seconds, "windows": len(scores.windows)}


def benchmark(device: str, minutes: tuple[float, ...], cold_sec: float, scratch: Path) -> dict:
    import torch

    from highlightsense import weights
    from highlightsense.separator import load_separator

    repo, name = common.make_separator(scratch, "htdemucs")
    checkpoint = common.make_weights(scratch)
    cuda = device.startswith("cuda")
    began = time.perf_counter()
    separator = load_separator(name, repo, device=device)
    model = weights.load(checkpoint, device).model
    cold = analyse(generated_mix(cold_sec), separator, model, device)  # the first call
    cold_total = time.perf_counter() - began
    runs = []
    for length in minutes:
        audio = generated_mix(length * 60)
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        began = time.perf_counter()
        timed = analyse(audio, separator, model, device)
        total = time.perf_counter() - began
        seconds = audio.shape[1] / common.SAMPLE_RATE
        runs.append({
            "minutes": length,
            "audio_sec": seconds,
            "total_sec": total,
            "realtime_factor": seconds / total,
            **timed,
            "peak_gpu_mib": torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None,
            "peak_rss_mib": common.peak_rss_mib(),
            "loadavg": os.getloadavg(),
        })  # fmt: skip
        print(json.dumps(runs[-1]), flush=True)
    longest = runs[-1]
    per_second = {k: v / longest["audio_sec"] for k, v in longest["seconds"].items()}
    zerogpu = {
        "device": environment(device).get("gpu", device),
        "overhead_s": cold_total,
        "separate_s_per_vod_s": per_second["separate+features"] + DECODE_S_PER_S,
        "score_s_per_vod_s": per_second["score"],
        "decode_s_per_vod_s_assumed": DECODE_S_PER_S,
    }
    return {"cold_call": {"seconds": cold_total, **cold}, "runs": runs, "zerogpu": zerogpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    parser.add_argument("--dry-run", action="store_true", help="small sizes, to try the check")
    parser.add_argument("--scratch", type=Path, help="generated models (default: a temp dir)")
    parser.add_argument("--skip-tests", action="store_true")
    args = parser.parse_args()
    device = device_name()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as temp:
        scratch = args.scratch or Path(temp)
        scratch.mkdir(parents=True, exist_ok=True)
        report = {"environment": environment(device), "dry_run": args.dry_run}
        began = time.perf_counter()
        if not args.skip_tests:
            report["tests"] = run_tests(device, scratch)
        minutes, cold = (DRY_MINUTES, DRY_COLD_SECONDS) if args.dry_run else (MINUTES, COLD_SECONDS)
        report |= benchmark(device, minutes, cold, scratch)
        report["seconds"] = time.perf_counter() - began
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report["zerogpu"]), f"\nwrote {args.out}", flush=True)
    tests = report.get("tests", {})
    if tests.get("returncode", 0) != 0:
        raise SystemExit(f"the CUDA equivalence tests failed (see {args.out})")


if __name__ == "__main__":
    main()
