"""Command line: ``highlightsense detect VOD``, ``export-weights``, and the training commands.

A thin client of :func:`highlightsense.analyze`. A user's mistake (a
:class:`~highlightsense.errors.UserError`) becomes one line on stderr and exit code 2; anything
else is a bug and exits 1 with its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import signal
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from .errors import Cancelled, UserError
from .outfolder import disk_error, is_disk_error
from .progress import eta_seconds
from .settings import (
    CAPTION_MODES,
    CHAT_ON_ERROR,
    DEFAULT_SEPARATOR,
    DEVICES,
    PRECISIONS,
    SEPARATOR_RUNTIMES,
    TIMELINE_ORDERS,
    VERTICAL_LAYOUTS,
)
from .timecode import format_duration, format_timestamp

EXIT_USER_ERROR = 2
EXIT_INTERNAL = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM
BAR_WIDTH = 28  # characters of the progress bar
REDRAW_SECONDS = 0.2  # s between progress redraws on a terminal
LOG_SECONDS = 5.0  # s between progress lines when stderr is a file or pipe
STOPPED = "nothing was written."  # what an interrupted command says it left (batch: its own)


class ProgressBar:
    """``progress(fraction, message)`` drawn on stderr as a bar with percent and ETA."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.started = time.monotonic()
        self.last = 0.0
        self.tty = stream.isatty()

    def __call__(self, fraction: float, message: str) -> None:
        now = time.monotonic()
        if now - self.last < (REDRAW_SECONDS if self.tty else LOG_SECONDS) and fraction < 1.0:
            return
        self.last = now
        eta = eta_seconds(fraction, now - self.started)
        filled = int(BAR_WIDTH * fraction)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        eta_text = f"ETA {format_duration(eta)}" if eta is not None else "ETA --:--"
        line = f"[{bar}] {fraction * 100:5.1f}% {eta_text}  {message}"
        if self.tty:
            self.stream.write("\r\033[K" + line[:160])
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")


def _tracks(text: str) -> tuple[int, int]:
    """'voice=1,game=2' → (1, 2)."""
    parts = dict(part.split("=", 1) for part in text.split(",") if "=" in part)
    try:
        return int(parts["voice"]), int(parts["game"])
    except (KeyError, ValueError) as exc:
        raise argparse.ArgumentTypeError("use --tracks voice=N,game=M (tracks from 1)") from exc


def _timeline_kinds(text: str) -> tuple[str, ...]:
    from .errors import SettingsError
    from .settings import parse_kinds

    try:
        return parse_kinds(text)
    except SettingsError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _chat_words(text: str) -> tuple[str, ...]:
    from .chat import parse_words
    from .errors import ChatError

    try:
        return parse_words(text)
    except ChatError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_detect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="a local video/audio file or a Twitch/Kick/YouTube VOD link")
    parser.add_argument("-o", "--out", help="output folder (default ./highlights/<input name>)")
    add_settings_arguments(parser)


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """The detect flags (batch has them too). Each one's ``dest`` names a field of
    ``AnalysisSettings`` or ``Selection`` (highlightsense.settings), and flags not given are left
    out, so the defaults live in those dataclasses alone."""
    from .settings import AnalysisSettings as A
    from .settings import Selection as S

    def flag(*names: str, **options: object) -> None:
        parser.add_argument(*names, default=argparse.SUPPRESS, **options)

    flag("--weights", help="model weights: path, hf://owner/repo, or https URL")
    flag("--separator", help=f"Demucs model name (default {DEFAULT_SEPARATOR})")
    flag("--separator-repo", help="local Demucs model folder (offline use)")
    flag("--tracks", type=_tracks, help="use the file's own voice and game tracks: voice=1,game=2")
    flag(
        "--window", dest="window_sec", type=float, help=f"seconds per clip (≤ 60; {A.window_sec:g})"
    )
    flag(
        "--stride",
        dest="stride_sec",
        type=float,
        help=f"seconds between windows ({A.stride_sec:g})",
    )
    pick = parser.add_mutually_exclusive_group()
    pick.add_argument(
        "--percentile",
        type=float,
        default=argparse.SUPPRESS,
        help=f"keep windows ≥ this pct ({S.percentile:g})",
    )
    pick.add_argument(
        "--threshold",
        type=float,
        default=argparse.SUPPRESS,
        help="keep windows ≥ this probability instead",
    )
    flag(
        "--nms", dest="nms_sec", type=float, help=f"min seconds between clip starts ({S.nms_sec:g})"
    )
    flag("--top-n", type=int, help=f"clips at most ({S.top_n})")
    flag("--pad-before", type=float, help="seconds added before each clip (0)")
    flag("--pad-after", type=float, help="seconds added after each clip (0)")
    flag("--copy", action="store_true", help="fast stream copy (keyframe cuts)")
    flag("--no-clips", dest="clips", action="store_false", help="write the tables only")
    flag("--keep-stems", action="store_true", help="also write stems/*.wav")
    flag(
        "--timeline",
        dest="timelines",
        type=_timeline_kinds,
        help="editor timelines to write: any of otio,fcp7xml,fcpxml,edl,chapters (or all)",
    )
    flag("--timeline-order", choices=TIMELINE_ORDERS, help="rough cut in rank or time order")
    flag("--vertical", choices=VERTICAL_LAYOUTS, help="also cut 9:16 clips: stack, crop or fit")
    flag(
        "--facecam",
        help="stack: the facecam region x,y,w,h in pixels or fractions (default: detected)",
    )
    flag("--gameplay", help="stack: the gameplay region x,y,w,h (default: the whole frame)")
    flag("--center-x", help="crop: the crop's centre in pixels or as a fraction of the width")
    flag("--chat", help="chat replay file to fuse with the audio (TwitchDownloader, twitch-dl, "
         "chat-downloader JSON or a [H:MM:SS] name: message log)")  # fmt: skip
    flag("--chat-weight", type=float, help=f"share of chat in the score, 0-1 ({S.chat_weight:g})")
    flag("--chat-words", type=_chat_words, help="the community's reaction words: KEKW,Pog,…")
    flag("--chat-on-error", choices=CHAT_ON_ERROR, help="an unusable chat file stops the run "
         "(stop) or is left out (audio)")  # fmt: skip
    flag(
        "--captions",
        choices=CAPTION_MODES,
        help="captions from the voice: burn (drawn in), soft (subtitle track), files (.srt/.vtt)",
    )
    flag("--language", help="the speech's language for captions, an ISO code (default: detected)")
    flag("--no-cache", dest="use_cache", action="store_false", help="do not reuse cached features")
    flag("--device", choices=DEVICES, help=f"where the models run ({A.device})")
    flag("--precision", choices=PRECISIONS, help=f"separation precision ({A.precision})")
    flag(
        "--separator-runtime",
        choices=SEPARATOR_RUNTIMES,
        help=f"what runs Demucs' network ({A.separator_runtime}: OpenVINO on CPUs at bf16)",
    )
    flag("--batch-size", type=int, help="windows per forward pass (default: per device)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")


def run_detect(args: argparse.Namespace) -> int:
    from .pipeline import detect
    from .settings import AnalysisSettings, Selection

    settings, chosen = AnalysisSettings.pick(vars(args)), Selection.pick(vars(args))
    bar = None if args.quiet else ProgressBar()
    try:
        result = detect(args.input, settings, chosen, out_dir=args.out, progress=bar)
    finally:
        if bar is not None:
            bar.close()
    windows = len(result.windows)
    for fused in result.signals:  # (a chat left out said so in a warning)
        print(f"Fused with the {fused.name} at weight {fused.weight:g}.")
    if not result.highlights:
        print(
            f"No highlights: none of the {windows} windows reached the threshold "
            f"{result.threshold:.3f}; try a lower --percentile or --threshold. "
            f"Scores are in {result.out_dir}.",
        )
        return 0
    print(f"{len(result.highlights)} highlights from {windows} windows in {result.out_dir}:")
    for h in result.highlights:
        clip = result.clip_paths[h.rank - 1].name if result.clip_paths else "-"
        print(
            f"  #{h.rank:<2} {format_timestamp(h.start_sec)}–{format_timestamp(h.end_sec)}"
            f"  confidence {h.confidence:.3f}  {clip}"
        )
        if result.transcripts:
            print(f"      “{result.transcripts[h.rank - 1].text or '(no speech)'}”")
    if result.vertical_note:
        print(f"Vertical clips in {result.vertical_paths[0].parent}: {result.vertical_note}")
    for path in result.timeline_paths:
        print(f"Timeline: {path}")
    return 0


def _date(text: str) -> datetime.date:
    try:
        return datetime.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError("use --since YYYY-MM-DD") from exc


def add_batch_arguments(parser: argparse.ArgumentParser) -> None:
    from .batch import MAX_CHANNEL_VODS

    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="files, folders, Twitch/YouTube links, channel video pages, playlists or @list.txt",
    )
    parser.add_argument("-o", "--out", required=True, help="the batch's output folder")
    parser.add_argument(
        "--executor", choices=("local", "ray"), default="local", help="where VODs run (local)"
    )
    parser.add_argument("--ray-address", help="a Ray cluster (default: start a local runtime)")
    parser.add_argument(
        "--digest", type=int, default=20, help="best moments of all VODs in the digest (20)"
    )
    parser.add_argument(
        "--limit", type=int, default=MAX_CHANNEL_VODS, help="VODs per channel or playlist"
    )
    parser.add_argument("--since", type=_date, help="channel VODs published since YYYY-MM-DD")
    add_settings_arguments(parser)
    parser.set_defaults(
        stopped="the VODs finished so far are kept; run the same command again to go on."
    )


def run_batch(args: argparse.Namespace) -> int:
    from .batch import FAILED, VodRow, batch
    from .settings import AnalysisSettings, Selection

    settings, chosen = AnalysisSettings.pick(vars(args)), Selection.pick(vars(args))

    bar = None if args.quiet else ProgressBar()

    def line(row: VodRow) -> None:
        """One line per finished VOD, above the bar (a terminal's bar line is cleared first)."""
        clear = "\r\033[K" if bar is not None and bar.tty else ""
        if row.status == FAILED:
            print(f"{clear}failed  {row.folder}: {row.error}", file=sys.stderr)
        else:
            top = f", best at {format_timestamp(row.top_start_sec)}" if row.highlights else ""
            print(f"{clear}done    {row.folder}: {row.highlights} highlights{top}", file=sys.stderr)

    try:
        result = batch(
            args.inputs,
            args.out,
            settings,
            chosen,
            executor=args.executor,
            ray_address=args.ray_address,
            digest=args.digest,
            limit=args.limit,
            since=args.since,
            progress=bar,
            on_vod=None if args.quiet else line,
        )
    finally:
        if bar is not None:
            bar.close()
    if result.duplicates:
        print(f"{result.duplicates} input(s) given more than once were analysed once.")
    done = len(result.rows) - result.failed
    print(f"Report: {result.out_dir / 'index.html'}")
    if result.failed:
        print(f"{done} of {len(result.rows)} VODs done; {result.failed} failed (see batch.csv).")
        return EXIT_USER_ERROR
    print(f"{done} of {len(result.rows)} VODs done.")
    return 0


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a best_model.pt (either state-dict naming)")
    parser.add_argument("out_dir", help="folder for model.safetensors, config.json, README.md")


def run_export(args: argparse.Namespace) -> int:
    from .weights import export_weights

    out = export_weights(args.checkpoint, args.out_dir)
    print(f"Wrote {out}; upload it with `huggingface-cli upload <owner>/<repo> {out}`.")
    return 0


def _commands() -> dict[str, tuple[str, Callable, Callable]]:
    commands = {
        "detect": ("find the highlights of a VOD", add_detect_arguments, run_detect),
        "batch": ("find the highlights of many VODs", add_batch_arguments, run_batch),
        "export-weights": (
            "write a checkpoint as safetensors + config for the Hub",
            add_export_arguments,
            run_export,
        ),
    }
    from .training.commands import COMMANDS

    for name, (add_arguments, run, help_text) in COMMANDS.items():
        commands[name] = (help_text, add_arguments, run)
    return commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="highlightsense",
        description="Turn a long game-stream VOD into its best clips, judged by audio excitement.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_arguments, run) in _commands().items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(command)
        command.set_defaults(run=run)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so it unwinds like Ctrl-C: tools killed, staging
    removed."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, a service manager, a container stopping) behaves like Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    before = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.simplefilter("default")
    os.environ.setdefault("TQDM_DISABLE", "1")  # Demucs' own bars would garble ours
    try:
        with _sigterm_as_interrupt():
            return args.run(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as err:
        if not is_disk_error(err):
            raise
        # A folder outside the output (the cache, a temporary folder) that cannot be written.
        folder = Path(err.filename).parent if err.filename else Path.cwd()
        print(f"error: {disk_error(err, folder)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Terminated:
        print(f"error: terminated; {getattr(args, 'stopped', STOPPED)}", file=sys.stderr)
        return EXIT_TERMINATED
    except (Cancelled, KeyboardInterrupt):
        print(f"error: cancelled; {getattr(args, 'stopped', STOPPED)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:
        traceback.print_exc()
        print(
            "error: an internal error occurred (details above); please report it.", file=sys.stderr
        )
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
