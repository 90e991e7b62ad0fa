"""Find, fetch, verify and load the highlight model's weights.

Sources, in the order a run without ``--weights`` tries them:
``HIGHLIGHTSENSE_WEIGHTS`` → the ``weights/`` folder (``best_model.pt``, else a safetensors
export: ``model.safetensors`` + ``config.json``) → the published checkpoint (SPEC §3), fetched
once into the cache and verified against its git blob id. The log says which one was used.
A weights string may be a local path (a ``.pt`` checkpoint, a ``.safetensors`` file beside its
``config.json``, or a folder holding both), ``hf://owner/repo[/path/in/repo][@revision]``, or an
``https://`` URL pinned by a hash (``…#sha256=<hex>``). Checkpoints are loaded with
``weights_only=True``: never any code.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import WeightsError
from .model import CRNN, ModelConfig, canonical_state_dict

WEIGHTS_ENV = "HIGHLIGHTSENSE_WEIGHTS"
CACHE_ENV = "HIGHLIGHTSENSE_CACHE"
LOCAL_DIR = Path("weights")  # a user's or Space owner's own model, looked at before any download
LOCAL_DEFAULT = LOCAL_DIR / "best_model.pt"
SAFETENSORS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
DOWNLOAD_TIMEOUT = 60.0  # s per network read
FORMAT = "highlightsense-crnn"  # config.json's "format", so a stray config is not mistaken

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Published:
    """A file in a public git repository, pinned by commit and by its git blob id."""

    repo: str
    commit: str
    path: str
    blob: str  # sha1 of b"blob <size>\0" + bytes

    @property
    def url(self) -> str:
        return f"https://raw.githubusercontent.com/{self.repo}/{self.commit}/{self.path}"


PUBLISHED = Published(
    repo="mrmilohd/highlight-sense",
    commit="6935e6835ef64be6c1350cee97f31f4bb56569ae",
    path="best_model.pt",
    blob="8091fafbc94cff16e2d010a825576ba50e7d4129",
)


def cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "highlightsense"
    return Path(root)


def git_blob_id(path: Path) -> str:
    """Git's blob id of a file: sha1 of ``b"blob <size>\\0"`` + its bytes."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    return _hash_file(path, digest)


def sha256_file(path: Path) -> str:
    return _hash_file(path, hashlib.sha256())


def _hash_file(path: Path, digest) -> str:
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(url: str, dest: Path, check) -> Path:
    """Stream ``url`` to a temporary file, ``check(tmp)`` it, then rename it to ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=".part-")
    tmp = Path(tmp_name)
    try:
        with (
            os.fdopen(handle, "wb") as out,
            urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as r,
        ):
            for block in iter(lambda: r.read(1 << 20), b""):
                out.write(block)
        check(tmp)
        tmp.replace(dest)
    except OSError as exc:
        raise WeightsError(f"Could not download the weights from {url} ({exc}).") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def fetch_published(published: Published = PUBLISHED) -> Path:
    """The published checkpoint, downloaded once into the cache and verified by its blob id."""
    dest = cache_dir() / "weights" / f"{published.blob}.pt"
    if dest.is_file() and git_blob_id(dest) == published.blob:
        return dest

    def check(tmp: Path) -> None:
        got = git_blob_id(tmp)
        if got != published.blob:
            raise WeightsError(
                f"The file downloaded from {published.url} has git blob id {got}, "
                f"not the published {published.blob}; it was not used."
            )

    return _download(published.url, dest, check)


def _fetch_url(url: str) -> Path:
    parts = urllib.parse.urlsplit(url)
    loopback = parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost")
    expected = urllib.parse.parse_qs(parts.fragment).get("sha256", [""])[0].lower()
    if parts.scheme != "https" and not loopback:
        raise WeightsError(f"Weights URLs must use https:// (got {url}).")
    if len(expected) != 64:
        raise WeightsError(
            f"A weights URL must be pinned by its hash: add #sha256=<64 hex digits> to {url}."
        )
    dest = cache_dir() / "weights" / f"{expected}{Path(parts.path).suffix or '.pt'}"
    if dest.is_file() and sha256_file(dest) == expected:
        return dest

    def check(tmp: Path) -> None:
        got = sha256_file(tmp)
        if got != expected:
            raise WeightsError(
                f"The file at {url} has sha256 {got}, not {expected}; it was not used."
            )

    return _download(urllib.parse.urlunsplit(parts._replace(fragment="")), dest, check)


def _fetch_hf(spec: str) -> Path:
    """hf://owner/repo[/path][@revision] → a local file or folder in the Hugging Face cache."""
    from huggingface_hub import hf_hub_download

    body, _, revision = spec[len("hf://") :].partition("@")
    parts = body.strip("/").split("/")
    if len(parts) < 2:
        raise WeightsError(f"Use hf://owner/repo[/path/in/repo][@revision] (got {spec}).")
    repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:])
    try:
        if filename.endswith(".pt"):
            return Path(hf_hub_download(repo_id, filename, revision=revision or None))
        folder = f"{filename}/" if filename else ""
        for name in (CONFIG_NAME, SAFETENSORS_NAME):
            path = Path(hf_hub_download(repo_id, folder + name, revision=revision or None))
        return path.parent
    except Exception as exc:  # huggingface_hub raises many types (offline, 404, auth)
        raise WeightsError(
            f"Could not fetch {spec} from the Hugging Face Hub ({type(exc).__name__}); "
            "check the repo name and your connection, or pass a local file with --weights."
        ) from exc


def resolve(weights: str | os.PathLike | None = None) -> Path:
    """A weights string (or None for the defaults) → a local file or folder."""
    source = "given"
    if weights is None:
        weights = os.environ.get(WEIGHTS_ENV) or None
        source = f"${WEIGHTS_ENV}"
    if weights is not None:
        text = str(weights)
        if text.startswith("hf://"):
            path = _fetch_hf(text)
        elif text.startswith(("https://", "http://")):
            path = _fetch_url(text)
        else:
            path = Path(text).expanduser()
            if not path.exists():
                raise WeightsError(f"No weights at {path}; check the path given to --weights.")
        logger.info("Model weights: %s (%s)", text, source)
        return path
    local = local_weights()
    if local is not None:
        logger.info("Model weights: %s (the weights folder)", local)
        return local
    try:
        path = fetch_published()
    except WeightsError as exc:
        raise WeightsError(
            f"No model weights could be found: tried ${WEIGHTS_ENV} (unset), {LOCAL_DIR}/ "
            f"(no {LOCAL_DEFAULT.name}, no {SAFETENSORS_NAME} + {CONFIG_NAME}) and the published "
            f"checkpoint ({exc}); download best_model.pt from {PUBLISHED.url} into "
            f"{LOCAL_DIR}/, or pass --weights."
        ) from exc
    logger.info("Model weights: the published %s at %s", PUBLISHED.path, PUBLISHED.commit[:7])
    return path


def local_weights(folder: Path = LOCAL_DIR) -> Path | None:
    """``folder/best_model.pt``, else ``folder`` when it holds a safetensors export, else None."""
    checkpoint = folder / LOCAL_DEFAULT.name
    if checkpoint.is_file():
        return checkpoint
    if (folder / SAFETENSORS_NAME).is_file() and (folder / CONFIG_NAME).is_file():
        return folder
    return None


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], ModelConfig, dict]:
    """A checkpoint file or safetensors folder → (state dict, config, metadata)."""
    if path.is_dir() or path.suffix == ".safetensors":
        folder = path if path.is_dir() else path.parent
        tensors = folder / SAFETENSORS_NAME if path.is_dir() else path
        return _read_safetensors(tensors, folder / CONFIG_NAME)
    try:
        package = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, zip errors, refused globals: all mean "not weights"
        raise WeightsError(
            f"{path.name} is not a loadable PyTorch checkpoint ({type(exc).__name__}); "
            "check that the download finished and that it is a best_model.pt."
        ) from exc
    if isinstance(package, dict) and isinstance(package.get("model"), dict):
        meta = {k: v for k, v in package.items() if k not in ("model", "config", "optimizer")}
        config = ModelConfig.from_dict(package.get("config") or {})
        return package["model"], config, meta
    if isinstance(package, dict) and all(isinstance(v, torch.Tensor) for v in package.values()):
        return package, ModelConfig(), {}  # a bare state dict
    raise WeightsError(
        f"{path.name} is not a HighlightSense checkpoint: "
        "expected a dict with a 'model' state dict."
    )


def _read_safetensors(tensors: Path, config_path: Path):
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        config_data = json.loads(config_path.read_text())
        state = load_file(tensors)
    except (OSError, ValueError, SafetensorError) as exc:
        raise WeightsError(
            f"Could not read {tensors.name} with its {CONFIG_NAME} ({exc}); "
            "export the folder again with `highlightsense export-weights`."
        ) from exc
    if config_data.get("format") != FORMAT:
        raise WeightsError(f"{config_path} is not a HighlightSense model config.")
    return state, ModelConfig.from_dict(config_data.get("model", {})), config_data.get("meta", {})


def build_model(state: dict[str, torch.Tensor], config: ModelConfig, name: str = "weights") -> CRNN:
    """A CRNN with ``state`` loaded strictly; mismatches become one WeightsError sentence."""
    model = CRNN(config)
    state = canonical_state_dict(state)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape)
    )
    if missing or unexpected or wrong:
        details = []
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("wrong shape", wrong),
        ):
            if keys:
                details.append(f"{label}: {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''}")
        raise WeightsError(f"{name} does not match the HighlightSense CRNN ({'; '.join(details)}).")
    model.load_state_dict(state, strict=True)
    if not all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point()):
        raise WeightsError(f"{name} contains NaN or infinite values; it is corrupt.")
    return model.eval()


@dataclass(frozen=True)
class LoadedModel:
    model: CRNN
    path: Path
    identity: str  # "<file name>@sha256:<first 16 hex>", recorded with every result


def _identity(path: Path) -> str:
    target = path / SAFETENSORS_NAME if path.is_dir() else path
    return f"{path.name}@sha256:{sha256_file(target)[:16]}"


@functools.lru_cache(maxsize=4)
def _load_cached(path: Path, mtime: float, device: str) -> LoadedModel:
    state, config, _ = read_checkpoint(path)
    model = build_model(state, config, name=path.name).to(device)
    return LoadedModel(model=model, path=path, identity=_identity(path))


def load(weights: str | os.PathLike | None = None, device: str = "cpu") -> LoadedModel:
    """Resolve and load the weights once per process (cached by path, mtime and device)."""
    path = resolve(weights).resolve()
    return _load_cached(path, path.stat().st_mtime, str(torch.device(device)))


def load_model(weights: str | os.PathLike | None = None, device: str = "cpu") -> CRNN:
    """The CRNN in eval mode on ``device``."""
    return load(weights, device).model


MODEL_CARD = """---
library_name: pytorch
license: mit
tags:
  - audio-classification
  - highlight-detection
  - highlightsense
---
# HighlightSense CRNN

A CRNN + attention classifier over two 80-band log-mel spectrograms (the streamer's voice and the
game's sound, split by Demucs htdemucs) that scores how likely a 30 s stretch of a game stream is
a highlight. Exported from `{source}` ({epochs} epochs).

Use it with HighlightSense: `highlightsense detect VOD.mp4 --weights hf://<owner>/<repo>`.

Files: `model.safetensors` (weights, float32) and `config.json` (architecture; `format` =
`{format}`). Features: mono, 22 050 Hz, n_fft 1024, hop 512, 80 Slaney mels, log(mel + 1e-9);
channel 0 = voice, channel 1 = game; windows padded to 2584 frames with their minimum.
"""


def export_weights(checkpoint: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write ``model.safetensors`` + ``config.json`` + a model card, ready to upload to the Hub."""
    from safetensors.torch import save_file

    source = Path(checkpoint)
    state, config, meta = read_checkpoint(resolve(source))
    model = build_model(state, config, name=source.name)  # refuse to export broken weights
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, out / SAFETENSORS_NAME, metadata={"format": FORMAT})
    epochs = meta.get("epochs", "unknown")
    config_data = {"format": FORMAT, "model": config.to_dict(), "meta": {"epochs": epochs}}
    (out / CONFIG_NAME).write_text(json.dumps(config_data, indent=2) + "\n")
    card = MODEL_CARD.format(source=source.name, epochs=epochs, format=FORMAT)
    (out / "README.md").write_text(card)
    return out
