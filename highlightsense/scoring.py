"""Score sliding windows of the VOD's features with the CRNN (SPEC §4).

A window of 30 s is 1292 frames, the stride of 5 s is 215 frames. Every window is right-padded to
the training length (2584 frames) with its own minimum, with a mask marking the real frames —
the model was trained that way. Windows are scored in batches on the model's device.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from .errors import SettingsError
from .features import FRAMES_PER_SECOND, HOP, SAMPLE_RATE
from .model import CRNN

WINDOW_SEC = 30.0  # s, default window length
STRIDE_SEC = 5.0  # s, default hop between window starts
MAX_WINDOW_SEC = 60.0  # s, the model's training length: longer windows were never seen
BATCH_SIZE = 32  # windows per forward pass


def window_frames(window_sec: float) -> int:
    """Frames in a window, as the published notebook counted them: int(s·sr/hop) + 1."""
    return int(window_sec * SAMPLE_RATE / HOP) + 1


def stride_frames(stride_sec: float) -> int:
    return max(1, int(stride_sec * SAMPLE_RATE / HOP))


def check_window(window_sec: float, stride_sec: float) -> None:
    if not 1.0 <= window_sec <= MAX_WINDOW_SEC:
        raise SettingsError(
            f"The clip length must be between 1 and {MAX_WINDOW_SEC:.0f} seconds "
            f"(got {window_sec:g}); the model was trained on clips of at most 60 s."
        )
    if not 0.5 <= stride_sec <= window_sec:
        raise SettingsError(
            f"The stride must be between 0.5 s and the clip length (got {stride_sec:g} s)."
        )


def window_starts(n_frames: int, window: int, stride: int) -> np.ndarray:
    """Start frames of the windows over ``n_frames`` frames.

    Window i starts at i·stride, count = max(1, (T − window)//stride + 1) (SPEC §4). Unlike the
    published notebook, when the last stride leaves frames unscored a final window ending at the
    last frame is added, so the VOD's tail is scored too. A VOD shorter than one window gets one
    window starting at 0 (it is padded).
    """
    count = max(1, (n_frames - window) // stride + 1)
    starts = np.arange(count, dtype=np.int64) * stride
    last_start = max(0, n_frames - window)
    starts = np.minimum(starts, last_start)  # a window passing the end is moved to end at T
    if starts[-1] < last_start:
        starts = np.append(starts, last_start)
    return starts


@dataclass
class Scores:
    """Per-window results. ``windows``: (N, 3) float array of start_sec, end_sec, probability;
    ``attention``: (N, S) float32 attention weights over the GRU's steps (the model's
    ``time_reduction`` frames each), or None if not asked for."""

    windows: np.ndarray
    attention: np.ndarray | None = None


def score(
    model: CRNN,
    spec: torch.Tensor,
    *,
    window_sec: float = WINDOW_SEC,
    stride_sec: float = STRIDE_SEC,
    batch_size: int = BATCH_SIZE,
    workers: int = 1,
    precision: str = "fp32",
    keep_attention: bool = False,
    progress: Callable[[float, str], None] | None = None,
) -> Scores:
    """spec: (2, 80, T) log-mel → :class:`Scores` for every window, scored in batches.

    The windows are cut on the model's device with one gather per batch, so nothing goes back to
    the host until the batch's probabilities are done. ``workers`` threads score batches side by
    side (on a CPU, with one torch thread each, that beats one multi-threaded forward).
    """
    check_window(window_sec, stride_sec)
    device = next(model.parameters()).device
    spec = spec.to(device=device, dtype=torch.float32)
    n_frames = spec.shape[-1]
    length = min(window_frames(window_sec), n_frames)
    starts = window_starts(n_frames, window_frames(window_sec), stride_frames(stride_sec))
    positions = torch.arange(length, device=device)
    autocast = precision == "bf16"

    @torch.inference_mode()  # per call: inference mode is per thread
    def run(begin: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Probabilities (B,) and attention (B, S) of the batch of windows from ``begin``."""
        batch_starts = torch.as_tensor(starts[begin : begin + batch_size], device=device)
        index = batch_starts[:, None] + positions[None]  # (B, length)
        windows = spec[:, :, index].permute(2, 0, 1, 3)  # (B, 2, 80, length)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits, weights = model.forward_unpadded(windows)  # the model's padding rule
        return torch.sigmoid(logits.float()), weights.float()

    begins = range(0, len(starts), batch_size)
    probabilities, attention = [], []
    pool = ThreadPoolExecutor(workers, thread_name_prefix="score") if workers > 1 else None
    try:
        for begin, (probs, weights) in zip(
            begins, pool.map(run, begins) if pool else map(run, begins), strict=True
        ):
            probabilities.append(probs)
            if keep_attention:
                attention.append(weights)
            if progress is not None:
                done = min(begin + batch_size, len(starts))
                progress(done / len(starts), f"Scored {done} of {len(starts)} windows")
    finally:
        if pool is not None:  # a cancel (raised by progress) drops the batches not started
            pool.shutdown(cancel_futures=True)
    probs = torch.cat(probabilities).cpu().numpy().astype(np.float64)
    windows_table = np.stack(
        [starts / FRAMES_PER_SECOND, (starts + length) / FRAMES_PER_SECOND, probs], axis=1
    )
    return Scores(
        windows=windows_table,
        attention=torch.cat(attention).cpu().numpy() if keep_attention else None,
    )


def score_windows(
    model: CRNN,
    spec: np.ndarray | torch.Tensor,
    window_sec: float = WINDOW_SEC,
    stride_sec: float = STRIDE_SEC,
    batch_size: int = BATCH_SIZE,
) -> np.ndarray:
    """spec: (2, 80, T) numpy or torch → float array (N, 3) of start_sec, end_sec, probability."""
    return score(
        model,
        torch.as_tensor(spec),
        window_sec=window_sec,
        stride_sec=stride_sec,
        batch_size=batch_size,
    ).windows
