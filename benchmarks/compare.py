"""The published procedure against the project's pipeline, on the same VOD and model files.

    python benchmarks/compare.py            # 1.5 min VOD, htdemucs-sized and tiny, paired
    python benchmarks/compare.py --minutes 15 --separator tiny --repeat 2

(a) "published" re-implements the published inference notebook step by step: ffmpeg splits the
audio into 60 s WAV pieces; the Demucs command line (``python -m demucs --two-stems vocals``,
its defaults otherwise: one random shift, 16-bit WAVs) runs once per piece, reloading the model
every time; ffmpeg concatenates the stems; librosa loads each whole stem (mono, 22 050 Hz) and
computes the training recipe's log-mel (SPEC §2); the CRNN scores one window per forward pass,
padded to 2584 frames with the window minimum (SPEC §4); percentile threshold and NMS select
(SPEC §5); ffmpeg cuts the clips one after the other (same encoder settings as ours).
(b) "ours" is ``highlightsense.analyze`` with the cache off (see benchmarks/pipeline.py). Where
OpenVINO runs its separator's network, its export is made once before the pairs, like a model
downloaded once, and its cost printed on a line of its own; the timed runs find it in
``--scratch``/cache.

Each run is a fresh child interpreter; peak RSS is the largest single process (the Demucs
command line runs in its own processes). ``--repeat`` interleaves runs; medians are shown. Both
totals count from the child interpreter's start ("start-up": the interpreter and the imports).
Before each run the script waits up to ``--settle`` s for the 1-min load average to fall to 0.5,
and prints it before and after: pairs with a reading above 1.5 are left out of the medians
while a quiet pair is left, and the title says BUSY when none was quiet.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (after the path set-up above)
import pipeline as ours  # noqa: E402

from highlightsense.cpu import default_precision  # noqa: E402

SCRIPT = Path(__file__).resolve()
PIECE_SECONDS = 60  # s per Demucs command-line run, as published
TARGET_FRAMES = 2584  # the training length every window is padded to (SPEC §4)
TOOL_TIMEOUT = 3600  # s for any one ffmpeg or Demucs run
STAGES = ("start-up", "split", "separate", "concatenate", "features", "load model", "score",
          "select", "clips", "tables")  # fmt: skip


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=TOOL_TIMEOUT)
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} failed: {done.stderr[-2000:]}")


def run_published(config: dict) -> dict:
    """Child: the published procedure, stage by stage."""
    import librosa
    import numpy as np
    import torch
    import torch.nn.functional as F

    from highlightsense import clips, media
    from highlightsense.model import CRNN

    startup = common.process_age()  # the interpreter and the imports above
    ffmpeg = common.ffmpeg()
    vod = Path(config["vod"])
    work = Path(config["out_dir"])
    pieces, separated = work / "chunks_temp", work / "demucs_temp"
    pieces.mkdir(parents=True)
    separated.mkdir()
    watch = common.Stopwatch()
    watch.add("start-up", startup)

    with watch("split"):
        _run([ffmpeg, "-y", "-loglevel", "error", "-i", str(vod), "-vn", "-f", "segment",
              "-segment_time", str(PIECE_SECONDS), "-acodec", "pcm_s16le", "-ar", "44100",
              "-ac", "2", str(pieces / "chunk_%03d.wav")])  # fmt: skip
    files = sorted(pieces.iterdir())

    with watch("separate"):
        for piece in files:  # one Demucs command line per piece: the model is reloaded each time
            _run([sys.executable, "-m", "demucs", "--repo", config["repo"], "-n", config["name"],
                  "--two-stems", "vocals", "-d", "cpu", "--jobs", "1", "-o", str(separated),
                  str(piece)])  # fmt: skip

    stems = {}
    with watch("concatenate"):
        for stem, target in (("vocals", "vocals.wav"), ("no_vocals", "game.wav")):
            listing = work / f"{stem}.txt"
            listing.write_text(
                "".join(f"file '{separated / config['name'] / p.stem / stem}.wav'\n" for p in files)
            )
            stems[stem] = work / target
            _run([ffmpeg, "-y", "-loglevel", "error", "-f", "concat", "-safe", "0",
                  "-i", str(listing), "-c", "copy", str(stems[stem])])  # fmt: skip

    with watch("features"):
        mels = []
        for stem in ("vocals", "no_vocals"):
            y, _ = librosa.load(stems[stem], sr=22050, mono=True)
            mel = librosa.feature.melspectrogram(y=y, sr=22050, n_fft=1024, hop_length=512,
                                                 n_mels=80)  # fmt: skip
            mels.append(np.log(mel + 1e-9))
        length = min(m.shape[1] for m in mels)
        spectrogram = torch.from_numpy(np.stack([m[:, :length] for m in mels])).float()

    with watch("load model"):
        checkpoint = torch.load(config["weights"], map_location="cpu", weights_only=True)
        model = CRNN()
        model.load_state_dict(checkpoint["model"])
        model.eval()

    window_frames = int(30 * 22050 / 512) + 1
    stride_frames = int(5 * 22050 / 512)
    total_frames = spectrogram.shape[2]
    count = max(1, (total_frames - window_frames) // stride_frames + 1)
    rows = []
    with watch("score"), torch.no_grad():
        for i in range(count):
            start, end = i * stride_frames, i * stride_frames + window_frames
            if end > total_frames:
                end = total_frames
                start = max(0, end - window_frames)
            window = spectrogram[:, :, start:end]
            actual = window.shape[2]
            if TARGET_FRAMES - actual > 0:
                window = F.pad(window, (0, TARGET_FRAMES - actual), value=window.min().item())
            mask = torch.zeros(TARGET_FRAMES)
            mask[:actual] = 1
            logits, _ = model(window.unsqueeze(0), mask.unsqueeze(0))
            rows.append([i, start * 512 / 22050, end * 512 / 22050, torch.sigmoid(logits).item()])

    with watch("select"):
        table = np.array(rows)
        threshold = np.percentile(table[:, 3], 99)
        kept: list[np.ndarray] = []
        for row in sorted(table[table[:, 3] >= threshold], key=lambda r: -r[3]):
            if all(row[1] >= k[2] or row[2] <= k[1] for k in kept) and all(
                abs(row[1] - k[1]) >= 10 for k in kept
            ):
                kept.append(row)
        kept = kept[:20]

    info = media.probe(vod)
    with watch("clips"):
        for rank, row in enumerate(kept, 1):
            _run(clips.cut_command(info, (row[1], row[2]), work / f"highlight_{rank:02d}.mp4"))

    with watch("tables"):
        with open(work / "raw_window_scores.csv", "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["window_index", "start_sec", "end_sec", "confidence"])
            writer.writerows(rows)
        with open(work / "final_clips_metadata.csv", "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["rank", "start_sec", "end_sec", "confidence"])
            writer.writerows([[r, k[1], k[2], k[3]] for r, k in enumerate(kept, 1)])

    total = common.process_age()
    np.save(work / "windows.npy", table[:, 1:])
    return {
        "seconds": {k: watch.seconds.get(k, 0.0) for k in STAGES},
        "total": total,
        "audio_sec": info.duration,
        "windows": len(rows),
        "clips": len(kept),
        "peak_rss_mib": common.peak_rss_mib(),
        **common.cpu_usage(),
        "parallelism": f"1 x {torch.get_num_threads()}",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=1.5)
    parser.add_argument(
        "--separator", choices=common.SEPARATORS, nargs="+", default=["htdemucs", "tiny"]
    )
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="ours (auto: as detect)",
    )
    parser.add_argument(
        "--separator-runtime",
        choices=("auto", "torch", "openvino"),
        default="auto",
        help="ours (auto: as detect)",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="ours")
    parser.add_argument("--workers", type=int, default=None, help="ours, on the CPU")
    parser.add_argument("--threads", type=int, default=None, help="ours, per worker")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--audio-only", action="store_true", help="an .m4a input, no video")
    parser.add_argument("--scratch", type=Path, default=None, help="reused between runs")
    parser.add_argument(
        "--settle", type=float, default=120.0, help="s to wait for a quiet machine before a run"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_published(json.loads(args.child))))
        return

    scratch = args.scratch or Path(tempfile.gettempdir()) / "highlightsense-bench"
    scratch.mkdir(parents=True, exist_ok=True)
    ratios = []
    for separator in args.separator:
        published, mine, cold = compare(args, scratch, separator)
        ratios.append((separator, mine["total"] / published["total"], published, mine, cold))
    print(f"\nsummary, {args.minutes:g} min {'audio' if args.audio_only else 'VOD'}:")
    for separator, ratio, published, mine, cold in ratios:
        print(
            f"  {separator}: ours/published {ratio:.3f} (wall), "
            f"{cpu_seconds(mine) / cpu_seconds(published):.3f} (CPU time); peak RSS ours "
            f"{mine['peak_rss_mib']:.0f} MiB, published {published['peak_rss_mib']:.0f} MiB; "
            f"quiet pairs {mine['quiet_runs']} of {mine['runs']}, "
            f"largest load average {max(mine['load_max'], published['load_max']):.2f}; "
            f"ours' separator runtime {mine['runtime']}"
        )
        if cold:
            print(f"    {cold}")


def cpu_seconds(run: dict) -> float:
    return run["user_sec"] + run["sys_sec"]


def compare(
    args: argparse.Namespace, scratch: Path, separator: str
) -> tuple[dict, dict, str | None]:
    """``--repeat`` interleaved pairs (published, ours) with ``separator``; prints the table and
    returns both sides' medians over the quiet pairs (all pairs when none was quiet), and the
    line saying what OpenVINO's first run cost (None where torch runs ours)."""
    inputs = ours.prepare(scratch, args.minutes, separator, not args.audio_only)
    base = {**inputs, "minutes": args.minutes, "separator": separator}
    mine = {
        **base,
        "precision": args.precision,
        "separator_runtime": args.separator_runtime,
        "cache": str(scratch / "cache"),  # OpenVINO's export, made once below
        "batch_size": args.batch_size,
        "workers": args.workers,
        "threads": args.threads,
    }
    cold = ours.warm_up(ours.SCRIPT, mine, scratch)
    if cold:
        print(cold)
    published_runs, our_runs = [], []
    for attempt in range(args.repeat):  # interleaved, so a busy spell hits both sides
        with tempfile.TemporaryDirectory(dir=scratch) as work:
            published_runs.append(
                common.run_child(
                    SCRIPT, {**base, "out_dir": f"{work}/published"}, settle_max=args.settle
                )
            )
            our_runs.append(
                common.run_child(
                    ours.SCRIPT, {**mine, "out_dir": f"{work}/ours"}, settle_max=args.settle
                )
            )
            if attempt == args.repeat - 1:
                _print_agreement(Path(work))
        print(f"{separator} pair {attempt + 1}: published {ours.describe(published_runs[-1])}; "
              f"ours {ours.describe(our_runs[-1])}", file=sys.stderr)  # fmt: skip

    # a pair counts only when both sides ran on a quiet machine
    pairs = [
        common.quiet(p) and common.quiet(m) for p, m in zip(published_runs, our_runs, strict=True)
    ]
    if any(pairs):
        published_runs = [r for r, q in zip(published_runs, pairs, strict=True) if q]
        our_runs = [r for r, q in zip(our_runs, pairs, strict=True) if q]
    published, mine_ = ours.summarize(published_runs), ours.summarize(our_runs)
    published["quiet_runs"] = mine_["quiet_runs"] = sum(pairs)
    published["runs"] = mine_["runs"] = len(pairs)
    rows = [(f"published: {k}", f"{published['seconds'][k]:.2f}", "") for k in STAGES]
    rows += [(f"ours: {k}", "", f"{mine_['seconds'][k]:.2f}") for k in ours.STAGES]
    ratio = mine_["total"] / published["total"]
    cpu_ratio = cpu_seconds(mine_) / cpu_seconds(published)
    rows += [
        ("total (median)", f"{published['total']:.2f}", f"{mine_['total']:.2f}"),
        ("total (min)", f"{published['total_min']:.2f}", f"{mine_['total_min']:.2f}"),
        ("ratio ours/published", "", f"{ratio:.3f}"),
        ("realtime factor", *(f"{r['audio_sec'] / r['total']:.2f}x" for r in (published, mine_))),
        ("peak RSS (MiB)", *(f"{r['peak_rss_mib']:.0f}" for r in (published, mine_))),
        ("CPU user+system (s)", *(f"{cpu_seconds(r):.1f}" for r in (published, mine_))),
        ("of it system (s)", *(f"{r['sys_sec']:.1f}" for r in (published, mine_))),
        ("minor page faults", *(f"{r['minor_faults']:.0f}" for r in (published, mine_))),
        ("CPU-time ratio ours/published", "", f"{cpu_ratio:.3f}"),
        ("windows scored", *(str(r["windows"]) for r in (published, mine_))),
        ("clips cut", *(str(r["clips"]) for r in (published, mine_))),
        ("workers x threads", *(r["parallelism"] for r in (published, mine_))),
        ("separator runtime", "demucs CLI", mine_["runtime"]),
        ("largest load average", *(f"{r['load_max']:.2f}" for r in (published, mine_))),
        ("quiet pairs (load <= 1.5)", "", f"{sum(pairs)} of {len(pairs)}"),
    ]
    precision = args.precision
    if precision == "auto":
        precision = f"auto = {default_precision('cpu')} on this CPU"
    title = (
        f"{args.minutes:g} min {'audio' if args.audio_only else 'VOD'}, {separator} "
        f"separator, ours at {precision} in {mine_['runtime']}, {args.repeat} pair(s) (median)"
    )
    if not any(pairs):
        title += f"; BUSY MACHINE (load > {common.QUIET_LOAD}): wall-time ratio not valid"
    common.print_table(title, rows, ("stage (s)", "published", "ours"))
    return published, mine_, cold


def _print_agreement(work: Path) -> None:
    """How far apart the two sides' window probabilities are (different stems: Demucs' one
    random shift and 16-bit WAVs per 60 s piece there, one float32 stream here)."""
    import numpy as np

    published = np.load(work / "published" / "windows.npy")
    mine = np.load(work / "ours-windows.npy")  # beside ours output folder (pipeline.run_ours)
    n = min(len(published), len(mine))
    diff = np.abs(published[:n, 2] - mine[:n, 2]).max()
    print(f"max |Δ window probability| published vs ours over {n} windows: {diff:.3g}")


if __name__ == "__main__":
    main()
