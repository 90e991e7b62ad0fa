"""Command-line faces of the training tools: ``train``, ``evaluate`` and ``preprocess``.

Each command is a pair, ``add_<name>_arguments(parser)`` and ``run_<name>(args) -> exit code``,
mounted by ``highlightsense.cli`` (``highlightsense train …``) and by this package's own
``python -m highlightsense.training …``. Library errors propagate: the caller turns a
:class:`~highlightsense.errors.UserError` into one line and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..model import ModelConfig
from .report import to_json, write_atomic
from .train import AMP_MODES, TrainConfig

DEFAULT_RUN_DIR = Path("runs") / "highlightsense"

# TrainConfig fields given as --options: (field, type, help). Defaults come from TrainConfig,
# or with --resume from the run's last.pt; an option given on the command line wins.
TRAIN_OPTIONS = (
    ("epochs", int, "epochs in all, counting those done before --resume"),
    ("batch_size", int, "clips per step and process"),
    ("lr", float, "AdamW learning rate"),
    ("weight_decay", float, "AdamW weight decay"),
    ("grad_clip", float, "maximum global gradient norm"),
    ("seed", int, "seed of initialisation, dropout, sampling and augmentation"),
    ("val_fraction", float, "fraction of each class held out for validation"),
    ("split_seed", int, "seed of the train/validation split"),
    ("threshold", float, "probability at which validation counts a highlight"),
    ("num_workers", int, "data-loading processes per training process"),
    ("device", str, "auto, cpu, cuda or cuda:N"),
)
MODEL_OPTIONS = (
    ("rnn_hidden", int, "GRU units per direction"),
    ("rnn_layers", int, "GRU layers"),
    ("attention_dim", int, "attention pooling width"),
    ("classifier_dim", int, "classifier hidden width"),
    ("max_frames", int, "padded clip length in frames; below 2584 only for quick experiments"),
)


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    defaults, model_defaults = TrainConfig(), ModelConfig()
    parser.add_argument(
        "data_dir", type=Path, help="folder holding base/Positive and base/Negative"
    )
    parser.add_argument(
        "-o",
        "--out",
        "--run-dir",
        dest="run_dir",
        type=Path,
        default=DEFAULT_RUN_DIR,
        help=f"where checkpoints, metrics and plots go (default: {DEFAULT_RUN_DIR})",
    )
    for name, kind, text in TRAIN_OPTIONS:
        parser.add_argument(
            _flag(name),
            type=kind,
            default=None,
            help=f"{text} (default: {getattr(defaults, name)})",
        )
    parser.add_argument(
        "--amp", choices=AMP_MODES, default=None, help="mixed precision (default: auto)"
    )
    parser.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    parser.add_argument(
        "--log-samples",
        action="store_true",
        default=None,
        help="debug: each process writes the clips it drew to RUN_DIR/samples/rank<N>.tsv",
    )
    model = parser.add_argument_group("model architecture (smaller models for experiments)")
    model.add_argument(
        "--channels",
        type=_int_list,
        default=None,
        help="conv widths, e.g. 8,16,32,64 "
        f"(default: {','.join(map(str, model_defaults.channels))})",
    )
    for name, kind, text in MODEL_OPTIONS:
        model.add_argument(
            _flag(name),
            type=kind,
            default=None,
            help=f"{text} (default: {getattr(model_defaults, name)})",
        )


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The options given → a TrainConfig (with --resume: last.pt's, updated by them)."""
    from .train import saved_config

    names = [name for name, _, _ in TRAIN_OPTIONS] + ["amp", "log_samples"]
    given = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    model_names = ["channels"] + [name for name, _, _ in MODEL_OPTIONS]
    model = {n: getattr(args, n) for n in model_names if getattr(args, n, None) is not None}
    if args.resume:
        return saved_config(args.run_dir, **given, model=model)
    return TrainConfig(**given, model=ModelConfig(**model))


def run_train(args: argparse.Namespace) -> int:
    from .train import print_progress, train

    result = train(args.data_dir, args.run_dir, train_config_from_args(args), print_progress)
    if result.best_epoch and _is_main_process():
        print(
            f"Best validation F1 {result.best_f1:.4f} at epoch {result.best_epoch}: "
            f"{result.run_dir / 'best_model.pt'}"
        )
    return 0


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", 0)) == 0


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    from .evaluate import SPLITS

    parser.add_argument(
        "data_dir", type=Path, help="folder holding base/Positive and base/Negative"
    )
    parser.add_argument(
        "--weights",
        default=None,
        help="a checkpoint, folder, hf://… or https://… (default: as `highlightsense detect`)",
    )
    parser.add_argument(
        "--split",
        choices=SPLITS,
        default="all",
        help="score every clip, or only training's validation (or training) part (default: all)",
    )
    parser.add_argument("--threshold", type=float, default=0.5, help="default: 0.5")
    parser.add_argument("--batch-size", type=int, default=32, help="default: 32")
    parser.add_argument("--num-workers", type=int, default=0, help="default: 0")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--amp", choices=AMP_MODES, default="off", help="default: off")
    parser.add_argument(
        "-o", "--output", type=Path, default=None, help="write the JSON here (default: stdout)"
    )


def run_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate, format_table

    result = evaluate(
        args.data_dir,
        args.weights,
        split=args.split,
        threshold=args.threshold,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        device=args.device,
        amp=args.amp,
    )
    if args.output is None:  # the JSON owns stdout, so it can be piped
        print(format_table(result), file=sys.stderr)
        sys.stdout.write(to_json(result))
    else:
        print(format_table(result))
        args.output.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(args.output, to_json(result))
    return 0


def add_preprocess_arguments(parser: argparse.ArgumentParser) -> None:
    from .preprocess import LABELS

    parser.add_argument("input_dir", type=Path, help="folder of media clips (searched recursively)")
    parser.add_argument("--label", required=True, choices=tuple(LABELS), help="the clips' class")
    parser.add_argument(
        "-o", "--output", type=Path, required=True, help="the data set folder (DATA_DIR)"
    )
    parser.add_argument(
        "--game",
        default=None,
        help="game of every clip (default: each clip's first folder under INPUT_DIR)",
    )
    parser.add_argument(
        "--separator",
        default=None,
        help="Demucs model (default: $HIGHLIGHTSENSE_SEPARATOR or htdemucs)",
    )
    parser.add_argument(
        "--separator-repo",
        default=None,
        help="a local Demucs model folder (default: $HIGHLIGHTSENSE_SEPARATOR_REPO or the hub)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--precision", choices=("fp32", "bf16"), default="fp32", help="separation precision"
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="Demucs segments per model call"
    )


def run_preprocess(args: argparse.Namespace) -> int:
    from .preprocess import preprocess, print_report
    from .train import print_progress

    report = preprocess(
        args.input_dir,
        args.output,
        label=args.label,
        game=args.game,
        separator=args.separator,
        separator_repo=args.separator_repo,
        device=args.device,
        precision=args.precision,
        batch_size=args.batch_size,
        progress=print_progress,
    )
    print_report(report)
    if report.skipped and not (report.written or report.existing):
        print(
            f"error: none of the {report.total} clips could be preprocessed (reasons above).",
            file=sys.stderr,
        )
        return 2
    return 0


COMMANDS = {
    "train": (add_train_arguments, run_train, "train the CRNN on a feature data set"),
    "evaluate": (add_evaluate_arguments, run_evaluate, "score a data set with trained weights"),
    "preprocess": (
        add_preprocess_arguments,
        run_preprocess,
        "turn media clips into a training data set",
    ),
}
