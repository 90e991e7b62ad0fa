"""The highlight model: a CRNN with attention pooling over two log-mel spectrograms (SPEC §3).

Input ``x: (B, 2, 80, T)`` (channel 0 = streamer's voice, channel 1 = game sound) and
``mask: (B, T)`` (1 on real frames, 0 on padding); output one logit per clip and the attention
weights over the GRU's time steps (one step = 16 frames ≈ 0.37 s).
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

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
        x = self.relu(self.bn(self.conv(x)))
        # Outside training, the same maxima taken with elementwise maximum: torch's CPU max-pool
        # kernel is 10-20x slower at these shapes (benchmarks/README.md). Training keeps the
        # module, whose gradient picks one of tied inputs.
        return self.pool(x) if self.training else max_pool(x, self.pool.kernel_size)


def max_pool(x: torch.Tensor, kernel: tuple[int, int]) -> torch.Tensor:
    """x: (B, C, F, T) → (B, C, F // kf, T // kt): MaxPool2d(kernel) (stride = kernel, trailing
    rows and columns that fill no whole window dropped), as maxima of strided slices."""
    freq, time = kernel
    end = x.shape[2] // freq * freq
    x = functools.reduce(torch.maximum, [x[:, :, i:end:freq] for i in range(freq)])
    end = x.shape[3] // time * time
    x = functools.reduce(torch.maximum, [x[..., i:end:time] for i in range(time)])
    return x


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


def pad_with_minimum(x: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x: (..., C, F, t ≤ length) → padded (..., C, F, length), mask (..., length) float.

    The model's input rule (SPEC §4, §6): each clip is right-padded to the training length with
    its own minimum, and the mask is 1 on its real frames, 0 on the padding. Training batches and
    the tests use this materialised form; scoring runs the same rule through
    :meth:`CRNN.forward_unpadded` without convolving the padding.
    """
    real = x.shape[-1]
    if real > length:
        raise ValueError(f"cannot pad {real} frames to {length}")
    minimum = x.amin(dim=(-3, -2, -1), keepdim=True)  # (..., 1, 1, 1)
    padded = torch.cat([x, minimum.expand(*x.shape[:-1], length - real)], dim=-1)
    mask = (torch.arange(length, device=x.device) < real).to(torch.float32)
    return padded, mask.expand(*x.shape[:-3], length)


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
        return self._pool_and_classify(x, mask)

    def forward_unpadded(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, 2, 80, t) real frames → what :meth:`forward` gives for them padded by the
        input rule (:func:`pad_with_minimum`) to the training length ``config.max_frames``
        (or to t, when longer): logits (B,), attention weights (B, length / 16)."""
        length = max(self.config.max_frames, x.shape[-1])
        return self.forward_padded(x, x.amin(dim=(1, 2, 3)), length)

    def forward_padded(
        self, x: torch.Tensor, pad: torch.Tensor, length: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, 2, 80, t) real frames, pad: (B,) → what :meth:`forward` gives for x
        right-padded to ``length`` frames with ``pad`` and masked there, without running the
        convolutions over most of the padding.

        The padding is constant in time, so every block's output is constant in time there too,
        except within a few columns of its two edges: the CNN runs on the real frames, a margin
        and the tail only (:class:`_Pieces`), and block 0's instance-norm statistics add the
        constant part's share in closed form. The GRU and attention see all ``length`` steps, as
        in :meth:`forward`. Equal to it up to float rounding (tests/test_speed_scoring.py).
        Falls back to the plain forward when the padding is too short to gain anything, and in
        training mode (batch norm would then use the batch's statistics).
        """
        batch, _, _, real = x.shape
        mask = (torch.arange(length, device=x.device) < real).expand(batch, -1)  # (B, length)
        constant = pad.to(x.dtype)[:, None, None, None].expand(*x.shape[:-1], 1)  # (B, 2, 80, 1)
        if self.training or not self._padding_plan(real, length):
            padded = torch.cat([x, constant.expand(*x.shape[:-1], length - real)], dim=-1)
            return self.forward(padded, mask)
        pieces = _Pieces(x, constant, x[..., :0], length)
        for block in self.cnn:
            pieces = _block(block, pieces)
        return self._pool_and_classify(pieces.whole(), mask)

    def _padding_plan(self, real: int, length: int) -> bool:
        """Whether every block keeps enough constant columns between the edges it computes:
        :data:`MIN_CONSTANT` before each convolution, and the pooling's widened edges apart."""
        head, tail, n = real, 0, length
        for _, step in self.config.pools:
            if n - head - tail < MIN_CONSTANT:
                return False
            head, tail = head + 1, tail + 1  # a 3-wide convolution widens both edges by one
            head_end, tail_start = -(-head // step) * step, (n - tail) // step * step
            if head_end > tail_start:
                return False
            head, tail, n = head_end // step, n // step - tail_start // step, n // step
        return True

    def _pool_and_classify(
        self, x: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, 256, 10, S) CNN output → logits (B,), attention weights (B, S)."""
        batch, channels, freq, steps = x.shape
        x = x.permute(0, 3, 1, 2).reshape(batch, steps, channels * freq)  # (B, T/16, 2560)
        h, _ = self.rnn(x)  # (B, T/16, 512)
        if mask is None:
            step_mask = torch.ones(batch, steps, dtype=torch.bool, device=x.device)
        else:
            step_mask = mask[:, :: self.time_reduction][:, :steps] > 0
        context, weights = self.attention(h, step_mask)
        return self.classifier(context).squeeze(-1), weights


# Fewer constant columns than this between the computed edges and the shortcut is not used:
# each 3-wide convolution needs two of them to widen its edges and one left over in the middle.
MIN_CONSTANT = 3


class _Pieces(NamedTuple):
    """A (B, C, F, n) activation that is constant in time between its edges: columns
    [0, h) are ``head``, the last ``tail`` columns are ``tail``, every column between equals
    ``constant`` (B, C, F, 1)."""

    head: torch.Tensor
    constant: torch.Tensor
    tail: torch.Tensor
    length: int  # n

    @property
    def middle(self) -> int:
        return self.length - self.head.shape[-1] - self.tail.shape[-1]

    def whole(self) -> torch.Tensor:
        return torch.cat(
            [self.head, self.constant.expand(*self.constant.shape[:-1], self.middle), self.tail],
            dim=-1,
        )

    def map(self, function) -> _Pieces:
        return self._replace(
            head=function(self.head), constant=function(self.constant), tail=function(self.tail)
        )


def _block(block: ConvBlock, x: _Pieces) -> _Pieces:
    """:meth:`ConvBlock.forward` on the pieces of an activation."""
    x = _conv(block.conv, x)
    # batch norm in eval mode is a per-channel affine map, column by column
    instance = isinstance(block.bn, nn.InstanceNorm2d)
    x = _instance_norm(block.bn, x) if instance else x.map(block.bn)
    x = x.map(torch.relu)
    return _max_pool(block.pool, x)


def _conv(conv: nn.Conv2d, x: _Pieces) -> _Pieces:
    """The 3x3 convolution (padding 1) of the whole activation, as pieces.

    One call over head | 3 constant columns | tail: the output's column h is the head's new
    last column (it sees the constant), column h + 1 the new constant, and from h + 2 on the new
    tail, which sees the zero padding past the end exactly as the whole activation does.
    """
    width = x.head.shape[-1]
    k = x.constant
    y = conv(torch.cat([x.head, k, k, k, x.tail], dim=-1))
    return _Pieces(
        y[..., : width + 1], y[..., width + 1 : width + 2], y[..., width + 2 :], x.length
    )


def _instance_norm(norm: nn.InstanceNorm2d, x: _Pieces) -> _Pieces:
    """Instance norm over all n columns; the constant columns counted ``middle`` times."""
    count = x.head.shape[2] * x.length  # F · n values per (batch, channel)
    parts = (x.head.float(), x.constant.float(), x.tail.float())
    repeats = (1, x.middle, 1)
    mean = sum(r * p.sum((2, 3)) for r, p in zip(repeats, parts, strict=True)) / count  # (B, C)
    centred = [p - mean[..., None, None] for p in parts]
    var = sum(r * c.square().sum((2, 3)) for r, c in zip(repeats, centred, strict=True)) / count
    scale = torch.rsqrt(var + norm.eps)  # (B, C), biased variance as instance norm uses
    if norm.affine:
        shift = norm.bias - mean * scale * norm.weight
        scale = scale * norm.weight
    else:
        shift = -mean * scale
    dtype = x.head.dtype
    return x.map(lambda p: (p.float() * scale[..., None, None] + shift[..., None, None]).to(dtype))


def _max_pool(pool: nn.MaxPool2d, x: _Pieces) -> _Pieces:
    """Max-pool (freq, time) with stride = kernel: the head grows to the next multiple of the
    time kernel and the tail to start at one, borrowing constant columns, so every pooled pair
    lines up with the whole activation's; past the last whole pair, columns are dropped."""
    step = pool.kernel_size[1] if isinstance(pool.kernel_size, tuple) else pool.kernel_size
    width, n, k = x.head.shape[-1], x.length, x.constant
    head_end = -(-width // step) * step
    start = n - x.tail.shape[-1]
    tail_start, end = start // step * step, n // step * step
    head = torch.cat([x.head, k.expand(*k.shape[:-1], head_end - width)], dim=-1)
    tail = torch.cat([k.expand(*k.shape[:-1], start - tail_start), x.tail], dim=-1)
    tail = tail[..., : end - tail_start]
    constant = k.expand(*k.shape[:-1], step)
    kernel = pool.kernel_size
    return _Pieces(*(max_pool(p, kernel) for p in (head, constant, tail)), n // step)


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
