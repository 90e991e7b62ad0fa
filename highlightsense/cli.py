"""Command line: ``highlightsense detect VOD``, ``export-weights``, and the training commands.

A thin client of :func:`highlightsense.analyze`. A user's mistake (a
:class:`~highlightsense.errors.UserError`) becomes one line on stderr and exit code 2; anything
else is a bug and exits 1 with its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Sequence

from .errors import Cancelled, UserError

EXIT_USER_ERROR = 2
EXIT_INTERNAL = 1
BAR_WIDTH = 28  # characters of the progress bar
REDRAW_SECONDS = 0.2  # s between progress redraws on a terminal
LOG_SECONDS = 5.0  # s between progress lines when stderr is a file or pipe


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
        elapsed = now - self.started
        eta = elapsed * (1 - fraction) / fraction if fraction > 0.01 else None
        filled = int(BAR_WIDTH * fraction)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        eta_text = f"ETA {_clock(eta)}" if eta is not None else "ETA --:--"
        line = f"[{bar}] {fraction * 100:5.1f}% {eta_text}  {message}"
        if self.tty:
            self.stream.write("\r\033[K" + line[:160])
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _tracks(text: str) -> tuple[int, int]:
    """'voice=1,game=2' → (1, 2)."""
    parts = dict(part.split("=", 1) for part in text.split(",") if "=" in part)
    try:
        return int(parts["voice"]), int(parts["game"])
    except (KeyError, ValueError) as exc:
        raise argparse.ArgumentTypeError("use --tracks voice=N,game=M (tracks from 1)") from exc


def add_detect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="a local video/audio file or a Twitch/YouTube VOD link")
    parser.add_argument("-o", "--out", help="output folder (default ./highlights/<input name>)")
    parser.add_argument("--weights", help="model weights: path, hf://owner/repo, or https URL")
    parser.add_argument("--separator", help="Demucs model name (default htdemucs)")
    parser.add_argument("--separator-repo", help="local Demucs model folder (offline use)")
    parser.add_argument(
        "--tracks", type=_tracks, help="use the file's own voice and game tracks: voice=1,game=2"
    )
    parser.add_argument("--window", type=float, default=30.0, help="seconds per clip (≤ 60)")
    parser.add_argument("--stride", type=float, default=5.0, help="seconds between windows")
    pick = parser.add_mutually_exclusive_group()
    pick.add_argument("--percentile", type=float, default=99.0, help="keep windows ≥ this pct")
    pick.add_argument("--threshold", type=float, help="keep windows ≥ this probability instead")
    parser.add_argument("--nms", type=float, default=10.0, help="min seconds between clip starts")
    parser.add_argument("--top-n", type=int, default=20, help="clips at most")
    parser.add_argument("--pad-before", type=float, default=0.0, help="seconds added before")
    parser.add_argument("--pad-after", type=float, default=0.0, help="seconds added after")
    parser.add_argument("--copy", action="store_true", help="fast stream copy (keyframe cuts)")
    parser.add_argument("--no-clips", action="store_true", help="write the tables only")
    parser.add_argument("--keep-stems", action="store_true", help="also write stems/*.wav")
    parser.add_argument("--no-cache", action="store_true", help="do not reuse cached features")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    parser.add_argument("--batch-size", type=int, help="windows per forward pass")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")


def run_detect(args: argparse.Namespace) -> int:
    from .media import format_timestamp
    from .pipeline import analyze

    bar = None if args.quiet else ProgressBar()
    try:
        result = analyze(
            args.input,
            out_dir=args.out,
            progress=bar,
            weights=args.weights,
            separator=args.separator,
            separator_repo=args.separator_repo,
            tracks=args.tracks,
            window_sec=args.window,
            stride_sec=args.stride,
            percentile=args.percentile,
            threshold=args.threshold,
            nms_sec=args.nms,
            top_n=args.top_n,
            pad_before=args.pad_before,
            pad_after=args.pad_after,
            copy=args.copy,
            clips=not args.no_clips,
            keep_stems=args.keep_stems,
            device=args.device,
            precision=args.precision,
            batch_size=args.batch_size,
            use_cache=not args.no_cache,
        )
    finally:
        if bar is not None:
            bar.close()
    windows = len(result.windows)
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
        "export-weights": (
            "write a checkpoint as safetensors + config for the Hub",
            add_export_arguments,
            run_export,
        ),
    }
    try:
        from .training import commands as training
    except ImportError:  # the training extras are optional for the command line
        return commands
    commands["preprocess"] = (
        "media clips → training features (.pt)",
        training.add_preprocess_arguments,
        training.run_preprocess,
    )
    commands["train"] = (
        "train the CRNN (torchrun for several processes)",
        training.add_train_arguments,
        training.run_train,
    )
    commands["evaluate"] = (
        "measure a checkpoint on a data set",
        training.add_evaluate_arguments,
        training.run_evaluate,
    )
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.simplefilter("default")
    os.environ.setdefault("TQDM_DISABLE", "1")  # Demucs' own bars would garble ours
    try:
        return args.run(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (Cancelled, KeyboardInterrupt):
        print("error: cancelled; nothing was written.", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        print(
            "error: an internal error occurred (details above); please report it.", file=sys.stderr
        )
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
