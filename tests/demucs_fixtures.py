"""Tiny random-weight Demucs models saved as real Demucs local repositories, for offline tests.

``make_tiny_demucs_repo(dir)`` writes what ``demucs --repo DIR -n tiny`` and
``highlightsense.separator.load_separator("tiny", repo=DIR)`` both load: a
``<sig>-<sha256 prefix>.th`` package as ``demucs.states.serialize_model`` makes it, and a
``tiny.yaml`` bag naming it. Separating 20 s of audio with it takes well under a second on CPU.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import torch
import yaml
from demucs.htdemucs import HTDemucs
from demucs.states import get_state, save_with_checksum
from safetensors.torch import save_file

TINY_NAME = "tiny"
TINY_SIGNATURE = "0badc0de"  # the 8-hex-digit style of Demucs' own signatures
TINY_SEGMENT = Fraction(6, 5)  # s; a Fraction, like htdemucs' 39/5, to exercise its pickling
TINY_SEED = 1234
SOURCES = ["drums", "bass", "other", "vocals"]


def tiny_htdemucs(seed: int = TINY_SEED) -> HTDemucs:
    """A ~27 k-parameter HTDemucs (depth 3, one transformer layer), same weights for a seed."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = HTDemucs(
            sources=SOURCES,
            channels=4,
            depth=3,
            nfft=512,
            dconv_comp=2,  # the default 8 would leave 4 channels with no hidden units
            t_layers=1,
            t_heads=2,
            segment=TINY_SEGMENT,
        )
    return model.eval()


def demucs_package(model: torch.nn.Module) -> dict:
    """What ``demucs.states.serialize_model(model, training_args)`` returns (half weights).

    Built by hand because serialize_model imports omegaconf, which is not installed.
    """
    args, kwargs = model._init_args_kwargs
    return {
        "klass": model.__class__,
        "args": args,
        "kwargs": kwargs,
        "state": get_state(model, None, half=True),
        "training_args": {"seed": TINY_SEED},
    }


def make_tiny_demucs_repo(directory: Path) -> tuple[Path, str]:
    """Write a Demucs local repo holding the bag ``tiny``; returns (repo_path, name)."""
    repo = Path(directory)
    repo.mkdir(parents=True, exist_ok=True)
    save_with_checksum(demucs_package(tiny_htdemucs()), repo / f"{TINY_SIGNATURE}.th")
    (repo / f"{TINY_NAME}.yaml").write_text(yaml.safe_dump({"models": [TINY_SIGNATURE]}))
    return repo, TINY_NAME


def _encode_json(value: object) -> object:
    if isinstance(value, Fraction):
        return {"_type": "fraction", "numerator": value.numerator, "denominator": value.denominator}
    if isinstance(value, dict):
        return {key: _encode_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_encode_json(item) for item in value]
    return value


def save_safetensors_export(model: torch.nn.Module, path: Path, klass: str | None = None) -> Path:
    """Save `model` in demucs.hf's Hugging Face export format (klass/args/kwargs as json).

    `klass` overrides the class name written in the metadata (to forge a hostile file).
    """
    args, kwargs = model._init_args_kwargs
    cls = model.__class__
    metadata = {
        "klass": klass or f"{cls.__module__}.{cls.__name__}",
        "args": json.dumps(_encode_json(list(args))),
        "kwargs": json.dumps(_encode_json(kwargs)),
    }
    state = {key: value.contiguous() for key, value in model.state_dict().items()}
    save_file(state, str(path), metadata=metadata)
    return path
