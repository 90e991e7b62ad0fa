"""CRNN checkpoints for tests, saved exactly as the published best_model.pt is.

Two kinds:

- ``random_crnn`` / ``save_checkpoint``: the published architecture with random weights (every
  window scores about 0.55): for tests of loading, formats and plumbing.
- ``learned_crnn`` / ``save_learned_checkpoint``: a small-config CRNN that has learned something:
  it scores a window holding a loud shouting voice high and a quiet stretch low. Built in seconds
  on the pipeline's own features (``Engine.features`` on generated audio): the conv
  blocks are set by hand to pass on how far each mel band rises above the window's mean (what
  block 0's instance norm computes), the GRU is set to a per-step layer (update gate shut), and
  that layer, the attention and the classifier are fitted by a short torch loop. End-to-end
  tests run it on ``write_planted_media``'s VOD and check the planted shouts are the picks.
"""

from __future__ import annotations

import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from highlightsense import media, scoring
from highlightsense.engine import Engine
from highlightsense.features import FRAMES_PER_SECOND
from highlightsense.model import CRNN, ModelConfig, pad_with_minimum
from highlightsense.settings import AnalysisSettings

# inference-notebook name → training-notebook name (SPEC §3)
TRAINING_NAMES = ((".bn.", ".norm."), ("attention.W.", "attn.fc1."), ("attention.V.", "attn.fc2."))

MIX_RATE = 44100  # Hz, the rate the generated audio is written at
SHOUT_F0 = 220.0  # Hz, fundamental of the generated shout
SHOUT_HARMONICS = ((1, 1.0), (2, 0.6), (3, 0.45), (4, 0.3), (5, 0.2))  # (harmonic, amplitude)
SHOUT_LEVEL = 0.25  # peak-ish amplitude of the shout (full scale 1.0)
GAME_NOISE = 0.05  # rms of the game's background rumble
GAME_TONE = 0.1  # amplitude of a steady 440 Hz game tone

# The planted VOD of the end-to-end tests: three shouts, far enough apart that each 30 s window
# holds at most one and some windows hold none.
PLANTED_SECONDS = 120.0
PLANTED_BURSTS = ((12.0, 16.0), (57.0, 61.0), (102.0, 106.0))  # (start, end) s

LEARNED_CONFIG = ModelConfig(
    channels=(2, 2, 2, 2),  # voice, game: kept apart through the conv blocks
    rnn_hidden=8,
    rnn_layers=1,
    rnn_dropout=0.0,
    attention_dim=8,
    classifier_dim=8,
    dropout=(0.0, 0.0),
)
LEARNED_EPOCHS = 1
TRAIN_SECONDS = 140.0  # s of generated training audio
TRAIN_BURSTS = ((8.0, 12.0), (58.0, 61.0), (108.0, 113.0))  # gaps of 46 s: quiet windows too
TRAIN_STRIDE = 86  # frames (≈ 2 s) between training windows
TRAIN_STEPS = 120  # full-batch steps of the fitting loop
LIFT = 10.0  # added after block 0's instance norm: every cell stays positive through the ReLUs
CLOSED_GATE = -30.0  # bias that shuts the GRU's update gate: sigmoid(-30) ≈ 1e-13


# --- random weights ----------------------------------------------------------------------------


def random_crnn(seed: int = 0) -> CRNN:
    torch.manual_seed(seed)
    model = CRNN()
    # give the batch norms non-trivial running statistics, as a trained model has
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def training_names(state: dict) -> dict:
    renamed = {}
    for key, value in state.items():
        for new, old in TRAINING_NAMES:
            key = key.replace(new, old)
        renamed[key] = value
    return renamed


def save_checkpoint(path: Path, seed: int = 0, naming: str = "inference", epochs: int = 10) -> Path:
    """``{'model': state_dict, 'epochs': int}`` with the chosen state-dict naming."""
    state = random_crnn(seed).state_dict()
    if naming == "training":
        state = training_names(state)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state, "epochs": epochs}, path)
    return path


# --- generated stream audio --------------------------------------------------------------------


def stream_audio(
    seconds: float, bursts: tuple[tuple[float, float], ...], seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(voice, game) mono float32 at 44.1 kHz: a harmonic shout (vibrato, 5 harmonics) during
    ``bursts`` and silence otherwise; the game is a quiet rumble and a steady tone throughout."""
    rng = np.random.default_rng(seed)
    n = int(seconds * MIX_RATE)
    t = np.arange(n, dtype=np.float32) / MIX_RATE
    game = GAME_NOISE * rng.standard_normal(n, dtype=np.float32)
    game += GAME_TONE * np.sin(2 * np.pi * 440.0 * t)
    voice = np.zeros(n, np.float32)
    for start, end in bursts:
        span = slice(int(start * MIX_RATE), min(n, int(end * MIX_RATE)))
        phase = 2 * np.pi * SHOUT_F0 * t[span] + 2.0 * np.sin(2 * np.pi * 6.0 * t[span])  # vibrato
        shout = sum(level * np.sin(k * phase) for k, level in SHOUT_HARMONICS)
        voice[span] = SHOUT_LEVEL * shout / 2.0
    return voice, game


def write_wav(path: Path, mono: np.ndarray) -> Path:
    pcm = (np.clip(mono, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(MIX_RATE)
        file.writeframes(pcm.tobytes())
    return path


def write_planted_media(
    path: Path,
    seconds: float = PLANTED_SECONDS,
    bursts: tuple[tuple[float, float], ...] = PLANTED_BURSTS,
    *,
    video: bool = True,
    tracks: tuple[str, ...] = ("mix",),
    seed: int = 0,
) -> Path:
    """Encode generated stream audio with ffmpeg (stereo AAC; H.264 test pattern when ``video``).

    ``tracks`` names the audio tracks in order, each "voice", "game" or "mix" (voice + game):
    ``("mix",)`` is an ordinary VOD, ``("voice", "game")`` an OBS recording with its own tracks.
    """
    from conftest import ffmpeg_binary

    path.parent.mkdir(parents=True, exist_ok=True)
    voice, game = stream_audio(seconds, bursts, seed)
    signals = {"voice": voice, "game": game, "mix": voice + game}
    cmd = [ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-y"]
    if video:
        cmd += ["-f", "lavfi", "-i", f"testsrc2=size=160x90:rate=10:duration={seconds}"]
    for name in dict.fromkeys(tracks):
        cmd += ["-i", str(write_wav(path.with_name(f".{path.stem}.{name}.wav"), signals[name]))]
    first = 1 if video else 0
    inputs = {name: first + i for i, name in enumerate(dict.fromkeys(tracks))}
    if video:
        cmd += ["-map", "0:v", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    for name in tracks:
        cmd += ["-map", f"{inputs[name]}:a"]
    cmd += ["-ac", "2", "-c:a", "aac", "-b:a", "96k", "-shortest", str(path)]
    subprocess.run(cmd, check=True, timeout=120)
    for name in inputs:
        path.with_name(f".{path.stem}.{name}.wav").unlink()
    return path


def burst_seconds(start: float, end: float, bursts: tuple[tuple[float, float], ...]) -> float:
    """Seconds of the span [start, end) that some burst covers."""
    return sum(max(0.0, min(end, b) - max(start, a)) for a, b in bursts)


# --- the learned model -------------------------------------------------------------------------


def hand_set_crnn(config: ModelConfig = LEARNED_CONFIG) -> CRNN:
    """A CRNN whose conv blocks pass each stem's log-mel on, unmixed: block 0's instance norm
    turns it into how far each cell rises above the window's mean, the ReLUs keep the rises and
    the pools keep the largest. Its GRU is a per-step ``tanh(W x + b)``: the update gate is shut
    and the hidden state never feeds back, so :func:`_fit_tail` can fit it without a time loop."""
    torch.manual_seed(0)
    model = CRNN(config).eval()
    with torch.no_grad():
        for i, block in enumerate(model.cnn):
            block.conv.weight.zero_()
            block.conv.bias.zero_()
            for c in range(block.conv.out_channels):
                block.conv.weight[c, c, 1, 1] = 1.0  # the 3x3 kernel's centre: identity
            block.bn.weight.fill_(1.0)
            block.bn.bias.fill_(LIFT if i == 0 else 0.0)
            if i > 0:  # batch norms in eval mode: running statistics of an identity
                block.bn.running_mean.zero_()
                block.bn.running_var.fill_(1.0)
        hidden = config.rnn_hidden
        for name, param in model.rnn.named_parameters():
            param.zero_()
            if name.startswith("bias_ih"):
                param[hidden : 2 * hidden] = CLOSED_GATE  # gates are ordered (reset, update, new)
    return model


@torch.no_grad()
def _conv_features(model: CRNN, spec: torch.Tensor, starts: list[int], frames: int):
    """spec: (2, 80, T) → the GRU's input for each window: (N, T/16 steps, C·10)."""
    out = []
    for begin in range(0, len(starts), 16):
        padded = [
            pad_with_minimum(spec[:, :, s : s + frames], model.config.max_frames)
            for s in starts[begin : begin + 16]
        ]
        x = torch.stack([p for p, _ in padded])
        for block in model.cnn:
            x = block(x)  # ends as (B, C, 10, S)
        batch, channels, freq, steps = x.shape
        out.append(x.permute(0, 3, 1, 2).reshape(batch, steps, channels * freq))
    return torch.cat(out)


class _Tail(nn.Module):
    """What the hand-set CRNN computes after its conv blocks, without the GRU's time loop."""

    def __init__(self, model: CRNN):
        super().__init__()
        hidden = model.config.rnn_hidden
        self.step = nn.Linear(model.config.rnn_input, hidden)  # the GRU's "new" gate
        self.model = model
        self.hidden = hidden
        self.mean = torch.zeros(model.config.rnn_input)  # input standardisation, folded in
        self.scale = torch.ones(model.config.rnn_input)  # … to the step layer by install()

    def forward(self, x: torch.Tensor, steps: int) -> torch.Tensor:
        h = torch.tanh(self.step((x - self.mean) / self.scale))  # (N, S, H): both directions
        h = torch.cat([h, h], dim=-1)  # (N, S, 2H)
        mask = torch.zeros(h.shape[:2], dtype=torch.bool)
        mask[:, :steps] = True
        context, _ = self.model.attention(h, mask)
        return self.model.classifier(context).squeeze(-1)

    @torch.no_grad()
    def install(self) -> None:
        """Copy the fitted step layer into both directions of the GRU's "new" gate."""
        hidden, rnn = self.hidden, self.model.rnn
        weight = self.step.weight / self.scale
        bias = self.step.bias - weight @ self.mean
        for suffix in ("_l0", "_l0_reverse"):
            getattr(rnn, f"weight_ih{suffix}")[2 * hidden :] = weight
            getattr(rnn, f"bias_ih{suffix}")[2 * hidden :] = bias


def _training_windows(
    spec: torch.Tensor, bursts: tuple[tuple[float, float], ...], frames: int
) -> tuple[list[int], list[float]]:
    """Window starts every ≈ 1 s, labelled 1 when ≥ 1 s of a shout is inside, 0 when none is."""
    starts, labels = [], []
    for start in range(0, spec.shape[-1] - frames + 1, TRAIN_STRIDE):
        inside = burst_seconds(
            start / FRAMES_PER_SECOND, (start + frames) / FRAMES_PER_SECOND, bursts
        )
        if 0.0 < inside < 1.0:
            continue  # a shout cut at the window's edge: ambiguous
        starts.append(start)
        labels.append(float(inside > 0.0))
    return starts, labels


def training_features(work_dir: Path, separator: tuple[Path, str]) -> list[tuple]:
    """The pipeline's own features of generated training audio: [(spec (2, 80, T), bursts)].

    One 4-track recording (voice, game, mix, mix) read with ``--tracks`` as voice/game, mix/game
    and mix/mix pairs (the clean stems, and the unseparated mixes a weak separator hands on), and
    the mix alone separated by ``separator`` (repo, name): the tests' tiny random Demucs.
    """
    path = write_planted_media(
        work_dir / "train.mkv",
        TRAIN_SECONDS,
        TRAIN_BURSTS,
        video=False,
        tracks=("voice", "game", "mix", "mix"),
        seed=1,
    )
    mix = write_planted_media(
        work_dir / "train-mix.mkv", TRAIN_SECONDS, TRAIN_BURSTS, video=False, seed=1
    )
    repo, name = separator
    runs = [(path, AnalysisSettings(tracks=pair)) for pair in ((1, 2), (3, 2), (3, 4))]
    # torch separates, as before OpenVINO came in: the fitted model stays the one the tests' bounds
    # were measured with (OpenVINO's bf16 stems differ from torch's by bf16's rounding)
    runs.append(
        (mix, AnalysisSettings(separator=name, separator_repo=str(repo), separator_runtime="torch"))
    )
    return [
        (torch.from_numpy(Engine.create(settings).features(media.probe(file))), TRAIN_BURSTS)
        for file, settings in runs
    ]


def _fit_tail(model: CRNN, features: list, frames: int) -> CRNN:
    xs, ys = [], []
    for spec, bursts in features:
        starts, labels = _training_windows(spec, bursts, frames)
        xs.append(_conv_features(model, spec, starts, frames))
        ys.append(torch.tensor(labels))
    x, y = torch.cat(xs), torch.cat(ys)
    steps = -(-frames // model.time_reduction)
    tail = _Tail(model)
    real = x[:, :steps].reshape(-1, x.shape[-1])
    tail.mean, tail.scale = real.mean(0), real.std(0).clamp(min=1e-3)
    trained = [
        p for n, p in tail.named_parameters() if not n.startswith(("model.cnn", "model.rnn"))
    ]
    optimizer = torch.optim.AdamW(trained, lr=0.03, weight_decay=0.05)
    criterion = nn.BCEWithLogitsLoss(pos_weight=(1 - y).sum() / y.sum())  # balance the classes
    for _ in range(TRAIN_STEPS):
        loss = criterion(tail(x, steps), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    tail.install()
    return model.eval()


def learned_crnn(work_dir: Path, separator: tuple[Path, str]) -> CRNN:
    """The small CRNN that scores loud shouting high and quiet stretches low (seeded)."""
    torch.manual_seed(0)
    features = training_features(Path(work_dir), separator)
    return _fit_tail(hand_set_crnn(), features, scoring.window_frames(scoring.WINDOW_SEC))


def save_learned_checkpoint(path: Path, separator: tuple[Path, str]) -> Path:
    """Train :func:`learned_crnn` and save it as ``highlightsense train`` writes best_model.pt."""
    from highlightsense.training.train import published_checkpoint

    path.parent.mkdir(parents=True, exist_ok=True)
    model = learned_crnn(path.parent, separator)
    torch.save(published_checkpoint(model, LEARNED_EPOCHS), path)
    return path


@dataclass(frozen=True)
class PlantedVod:
    """A generated VOD with loud shouts at known times (``bursts``: (start, end) s, in order)."""

    path: Path
    bursts: tuple[tuple[float, float], ...] = PLANTED_BURSTS
    seconds: float = PLANTED_SECONDS
