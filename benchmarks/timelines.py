"""Time to write each editor timeline for many highlights.

    python benchmarks/timelines.py [--highlights 50] [--repeat 5] [--scratch DIR]

Timelines never open the media (they reference it), so the recording is described, not made:
a 3 h, 1920x1080, 29.97 frames/s VOD (drop-frame timecode, the slowest case). Prints the median
seconds per kind over ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import fractions
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from highlightsense import timelines  # noqa: E402
from highlightsense.media import AudioStream, MediaInfo  # noqa: E402

HOURS = 3  # length of the described VOD
CLIP = 30.0  # s per highlight


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--highlights", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--scratch", type=Path, default=None)
    args = parser.parse_args()

    duration = HOURS * 3600.0
    info = MediaInfo(
        Path("/recordings/vod.mp4"), "mov,mp4,m4a,3gp,3g2,mj2", duration, 10**10,
        [AudioStream(1, 2, 48000, "aac", None)], True, 1920, 1080,
        fractions.Fraction(30000, 1001),
    )  # fmt: skip
    rng = random.Random(0)
    starts = sorted(rng.sample(range(0, int(duration - CLIP), 60), args.highlights))
    highlights = [
        timelines.Marker(rank, start + 0.37, start + 0.37 + CLIP, 0.99 - rank / 1000, "loud")
        for rank, start in enumerate(rng.sample(starts, len(starts)), start=1)
    ]
    with tempfile.TemporaryDirectory(dir=args.scratch) as scratch:
        out_dir = Path(scratch)
        print(f"{args.highlights} highlights, median of {args.repeat} runs")
        for kind in timelines.TIMELINE_FILES:
            seconds = []
            for _ in range(args.repeat):
                began = time.perf_counter()
                [path] = timelines.write_timelines([kind], out_dir, info, highlights)
                seconds.append(time.perf_counter() - began)
            size = path.stat().st_size
            print(f"{kind:9s} {statistics.median(seconds) * 1000:8.1f} ms {size:9d} bytes")


if __name__ == "__main__":
    main()
