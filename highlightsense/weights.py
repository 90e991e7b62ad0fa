"""Find, fetch, verify and load the highlight model's weights.

Sources, in the order a run without ``--weights`` tries them:
``HIGHLIGHTSENSE_WEIGHTS`` → the ``weights/`` folder (``best_model.pt``, else a safetensors
export: ``model.safetensors`` + ``config.json``) → the published checkpoint (SPEC §3), fetched
once into the cache and verified against its git blob id. The log says which one was used.
A weights string may be a local path (a ``.pt`` checkpoint, a ``.safetensors`` file beside its
``config.json``, or a folder holding both), ``hf://owner/repo[/path/in/repo][@revision]``, or an
``https://`` URL pinned by a hash (``…#sha256=<hex>``). Checkpoints are loaded with
``weights_only=True``: never any code.

A weights file is checked before anything is allocated for it: its size, its zip members' sizes,
its architecture values (ranges and the parameter count they imply, derived on the meta device)
and every tensor's shape against that architecture. Downloads are https only (redirects too),
capped in size and bounded by an overall deadline.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import WeightsError
from .features import N_MELS
from .files import atomic_path, cache_dir, hash_file
from .model import CRNN, ModelConfig, canonical_state_dict

WEIGHTS_ENV = "HIGHLIGHTSENSE_WEIGHTS"
LOCAL_DIR = Path("weights")  # a user's or Space owner's own model, looked at before any download
LOCAL_DEFAULT = LOCAL_DIR / "best_model.pt"
SAFETENSORS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
DOWNLOAD_TIMEOUT = 60.0  # s per network read
DOWNLOAD_DEADLINE = 600.0  # s for a whole download (24 MB at 40 kB/s)
DOWNLOAD_BLOCK = 1 << 16  # bytes read at a time (whatever has arrived, up to this)
MAX_WEIGHTS_BYTES = 160 << 20  # bytes a weights file may hold, uncompressed (published: 24 MB)
MAX_DOWNLOAD_BYTES = MAX_WEIGHTS_BYTES  # bytes a download may send
MAX_CONFIG_BYTES = 64 << 10  # bytes of a config.json
MAX_PARAMETERS = 32_000_000  # parameters (128 MB in float32); the published model has ≈ 6 M
FORMAT = "highlightsense-crnn"  # config.json's "format", so a stray config is not mistaken

# Ranges of the architecture values a checkpoint may declare: anything outside is a broken or
# hostile config (the model would not fit the features, or would exhaust memory when built).
INT_RANGES = {
    "rnn_hidden": (1, 2048),
    "rnn_layers": (1, 8),
    "attention_dim": (1, 2048),
    "classifier_dim": (1, 2048),
    "max_frames": (16, 1 << 17),
}
MAX_BLOCKS = 8  # conv blocks
MAX_CONV_CHANNELS = 2048
MAX_POOL = 4  # per axis

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


def git_blob_id(path: Path) -> str:
    """Git's blob id of a file: sha1 of ``b"blob <size>\\0"`` + its bytes."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    return hash_file(path, digest)


def sha256_file(path: Path) -> str:
    return hash_file(path)


def _allowed_url(url: str) -> bool:
    """https, or plain http to this machine itself (a local mirror, the tests' server)."""
    parts = urllib.parse.urlsplit(url)
    loopback = parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost")
    return parts.scheme == "https" or loopback


class _HttpsRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to an allowed URL: https must not turn into http on the way."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if not _allowed_url(newurl):
            raise WeightsError(
                f"{req.full_url} redirects to {newurl[:200]}, which is not https; "
                "the weights were not downloaded."
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _download(url: str, dest: Path, check) -> Path:
    """Stream ``url`` to a temporary file, ``check(tmp)`` it, then rename it to ``dest``.

    At most :data:`MAX_DOWNLOAD_BYTES` and :data:`DOWNLOAD_DEADLINE` seconds in all, whatever
    the server sends or says (a trickle of one byte every few seconds never times out a read).
    """
    if not _allowed_url(url):
        raise WeightsError(f"Weights URLs must use https:// (got {url}).")
    opener = urllib.request.build_opener(_HttpsRedirects)
    deadline = time.monotonic() + DOWNLOAD_DEADLINE
    limit = f"{MAX_DOWNLOAD_BYTES >> 20} MB"
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with (
            atomic_path(dest) as tmp,
            open(tmp, "wb") as out,
            opener.open(url, timeout=DOWNLOAD_TIMEOUT) as r,
        ):
            declared = r.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > MAX_DOWNLOAD_BYTES:
                raise WeightsError(f"{url} is larger than {limit}; it is not a weights file.")
            written = 0
            while block := r.read1(DOWNLOAD_BLOCK):
                written += len(block)
                if written > MAX_DOWNLOAD_BYTES:
                    raise WeightsError(f"{url} sent more than {limit}; it is not a weights file.")
                if time.monotonic() > deadline:
                    raise WeightsError(
                        f"Downloading {url} took more than {DOWNLOAD_DEADLINE:.0f} s; "
                        "try again later or download the file yourself and pass its path."
                    )
                out.write(block)
            out.close()
            check(tmp)
    except OSError as exc:
        raise WeightsError(
            f"Could not download the weights from {url} ({getattr(exc, 'reason', exc)}); "
            "check the address and your connection."
        ) from exc
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
    expected = urllib.parse.parse_qs(parts.fragment).get("sha256", [""])[0].lower()
    if not _allowed_url(url):
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


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_rate(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 1


def _config_problem(data: dict) -> str | None:
    """What is wrong with a checkpoint's architecture values, or None (the dict as stored)."""
    if data.get("n_mels", N_MELS) != N_MELS or data.get("in_channels", 2) != 2:
        return f"it is made for other features than {N_MELS} mel bands of voice and game"
    for key, (low, high) in INT_RANGES.items():
        if key in data and not (_is_int(data[key]) and low <= data[key] <= high):
            return f"{key} must be a whole number from {low} to {high}"
    channels = data.get("channels", ModelConfig.channels)
    pools = data.get("pools", ModelConfig.pools)
    if not (
        isinstance(channels, list | tuple)
        and 1 <= len(channels) <= MAX_BLOCKS
        and all(_is_int(c) and 1 <= c <= MAX_CONV_CHANNELS for c in channels)
    ):
        return f"channels must be 1 to {MAX_BLOCKS} numbers from 1 to {MAX_CONV_CHANNELS}"
    if not (
        isinstance(pools, list | tuple)
        and len(pools) == len(channels)
        and all(
            isinstance(p, list | tuple)
            and len(p) == 2
            and all(_is_int(n) and 1 <= n <= MAX_POOL for n in p)
            for p in pools
        )
    ):
        return f"pools must be one (frequency, time) pair from 1 to {MAX_POOL} per conv block"
    freq = N_MELS
    for pool_freq, _ in pools:
        freq //= pool_freq
    if freq < 1:
        return "its pools leave no frequency band"
    if not _is_rate(data.get("rnn_dropout", 0.0)):
        return "rnn_dropout must be a number from 0 to below 1"
    dropout = data.get("dropout", ModelConfig.dropout)
    if not (
        isinstance(dropout, list | tuple) and len(dropout) == 2 and all(map(_is_rate, dropout))
    ):
        return "dropout must be two numbers from 0 to below 1"
    return None


def checked_config(data: object, name: str) -> ModelConfig:
    """A checkpoint's architecture as a ModelConfig, refused (WeightsError) unless every value
    is in range and the model it describes is of a sane size: nothing is allocated to find out
    (the parameters are counted on the meta device)."""
    if not isinstance(data, dict):
        raise WeightsError(f"{name} has a config that is not a mapping; it is not ours.")
    problem = _config_problem(data)
    if problem is None:
        config = ModelConfig.from_dict(data)
        with torch.device("meta"):
            parameters = sum(p.numel() for p in CRNN(config).parameters())
        if parameters > MAX_PARAMETERS:
            problem = f"its architecture has {parameters:,} parameters, over {MAX_PARAMETERS:,}"
    if problem is not None:
        raise WeightsError(f"{name} does not describe a usable HighlightSense CRNN: {problem}.")
    return config


def _check_zip(path: Path) -> None:
    """Refuse a checkpoint that is not torch's zip format or would unpack to too much.

    torch allocates each tensor's storage at the size the archive declares, so a small
    compressed file can ask for gigabytes: the central directory is read first.
    """
    too_big = WeightsError(
        f"{path.name} holds more than {MAX_WEIGHTS_BYTES >> 20} MB of data, far more than a "
        "HighlightSense model; it was not loaded."
    )
    if path.stat().st_size > MAX_WEIGHTS_BYTES:
        raise too_big
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise WeightsError(
            f"{path.name} is not a loadable PyTorch checkpoint ({type(exc).__name__}); "
            "check that the download finished and that it is a best_model.pt."
        ) from exc
    if sum(member.file_size for member in members) > MAX_WEIGHTS_BYTES:
        raise too_big


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], ModelConfig, dict]:
    """A checkpoint file or safetensors folder → (state dict, config, metadata)."""
    if path.is_dir() or path.suffix == ".safetensors":
        folder = path if path.is_dir() else path.parent
        tensors = folder / SAFETENSORS_NAME if path.is_dir() else path
        return _read_safetensors(tensors, folder / CONFIG_NAME)
    _check_zip(path)
    try:
        package = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, zip errors, refused globals: all mean "not weights"
        raise WeightsError(
            f"{path.name} is not a loadable PyTorch checkpoint ({type(exc).__name__}); "
            "check that the download finished and that it is a best_model.pt."
        ) from exc
    if isinstance(package, dict) and isinstance(package.get("model"), dict):
        meta = {k: v for k, v in package.items() if k not in ("model", "config", "optimizer")}
        config = checked_config(package.get("config") or {}, path.name)
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
        if config_path.stat().st_size > MAX_CONFIG_BYTES:
            raise WeightsError(f"{config_path.name} is too large to be a model config.")
        config_data = json.loads(config_path.read_text())
        if not isinstance(config_data, dict) or config_data.get("format") != FORMAT:
            raise WeightsError(f"{config_path} is not a HighlightSense model config.")
        config = checked_config(config_data.get("model", {}), config_path.name)
        # safetensors checks that the declared shapes fill the file exactly: capping the file
        # caps what load_file allocates.
        if tensors.stat().st_size > MAX_WEIGHTS_BYTES:
            raise WeightsError(
                f"{tensors.name} holds more than {MAX_WEIGHTS_BYTES >> 20} MB, far more than a "
                "HighlightSense model; it was not loaded."
            )
        state = load_file(tensors)
    except (OSError, ValueError, SafetensorError) as exc:
        raise WeightsError(
            f"Could not read {tensors.name} with its {CONFIG_NAME} ({type(exc).__name__}); "
            "export the folder again with `highlightsense export-weights`."
        ) from exc
    meta = config_data.get("meta", {})
    return state, config, meta if isinstance(meta, dict) else {}


def build_model(state: dict[str, torch.Tensor], config: ModelConfig, name: str = "weights") -> CRNN:
    """A CRNN with ``state`` loaded strictly; mismatches become one WeightsError sentence.

    The expected shapes come from a model on the meta device: nothing is allocated for a
    checkpoint that does not match.
    """
    with torch.device("meta"):
        expected = CRNN(config).state_dict()
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise WeightsError(f"{name} holds values that are not tensors; it is not a state dict.")
    state = canonical_state_dict(state)
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
    model = CRNN(config)
    model.load_state_dict(state, strict=True)
    # numpy, not torch.isfinite: on 45 small tensors torch's took 0.4 s of CPU (its OpenMP threads
    # spinning between the ops), numpy's 5 ms (benchmarks/README.md, issue 25)
    floats = (t.detach().float().numpy() for t in state.values() if t.is_floating_point())
    if not all(np.isfinite(values).all() for values in floats):
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
