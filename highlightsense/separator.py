"""The separator: a Demucs model, loaded once per process and checked, ready for
:func:`highlightsense.stems.separate_stream`.

Checkpoints are loaded without ever unpickling code: ``.th`` files go through
``torch.load(weights_only=True)`` with only the Demucs model classes allowed, and
``.safetensors`` files have their model class checked against the same list before use.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import demucs.pretrained
import torch
import yaml
from demucs.apply import BagOfModels
from demucs.demucs import Demucs
from demucs.hdemucs import HDemucs
from demucs.htdemucs import HTDemucs
from demucs.states import load_model
from safetensors import SafetensorError, safe_open
from torch import nn

from .errors import SeparatorError
from .files import hash_file
from .settings import DEFAULT_SEPARATOR

VOICE_SOURCE = "vocals"  # the Demucs source that holds the streamer

# The only classes a checkpoint may name: anything else could run code when built.
MODEL_CLASSES: dict[str, type[nn.Module]] = {
    f"{klass.__module__}.{klass.__name__}": klass for klass in (HTDemucs, HDemucs, Demucs)
}
# What a genuine `demucs.states.serialize_model` package unpickles besides tensors and
# containers: the model class itself and Fraction (HTDemucs' `segment`).
SAFE_GLOBALS: list[Any] = [*MODEL_CLASSES.values(), Fraction]


@dataclass(frozen=True, eq=False)
class Separator:
    """A Demucs model loaded once, ready for :func:`separate_stream`."""

    model: nn.Module  # a demucs BagOfModels or a single HTDemucs / HDemucs / Demucs, eval mode
    samplerate: int  # Hz
    audio_channels: int
    sources: tuple[str, ...]  # e.g. ("drums", "bass", "other", "vocals")
    segment: Fraction | float  # s, length of one Demucs segment
    device: torch.device  # where the model's weights live
    identity: str  # name, repo and a hash of the weights: a cache key for separated stems


def load_separator(
    name: str = DEFAULT_SEPARATOR, repo: Path | None = None, device: str = "cpu"
) -> Separator:
    """Load the Demucs model `name` (cached per process for each (name, repo, device)).

    With ``repo=None`` Demucs' own loader fetches it from the Hugging Face Hub (then its cache);
    with ``repo=DIR`` it comes from a local Demucs model folder: ``<sig>.th`` or
    ``<sig>-<sha256 prefix>.th`` or ``<sig>.safetensors`` model files and ``<name>.yaml`` bags.
    """
    resolved = None if repo is None else Path(repo).expanduser().resolve()
    return _load_separator(name, resolved, str(device))


@functools.lru_cache(maxsize=4)
def _load_separator(name: str, repo: Path | None, device: str) -> Separator:
    model = _load_from_hub(name) if repo is None else _load_from_repo(name, repo)
    model.eval()
    if VOICE_SOURCE not in model.sources:
        raise SeparatorError(
            f"The Demucs model '{name}' has no '{VOICE_SOURCE}' source (it has "
            f"{', '.join(model.sources)}): pick a model that separates vocals, such as htdemucs."
        )
    segments = {member.segment for member, _ in members(model)}
    if len(segments) != 1:
        raise SeparatorError(
            f"The Demucs bag '{name}' mixes models with different segment lengths "
            f"({sorted(segments)} s): use a bag whose models share one segment, such as htdemucs."
        )
    # no folder path in it: the identity is shown to users and the weights' hash says it all
    identity = f"{name}@{'hub' if repo is None else 'local'}#{_fingerprint(model)}"
    model.to(device)
    return Separator(
        model=model,
        samplerate=int(model.samplerate),
        audio_channels=int(model.audio_channels),
        sources=tuple(model.sources),
        segment=segments.pop(),
        device=torch.device(device),
        identity=identity,
    )


def _load_from_hub(name: str) -> nn.Module:
    if "/" in name or name.startswith("hf://"):
        # demucs.hf imports whatever class a third-party export names: refuse rather than trust.
        raise SeparatorError(
            f"Refusing to fetch '{name}' from a third-party Hub repository: download it and pass "
            "--separator-repo DIR with the folder holding its .yaml and .safetensors files."
        )
    try:
        return demucs.pretrained.get_model(name)
    # demucs.utils.fatal calls sys.exit for some failures (e.g. a model that needs diffq).
    except (Exception, SystemExit) as exc:
        raise SeparatorError(
            f"Could not load the Demucs model '{name}' from the Hugging Face Hub or its cache "
            f"({_first_line(exc)}): go online once so Demucs can cache it, or pass "
            "--separator-repo DIR with a local Demucs model folder."
        ) from exc


def _load_from_repo(name: str, repo: Path) -> nn.Module:
    """Resolve `name` the way Demucs' AnyModelRepo does: a model signature, else a bag."""
    if not repo.is_dir():
        raise SeparatorError(
            f"The Demucs model folder {repo} does not exist: pass --separator-repo a folder "
            "holding <name>.yaml and its model files."
        )
    models = _scan_models(repo)
    if name in models:
        return _load_member(*models[name])
    bags = {file.stem: file for file in repo.iterdir() if file.suffix == ".yaml"}
    if name not in bags:
        known = ", ".join(sorted([*bags, *models])) or "nothing"
        raise SeparatorError(
            f"There is no Demucs model '{name}' in {repo} (it holds: {known}): "
            "pick one of those names or another folder."
        )
    try:
        bag = yaml.safe_load(bags[name].read_text())
        signatures = list(bag["models"])
    except (OSError, yaml.YAMLError, TypeError, KeyError) as exc:
        raise SeparatorError(
            f"{bags[name]} is not a Demucs bag ({_first_line(exc)}): it needs a 'models:' list "
            "of model signatures, with optional 'weights:' and 'segment:'."
        ) from exc
    missing = [sig for sig in signatures if sig not in models]
    if missing:
        raise SeparatorError(
            f"The Demucs bag {bags[name]} names models missing from {repo} "
            f"({', '.join(map(str, missing))}): copy their .th or .safetensors files there."
        )
    members = [_load_member(*models[sig]) for sig in signatures]
    try:
        return BagOfModels(members, bag.get("weights"), bag.get("segment"))
    # BagOfModels checks that its models and weights fit together with asserts.
    except AssertionError as exc:
        raise SeparatorError(
            f"The models of the Demucs bag {bags[name]} do not fit together (sources, sample "
            "rate, channels or number of weights differ): fix its 'models:' and 'weights:'."
        ) from exc


def _scan_models(repo: Path) -> dict[str, tuple[Path, str | None]]:
    """Model files by signature, with their sha256 prefix when the name carries one."""
    models: dict[str, tuple[Path, str | None]] = {}
    for file in sorted(repo.iterdir()):
        if file.suffix not in (".th", ".safetensors"):
            continue
        signature, checksum = file.stem, None
        # Same naming rule as demucs.repo.LocalRepo: `<sig>-<checksum>.th`.
        if file.suffix == ".th" and "-" in file.stem:
            signature, checksum = file.stem.rsplit("-", 1)
        if signature in models:
            raise SeparatorError(
                f"{repo} holds two model files for the signature '{signature}' "
                f"({models[signature][0].name} and {file.name}): delete all but one."
            )
        models[signature] = (file, checksum)
    return models


def _load_member(file: Path, checksum: str | None) -> nn.Module:
    if checksum is not None:
        _check_checksum(file, checksum)
    package = _read_safetensors(file) if file.suffix == ".safetensors" else _read_th(file)
    if package["state"].get("__quantized"):
        raise SeparatorError(
            f"{file} is a quantized (diffq) Demucs model, which is not supported: "
            "use a full-precision model such as htdemucs."
        )
    try:
        return load_model(package)
    except (RuntimeError, TypeError, ValueError, KeyError) as exc:
        raise SeparatorError(
            f"The weights in {file} do not fit their Demucs model ({_first_line(exc)}): "
            "the file is damaged or was exported by another Demucs version; export it again."
        ) from exc


def _check_checksum(file: Path, checksum: str) -> None:
    actual = hash_file(file)[: len(checksum)]
    if actual != checksum:
        raise SeparatorError(
            f"{file} is damaged: its sha256 starts with {actual}, its name says {checksum}; "
            "download or export it again."
        )


def _read_th(file: Path) -> dict[str, Any]:
    """A `demucs.states.serialize_model` package, unpickled without running any code."""
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            package = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types for damaged or hostile files
        unsafe = re.search(r"GLOBAL ([\w.]+)", str(exc))
        reason = (
            f"it asks to import {unsafe.group(1)}, which is not a Demucs model class"
            if unsafe
            else f"it cannot be read ({_first_line(exc)})"
        )
        raise SeparatorError(
            f"Refused to load {file}: {reason}; use a genuine Demucs checkpoint or its "
            ".safetensors export."
        ) from exc
    if not (
        isinstance(package, dict)
        and package.get("klass") in MODEL_CLASSES.values()
        and isinstance(package.get("args"), list | tuple)
        and isinstance(package.get("kwargs"), dict)
        and isinstance(package.get("state"), dict)
    ):
        raise SeparatorError(
            f"{file} is not a Demucs model package (klass, args, kwargs, state of an "
            f"{' / '.join(MODEL_CLASSES)}): use a genuine Demucs checkpoint."
        )
    return package


def _read_safetensors(file: Path) -> dict[str, Any]:
    """A model in the Hugging Face export format of demucs.hf, as a load_model package."""
    try:
        with safe_open(str(file), framework="pt") as reader:
            metadata = reader.metadata() or {}
            klass = MODEL_CLASSES.get(metadata.get("klass", ""))
            if klass is None:
                raise SeparatorError(
                    f"Refused to load {file}: its model class "
                    f"{metadata.get('klass', '(none)')!r} is not a Demucs model class; "
                    "use a genuine Demucs export."
                )
            if "structure" in metadata:
                raise SeparatorError(
                    f"{file} is a quantized (diffq) Demucs model, which is not supported: "
                    "use a full-precision model such as htdemucs."
                )
            state = {key: reader.get_tensor(key) for key in reader.keys()}  # noqa: SIM118 (not iterable)
        args = _decode_json(json.loads(metadata["args"]))
        kwargs = _decode_json(json.loads(metadata["kwargs"]))
    except (OSError, KeyError, ValueError, SafetensorError) as exc:
        raise SeparatorError(
            f"{file} is not a readable Demucs .safetensors export ({_first_line(exc)}): "
            "download or export it again."
        ) from exc
    return {"klass": klass, "args": args, "kwargs": kwargs, "state": state}


def _decode_json(value: Any) -> Any:
    """Undo demucs' json encoding of init arguments, where fractions are tagged dicts."""
    if isinstance(value, dict):
        if value.get("_type") == "fraction":
            return Fraction(value["numerator"], value["denominator"])
        return {key: _decode_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_decode_json(item) for item in value]
    return value


def members(model: nn.Module) -> list[tuple[nn.Module, list[float]]]:
    """(model, per-source weight) for each model of a bag; a single model weighs 1."""
    if isinstance(model, BagOfModels):
        return list(zip(model.models, model.weights, strict=True))
    return [(model, [1.0] * len(model.sources))]


def _fingerprint(model: nn.Module) -> str:
    """Hash of everything that shapes the output: classes, segments, bag weights, weights."""
    digest = hashlib.sha256()
    for member, weights in members(model):
        digest.update(f"{type(member).__name__}|{member.segment}|{weights}".encode())
        for key, tensor in member.state_dict().items():
            digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
            raw = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
            digest.update(raw.numpy().tobytes())
    return digest.hexdigest()[:16]


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
