"""What both benchmarks share: generated inputs, random-weight models, child runs, tables.

Everything is made locally in a scratch folder, never downloaded: a long VOD generated with
ffmpeg (tiny picture, so making hours of it is quick), a random-weight CRNN in the published
checkpoint format, and random-weight Demucs models saved as real Demucs local repositories
(what ``demucs --repo DIR -n NAME`` and :func:`highlightsense.separator.load_separator` both load).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
for folder in (ROOT, TESTS):  # the test fixtures build the random-weight models
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

SEPARATORS = ("tiny", "htdemucs")
HTDEMUCS_SIGNATURE = "5eed0001"  # a made-up Demucs-style signature for the random htdemucs
HTDEMUCS_NAME = "htdemucs_random"
HTDEMUCS_SEGMENT = Fraction(39, 5)  # s: the published htdemucs' segment (default sizes otherwise)
SAMPLE_RATE = 44100  # Hz of the generated audio
VIDEO_SIZE = "64x36"  # pixels: enough for ffmpeg to cut real video clips, cheap to make hours of
VIDEO_RATE = 5  # frames per second
LOUD_PERIOD = 97  # s between loud bursts, so some windows stand out
LOUD_LENGTH = 4  # s per burst
MAKE_TIMEOUT = 3600  # s allowed to generate an input
QUIET_LOAD = 1.5  # 1-min load average above which a run's wall time is not a quiet-machine figure
SETTLE_LOAD = 0.5  # 1-min load average waited for before each run (the last run's own load decays)
SETTLE_POLL = 5.0  # s between load readings while waiting


def ffmpeg() -> str:
    from highlightsense.tools import ffmpeg_path

    return ffmpeg_path()


def make_vod(path: Path, minutes: float, *, video: bool = True) -> Path:
    """A VOD of ``minutes``: pink noise, a tone and periodic loud bursts (44.1 kHz stereo AAC),
    with a tiny test-pattern picture unless ``video`` is False (then an .m4a). Reused if present.
    """
    if path.exists():
        return path
    seconds = minutes * 60
    audio = (
        f"anoisesrc=color=pink:amplitude=0.05:duration={seconds}:sample_rate={SAMPLE_RATE}[n];"
        f"sine=frequency=440:duration={seconds}:sample_rate={SAMPLE_RATE},volume=0.1[s];"
        f"anoisesrc=color=white:amplitude=0.8:duration={seconds}:sample_rate={SAMPLE_RATE},"
        f"volume='lt(mod(t,{LOUD_PERIOD}),{LOUD_LENGTH})':eval=frame[b];"
        "[n][s][b]amix=inputs=3:normalize=0,aformat=channel_layouts=stereo[a]"
    )
    cmd = [ffmpeg(), "-hide_banner", "-loglevel", "error", "-y"]
    if video:
        size = f"size={VIDEO_SIZE}:rate={VIDEO_RATE}:duration={seconds}"
        cmd += ["-f", "lavfi", "-i", f"testsrc2={size}"]
    cmd += ["-filter_complex", audio, "-map", "[a]"]
    if video:
        cmd += ["-map", "0:v", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    partial = path.with_name(f".{path.name}.part")
    cmd += ["-c:a", "aac", "-b:a", "96k", "-f", "mp4", str(partial)]
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(cmd, check=True, timeout=MAKE_TIMEOUT)
    partial.rename(path)
    return path


def make_separator(folder: Path, size: str) -> tuple[Path, str]:
    """(repo, name) of a random-weight Demucs local repo: ``tiny`` (the tests' 27 k-parameter
    HTDemucs) or ``htdemucs`` (HTDemucs at its default sizes, 26.9 M parameters, the published
    htdemucs' 7.8 s segment)."""
    import torch
    import yaml
    from demucs.htdemucs import HTDemucs
    from demucs.states import save_with_checksum
    from demucs_fixtures import SOURCES, demucs_package, make_tiny_demucs_repo

    repo = folder / f"demucs-{size}"
    if size == "tiny":
        return make_tiny_demucs_repo(repo)
    if size != "htdemucs":
        raise ValueError(f"unknown separator size {size!r}: use one of {SEPARATORS}")
    bag = repo / f"{HTDEMUCS_NAME}.yaml"
    if not bag.exists():
        repo.mkdir(parents=True, exist_ok=True)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = HTDemucs(sources=SOURCES, segment=HTDEMUCS_SEGMENT).eval()
        save_with_checksum(demucs_package(model), repo / f"{HTDEMUCS_SIGNATURE}.th")
        bag.write_text(yaml.safe_dump({"models": [HTDEMUCS_SIGNATURE]}))
    return repo, HTDEMUCS_NAME


def make_weights(folder: Path) -> Path:
    """A random-weight best_model.pt in the published checkpoint format."""
    from model_fixtures import save_checkpoint

    path = folder / "best_model.pt"
    return path if path.exists() else save_checkpoint(path)


def peak_rss_mib() -> float:
    """The largest resident set of this process or any child it waited for, in MiB (peaks of
    processes that ran at the same time are not added up)."""
    own = 0.0
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                own = int(line.split()[1]) / 1024  # kB → MiB
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # kB → MiB
    return max(own, children)


def cpu_usage() -> dict[str, float]:
    """CPU seconds in user and system mode and minor page faults of this process and the children
    it waited for. On a shared machine the wall time depends on what else runs; the CPU time a
    run needed does much less (with workers it adds the cores' times up)."""
    own, children = (
        resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return {
        "user_sec": own.ru_utime + children.ru_utime,
        "sys_sec": own.ru_stime + children.ru_stime,
        "minor_faults": own.ru_minflt + children.ru_minflt,
    }


def process_age() -> float:
    """Seconds since this process started (interpreter start-up and imports included), from
    /proc: its start in clock ticks after boot against the seconds since boot."""
    with open("/proc/self/stat") as stat:
        started = int(stat.read().rsplit(")", 1)[1].split()[19])  # field 22: starttime
    with open("/proc/uptime") as uptime:
        return float(uptime.read().split()[0]) - started / os.sysconf("SC_CLK_TCK")


def load_average() -> float:
    """The 1-minute load average (runnable threads, every process on the machine)."""
    return os.getloadavg()[0]


def settle(max_wait: float) -> tuple[float, float]:
    """Wait up to ``max_wait`` s for the 1-min load average to fall to SETTLE_LOAD (a run that
    just ended leaves its own load behind); (the load then, seconds waited)."""
    began = time.monotonic()
    while load_average() > SETTLE_LOAD and time.monotonic() - began < max_wait:
        time.sleep(SETTLE_POLL)
    return load_average(), time.monotonic() - began


def quiet(run: dict) -> bool:
    """Whether the machine was quiet around ``run`` (load average before and after it)."""
    return max(run["load_before"], run["load_after"]) <= QUIET_LOAD


class Stopwatch:
    """Wall seconds per named stage, summed over repeated entries."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - began)

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds


def run_child(
    script: Path, config: dict, timeout: float | None = None, settle_max: float = 0.0
) -> dict:
    """Run ``script --child JSON`` in a fresh interpreter (so its peak RSS is its own) and
    return the JSON object it prints on its last line, with the 1-min load average just before
    and just after (``load_before``, ``load_after``), after waiting up to ``settle_max`` s for
    the load to settle."""
    load_before, waited = settle(settle_max)
    done = subprocess.run(
        [sys.executable, str(script), "--child", json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    if done.returncode != 0:
        raise RuntimeError(f"{script.name} {config} failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {**result, "load_before": load_before, "load_after": load_average(), "waited": waited}


def print_table(title: str, rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print(
            "  ".join(
                str(c).rjust(w) if i else str(c).ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
