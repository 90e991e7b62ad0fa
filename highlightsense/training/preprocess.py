"""Media clips → a training data set: one feature file per clip, in the SPEC §6 layout.

Each clip goes through the app's own chain (:meth:`highlightsense.engine.Engine.features`:
decode → Demucs two stems → mono 22 050 Hz log-mel), so training features are exactly what
inference sees, and lands as ``DATA_DIR/base/<Positive|Negative>/<game>/<clip>.pt`` holding
``{'tensor': (2, 80, T ≤ 2584) float32, 'clip_name', 'game', 'label': 1 | 0}``.

Resumable: a clip whose ``.pt`` exists is not done again, and files are written under a
temporary name and renamed, so an interrupted run leaves no half-written file. A clip that cannot
be read is skipped and reported, not fatal. Under ``torchrun`` rank r takes clips r, r + N, ….
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import media
from ..engine import Engine
from ..errors import DataError, MediaError, ToolError
from ..files import atomic_path
from ..progress import Progress
from ..runtime import resolve_device
from ..settings import AnalysisSettings
from .data import TRAIN_FRAMES

LABELS = {"positive": 1, "negative": 0}  # --label → the label stored in each file
CLASS_FOLDERS = {1: "Positive", 0: "Negative"}
DEFAULT_GAME = "clips"  # the game folder of clips lying directly in INPUT_DIR
# What media.probe accepts (its ALLOWED_FORMATS), by file name.
MEDIA_SUFFIXES = frozenset({
    ".mp4", ".m4a", ".mov", ".mkv", ".webm", ".flv", ".ts",
    ".wav", ".mp3", ".ogg", ".flac", ".aac",
})  # fmt: skip


@dataclass
class PreprocessReport:
    """What one process did with its share of the clips."""

    written: list[Path] = field(default_factory=list)  # feature files made now
    existing: list[Path] = field(default_factory=list)  # feature files already there
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (clip, why)
    cropped: list[Path] = field(default_factory=list)  # clips longer than 60 s, cut to 60 s
    total: int = 0  # clips in this process's share
    seconds: float = 0.0


def find_media(input_dir: str | Path) -> list[Path]:
    """Media files under ``input_dir`` (recursively, by extension), sorted."""
    root = Path(input_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"No folder at {root}: pass the folder that holds the clips.")
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES and not p.name.startswith(".")
    )


def targets(
    clips: list[Path], input_dir: Path, output_dir: Path, label: int, game: str | None
) -> dict[Path, tuple[Path, str]]:
    """clip → (its feature file, its game). The game is ``game`` if given, else the clip's
    first folder under ``input_dir`` (``clips`` for clips lying in it directly)."""
    base = output_dir / "base" / CLASS_FOLDERS[label]
    stems: dict[Path, list[Path]] = {}
    for clip in clips:
        stems.setdefault(clip.with_suffix(""), []).append(clip)
    out = {}
    for clip in clips:
        relative = clip.relative_to(input_dir)
        if game:
            clip_game, inner = game, Path(game) / relative
        elif len(relative.parts) > 1:
            clip_game, inner = relative.parts[0], relative
        else:
            clip_game, inner = DEFAULT_GAME, Path(DEFAULT_GAME) / relative
        name = inner.stem
        if len(stems[clip.with_suffix("")]) > 1:  # a.mp4 beside a.wav: keep both
            name += "_" + clip.suffix.lstrip(".").lower()
        out[clip] = (base / inner.parent / f"{name}.pt", clip_game)
    return out


def _save(package: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:  # hidden while written: never taken for data
        torch.save(package, temporary)


def preprocess(
    input_dir: str | Path,
    output_dir: str | Path,
    *,
    label: str,
    game: str | None = None,
    separator: str | None = None,
    separator_repo: str | None = None,
    device: str = "auto",
    precision: str = "fp32",
    batch_size: int | None = None,
    progress: Progress | None = None,
) -> PreprocessReport:
    """Turn every media clip under ``input_dir`` into a feature file under ``output_dir``.

    label: "positive" or "negative". separator / separator_repo: the Demucs model, as for
    ``highlightsense detect`` (None: $HIGHLIGHTSENSE_SEPARATOR[_REPO], else htdemucs from the
    hub). Clips longer than 60 s are cut to their first 2584 frames. Media and decoding errors
    skip the clip (see the report); a bad setting or a missing separator stops the run.
    """
    if label not in LABELS:
        raise DataError(f"--label must be positive or negative, not {label!r}.")
    began = time.perf_counter()
    input_root, output_root = Path(input_dir).expanduser(), Path(output_dir).expanduser()
    clips = find_media(input_root)
    if not clips:
        raise DataError(f"{input_root} holds no media files ({', '.join(sorted(MEDIA_SUFFIXES))}).")
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    mine = clips[rank::world]
    where = targets(clips, input_root, output_root, LABELS[label], game)
    settings = AnalysisSettings(
        separator=separator,
        separator_repo=separator_repo,
        precision=precision,
        batch_size=batch_size,
        use_cache=False,
    )
    engine = Engine.create(settings, device=str(resolve_device(device, local_rank)))
    report = PreprocessReport(total=len(mine))
    for done, clip in enumerate(mine):
        path, clip_game = where[clip]
        if progress is not None:
            progress(done / len(mine), f"{clip.relative_to(input_root)}")
        if path.exists():
            report.existing.append(path)
            continue
        try:
            spec = engine.features(media.probe(clip))
        except (MediaError, ToolError) as exc:
            report.skipped.append((clip, str(exc)))
            continue
        if spec.shape[2] == 0:
            report.skipped.append((clip, "it has no audio frames"))
            continue
        if spec.shape[2] > TRAIN_FRAMES:
            report.cropped.append(clip)
        tensor = torch.from_numpy(spec[:, :, :TRAIN_FRAMES].copy()).float()  # (2, 80, T)
        package = {
            "tensor": tensor,
            "clip_name": clip.stem,
            "game": clip_game,
            "label": LABELS[label],
        }
        _save(package, path)
        report.written.append(path)
    report.seconds = time.perf_counter() - began
    if progress is not None:
        progress(1.0, "done")
    return report


def print_report(report: PreprocessReport, stream=None) -> None:
    """A summary, then every skipped clip with its reason."""
    stream = stream or sys.stderr
    rank = int(os.environ.get("RANK", 0))
    who = f"[rank {rank}] " if int(os.environ.get("WORLD_SIZE", 1)) > 1 else ""
    print(
        f"{who}{len(report.written)} clip(s) preprocessed, {len(report.existing)} already done, "
        f"{len(report.skipped)} skipped, of {report.total}, in {report.seconds:.0f} s"
        + (f"; {len(report.cropped)} cut to 60 s" if report.cropped else "")
        + ".",
        file=stream,
    )
    for clip, reason in report.skipped:
        print(f"{who}skipped {clip}: {reason}", file=stream)
