"""``highlightsense batch`` against the same VODs run one ``detect`` after another.

    python benchmarks/batch.py                                  # 4 × 5 min, htdemucs-sized
    python benchmarks/batch.py --vods 2 --minutes 0.5 --separator tiny   # a quick check

Both arms run the command line as a user would, in a fresh child interpreter each (so their
peak RSS is their own), on the same generated VODs and random-weight models (never
downloaded), with the feature cache off (the VODs are generated alike, and a cache hit would
time nothing). ``--repeat`` interleaves the arms, so a busy spell hits both. Printed: wall
time, CPU time, peak RSS, the load average around each run, and where the time went (the
stages every VOD's highlights.json records). Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (after the path set-up above)

SCRIPT = Path(__file__).resolve()
ROOT = {"PYTHONPATH": str(SCRIPT.parents[1])}  # `-m highlightsense` from this checkout, anywhere
ARMS = ("sequential detect", "batch")
FLAGS = ["--no-cache", "--device", "cpu", "-q"]  # both arms
STAGES = ("probe", "separate+features", "score", "clips")  # highlights.json "seconds" keys


def prepare(scratch: Path, vods: int, minutes: float, separator: str) -> dict:
    folder = scratch / f"vods-{vods}x{minutes:g}min"
    paths = [common.make_vod(folder / f"vod{i + 1}.mp4", minutes) for i in range(vods)]
    repo, name = common.make_separator(scratch, separator)
    return {
        "vods": [str(p) for p in paths],
        "folder": str(folder),
        "env": {
            "HIGHLIGHTSENSE_WEIGHTS": str(common.make_weights(scratch)),
            "HIGHLIGHTSENSE_SEPARATOR": name,
            "HIGHLIGHTSENSE_SEPARATOR_REPO": str(repo),
            "HIGHLIGHTSENSE_CACHE": str(scratch / "cache"),
        },
    }


def commands(config: dict, out: Path) -> list[list[str]]:
    cli = [sys.executable, "-m", "highlightsense"]
    if config["arm"] == "batch":
        return [[*cli, "batch", config["folder"], "-o", str(out), "--digest", "0", *FLAGS]]
    return [
        [*cli, "detect", vod, "-o", str(out / Path(vod).stem), *FLAGS] for vod in config["vods"]
    ]


def run_arm(config: dict) -> dict:
    """Child: the arm's commands one after another; wall, CPU and peak RSS of them all."""
    out = Path(tempfile.mkdtemp(prefix="out-", dir=config["scratch"])) / "out"
    began = time.perf_counter()
    for command in commands(config, out):
        subprocess.run(
            command, check=True, timeout=24 * 3600, env={**os.environ, **config["env"], **ROOT}
        )
    wall = time.perf_counter() - began
    stages = dict.fromkeys(STAGES, 0.0)
    for summary in out.glob("*/highlights.json"):
        for key, seconds in json.loads(summary.read_text())["seconds"].items():
            if key in stages:
                stages[key] += seconds
    return {"wall": wall, "stages": stages, "peak_rss_mib": common.peak_rss_mib()} | (
        common.cpu_usage()
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vods", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=5.0, help="each VOD's length")
    parser.add_argument("--separator", choices=common.SEPARATORS, default="htdemucs")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--scratch", type=Path, default=None, help="reused between runs")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_arm(json.loads(args.child))))
        return

    scratch = args.scratch or Path(tempfile.gettempdir()) / "highlightsense-bench"
    scratch.mkdir(parents=True, exist_ok=True)
    inputs = prepare(scratch, args.vods, args.minutes, args.separator)
    runs: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    for _ in range(args.repeat):
        for arm in ARMS:
            load_before = os.getloadavg()[0]
            run = common.run_child(SCRIPT, {**inputs, "arm": arm, "scratch": str(scratch)})
            run["load"] = (load_before, os.getloadavg()[0])
            runs[arm].append(run)
            print(f"ran {arm}: {run['wall']:.1f} s", file=sys.stderr)

    def median(arm: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[arm])

    rows = [
        ("wall (s, median)", *(f"{median(a, 'wall'):.1f}" for a in ARMS)),
        ("CPU user+sys (s)", *(
            f"{median(a, 'user_sec') + median(a, 'sys_sec'):.1f}" for a in ARMS
        )),
        ("peak RSS (MiB)", *(f"{max(r['peak_rss_mib'] for r in runs[a]):.0f}" for a in ARMS)),
        ("load avg before/after", *(
            ", ".join(f"{r['load'][0]:.1f}/{r['load'][1]:.1f}" for r in runs[a]) for a in ARMS
        )),
    ]  # fmt: skip
    for stage in STAGES:
        rows.append(
            (f"  {stage} (s, summed)", *(f"{runs[a][-1]['stages'][stage]:.1f}" for a in ARMS))
        )
    title = (
        f"{args.vods} VODs × {args.minutes:g} min, {args.separator} separator, "
        f"{os.cpu_count()} CPUs, {args.repeat} run(s) each"
    )
    common.print_table(title, rows, ("", *ARMS))
    ratio = median("batch", "wall") / median("sequential detect", "wall")
    print(f"ratio batch/sequential {ratio:.2f}")


if __name__ == "__main__":
    main()
