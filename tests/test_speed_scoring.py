"""The scoring shortcuts are exact: CRNN.forward_padded and the elementwise max-pool against the
published forward over the fully padded window (nn.MaxPool2d, the CNN over every column).

Tolerance: logits within 2e-6, probabilities within 1e-5, attention weights within 1e-6
(measured differences are ≤ 1e-7: float rounding of the instance-norm sums taken in another
order). Random-weight models give probabilities near 0.5 that move little, so the logits are
compared tightly too, and each check also shows that another padding value moves them further.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from model_fixtures import random_crnn, save_checkpoint

from highlightsense import scoring, weights
from highlightsense.model import CRNN, ModelConfig, max_pool, pad_with_minimum

TRAIN_FRAMES = ModelConfig.max_frames  # the training length the published model pads to

LOGIT_TOL = 2e-6
PROBABILITY_TOL = 1e-5
ATTENTION_TOL = 1e-6
REACHED = {"forward_padded": 0, "max_pool": 0}  # hypothesis examples that reached the assertion


def published_forward(model: CRNN, x: torch.Tensor, mask: torch.Tensor):
    """SPEC §3 step by step, with torch's own max-pool: the reference."""
    for block in model.cnn:
        x = F.max_pool2d(F.relu(block.bn(block.conv(x))), block.pool.kernel_size)
    batch, channels, freq, steps = x.shape
    h, _ = model.rnn(x.permute(0, 3, 1, 2).reshape(batch, steps, channels * freq))
    step_mask = mask[:, ::16][:, :steps] > 0
    scores = model.attention.V(torch.tanh(model.attention.W(h))).squeeze(-1)
    weights_ = torch.softmax(scores.masked_fill(~step_mask, float("-inf")), dim=1)
    context = torch.bmm(weights_.unsqueeze(1), h).squeeze(1)
    return model.classifier(context).squeeze(-1), weights_


def padded_windows(batch: int, real: int, seed: int, length: int = TRAIN_FRAMES):
    """(B, 2, 80, real) log-mel-like windows, their minima, and pad_with_minimum's padded form."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 2, 80, real, generator=generator) * 3 - 8
    pairs = [pad_with_minimum(window, length) for window in x]
    padded = torch.stack([p for p, _ in pairs])
    masks = torch.stack([m for _, m in pairs])
    return x, x.amin(dim=(1, 2, 3)), padded, masks


def assert_same(model: CRNN, batch: int, real: int, seed: int, length: int = TRAIN_FRAMES):
    x, minimum, padded, masks = padded_windows(batch, real, seed, length)
    with torch.inference_mode():
        expected_logits, expected_weights = published_forward(model, padded, masks)
        logits, weights_ = model.forward_padded(x, minimum, length)
        # the comparison can fail: the same windows padded with another value score differently
        other, _ = model.forward_padded(x, minimum + 10.0, length)
    assert weights_.shape == expected_weights.shape == (batch, length // 16)
    torch.testing.assert_close(logits, expected_logits, atol=LOGIT_TOL, rtol=0)
    torch.testing.assert_close(
        torch.sigmoid(logits), torch.sigmoid(expected_logits), atol=PROBABILITY_TOL, rtol=0
    )
    torch.testing.assert_close(weights_, expected_weights, atol=ATTENTION_TOL, rtol=0)
    if model._padding_plan(real, length):
        assert (other - expected_logits).abs().max() > 10 * LOGIT_TOL


@pytest.fixture(scope="module")
def model() -> CRNN:
    return random_crnn(5)


@pytest.mark.parametrize(
    ("batch", "real"),
    # 1292 = the default 30 s window; odd and even edges; one frame; too close to 2584 to gain
    [(1, 1292), (3, 1292), (2, 1291), (2, 43), (1, 1), (2, 2500), (1, 2570), (1, 2584)],
)
def test_forward_padded_equals_the_published_forward(model, batch, real):
    assert_same(model, batch, real, seed=batch * 10_000 + real)


@settings(max_examples=4, deadline=None)
@given(
    real=st.integers(1, TRAIN_FRAMES), seed=st.integers(0, 2**16), weights_seed=st.integers(0, 3)
)
def test_forward_padded_equals_the_published_forward_any_length(real, seed, weights_seed):
    assert_same(random_crnn(weights_seed), 1, real, seed)
    REACHED["forward_padded"] += 1


def test_forward_padded_to_a_longer_length(model):
    assert_same(model, 2, 1500, seed=7, length=TRAIN_FRAMES + 37)


def test_forward_padded_through_the_published_checkpoint_format(tmp_path):
    for naming in ("inference", "training"):
        path = save_checkpoint(tmp_path / f"{naming}.pt", seed=9, naming=naming)
        assert_same(weights.load_model(path), 2, 1292, seed=1)


def test_scoring_equals_published_forward_per_window(model):
    """score() end to end (gather, minimum, shortcut) against the reference on pad_window."""
    spec = torch.randn(2, 80, 1292 + 215 * 3 + 11, generator=torch.Generator().manual_seed(2)) - 6
    table = scoring.score(model, spec, batch_size=3).windows
    expected = []
    for start in scoring.window_starts(spec.shape[-1], 1292, 215):
        padded, mask = pad_with_minimum(spec[:, :, start : start + 1292], TRAIN_FRAMES)
        with torch.inference_mode():
            expected.append(torch.sigmoid(published_forward(model, padded[None], mask[None])[0]))
    torch.testing.assert_close(
        torch.from_numpy(table[:, 2]).float(), torch.cat(expected), atol=PROBABILITY_TOL, rtol=0
    )


def test_training_mode_takes_the_plain_path(model):
    """In training, batch norm uses the batch's statistics: no shortcut, gradients flow."""
    model.train()
    try:
        x, minimum, padded, masks = padded_windows(2, 700, seed=3)
        torch.manual_seed(0)
        logits, _ = model.forward_padded(x, minimum, TRAIN_FRAMES)
        torch.manual_seed(0)
        expected, _ = model(padded, masks)
    finally:
        model.eval()
    assert logits.requires_grad
    torch.testing.assert_close(logits, expected, atol=1e-6, rtol=0)


@settings(max_examples=40, deadline=None)
@given(
    kernel=st.sampled_from([(1, 2), (2, 2), (2, 1), (3, 2)]),
    data=st.data(),
    seed=st.integers(0, 2**16),
)
def test_max_pool_equals_torch_max_pool(kernel, data, seed):
    # at least one pooling window each way, odd leftovers included
    height, width = data.draw(st.integers(kernel[0], 9)), data.draw(st.integers(kernel[1], 13))
    shape = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3)), height, width)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randint(-3, 4, shape, generator=generator).float()  # ties on purpose
    assert torch.equal(max_pool(x, kernel), F.max_pool2d(x, kernel))
    REACHED["max_pool"] += 1


def test_hypothesis_examples_reached_the_assertions():
    assert REACHED["forward_padded"] >= 4 and REACHED["max_pool"] >= 40  # every example drawn
