"""What captions cost: transcription per minute of clip audio, the voice of the clips (kept
during the analysis, or separated again), and burning the captions into a clip.

    python benchmarks/captions.py [--sizes base,small,medium] [--types int8,float32]
                                  [--tokens 100] [--separator htdemucs] [--clips 10]
                                  [--vod-minutes 6] [--caption-model base]
                                  [--burn-seconds 30] [--scratch DIR]

Transcription is measured with random-weight Whisper models of the exact shapes of the named
sizes (CTranslate2's ``WhisperSpec``, written once into the scratch folder): the time per step
does not depend on the weights, only on the shapes and on how many tokens are decoded. Random
weights would decode noise (and make faster-whisper retry at higher temperatures), so each
30 s window runs what faster-whisper runs for speech at beam size 1, through CTranslate2
directly: log-mel features, the encoder, greedy decoding of exactly ``--tokens`` tokens (a
talkative streamer: ~3 words/s, ~1.2 tokens a word) and the word alignment. Figures are per
minute of audio (two windows), wall and CPU seconds, with the load average around each.

Captions of ``--clips`` 30 s clips: a generated VOD of ``--vod-minutes`` is analysed with a
random-weight Demucs (``--separator``) keeping its voice, then each clip's voice is taken twice,
by separating its span again (before) and from the kept voice (after), and transcribed
(``--caption-model``, int8) and written as .srt/.vtt: CPU seconds per step, and the keeping's own
CPU time and memory inside the analysis.

Burning: a 30 s 1080x1920 clip is re-encoded as the caption pass does (x264 veryfast, CRF 20),
once without a filter and once with the ASS captions drawn, so the difference is the drawing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the tests build the Whisper vocabulary

from whisper_fixtures import whisper_tokens  # noqa: E402

from highlightsense import captions, tools, transcripts, voice  # noqa: E402
from highlightsense.transcripts import Segment, Transcript, Word  # noqa: E402

SHAPES = {  # size: (width, encoder layers, decoder layers, heads), openai/whisper's dimensions
    "tiny": (384, 4, 4, 6),
    "base": (512, 6, 6, 8),
    "small": (768, 12, 12, 12),
    "medium": (1024, 24, 24, 16),
}
VOCAB, MELS, AUDIO_CTX, TEXT_CTX = 51865, 80, 1500, 448
WINDOW = 30.0  # s of audio per Whisper window
PROMPT = [50258, 50259, 50359, 50363]  # sot, en, transcribe, notimestamps (multilingual ids)
EOT = 50257


def _linear(spec, rows: int, cols: int, rng: np.random.Generator) -> None:
    spec.weight = (0.02 * rng.standard_normal((rows, cols))).astype(np.float16)
    spec.bias = np.zeros(rows, np.float16)


def _norm(spec, width: int) -> None:
    spec.gamma, spec.beta = np.ones(width, np.float16), np.zeros(width, np.float16)


def _layer(layer, d: int, rng: np.random.Generator, cross: bool) -> None:
    _norm(layer.self_attention.layer_norm, d)
    _linear(layer.self_attention.linear[0], 3 * d, d, rng)
    _linear(layer.self_attention.linear[1], d, d, rng)
    if cross:
        _norm(layer.attention.layer_norm, d)
        _linear(layer.attention.linear[0], d, d, rng)
        _linear(layer.attention.linear[1], 2 * d, d, rng)
        _linear(layer.attention.linear[2], d, d, rng)
    _norm(layer.ffn.layer_norm, d)
    _linear(layer.ffn.linear_0, 4 * d, d, rng)
    _linear(layer.ffn.linear_1, d, 4 * d, rng)


def random_whisper(folder: Path, size: str) -> Path:
    """A random-weight CTranslate2 Whisper of ``size``'s shape (float16 on disk), with the
    multilingual vocabulary layout; reused when already written."""
    from ctranslate2.specs import whisper_spec

    if (folder / "model.bin").exists():
        return folder
    d, enc_layers, dec_layers, heads = SHAPES[size]
    rng = np.random.default_rng(0)
    spec = whisper_spec.WhisperSpec(enc_layers, heads, dec_layers, heads)
    enc, dec = spec.encoder, spec.decoder
    enc.conv1.weight = (0.02 * rng.standard_normal((d, MELS, 3))).astype(np.float16)
    enc.conv1.bias = np.zeros(d, np.float16)
    enc.conv2.weight = (0.02 * rng.standard_normal((d, d, 3))).astype(np.float16)
    enc.conv2.bias = np.zeros(d, np.float16)
    enc.position_encodings.encodings = (0.02 * rng.standard_normal((AUDIO_CTX, d))).astype(
        np.float16
    )
    _norm(enc.layer_norm, d)
    for layer in enc.layer:
        _layer(layer, d, rng, cross=False)
    dec.embeddings.weight = (0.02 * rng.standard_normal((VOCAB, d))).astype(np.float16)
    dec.position_encodings.encodings = (0.02 * rng.standard_normal((TEXT_CTX, d))).astype(
        np.float16
    )
    _norm(dec.layer_norm, d)
    for layer in dec.layer:
        _layer(layer, d, rng, cross=True)
    dec.projection.weight = dec.embeddings.weight
    dec.projection.bias = np.zeros(VOCAB, np.float16)
    spec.config.suppress_ids = []
    spec.config.suppress_ids_begin = [220, EOT]
    spec.config.lang_ids = list(range(50259, 50358))
    spec.config.alignment_heads = [(dec_layers - 1, h) for h in range(heads)]
    # Whisper's token layout, "" in an unused slot as in the tests' scripted model (what makes
    # CTranslate2 4.8.5 treat it as multilingual)
    tokens = whisper_tokens()[0]
    spec.register_vocabulary(["" if t == "<|unused0|>" else t for t in tokens])
    spec.validate()
    spec.optimize(quantization="float16")
    folder.mkdir(parents=True, exist_ok=True)
    spec.save(str(folder))
    return folder


def loadavg() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def listen(model, extractor, audio: np.ndarray, tokens: int) -> tuple[dict, int]:
    """One 30 s window of ``audio`` (16 kHz) through what faster-whisper runs for speech:
    wall seconds per step, and the tokens decoded."""
    import ctranslate2

    steps = {}
    t = time.perf_counter()
    window = np.zeros(int(WINDOW * 16000), np.float32)
    window[: min(len(audio), len(window))] = audio[: len(window)]
    mel = extractor(window)[:, : int(WINDOW * 100)]
    features = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None]))
    steps["features"] = time.perf_counter() - t
    t = time.perf_counter()
    encoded = model.encode(features)
    steps["encode"] = time.perf_counter() - t
    t = time.perf_counter()
    result = model.generate(encoded, [PROMPT], beam_size=1, max_length=2 * tokens,
                            suppress_tokens=[-1, EOT], suppress_blank=False)  # fmt: skip
    steps["decode"] = time.perf_counter() - t
    decoded = result[0].sequences_ids[0]
    t = time.perf_counter()
    model.align(encoded, PROMPT[:3], [decoded], int(WINDOW * 100))
    steps["align"] = time.perf_counter() - t
    return steps, len(decoded)


def whisper(folder: Path, compute_type: str, threads: int):
    """(the CTranslate2 model, its feature extractor, seconds to load)."""
    import ctranslate2
    from faster_whisper.feature_extractor import FeatureExtractor

    began = time.perf_counter()
    model = ctranslate2.models.Whisper(str(folder), device="cpu", compute_type=compute_type,
                                       intra_threads=threads)  # fmt: skip
    return model, FeatureExtractor(feature_size=MELS), time.perf_counter() - began


def transcription(folder: Path, compute_type: str, tokens: int, threads: int) -> dict:
    """Seconds per minute of audio, by step: features, encoder, decoding, alignment."""
    model, extractor, load = whisper(folder, compute_type, threads)
    audio = (0.1 * np.random.default_rng(1).standard_normal(int(WINDOW * 16000))).astype(np.float32)
    steps = dict.fromkeys(("features", "encode", "decode", "align"), 0.0)
    cpu0, load_before = cpu_seconds(), loadavg()
    for _ in range(2):  # two 30 s windows: one minute
        took, decoded = listen(model, extractor, audio, tokens)
        steps = {name: steps[name] + took[name] for name in steps}
    return {"load_sec": load, "tokens": decoded, "cpu_sec": cpu_seconds() - cpu0,
            "wall_sec": sum(steps.values()), "steps": steps,
            "load_before": load_before, "load_after": loadavg()}  # fmt: skip


class TimedKeeper(voice.VoiceKeeper):
    """The engine's voice keeper, adding up the CPU time it takes in the thread that runs it
    (the one consuming the separated stems)."""

    cpu_sec = 0.0

    def write(self, pair: tuple) -> tuple:
        began = time.thread_time()
        try:
            return super().write(pair)
        finally:
            TimedKeeper.cpu_sec += time.thread_time() - began

    def close(self) -> None:
        began = time.thread_time()
        try:
            super().close()
        finally:
            TimedKeeper.cpu_sec += time.thread_time() - began


def talk(seconds: float) -> Transcript:
    """A talkative transcript: a word every 0.4 s."""
    words = tuple(Word(f" word{i}", i * 0.4, i * 0.4 + 0.35) for i in range(int(seconds / 0.4)))
    return Transcript((Segment(" ".join(w.text for w in words), 0.0, seconds, words),))


class Meter:
    """CPU and wall seconds per named step, summed over repeated entries."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}
        self.wall: dict[str, float] = {}

    def time(self, name: str, work, *args):
        began, cpu = time.perf_counter(), cpu_seconds()
        try:
            return work(*args)
        finally:
            self.cpu[name] = self.cpu.get(name, 0.0) + cpu_seconds() - cpu
            self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - began


def captions_cost(scratch: Path, args: argparse.Namespace, whisper_folder: Path) -> dict:
    """Captions of ``args.clips`` 30 s clips of an analysed VOD, their voice separated again
    (before) or sliced from the voice kept during the analysis (after): CPU and wall seconds
    of each step, and what the keeping cost inside the analysis."""
    from common import make_separator, make_vod, make_weights

    from highlightsense import engine as engine_module
    from highlightsense.engine import Engine
    from highlightsense.settings import AnalysisSettings

    repo, name = make_separator(scratch, args.separator)
    minutes = max(args.vod_minutes, (args.clips * WINDOW + 10) / 60)
    vod = make_vod(scratch / f"vod-{minutes:g}min.mp4", minutes)
    weights = make_weights(scratch)
    settings = AnalysisSettings(weights=str(weights), separator=name, separator_repo=str(repo),
                                device="cpu", use_cache=False)  # fmt: skip
    engine = Engine.create(settings).load()
    engine_module.VoiceKeeper = TimedKeeper  # the engine's keeper, timed
    TimedKeeper.cpu_sec = 0.0
    began, cpu, before = time.perf_counter(), cpu_seconds(), loadavg()
    analysis = engine.analyze(vod, keep_voice=True)
    figures = {"vod_minutes": analysis.duration / 60, "analysis_cpu_sec": cpu_seconds() - cpu,
               "analysis_wall_sec": time.perf_counter() - began, "keeping_cpu_sec":
               TimedKeeper.cpu_sec, "kept_bytes": analysis.voice.nbytes,
               "analysis_load": f"{before} → {loadavg()}"}  # fmt: skip
    again = dataclasses.replace(analysis, voice=None)  # as from the cache: separate again
    step = (analysis.duration - WINDOW) / max(args.clips - 1, 1)
    spans = [(i * step, i * step + WINDOW) for i in range(args.clips)]
    model, extractor, _ = whisper(whisper_folder, "int8", args.threads)
    for label, source in (("before", again), ("after", analysis)):
        meter, before = Meter(), loadavg()
        for number, span in enumerate(spans, start=1):
            audio = meter.time("voice", voice.voice_of, source, span)
            meter.time("transcription", listen, model, extractor, audio, args.tokens)
            stem = scratch / f"captions-{label}" / f"highlight_{number:02d}"
            stem.parent.mkdir(exist_ok=True)
            meter.time("writing", captions.write_subtitles, talk(WINDOW), WINDOW, stem)
        figures[label] = {"cpu": meter.cpu, "wall": meter.wall, "load": f"{before} → {loadavg()}"}
    return figures


def print_captions_cost(r: dict, args: argparse.Namespace) -> None:
    minutes = r["vod_minutes"]
    print(f"\ncaptions of {args.clips} x {WINDOW:g} s clips of a {minutes:.1f}-minute VOD "
          f"({args.separator} separator, {args.caption_model} int8, {args.tokens} tokens per "
          "clip), CPU s (wall s, shared machine):")  # fmt: skip
    print(f"{'step':14} {'separated again':>22} {'kept voice':>22}")
    for step in ("voice", "transcription", "writing"):
        cells = [f"{r[k]['cpu'][step]:8.1f} ({r[k]['wall'][step]:7.1f})"
                 for k in ("before", "after")]  # fmt: skip
        print(f"{step:14} {cells[0]:>22} {cells[1]:>22}")
    totals = [f"{sum(r[k]['cpu'].values()):8.1f} ({sum(r[k]['wall'].values()):7.1f})"
              for k in ("before", "after")]  # fmt: skip
    print(f"{'total':14} {totals[0]:>22} {totals[1]:>22}")
    print(f"load avg: before {r['before']['load']}, after {r['after']['load']}")
    mb = r["kept_bytes"] / 1e6
    print(f"keeping the voice in the analysis: {r['keeping_cpu_sec']:.2f} CPU s of its "
          f"{r['analysis_cpu_sec']:.1f} ({r['keeping_cpu_sec'] / minutes:.3f} CPU s per minute of "
          f"VOD); kept {mb:.1f} MB ({mb / minutes * 60:.1f} MB per hour); analysis "
          f"{r['analysis_wall_sec']:.1f} s wall, load avg {r['analysis_load']}",
          flush=True)  # fmt: skip
    print("  " + json.dumps(r), file=sys.stderr)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def burn_cost(scratch: Path, seconds: float) -> dict:
    """Wall and CPU seconds (ffmpeg's) to re-encode a 1080x1920 clip without and with captions
    drawn."""
    clip = scratch / "vertical.mp4"
    subprocess.run(
        [tools.ffmpeg_path(), "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size=1080x1920:rate=30:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}:sample_rate=48000",
         "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p",
         "-c:a", "aac", str(clip)],
        check=True, timeout=3600,
    )  # fmt: skip
    heard = talk(seconds)
    plain = captions.burn_command(clip, scratch / "none.ass", scratch / "plain.mp4")
    plain = [arg for arg in plain if not arg.startswith("ass=")]
    plain.remove("-vf")
    figures = {}
    t, cpu, before = time.perf_counter(), children_cpu(), loadavg()
    subprocess.run(plain, check=True, timeout=3600)
    figures["re-encode, no captions"] = (time.perf_counter() - t, children_cpu() - cpu, before,
                                         loadavg())  # fmt: skip
    t, cpu, before = time.perf_counter(), children_cpu(), loadavg()
    captions.burn(clip, heard, seconds, (1080, 1920), scratch / "burned.mp4")
    figures["re-encode with captions drawn"] = (time.perf_counter() - t, children_cpu() - cpu,
                                                before, loadavg())  # fmt: skip
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="base,small,medium")
    parser.add_argument("--types", default="int8,float32")
    parser.add_argument("--tokens", type=int, default=100, help="decoded per 30 s window")
    parser.add_argument("--threads", type=int, default=transcripts.cpu_threads())
    parser.add_argument("--burn-seconds", type=float, default=30.0)
    parser.add_argument("--separator", default="htdemucs", help="tiny | htdemucs | none")
    parser.add_argument("--clips", type=int, default=10, help="30 s clips captioned")
    parser.add_argument("--vod-minutes", type=float, default=6.0, help="of the analysed VOD")
    parser.add_argument("--caption-model", default="base", help="Whisper size for the clips")
    parser.add_argument("--scratch", type=Path, default=None, help="keeps the models when given")
    args = parser.parse_args()
    if args.scratch is not None:
        args.scratch.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(dir=args.scratch) as temporary:
        keep = args.scratch or Path(temporary)
        print(f"{os.cpu_count()} CPUs, {args.threads} threads, {args.tokens} tokens per window")
        print("size    type     s/min  cpu s/min  features  encode  decode  align  load avg")
        for size in args.sizes.split(","):
            folder = random_whisper(keep / f"whisper-{size}", size)
            for compute_type in args.types.split(","):
                r = transcription(folder, compute_type, args.tokens, args.threads)
                s = r["steps"]
                print(f"{size:7} {compute_type:8} {r['wall_sec']:5.1f}  {r['cpu_sec']:9.1f}  "
                      f"{s['features']:8.2f}  {s['encode']:6.2f}  {s['decode']:6.2f}  "
                      f"{s['align']:5.2f}  {r['load_before']} → {r['load_after']}",
                      flush=True)  # fmt: skip
                print("  " + json.dumps(r), file=sys.stderr)
        if args.separator != "none":
            folder = random_whisper(keep / f"whisper-{args.caption_model}", args.caption_model)
            print_captions_cost(captions_cost(keep, args, folder), args)
        if args.burn_seconds > 0:
            print(f"\nburning captions into a {args.burn_seconds:g} s 1080x1920 clip")
            burned = burn_cost(Path(temporary), args.burn_seconds)
            for name, (wall, cpu, before, after) in burned.items():
                print(
                    f"{name:32} {wall:6.1f} s wall {cpu:6.1f} s CPU   load avg {before} → {after}"
                )


if __name__ == "__main__":
    main()
