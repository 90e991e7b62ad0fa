"""Per-operator profile of one Demucs segment and one CRNN batch (torch.profiler, CPU).

    python benchmarks/profile_ops.py --separator htdemucs --threads 1
    python benchmarks/profile_ops.py --crnn-only --batch 2

Runs single-threaded by default, the way the pipeline's CPU workers do. The separator is the
random-weight one of ``common.make_separator``; the CRNN batch is windows of the given length
padded to the training length, as scoring builds them. Prints the top operators by self CPU time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (after the path set-up above)


def _profile(label: str, run, rows: int) -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    run()  # warm-up: oneDNN primitive creation, allocator
    began = time.perf_counter()
    run()
    plain = time.perf_counter() - began
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    print(f"\n{label}: {plain:.3f} s unprofiled (threads={torch.get_num_threads()})")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--separator", choices=common.SEPARATORS, default="htdemucs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--batch", type=int, default=1, help="CRNN windows per batch")
    parser.add_argument("--window-sec", type=float, default=30.0)
    parser.add_argument("--crnn-only", action="store_true")
    parser.add_argument("--plain", action="store_true", help="CRNN forward over the padded windows")
    parser.add_argument("--demucs-only", action="store_true")
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument(
        "--mha-fastpath", action="store_true", help="torch's attention fast path (the default)"
    )
    parser.add_argument("--scratch", type=Path, default=None, help="reused between runs")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    scratch = args.scratch or Path(tempfile.gettempdir()) / "highlightsense-bench"
    if not args.crnn_only:
        from highlightsense import separator as separators

        repo, name = common.make_separator(scratch, args.separator)
        separator = separators.load_separator(name, repo)
        (model, _), *_ = separators.members(separator.model)
        length = int(separator.samplerate * separator.segment)
        mix = torch.randn(1, separator.audio_channels, length)
        autocast = args.precision == "bf16"

        torch.backends.mha.set_fastpath_enabled(args.mha_fastpath)

        def demucs() -> None:
            with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=autocast):
                model(mix)

        _profile(
            f"{args.separator} segment ({length} samples, {args.precision})", demucs, args.rows
        )
    if not args.demucs_only:
        from model_fixtures import random_crnn

        from highlightsense import scoring
        from highlightsense.model import ModelConfig, pad_with_minimum

        crnn = random_crnn()
        length = scoring.window_frames(args.window_sec)
        spec = torch.randn(2, 80, length + 215 * (args.batch - 1))
        spec_rows = [
            pad_with_minimum(spec[..., 215 * i : 215 * i + length], ModelConfig.max_frames)
            for i in range(args.batch)
        ]
        windows = torch.stack([w for w, _ in spec_rows])
        masks = torch.stack([m for _, m in spec_rows])

        real = spec.unfold(-1, length, 215).permute(2, 0, 1, 3)[: args.batch]  # (B, 2, 80, t)

        def score() -> None:
            with torch.inference_mode():
                if args.plain:  # the CNN over the padding too
                    crnn(windows, masks)
                else:
                    crnn.forward_padded(real, real.amin(dim=(1, 2, 3)), windows.shape[-1])

        _profile(f"CRNN batch of {args.batch} x {length} frames", score, args.rows)


if __name__ == "__main__":
    main()
