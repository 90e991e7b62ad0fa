"""The training data set of SPEC §6: labelled feature files → padded, augmented batches.

Layout: ``DATA_DIR/base/Positive/**/*.pt`` and ``DATA_DIR/base/Negative/**/*.pt`` (``DATA_DIR``
may also be ``base`` itself; folder names match in any case). Each file is a ``torch.save``'d
dict ``{'tensor': (2, 80, T) float, 'clip_name': str, 'game': str, 'label': 1 | 0}`` with
1 ≤ T ≤ 2584 (60 s); the folder decides the label. Every file's keys and shape are checked when
the set is scanned, its values (NaN, inf) when it is read: a bad file is a :class:`DataError`
naming it, never skipped.

Training samples are augmented as the published notebook did (volume, and negatives cut or
stretched to the length of a typical positive); every sample is then right-padded to 2584 frames
(the model's ``max_frames``) with its own minimum, with a mask of 1 on real frames.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, WeightedRandomSampler

from ..errors import DataError
from ..model import ModelConfig, pad_with_minimum

CHANNELS = ModelConfig.in_channels  # 2 stems: voice, game
N_MELS = ModelConfig.n_mels  # 80 mel bands
TRAIN_FRAMES = ModelConfig.max_frames  # 2584 frames = 60 s: clips are padded to this length
CLASS_FOLDERS = {"positive": 1, "negative": 0}  # folder name (any case) → label
BASE_FOLDER = "base"
VAL_FRACTION = 0.15  # of each class, held out for validation (SPEC §6)
SPLIT_SEED = 42  # the notebook's random_state
VOLUME_RANGE = (0.5, 1.5)  # factor on the whole log-mel tensor
# Lengths of the published positives, (first frame count, last frame count, probability): a
# negative's new length is a bin drawn by probability, then a uniform integer inside it.
POSITIVE_LENGTHS = (
    (215, 430, 0.114),  # 5-10 s
    (431, 861, 0.227),  # 10-20 s
    (862, 1292, 0.279),  # 20-30 s
    (1293, 1722, 0.184),  # 30-40 s
    (1723, 2153, 0.072),  # 40-50 s
    (2154, 2584, 0.124),  # 50-60 s
)
SCAN_THREADS = 16  # files opened at once while scanning (I/O bound)


@dataclass(frozen=True)
class Sample:
    """One feature file, checked for its keys and shape."""

    path: Path
    label: int  # 1 = highlight (Positive/), 0 = not (Negative/)
    frames: int  # T of its (2, 80, T) tensor
    clip_name: str
    game: str


# --- finding and checking files ----------------------------------------------------------------


def _child(folder: Path, name: str) -> Path | None:
    """The sub-folder of ``folder`` called ``name`` in any case, or None."""
    exact = folder / name
    if exact.is_dir():
        return exact
    matches = sorted(p for p in folder.iterdir() if p.is_dir() and p.name.lower() == name.lower())
    return matches[0] if matches else None


def class_folders(data_dir: str | Path) -> dict[int, Path]:
    """``DATA_DIR`` (or ``DATA_DIR/base``) → {1: its Positive folder, 0: its Negative folder}."""
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"No data set at {root}: pass the folder that holds base/Positive.")
    base = _child(root, BASE_FOLDER) or root
    folders = {label: _child(base, name) for name, label in CLASS_FOLDERS.items()}
    missing = [name for name, label in CLASS_FOLDERS.items() if folders[label] is None]
    if missing:
        raise DataError(
            f"{base} has no {' and no '.join(n.capitalize() for n in missing)} folder: a data set "
            "is base/Positive/**/*.pt and base/Negative/**/*.pt (see `highlightsense preprocess`)."
        )
    return folders  # type: ignore[return-value]


def _load_file(path: Path, mmap: bool) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # zip, pickle and refused-global errors all mean "unreadable"
        if mmap:  # files written with the legacy format cannot be memory-mapped
            return _load_file(path, mmap=False)
        raise DataError(
            f"{path} is not a readable feature file ({type(exc).__name__}: {exc}); "
            "delete it or make it again with `highlightsense preprocess`."
        ) from exc


def _tensor_of(package: object, path: Path) -> torch.Tensor:
    tensor = package.get("tensor") if isinstance(package, dict) else package
    if not isinstance(tensor, torch.Tensor):
        raise DataError(f"{path} holds no 'tensor': expected a dict with a (2, 80, T) 'tensor'.")
    shape = tuple(tensor.shape)
    if len(shape) != 3 or shape[:2] != (CHANNELS, N_MELS) or not tensor.is_floating_point():
        raise DataError(
            f"{path} has a {tensor.dtype} tensor of shape {shape}, not a float (2, 80, T) "
            "log-mel pair (voice, game); make it again with `highlightsense preprocess`."
        )
    if not 1 <= shape[2] <= TRAIN_FRAMES:
        raise DataError(
            f"{path} has {shape[2]} frames; a training clip has 1 to {TRAIN_FRAMES} "
            f"({TRAIN_FRAMES} = 60 s): crop it (`highlightsense preprocess` does)."
        )
    return tensor


def _as_label(value: object) -> int | None:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, (bool, int, float)):
        return int(value)
    return None  # other label types (strings) are not checked: the folder decides


def check_file(path: Path, label: int) -> Sample:
    """Open a feature file (memory-mapped: values are not read) and check its keys and shape."""
    package = _load_file(path, mmap=True)
    tensor = _tensor_of(package, path)
    meta = package if isinstance(package, dict) else {}
    stated = _as_label(meta.get("label"))
    if stated is not None and stated != label:
        raise DataError(
            f"{path} says label {stated} but lies in the {'Positive' if label else 'Negative'} "
            "folder; move it or fix its label."
        )
    return Sample(
        path=path,
        label=label,
        frames=int(tensor.shape[2]),
        clip_name=str(meta.get("clip_name") or path.stem),
        game=str(meta.get("game") or ""),
    )


def load_tensor(path: Path) -> torch.Tensor:
    """A feature file's tensor, checked: (2, 80, T) float32 with finite values."""
    tensor = _tensor_of(_load_file(path, mmap=False), path).float()
    if not torch.isfinite(tensor).all():
        raise DataError(
            f"{path} contains NaN or infinite values; delete it or make it again with "
            "`highlightsense preprocess`."
        )
    return tensor


def find_samples(data_dir: str | Path) -> list[Sample]:
    """Every feature file under the data set, checked, positives first, each class sorted."""
    samples: list[Sample] = []
    for label, folder in sorted(class_folders(data_dir).items(), reverse=True):
        paths = sorted(p for p in folder.rglob("*.pt") if p.is_file())
        if not paths:
            raise DataError(
                f"The {folder.name} class is empty: {folder} holds no .pt files; "
                "a data set needs both highlights and non-highlights."
            )
        with ThreadPoolExecutor(SCAN_THREADS) as pool:
            samples += pool.map(lambda p, label=label: check_file(p, label), paths)
    return samples


def stratified_split(
    labels: Sequence[int], val_fraction: float = VAL_FRACTION, seed: int = SPLIT_SEED
) -> tuple[list[int], list[int]]:
    """Indices → (train, validation), ``val_fraction · n_c`` (rounded) of each class held out.

    Seeded and independent of anything but ``labels``' order. It mirrors the notebook's
    ``train_test_split(stratify=labels, test_size=0.15, random_state=42)`` in intent (per-class
    proportions, fixed seed), not bit-for-bit: sklearn's rounding and shuffling differ, and the
    notebook's file order is unknown anyway. A class of one sample stays in training.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    rng = np.random.default_rng(seed)
    labels_array = np.asarray(labels)
    train: list[int] = []
    val: list[int] = []
    for label in np.unique(labels_array):
        members = np.flatnonzero(labels_array == label)
        order = rng.permutation(members)
        held = min(int(val_fraction * len(members) + 0.5), len(members) - 1)  # half up
        val += order[:held].tolist()
        train += order[held:].tolist()
    return sorted(train), sorted(val)


# --- augmentation and padding (pure: a tensor and a generator in, a tensor out) -----------------


def sample_length(generator: torch.Generator) -> int:
    """A frame count from the published positives' length distribution (SPEC §6)."""
    probs = torch.tensor([p for _, _, p in POSITIVE_LENGTHS], dtype=torch.float64)
    low, high, _ = POSITIVE_LENGTHS[int(torch.multinomial(probs, 1, generator=generator))]
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def fit_length(tensor: torch.Tensor, length: int, generator: torch.Generator) -> torch.Tensor:
    """tensor: (C, F, T) → (C, F, length): a random crop, or the tensor followed by random
    contiguous pieces of itself until it is long enough."""
    frames = tensor.shape[-1]
    if length <= frames:
        start = int(torch.randint(0, frames - length + 1, (1,), generator=generator))
        return tensor[..., start : start + length]
    pieces, have = [tensor], frames
    while have < length:
        start = int(torch.randint(0, frames, (1,), generator=generator))
        piece = tensor[..., start : start + length - have]
        pieces.append(piece)
        have += piece.shape[-1]
    return torch.cat(pieces, dim=-1)


def augment(
    tensor: torch.Tensor, label: int, generator: torch.Generator, frames: int = TRAIN_FRAMES
) -> torch.Tensor:
    """The notebook's training augmentation. tensor: (2, 80, T) → (2, 80, T'), T' = T for
    positives and a typical positive's length for negatives (so length gives nothing away).

    ``frames`` is the model's training length; for a shorter one (fast experiments) the drawn
    lengths are scaled by ``frames / 2584`` and longer positives randomly cropped to it.
    """
    low, high = VOLUME_RANGE
    factor = low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))
    tensor = tensor * factor  # on log-mel values, as the notebook did
    if label == 0:
        length = sample_length(generator)
        if frames != TRAIN_FRAMES:
            length = max(1, round(length * frames / TRAIN_FRAMES))
        tensor = fit_length(tensor, length, generator)
    elif tensor.shape[-1] > frames:
        tensor = fit_length(tensor, frames, generator)
    return tensor


# --- data set and sampler ----------------------------------------------------------------------


class ClipDataset(Dataset):
    """Samples → (x (2, 80, frames), mask (frames,), label float, index).

    Validation items are looked up by index and only padded. Training items are looked up by
    ``(index, seed)`` pairs from :class:`BalancedSampler`: the seed drives the augmentation, so a
    batch is the same whatever the number of loader workers. ``frames``: the padded length, the
    model's ``max_frames`` (2584 but for fast experiments; longer clips are then cut to it).
    """

    def __init__(self, samples: Sequence[Sample], train: bool, frames: int = TRAIN_FRAMES):
        self.samples = list(samples)
        self.train = train
        self.frames = frames

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> list[int]:
        return [s.label for s in self.samples]

    def __getitem__(self, key: int | tuple[int, int]):
        index, seed = key if isinstance(key, tuple) else (key, None)
        sample = self.samples[index]
        tensor = load_tensor(sample.path)
        if self.train:
            if seed is None:
                raise TypeError("training items are looked up by (index, seed)")
            generator = torch.Generator().manual_seed(seed)
            tensor = augment(tensor, sample.label, generator, self.frames)
        x, mask = pad_with_minimum(tensor[..., : self.frames], self.frames)
        return x, mask, torch.tensor(float(sample.label)), index


def class_weights(labels: Sequence[int]) -> torch.Tensor:
    """Inverse class frequency per sample: each class is drawn equally often."""
    labels_tensor = torch.as_tensor(labels)
    counts = torch.bincount(labels_tensor, minlength=2).double()
    return (1.0 / counts.clamp(min=1))[labels_tensor]


def mix_seed(*parts: int) -> int:
    """Independent 63-bit seeds for (seed, epoch, rank) triples: no two triples collide."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, dtype=np.uint64)[0] >> 1)


class BalancedSampler(Sampler):
    """Class-balanced draws with replacement (a ``WeightedRandomSampler`` with inverse class
    frequency), ``ceil(len / world_size)`` per epoch and rank, different on every rank and epoch.

    Yields ``(index, augmentation seed)`` pairs for :class:`ClipDataset`.
    """

    def __init__(self, labels: Sequence[int], seed: int, rank: int = 0, world_size: int = 1):
        self.weights = class_weights(labels)
        self.num_samples = math.ceil(len(labels) / world_size)
        self.seed, self.rank, self.epoch = seed, rank, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, self.rank))
        picks = WeightedRandomSampler(
            self.weights, self.num_samples, replacement=True, generator=generator
        )
        indices = list(picks)
        seeds = torch.randint(0, 2**62, (len(indices),), generator=generator).tolist()
        return zip(indices, seeds, strict=True)
