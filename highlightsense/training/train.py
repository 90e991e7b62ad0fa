"""Train the CRNN on a SPEC §6 data set, on one device or under ``torchrun``.

A run directory holds everything a run makes: ``best_model.pt`` (by validation F1, in the
published format, loadable as is by :func:`highlightsense.weights.load_model`), ``last.pt``
(model, optimizer, RNG states: what ``--resume`` continues from), ``metrics.csv``,
``metrics.json``, ``loss.html`` and ``pr_curve.html``.

Under ``torchrun --nproc_per_node N`` every process trains a DistributedDataParallel replica on
its own class-balanced draw of ``len(train) / N`` clips per epoch (seeded by seed, epoch and rank,
so ranks see different clips), validation is split across ranks and gathered, and only rank 0
writes files. Runs are reproducible: the same seed on the same hardware gives the same metrics,
and a resumed run continues exactly where an uninterrupted one would have gone.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ..errors import DataError, SettingsError
from ..files import atomic_path
from ..model import CRNN, ModelConfig
from ..progress import Progress
from ..runtime import resolve_device
from . import report
from .data import (
    SPLIT_SEED,
    VAL_FRACTION,
    BalancedSampler,
    ClipDataset,
    find_samples,
    mix_seed,
    stratified_split,
)
from .metrics import THRESHOLD, classification_metrics, pr_curve, sigmoid

BEST_NAME = "best_model.pt"
LAST_NAME = "last.pt"
SAMPLES_DIR = "samples"  # --log-samples: one file of drawn clips per rank
AMP_MODES = ("auto", "bf16", "fp16", "off")
LOG_EVERY = 50  # training steps between progress messages


@dataclass(frozen=True)
class TrainConfig:
    """How to train; every field is a ``highlightsense train`` option."""

    epochs: int = 10  # in all, counting those done before a --resume
    batch_size: int = 32  # clips per step and process (SPEC §6; the notebook's config said 64)
    lr: float = 1e-4  # AdamW learning rate
    weight_decay: float = 1e-5  # AdamW
    grad_clip: float = 1.0  # maximum global gradient norm
    seed: int = 42  # model init, dropout, class-balanced draws and augmentation
    val_fraction: float = VAL_FRACTION  # of each class, held out
    split_seed: int = SPLIT_SEED  # the train/validation split's seed (random_state 42)
    threshold: float = THRESHOLD  # probability at which validation counts a highlight
    num_workers: int = 2  # data-loading processes per training process (0 = in-process)
    device: str = "auto"  # "auto": CUDA when there is a GPU (warns on CPU), or cpu/cuda/cuda:N
    amp: str = "auto"  # "auto": bf16 (fp16 + GradScaler if unsupported) on CUDA, off on CPU
    resume: bool = False  # continue from run_dir/last.pt
    log_samples: bool = False  # debug: each rank writes the clips it drew to run_dir/samples/
    model: ModelConfig = field(default_factory=ModelConfig)  # the architecture to train

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "model": self.model.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["model"] = ModelConfig.from_dict(known.get("model") or {})
        return cls(**known)


@dataclass
class TrainResult:
    history: list[dict]  # one row of metrics per epoch
    best_epoch: int
    best_f1: float
    model: CRNN  # the final epoch's model, eval mode
    run_dir: Path


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


# --- setup -------------------------------------------------------------------------------------


def _ranks_from_env() -> Ranks:
    """torchrun's RANK / LOCAL_RANK / WORLD_SIZE, or a single process."""
    return Ranks(
        rank=int(os.environ.get("RANK", 0)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
    )


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``mode`` on ``device``, or None for full float32."""
    if mode not in AMP_MODES:
        raise SettingsError(f"--amp must be one of {', '.join(AMP_MODES)}, not {mode!r}.")
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode == "fp16" and device.type != "cuda":
        raise SettingsError("fp16 mixed precision needs a CUDA GPU; use --amp bf16 or off.")
    if mode == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if mode == "bf16" else torch.float16


def check_config(config: TrainConfig) -> None:
    positive = ("epochs", "batch_size", "lr", "grad_clip")
    for name in positive:
        if not getattr(config, name) > 0:
            raise SettingsError(f"--{name.replace('_', '-')} must be positive.")
    if config.weight_decay < 0 or config.num_workers < 0:
        raise SettingsError("--weight-decay and --num-workers cannot be negative.")
    if not 0 < config.val_fraction < 1:
        raise SettingsError("--val-fraction must be between 0 and 1.")
    if not 0 < config.threshold < 1:
        raise SettingsError("--threshold must be between 0 and 1.")
    if len(config.model.channels) != len(config.model.pools):
        raise SettingsError(
            f"The model needs one pool per conv block: {len(config.model.channels)} channel "
            f"widths were given for {len(config.model.pools)} pools."
        )
    reduction = int(np.prod([time for _, time in config.model.pools]))
    if config.model.max_frames < reduction:
        raise SettingsError(
            f"--max-frames must be at least {reduction} (the model's time pooling)."
        )


def saved_config(run_dir: str | Path, **overrides) -> TrainConfig:
    """The TrainConfig that ``run_dir/last.pt`` was trained with, updated by ``overrides``
    (``model`` overrides are ModelConfig field values) and marked to resume."""
    state = _read_last(Path(run_dir) / LAST_NAME)
    config = TrainConfig.from_dict(state["train_config"])
    model_overrides = overrides.pop("model", {})
    model = dataclasses.replace(config.model, **model_overrides)
    return dataclasses.replace(config, **overrides, model=model, resume=True)


def _read_last(path: Path) -> dict:
    if not path.is_file():
        raise SettingsError(f"There is no {path} to resume from: start the run without --resume.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise SettingsError(
            f"{path} cannot be read ({type(exc).__name__}); it is damaged."
        ) from exc


# --- checkpoints -------------------------------------------------------------------------------


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def published_checkpoint(model: CRNN, epochs: int) -> dict:
    """``{'model': state dict, 'epochs': n}`` as the published best_model.pt, plus the model's
    'config' when it is not the published architecture."""
    package = {"model": _cpu_state(model), "epochs": epochs}
    if model.config != ModelConfig():
        package["config"] = model.config.to_dict()
    return package


def _save(package: dict, path: Path) -> None:
    with atomic_path(path) as temporary:
        torch.save(package, temporary)


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _gather(obj: object, ranks: Ranks) -> list:
    if ranks.world_size == 1:
        return [obj]
    gathered: list = [None] * ranks.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


# --- one epoch ---------------------------------------------------------------------------------


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def _train_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    config: TrainConfig,
    device: torch.device,
    amp: torch.dtype | None,
    ranks: Ranks,
    drawn: list[int],
    say: Callable[[str], None],
) -> float:
    """One pass over this rank's draws; returns the mean training loss over all ranks."""
    model.train()
    criterion = nn.BCEWithLogitsLoss()
    total = torch.zeros(2, dtype=torch.float64, device=device)  # (loss sum, clips)
    for step, (x, mask, y, index) in enumerate(loader, 1):
        drawn.extend(index.tolist())
        x, mask, y = (t.to(device, non_blocking=True) for t in (x, mask, y))
        with _autocast(device, amp):
            logits, _ = model(x, mask)  # (B,)
        loss = criterion(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        total[0] += loss.detach().double() * len(y)
        total[1] += len(y)
        if step % LOG_EVERY == 0:
            say(f"step {step}/{len(loader)}, loss {loss.item():.4f}")
    if ranks.world_size > 1:
        dist.all_reduce(total)
    return float(total[0] / total[1])


@torch.no_grad()
def predict(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    amp: torch.dtype | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indices, logits, labels) of every clip the loader yields, model in eval mode."""
    model.eval()
    indices, logits, labels = [], [], []
    for x, mask, y, index in loader:
        with _autocast(device, amp):
            out, _ = model(x.to(device, non_blocking=True), mask.to(device, non_blocking=True))
        logits.append(out.float().cpu().numpy())
        labels.append(y.numpy())
        indices.append(index.numpy())
    if not indices:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
    return np.concatenate(indices), np.concatenate(logits), np.concatenate(labels)


def _validate(
    model: CRNN, loader: DataLoader, device: torch.device, amp, ranks: Ranks, threshold: float
) -> tuple[dict, dict]:
    """Metrics over the whole validation set (each rank scores its shard), and its PR curve."""
    shards = _gather(predict(model, loader, device, amp), ranks)
    indices, logits, labels = (np.concatenate(parts) for parts in zip(*shards, strict=True))
    order = np.argsort(indices)  # the same order whatever the number of ranks
    logits, labels = logits[order], labels[order].astype(np.int64)
    return classification_metrics(logits, labels, threshold), pr_curve(sigmoid(logits), labels)


# --- the run -----------------------------------------------------------------------------------


def train(
    data_dir: str | Path,
    run_dir: str | Path,
    config: TrainConfig | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Train (or with ``config.resume``, continue training) a CRNN; see the module docstring.

    Under torchrun this joins the process group (gloo on CPU, nccl on CUDA) and leaves it at the
    end. ``progress(fraction, message)`` is called on rank 0 only.
    """
    config = config or TrainConfig()
    check_config(config)
    ranks = _ranks_from_env()
    device = resolve_device(config.device, ranks.local_rank)
    if device.type == "cpu" and config.device == "auto":
        warnings.warn("No CUDA GPU found: training on the CPU, which is slow.", stacklevel=2)
    joined = False
    if ranks.world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        joined = True
    try:
        return _run(Path(data_dir), Path(run_dir), config, ranks, device, progress)
    finally:
        if joined:
            dist.destroy_process_group()


def _loaders(samples, config: TrainConfig, ranks: Ranks, device: torch.device):
    labels = [s.label for s in samples]
    train_ids, val_ids = stratified_split(labels, config.val_fraction, config.split_seed)
    if not val_ids or len({labels[i] for i in train_ids}) < 2:
        raise DataError(
            f"{len(samples)} clips are too few to hold out {config.val_fraction:.0%} of each "
            "class for validation and still train on both: add clips."
        )
    frames = config.model.max_frames
    train_set = ClipDataset([samples[i] for i in train_ids], train=True, frames=frames)
    val_set = ClipDataset([samples[i] for i in val_ids], train=False, frames=frames)
    sampler = BalancedSampler(train_set.labels, config.seed, ranks.rank, ranks.world_size)
    common = {
        "batch_size": config.batch_size,
        "num_workers": config.num_workers,
        "pin_memory": device.type == "cuda",
        "persistent_workers": config.num_workers > 0,
        # a private generator: loaders never draw from the global RNG that dropout uses
        "generator": torch.Generator().manual_seed(config.seed),
    }
    train_loader = DataLoader(train_set, sampler=sampler, **common)
    shard = list(range(ranks.rank, len(val_set), ranks.world_size))
    val_loader = DataLoader(val_set, sampler=shard, **common)
    return train_set, val_set, sampler, train_loader, val_loader


def _restore(
    saved: dict,
    model: CRNN,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    config: TrainConfig,
    ranks: Ranks,
    device: torch.device,
) -> tuple[list[dict], int, float]:
    """Load last.pt's state into the run; returns (history, best epoch, best F1)."""
    if ModelConfig.from_dict(saved["config"]) != config.model:
        raise SettingsError(
            f"{LAST_NAME} holds a model of another architecture; resume without model options."
        )
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    for group in optimizer.param_groups:  # options given now win over the saved ones
        group["lr"], group["weight_decay"] = config.lr, config.weight_decay
    scaler.load_state_dict(saved["scaler"])
    rng = saved["rng"]
    if len(rng) == ranks.world_size:
        _set_rng_state(rng[ranks.rank], device)
    else:
        warnings.warn(
            f"{LAST_NAME} was written by {len(rng)} processes, not {ranks.world_size}: the run "
            "goes on, but not exactly as it would have without the interruption.",
            stacklevel=3,
        )
    return saved["history"], saved["best_epoch"], saved["best_f1"]


def _run(
    data_dir: Path,
    run_dir: Path,
    config: TrainConfig,
    ranks: Ranks,
    device: torch.device,
    progress: Progress | None,
) -> TrainResult:
    amp = resolve_amp(config.amp, device)
    last_path, best_path = run_dir / LAST_NAME, run_dir / BEST_NAME
    if not config.resume and last_path.exists():
        raise SettingsError(
            f"{run_dir} already holds a run: pass --resume to continue it, or another --run-dir."
        )
    saved = _read_last(last_path) if config.resume else None
    if ranks.main or config.log_samples:
        run_dir.mkdir(parents=True, exist_ok=True)

    samples = find_samples(data_dir)
    train_set, val_set, sampler, train_loader, val_loader = _loaders(samples, config, ranks, device)

    torch.manual_seed(config.seed)  # the same initial weights on every rank
    model = CRNN(config.model).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    torch.manual_seed(mix_seed(config.seed, ranks.rank))  # dropout differs between ranks
    history, best_epoch, best_f1 = [], 0, -1.0
    if saved is not None:
        history, best_epoch, best_f1 = _restore(
            saved, model, optimizer, scaler, config, ranks, device
        )
    start = len(history)
    wrapped = model
    if ranks.world_size > 1:
        wrapped = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    def say(message: str, fraction: float) -> None:
        if ranks.main and progress is not None:
            progress(fraction, message)

    if start >= config.epochs:
        say(f"{run_dir} already has {start} of {config.epochs} epochs: nothing to do.", 1.0)
    draws_file = run_dir / SAMPLES_DIR / f"rank{ranks.rank}.tsv"
    if config.log_samples:
        draws_file.parent.mkdir(parents=True, exist_ok=True)
    for epoch in range(start, config.epochs):
        began = time.perf_counter()
        sampler.set_epoch(epoch)
        drawn: list[int] = []
        train_loss = _train_epoch(
            wrapped,
            train_loader,
            optimizer,
            scaler,
            config,
            device,
            amp,
            ranks,
            drawn,
            lambda m, e=epoch: say(f"epoch {e + 1}/{config.epochs}: {m}", e / config.epochs),
        )
        metrics, curve = _validate(model, val_loader, device, amp, ranks, config.threshold)
        row = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "val_loss": metrics["loss"],
            **{k: metrics[k] for k in ("accuracy", "precision", "recall", "f1")},
            **metrics["confusion"],
            **{k: metrics[k] for k in ("roc_auc", "pr_auc", "best_threshold", "best_f1")},
            "train_clips": len(sampler) * ranks.world_size,
            "val_clips": metrics["n"],
            "seconds": time.perf_counter() - began,
        }
        history.append(row)
        improved = row["f1"] > best_f1
        if improved:
            best_epoch, best_f1 = epoch + 1, row["f1"]
        if config.log_samples:
            with open(draws_file, "a") as file:
                file.writelines(f"{epoch + 1}\t{i}\t{train_set.samples[i].path}\n" for i in drawn)
        rng = _gather(_rng_state(device), ranks)  # every rank's, so a resume goes on exactly
        if ranks.main:
            if improved:
                _save(published_checkpoint(model, epoch + 1), best_path)
                report.plot_pr_curve(
                    run_dir, curve, f"Validation precision-recall, epoch {epoch + 1}"
                )
            last = {
                "model": _cpu_state(model),
                "config": model.config.to_dict(),
                "epochs": epoch + 1,
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "train_config": config.to_dict(),
                "history": history,
                "best_epoch": best_epoch,
                "best_f1": best_f1,
                "rng": rng,
            }
            _save(last, last_path)
            summary = {
                "config": config.to_dict(),
                "data_dir": str(data_dir),
                "train_clips": len(train_set),
                "val_clips": len(val_set),
                "world_size": ranks.world_size,
                "device": str(device),
                "amp": str(amp).replace("torch.", "") if amp else "off",
                "best_epoch": best_epoch,
                "best_f1": best_f1,
            }
            report.write_metrics(run_dir, history, summary)
            report.plot_losses(run_dir, history)
        say(
            f"epoch {epoch + 1}/{config.epochs}: train loss {train_loss:.4f}, "
            f"val loss {row['val_loss']:.4f}, precision {row['precision']:.3f}, "
            f"recall {row['recall']:.3f}, F1 {row['f1']:.3f}"
            f"{' (best)' if improved else ''}, {row['seconds']:.0f} s",
            (epoch + 1) / config.epochs,
        )
    if ranks.world_size > 1:
        dist.barrier()  # no rank leaves while rank 0 still writes
    return TrainResult(history, best_epoch, best_f1, model.eval(), run_dir)


def print_progress(fraction: float, message: str) -> None:
    """A progress callable for the command line: one line per message on stderr."""
    print(f"[{fraction:6.1%}] {message}", file=sys.stderr, flush=True)
