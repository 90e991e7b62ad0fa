"""The highlight model: a CRNN with attention pooling over two log-mel spectrograms (SPEC §3).

Input ``x: (B, 2, 80, T)`` (channel 0 = streamer's voice, channel 1 = game sound) and
``mask: (B, T)`` (1 on real frames, 0 on padding); output one logit per clip and the attention
weights over the GRU's time steps (one step = 16 frames ≈ 0.37 s).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the CRNN; the published model uses these defaults."""

    n_mels: int = 80  # mel bands per stem
    in_channels: int = 2  # stems: voice, game
    channels: tuple[int, ...] = (32, 64, 128, 256)  # conv channels per block
    pools: tuple[tuple[int, int], ...] = ((2, 2), (2, 2), (2, 2), (1, 2))  # (freq, time)
    rnn_hidden: int = 256  # per direction
    rnn_layers: int = 2
    rnn_dropout: float = 0.3
    attention_dim: int = 128
    classifier_dim: int = 128
    dropout: tuple[float, float] = field(default=(0.5, 0.25))  # before each classifier Linear
    max_frames: int = 2584  # 60 s at 22 050 Hz / 512: the training length

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("channels", "dropout"):
            if key in known:
                known[key] = tuple(known[key])
        if "pools" in known:
            known["pools"] = tuple(tuple(p) for p in known["pools"])
        return cls(**known)

    @property
    def rnn_input(self) -> int:
        freq = self.n_mels
        for pool_freq, _ in self.pools:
            freq //= pool_freq
        return self.channels[-1] * freq


class ConvBlock(nn.Module):
    """Conv2d(3x3) → norm → ReLU → MaxPool2d. Block 0 uses instance norm: per-clip
    normalisation, so a quiet and a loud stream of the same moment look alike."""

    def __init__(self, c_in: int, c_out: int, pool: tuple[int, int], instance_norm: bool):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size=3, padding=1)
        self.bn = nn.InstanceNorm2d(c_out, affine=True) if instance_norm else nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.relu(self.bn(self.conv(x))))


class AttentionPool(nn.Module):
    """Additive attention over time: w = softmax(V tanh(W h)), context = Σ w·h."""

    def __init__(self, dim: int, attention_dim: int):
        super().__init__()
        self.W = nn.Linear(dim, attention_dim)
        self.V = nn.Linear(attention_dim, 1, bias=False)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h: (B, S, D), mask: (B, S) bool → context (B, D), weights (B, S)."""
        scores = self.V(torch.tanh(self.W(h))).squeeze(-1)  # (B, S)
        scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=1)
        return torch.bmm(weights.unsqueeze(1), h).squeeze(1), weights


class CRNN(nn.Module):
    """Four conv blocks → bidirectional GRU → attention pooling → MLP classifier."""

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        self.config = config = config or ModelConfig()
        widths = (config.in_channels, *config.channels)
        self.cnn = nn.ModuleList(
            ConvBlock(widths[i], widths[i + 1], config.pools[i], instance_norm=i == 0)
            for i in range(len(config.channels))
        )
        self.rnn = nn.GRU(
            config.rnn_input,
            config.rnn_hidden,
            num_layers=config.rnn_layers,
            batch_first=True,
            bidirectional=True,
            dropout=config.rnn_dropout,
        )
        self.attention = AttentionPool(2 * config.rnn_hidden, config.attention_dim)
        self.classifier = nn.Sequential(
            nn.Dropout(config.dropout[0]),
            nn.Linear(2 * config.rnn_hidden, config.classifier_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(config.dropout[1]),
            nn.Linear(config.classifier_dim, 1),
        )

    @property
    def time_reduction(self) -> int:
        reduction = 1
        for _, pool_time in self.config.pools:
            reduction *= pool_time
        return reduction

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, 2, 80, T), mask: (B, T) → logits (B,), attention weights (B, T/16)."""
        for block in self.cnn:
            x = block(x)  # ends as (B, 256, 10, T/16)
        batch, channels, freq, steps = x.shape
        x = x.permute(0, 3, 1, 2).reshape(batch, steps, channels * freq)  # (B, T/16, 2560)
        h, _ = self.rnn(x)  # (B, T/16, 512)
        if mask is None:
            step_mask = torch.ones(batch, steps, dtype=torch.bool, device=x.device)
        else:
            step_mask = mask[:, :: self.time_reduction][:, :steps] > 0
        context, weights = self.attention(h, step_mask)
        return self.classifier(context).squeeze(-1), weights


# The two state-dict namings in the wild (SPEC §3): the inference notebook's (this module's own,
# which the published best_model.pt uses) and the training notebook's.
_TRAINING_NAMES = (
    (".norm.", ".bn."),
    ("attn.fc1.", "attention.W."),
    ("attn.fc2.", "attention.V."),
)


def canonical_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a training-notebook state dict to this module's names (others pass through)."""
    renamed = {}
    for key, value in state.items():
        if key.startswith("module."):  # saved from DistributedDataParallel
            key = key[len("module.") :]
        for old, new in _TRAINING_NAMES:
            if old in key and (old != ".norm." or key.startswith("cnn.")):
                key = key.replace(old, new, 1)
        renamed[key] = value
    return renamed
