"""Time and peak memory to cut one vertical clip from a 1080p60 recording.

    python benchmarks/vertical.py [--seconds 30] [--layout stack] [--scratch DIR]

Makes a 1920x1080, 60 frames/s recording with ffmpeg (a moving test picture and a tone), then
runs the one ffmpeg command that :func:`highlightsense.vertical.cut_vertical` runs per clip
under ``/usr/bin/time -v`` and prints its wall time and peak resident memory.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from highlightsense import media, tools, vertical  # noqa: E402

SIZE, RATE = "1920x1080", 60  # the recording: pixels, frames/s
LEAD = 5.0  # s of recording before the clip (the cut seeks into it)
FACECAM = vertical.Region(1440, 0, 480, 270)  # top-right quarter-width corner, pixels


def make_recording(path: Path, seconds: float) -> None:
    cmd = [
        tools.ffmpeg_path(), "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={SIZE}:rate={RATE}:duration={seconds}",
        "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}:sample_rate=48000",
        "-c:v", "libx264", "-preset", "ultrafast", "-g", "120", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "160k", str(path),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=3600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--layout", choices=vertical.LAYOUTS, default="stack")
    parser.add_argument("--scratch", type=Path, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.scratch) as scratch:
        source = Path(scratch) / "vod_1080p60.mp4"
        began = time.perf_counter()
        make_recording(source, LEAD + args.seconds + 1)
        print(f"made {SIZE}@{RATE} recording in {time.perf_counter() - began:.1f} s")
        info = media.probe(source)
        layout = vertical.resolve(
            info, vertical.Layout(args.layout, facecam=FACECAM if args.layout == "stack" else None)
        )
        target = Path(scratch) / "highlight_01.mp4"
        span = (LEAD, LEAD + args.seconds)
        command = vertical.vertical_command(info, span, target, layout=layout)
        done = subprocess.run(
            ["/usr/bin/time", "-v", *command], capture_output=True, text=True, timeout=3600
        )
        if done.returncode != 0:
            raise SystemExit(done.stderr[-2000:])
        wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", done.stderr)
        hours, minutes, seconds = (float(g or 0) for g in wall.groups())
        rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)[1])
        cpu = re.search(r"Percent of CPU this job got: (\d+)%", done.stderr)[1]
        user, system = (
            float(re.search(rf"{kind} time \(seconds\): ([\d.]+)", done.stderr)[1])
            for kind in ("User", "System")
        )
        print(f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
        print(
            f"{args.layout} clip of {args.seconds:g} s: "
            f"{hours * 3600 + minutes * 60 + seconds:.1f} s wall, {cpu}% CPU "
            f"({user + system:.1f} CPU-seconds), "
            f"peak RSS {rss / 1024:.0f} MiB, {target.stat().st_size / 2**20:.1f} MiB written"
        )


if __name__ == "__main__":
    main()
