"""Score a data set with a trained model: loss, precision, recall, F1, ROC-AUC, PR-AUC.

Clips are only padded (no augmentation), as in validation. ``split="val"`` scores the same
held-out 15 % that training validated on (same fraction and seed), ``"all"`` every clip.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch.utils.data import DataLoader

from .. import weights as weights_module
from ..errors import SettingsError
from ..runtime import resolve_device
from .data import SPLIT_SEED, VAL_FRACTION, ClipDataset, find_samples, stratified_split
from .metrics import THRESHOLD, classification_metrics
from .train import predict, resolve_amp

SPLITS = ("all", "val", "train")


def evaluate(
    data_dir: str | Path,
    weights: str | os.PathLike | None = None,
    *,
    split: str = "all",
    threshold: float = THRESHOLD,
    batch_size: int = 32,
    num_workers: int = 0,
    device: str = "auto",
    amp: str = "off",
    val_fraction: float = VAL_FRACTION,
    split_seed: int = SPLIT_SEED,
) -> dict:
    """Metrics of ``weights`` (anything :func:`highlightsense.weights.load` takes) on a data set.

    Returns the weights' identity, the split and :func:`classification_metrics` (loss,
    accuracy, precision, recall, F1 at ``threshold``, ROC-AUC, PR-AUC, confusion counts and the
    threshold that maximises F1).
    """
    if split not in SPLITS:
        raise SettingsError(f"--split must be one of {', '.join(SPLITS)}, not {split!r}.")
    if not 0 < threshold < 1 or batch_size < 1 or num_workers < 0:
        raise SettingsError(
            "--threshold must be between 0 and 1, --batch-size positive, --num-workers ≥ 0."
        )
    samples = find_samples(data_dir)
    if split != "all":
        train_ids, val_ids = stratified_split([s.label for s in samples], val_fraction, split_seed)
        samples = [samples[i] for i in (val_ids if split == "val" else train_ids)]
    target = resolve_device(device)
    loaded = weights_module.load(weights, str(target))
    clips = ClipDataset(samples, train=False, frames=loaded.model.config.max_frames)
    loader = DataLoader(clips, batch_size=batch_size, num_workers=num_workers)
    _, logits, labels = predict(loaded.model, loader, target, resolve_amp(amp, target))
    return {
        "weights": loaded.identity,
        "data_dir": str(data_dir),
        "split": split,
        **classification_metrics(logits, labels, threshold),
    }


def format_table(result: dict) -> str:
    """The metrics as an aligned two-column table, with the confusion matrix below."""
    rows = [
        ("weights", result["weights"]),
        (
            "clips",
            f"{result['n']} ({result['positives']} positive, {result['negatives']} negative)",
        ),
        ("loss", f"{result['loss']:.4f}"),
        ("accuracy", f"{result['accuracy']:.4f}"),
        (f"precision @ {result['threshold']:g}", f"{result['precision']:.4f}"),
        (f"recall @ {result['threshold']:g}", f"{result['recall']:.4f}"),
        (f"F1 @ {result['threshold']:g}", f"{result['f1']:.4f}"),
        ("ROC-AUC", f"{result['roc_auc']:.4f}"),
        ("PR-AUC (AP)", f"{result['pr_auc']:.4f}"),
        ("best threshold", f"{result['best_threshold']:.4f} (F1 {result['best_f1']:.4f})"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    c = result["confusion"]
    lines += [
        "",
        f"{'':<{width}}  predicted +  predicted -",
        f"{'actual +':<{width}}  {c['tp']:>11}  {c['fn']:>11}",
        f"{'actual -':<{width}}  {c['fp']:>11}  {c['tn']:>11}",
    ]
    return "\n".join(lines)
