"""Reading a long stream's chat: parse time and peak memory, and the per-window signal's time.

    python benchmarks/chat.py [--hours 10] [--rate 20] [--format twitchdownloader] [--scratch DIR]

Generates a chat replay of ``--hours`` at ``--rate`` messages per second (made-up users and
messages, a KEKW burst every few minutes) in the chosen format, streamed to a scratch file, then
reads it in a child process (so its peak RSS is the reader's alone) and prints the file's size,
the parse time, the child's peak RSS, and the time of the chat signal on the 30 s / 5 s window
grid of a VOD that long.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FORMATS = ("twitchdownloader", "chat-downloader-lines", "text")
BURST_EVERY = 300.0  # s between bursts of KEKW
WORDS = ("nice", "lol", "what", "gg", "no way", "that was close", "hello", "KEKW", "Pog")


def messages(hours: float, rate: float, seed: int = 0):
    """(offset s, user, text, emotes) in time order: ``rate`` per second on average."""
    rng = random.Random(seed)
    t, end = 0.0, hours * 3600.0
    while t < end:
        burst = (t % BURST_EVERY) < 8.0
        t += rng.expovariate(rate * (5.0 if burst else 1.0))
        text = "KEKW KEKW" if burst else " ".join(rng.choices(WORDS, k=rng.randint(1, 6)))
        emotes = ("KEKW",) if "KEKW" in text else ()
        yield round(t, 3), f"viewer{rng.randrange(5000)}", text, emotes


def write_chat(path: Path, kind: str, hours: float, rate: float) -> int:
    """Stream the generated chat to ``path`` in ``kind``; returns the message count."""
    count = 0
    with open(path, "w") as file:
        if kind == "twitchdownloader":
            file.write('{"FileInfo": {}, "streamer": {"name": "made_up", "id": 1}, "comments": [')
        for offset, user, text, emotes in messages(hours, rate):
            if kind == "twitchdownloader":
                fragments = [{"text": text, "emoticon": {"emoticon_id": "1"} if emotes else None}]
                comment = {
                    "_id": f"c{count}",
                    "created_at": "2026-01-01T00:00:00Z",
                    "content_offset_seconds": offset,
                    "commenter": {"display_name": user, "_id": "1", "name": user},
                    "message": {"body": text, "fragments": fragments, "user_badges": [],
                                "user_color": "#1E90FF"},
                }  # fmt: skip
                file.write(("," if count else "") + json.dumps(comment))
            elif kind == "chat-downloader-lines":
                item = {"time_in_seconds": offset, "author": {"name": user}, "message": text,
                        "emotes": [{"name": e} for e in emotes]}  # fmt: skip
                file.write(json.dumps(item) + "\n")
            else:
                o = int(offset)
                file.write(f"[{o // 3600}:{o // 60 % 60:02d}:{o % 60:02d}] {user}: {text}\n")
            count += 1
        if kind == "twitchdownloader":
            file.write("]}")
    return count


CHILD = """
import json, resource, sys, time
import numpy as np
from highlightsense import chat
began = time.perf_counter()
messages = chat.read_chat(sys.argv[1])
parsed = time.perf_counter() - began
hours = float(sys.argv[2])
starts = np.arange(0.0, hours * 3600 - 30 + 1e-9, 5.0)
windows = np.stack([starts, starts + 30, np.zeros_like(starts)], axis=1)
began = time.perf_counter()
signal = chat.chat_signal(messages, windows)
scored = time.perf_counter() - began
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"messages": len(messages), "parse_s": parsed, "signal_s": scored,
                  "windows": len(windows), "bursts": int((signal.score > 0.9).sum()),
                  "peak_rss_mb": peak}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=20.0, help="messages per second")
    parser.add_argument("--format", choices=FORMATS, default="twitchdownloader")
    parser.add_argument("--scratch", type=Path, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.scratch) as scratch:
        path = Path(scratch) / "chat.json"
        began = time.perf_counter()
        count = write_chat(path, args.format, args.hours, args.rate)
        made = time.perf_counter() - began
        size = path.stat().st_size
        print(f"chat: {args.format}, {args.hours:g} h, {count} messages, {size / 1e6:.1f} MB "
              f"(made in {made:.1f} s)")  # fmt: skip
        child = subprocess.run(
            [sys.executable, "-c", CHILD, str(path), str(args.hours)],
            capture_output=True, text=True, timeout=3600, cwd=ROOT, check=True,
        )  # fmt: skip
        figures = json.loads(child.stdout.strip().splitlines()[-1])
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"messages read {figures['messages']}")
    print(f"parse seconds {figures['parse_s']:.2f} ({size / 1e6 / figures['parse_s']:.1f} MB/s)")
    print(f"signal seconds {figures['signal_s']:.2f} for {figures['windows']} windows "
          f"({figures['bursts']} above score 0.9)")  # fmt: skip
    print(f"peak RSS MB {figures['peak_rss_mb']:.0f} (this generator process: {baseline:.0f})")


if __name__ == "__main__":
    main()
