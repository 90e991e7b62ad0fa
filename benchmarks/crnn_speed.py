"""CPU seconds per scored window: the CRNN over the padded window (the published forward, with
torch's max-pool) against the shortcut scoring uses (CRNN.forward_padded), interleaved.

    python benchmarks/crnn_speed.py --batch 1 2 --repeat 3

Single-threaded, like the pipeline's CPU workers. CPU time of the calling thread is reported
beside wall time: on a shared machine it depends far less on what else runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402, F401  (puts tests/ on the path for the model fixtures)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--window-sec", type=float, default=30.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    import torch
    import torch.nn.functional as F
    from model_fixtures import random_crnn

    from highlightsense import scoring
    from highlightsense.model import ModelConfig

    TRAIN_FRAMES = ModelConfig.max_frames  # the training length the published model pads to

    torch.set_num_threads(1)
    model = random_crnn()
    length = scoring.window_frames(args.window_sec)

    def pad(x, minimum):
        tail = minimum[:, None, None, None].expand(*x.shape[:-1], TRAIN_FRAMES - x.shape[-1])
        mask = (torch.arange(TRAIN_FRAMES) < x.shape[-1]).expand(len(x), -1)
        return torch.cat([x, tail], -1), mask

    def published(x, minimum):
        padded, mask = pad(x, minimum)
        for block in model.cnn:
            padded = F.max_pool2d(F.relu(block.bn(block.conv(padded))), block.pool.kernel_size)
        return model._pool_and_classify(padded, mask)

    def fast_pool(x, minimum):  # CRNN.forward: elementwise max-pool, CNN over the padding
        return model(*pad(x, minimum))

    def shortcut(x, minimum):
        return model.forward_padded(x, minimum, TRAIN_FRAMES)

    for batch in args.batch:
        x = torch.randn(batch, 2, 80, length) * 3 - 8
        minimum = x.amin(dim=(1, 2, 3))
        runs = {"published": published, "max-pool only": fast_pool, "shortcut": shortcut}
        seconds = {name: [] for name in runs}
        with torch.inference_mode():
            for run in runs.values():  # warm-up
                run(x, minimum)
            for _ in range(args.repeat):
                for name, run in runs.items():
                    wall, cpu = time.perf_counter(), time.thread_time()
                    run(x, minimum)
                    seconds[name].append(
                        ((time.thread_time() - cpu) / batch, (time.perf_counter() - wall) / batch)
                    )
        cpu = {k: statistics.median(c for c, _ in v) for k, v in seconds.items()}
        wall = {k: statistics.median(w for _, w in v) for k, v in seconds.items()}
        print(f"batch {batch}, median of {args.repeat}, s per window (ratio to published):")
        for name in runs:
            print(
                f"  {name:14s} CPU {cpu[name]:.3f} ({cpu['published'] / cpu[name]:.2f}x)  "
                f"wall {wall[name]:.3f} ({wall['published'] / wall[name]:.2f}x)"
            )


if __name__ == "__main__":
    main()
