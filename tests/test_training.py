"""The training pipeline: data set checks, augmentation, sampling, metrics, training, torchrun."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_media
from scipy import stats

from highlightsense import media
from highlightsense.cli import main as training_main
from highlightsense.engine import Engine
from highlightsense.errors import DataError, MediaError, SettingsError
from highlightsense.model import CRNN, ModelConfig, pad_with_minimum
from highlightsense.settings import AnalysisSettings
from highlightsense.training import data, metrics
from highlightsense.training import preprocess as preprocess_module
from highlightsense.training.commands import add_train_arguments, train_config_from_args
from highlightsense.training.evaluate import evaluate
from highlightsense.training.preprocess import preprocess
from highlightsense.training.train import TrainConfig, published_checkpoint, train
from highlightsense.weights import load_model

# A small model on short clips: the same code path as the real 2584-frame model, 100x cheaper.
SMALL = ModelConfig(
    channels=(4, 8, 8, 16), rnn_hidden=16, attention_dim=16, classifier_dim=16, max_frames=128
)
SMALL_ARGS = [
    "--channels", "4,8,8,16", "--rnn-hidden", "16", "--attention-dim", "16",
    "--classifier-dim", "16", "--max-frames", "128",
]  # fmt: skip
EPOCHS = 3


def small_config(**changes) -> TrainConfig:
    base = {"batch_size": 16, "lr": 3e-3, "num_workers": 0, "device": "cpu", "model": SMALL}
    return TrainConfig(**{**base, **changes})


def write_clip(path: Path, tensor: torch.Tensor, label: int | None, **extra) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    package = {"tensor": tensor, "clip_name": path.stem, "game": path.parent.name, **extra}
    if label is not None:
        package["label"] = label
    torch.save(package, path)
    return path


def make_dataset(root: Path, positives: int = 48, negatives: int = 48, seed: int = 0) -> Path:
    """Log-mel-like noise; positives have a loud voice band (mels 10-29) over half the clip."""
    generator = torch.Generator().manual_seed(seed)
    for label, folder, count in ((1, "Positive", positives), (0, "Negative", negatives)):
        for i in range(count):
            frames = int(torch.randint(60, 129, (1,), generator=generator))
            tensor = torch.randn(2, 80, frames, generator=generator) - 8.0
            if label:
                start = int(torch.randint(0, frames // 2, (1,), generator=generator))
                tensor[0, 10:30, start : start + frames // 2] += 8.0
            game = ("valorant", "cs2")[i % 2]
            write_clip(root / "base" / folder / game / f"clip{i:03d}.pt", tensor, label)
    return root


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("dataset"))


@pytest.fixture(scope="session")
def straight_run(dataset: Path, tmp_path_factory: pytest.TempPathFactory):
    return train(dataset, tmp_path_factory.mktemp("run") / "straight", small_config(epochs=EPOCHS))


def _same_metrics(a: dict, b: dict) -> bool:
    return {k: v for k, v in a.items() if k != "seconds"} == {
        k: v for k, v in b.items() if k != "seconds"
    }


# --- finding and checking files ----------------------------------------------------------------


def test_find_samples_layout_and_labels(dataset: Path):
    samples = data.find_samples(dataset)
    assert len(samples) == 96
    assert [s.label for s in samples] == [1] * 48 + [0] * 48
    assert all(60 <= s.frames <= 128 for s in samples)
    assert samples[0].game == "cs2" and samples[0].clip_name == "clip001"
    # DATA_DIR may be base itself
    assert data.find_samples(dataset / "base") == samples


def test_folder_names_in_any_case(tmp_path: Path):
    write_clip(tmp_path / "positive" / "a.pt", torch.zeros(2, 80, 5), 1)
    write_clip(tmp_path / "NEGATIVE" / "x" / "b.pt", torch.zeros(2, 80, 7), 0)
    samples = data.find_samples(tmp_path)
    assert [(s.path.name, s.label, s.frames) for s in samples] == [("a.pt", 1, 5), ("b.pt", 0, 7)]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("broken.pt", b"not a checkpoint", "not a readable feature file"),
        ("mono.pt", torch.zeros(1, 80, 100), r"shape \(1, 80, 100\)"),
        ("long.pt", torch.zeros(2, 80, 2585), "2585 frames"),
        ("empty.pt", torch.zeros(2, 80, 0), "0 frames"),
        ("ints.pt", torch.zeros(2, 80, 9, dtype=torch.int64), "torch.int64"),
        ("nokey.pt", {"spec": torch.zeros(2, 80, 9)}, "no 'tensor'"),
    ],
)
def test_bad_file_is_refused_by_name(tmp_path: Path, name, content, message):
    write_clip(tmp_path / "base" / "Negative" / "ok.pt", torch.zeros(2, 80, 9), 0)
    path = tmp_path / "base" / "Positive" / "g" / name
    path.parent.mkdir(parents=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, dict):
        torch.save(content, path)
    else:
        write_clip(path, content, 1)
    with pytest.raises(DataError, match=message) as info:
        data.find_samples(tmp_path)
    assert str(path) in str(info.value)


def test_wrong_label_and_empty_class(tmp_path: Path):
    write_clip(tmp_path / "base" / "Positive" / "a.pt", torch.zeros(2, 80, 9), 1)
    (tmp_path / "base" / "Negative").mkdir()
    with pytest.raises(DataError, match="Negative class is empty"):
        data.find_samples(tmp_path)
    misfiled = write_clip(tmp_path / "base" / "Negative" / "b.pt", torch.zeros(2, 80, 9), 1)
    with pytest.raises(DataError, match="says label 1") as info:
        data.find_samples(tmp_path)
    assert str(misfiled) in str(info.value)
    (tmp_path / "base" / "Negative" / "b.pt").unlink()
    (tmp_path / "base" / "Negative").rmdir()
    with pytest.raises(DataError, match="no Negative folder"):
        data.find_samples(tmp_path)


def test_nan_values_are_refused_when_read(tmp_path: Path):
    bad = torch.zeros(2, 80, 9)
    bad[1, 3, 4] = float("nan")
    path = write_clip(tmp_path / "base" / "Positive" / "nan.pt", bad, 1)
    write_clip(tmp_path / "base" / "Negative" / "ok.pt", torch.zeros(2, 80, 9), 0)
    samples = data.find_samples(tmp_path)  # shapes only: values are read lazily
    with pytest.raises(DataError, match="NaN") as info:
        data.ClipDataset(samples, train=False)[0]
    assert str(path) in str(info.value)


def test_stratified_split():
    labels = [1] * 64 + [0] * 200
    train_ids, val_ids = data.stratified_split(labels)
    assert sorted(train_ids + val_ids) == list(range(264))
    assert sum(labels[i] for i in val_ids) == 10  # 15 % of 64, rounded
    assert len(val_ids) == 10 + 30
    assert data.stratified_split(labels) == (train_ids, val_ids)  # seeded
    assert data.stratified_split(labels, seed=1) != (train_ids, val_ids)
    assert data.stratified_split([1, 0, 0]) == ([0, 1, 2], [])  # too small to hold one out


# --- augmentation and padding ------------------------------------------------------------------


def frame_numbered(frames: int) -> torch.Tensor:
    """(2, 80, frames) whose every value is its frame index: pieces are easy to trace."""
    return torch.arange(frames, dtype=torch.float32).expand(2, 80, frames).clone()


def test_length_draws_follow_the_published_table():
    generator = torch.Generator().manual_seed(0)
    draws = np.array([data.sample_length(generator) for _ in range(20_000)])
    edges = [low for low, _, _ in data.POSITIVE_LENGTHS] + [2585]
    counts, _ = np.histogram(draws, bins=edges)
    expected = np.array([p for _, _, p in data.POSITIVE_LENGTHS]) * len(draws)
    bins = stats.chisquare(counts, expected)
    # uniform inside a bin: a draw's position in its bin, as a decile, over all bins
    index = np.searchsorted(edges, draws, side="right") - 1
    low = np.array(edges)[index]
    width = np.array([high - lo + 1 for lo, high, _ in data.POSITIVE_LENGTHS])[index]
    deciles = np.bincount(((draws - low) * 10 // width).astype(int), minlength=10)
    within = stats.chisquare(deciles)
    print(f"length bins chi2 p={bins.pvalue:.3f}, within-bin p={within.pvalue:.3f}")
    assert draws.min() >= 215 and draws.max() <= 2584
    assert bins.pvalue > 1e-3 and within.pvalue > 1e-3
    assert np.all(np.abs(counts / len(draws) - expected / len(draws)) < 0.015)


def test_volume_factor_is_uniform_and_length_kept_for_positives():
    generator = torch.Generator().manual_seed(1)
    factors = []
    for _ in range(5000):
        out = data.augment(torch.ones(2, 80, 7), 1, generator)
        assert out.shape == (2, 80, 7)
        assert torch.all(out == out[0, 0, 0])  # one factor for the whole tensor
        factors.append(float(out[0, 0, 0]))
    factors = np.array(factors)
    assert factors.min() >= 0.5 and factors.max() <= 1.5
    assert stats.kstest(factors, "uniform", args=(0.5, 1.0)).pvalue > 1e-3


def test_negatives_get_a_positive_length_and_augment_is_pure():
    tensor = torch.randn(2, 80, 600, generator=torch.Generator().manual_seed(2))
    a = data.augment(tensor, 0, torch.Generator().manual_seed(7))
    b = data.augment(tensor, 0, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    lengths = {
        data.augment(tensor, 0, torch.Generator().manual_seed(s)).shape[2] for s in range(50)
    }
    assert len(lengths) > 40 and min(lengths) >= 215 and max(lengths) <= 2584
    short = {
        data.augment(tensor, 0, torch.Generator().manual_seed(s), 256).shape[2] for s in range(50)
    }
    assert min(short) >= 21 and max(short) <= 256  # scaled by 256 / 2584
    assert data.augment(tensor, 1, torch.Generator(), 256).shape[2] == 256  # positives cropped


def test_crop_takes_one_contiguous_piece():
    generator = torch.Generator().manual_seed(3)
    starts = set()
    for _ in range(50):
        out = data.fit_length(frame_numbered(1000), 300, generator)
        first = int(out[0, 0, 0])
        assert torch.equal(out, frame_numbered(1000)[..., first : first + 300])
        starts.add(first)
    assert len(starts) > 40 and min(starts) >= 0 and max(starts) <= 700


def test_extension_appends_pieces_of_the_clip():
    generator = torch.Generator().manual_seed(4)
    original = frame_numbered(100)
    for length in (101, 250, 2584):
        out = data.fit_length(original, length, generator)
        assert out.shape == (2, 80, length)
        assert torch.equal(out[..., :100], original)
        assert torch.all(out == out[:1, :1])  # every frame is one frame of the original
        values = out[0, 0].long()
        breaks = torch.nonzero(values[1:] != values[:-1] + 1).flatten() + 1
        pieces = torch.tensor_split(values, breaks)
        assert len(pieces) >= 2
        for piece in pieces:  # each piece is a contiguous run of original frames
            assert torch.equal(piece, torch.arange(int(piece[0]), int(piece[0]) + len(piece)))
            assert int(piece[0]) >= 0 and int(piece[-1]) < 100


def test_pad_with_minimum_and_mask():
    tensor = torch.randn(2, 80, 300, generator=torch.Generator().manual_seed(5))
    padded, mask = pad_with_minimum(tensor, 2584)
    assert padded.shape == (2, 80, 2584) and mask.shape == (2584,)
    assert torch.equal(padded[..., :300], tensor)
    assert torch.all(padded[..., 300:] == tensor.min())
    assert mask.sum() == 300 and torch.all(mask[:300] == 1) and torch.all(mask[300:] == 0)
    full, full_mask = pad_with_minimum(frame_numbered(2584), 2584)
    assert torch.equal(full, frame_numbered(2584)) and full_mask.sum() == 2584


def test_dataset_items(dataset: Path):
    samples = data.find_samples(dataset)
    raw = data.load_tensor(samples[70].path)
    x, mask, label, index = data.ClipDataset(samples, train=False)[70]
    assert (label, index) == (0.0, 70)
    padded, padded_mask = pad_with_minimum(raw, 2584)
    assert torch.equal(x, padded) and torch.equal(mask, padded_mask)  # no augmentation
    train_set = data.ClipDataset(samples, train=True)
    x1, mask1, _, _ = train_set[(70, 123)]
    x2, mask2, _, _ = train_set[(70, 123)]
    expected = data.augment(raw, 0, torch.Generator().manual_seed(123))
    assert torch.equal(x1, x2) and torch.equal(mask1, mask2)
    assert torch.equal(x1, pad_with_minimum(expected, 2584)[0]) and mask1.sum() == expected.shape[2]


def test_sampler_is_balanced_and_differs_by_rank_and_epoch():
    labels = [1] * 100 + [0] * 300
    sampler = data.BalancedSampler(labels, seed=42)
    assert len(sampler) == 400
    drawn = []
    for epoch in range(10):
        sampler.set_epoch(epoch)
        drawn += [index for index, _ in sampler]
    share = np.mean([labels[i] for i in drawn])
    assert abs(share - 0.5) < 0.025, share
    # with replacement: a positive turns up ~20 times in 10 epochs, a negative ~7 times
    counts = np.bincount(drawn, minlength=400)
    assert 18 < counts[:100].mean() < 22 and 6 < counts[100:].mean() < 7.4
    ranks = [list(data.BalancedSampler(labels, seed=42, rank=r, world_size=2)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 200 and ranks[0] != ranks[1]
    assert ranks[0] == list(data.BalancedSampler(labels, seed=42, rank=0, world_size=2))
    seeds = [seed for _, seed in ranks[0] + ranks[1]]
    assert len(set(seeds)) == len(seeds)  # every draw is augmented differently


# --- metrics -----------------------------------------------------------------------------------


def test_metrics_by_hand():
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    probs = np.array([0.9, 0.8, 0.6, 0.3, 0.7, 0.4, 0.2, 0.1])
    result = metrics.classification_metrics(np.log(probs / (1 - probs)), labels)
    # at 0.5: 0.9, 0.8, 0.6 are hits, 0.7 a false alarm, 0.3 a miss
    assert result["confusion"] == {"tp": 3, "fp": 1, "tn": 3, "fn": 1}
    assert result["precision"] == pytest.approx(0.75)
    assert result["recall"] == pytest.approx(0.75)
    assert result["f1"] == pytest.approx(0.75)
    assert result["accuracy"] == pytest.approx(0.75)
    # 13 of the 16 (positive, negative) pairs are ordered right
    assert result["roc_auc"] == pytest.approx(13 / 16)
    # ranked 1 1 0 1 0 1 0 0: precision at each recall step 1, 1, 3/4, 4/6
    assert result["pr_auc"] == pytest.approx((1 + 1 + 3 / 4 + 4 / 6) / 4)
    # -ln of (0.9·0.8·0.6·0.3)² over 8 = -ln 0.6, since 0.6⁴ = 0.1296
    assert result["loss"] == pytest.approx(-math.log(0.6))
    # best F1: predicting the top 6 (threshold 0.3) gives tp 4, fp 2 → 8 / 10
    assert result["best_threshold"] == pytest.approx(0.3)
    assert result["best_f1"] == pytest.approx(0.8)


def test_metric_edge_cases():
    assert metrics.roc_auc(np.array([0.5, 0.5, 0.2]), np.array([1, 0, 0])) == 0.75
    assert math.isnan(metrics.roc_auc(np.array([0.1, 0.2]), np.array([1, 1])))
    assert metrics.scores_at({"tp": 0, "fp": 0, "tn": 5, "fn": 0})["precision"] == 0.0


# --- training ----------------------------------------------------------------------------------


def test_training_learns(straight_run):
    history = straight_run.history
    print(
        "losses", [(round(r["train_loss"], 4), round(r["val_loss"], 4)) for r in history],
        "F1", [round(r["f1"], 3) for r in history],
    )  # fmt: skip
    assert len(history) == EPOCHS and [r["epoch"] for r in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"] - 0.05
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    assert straight_run.best_f1 >= 0.8
    assert max(r["accuracy"] for r in history) >= 0.8
    assert history[0]["val_clips"] == 14 and history[0]["train_clips"] == 82


def test_run_files(straight_run):
    run_dir = straight_run.run_dir
    names = {p.name for p in run_dir.iterdir()}
    assert {"best_model.pt", "last.pt", "metrics.csv", "metrics.json"} <= names
    assert {"loss.html", "pr_curve.html"} <= names
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert len(rows) == EPOCHS + 1 and rows[0].startswith("epoch,train_loss,val_loss")
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["best_epoch"] == straight_run.best_epoch
    assert [r["f1"] for r in record["epochs"]] == [r["f1"] for r in straight_run.history]
    assert record["config"]["model"]["channels"] == [4, 8, 8, 16]


def test_best_model_is_in_the_published_format(straight_run, dataset: Path):
    package = torch.load(straight_run.run_dir / "best_model.pt", weights_only=True)
    assert set(package) == {"model", "epochs", "config"}  # config: not the published model
    assert package["epochs"] == straight_run.best_epoch
    assert set(package["model"]) == set(CRNN(SMALL).state_dict())  # no 'module.' prefix
    assert ModelConfig.from_dict(package["config"]) == SMALL
    assert set(published_checkpoint(CRNN(), 10)) == {"model", "epochs"}
    # scored by evaluate on the validation split, it gives the training log's numbers
    result = evaluate(dataset, straight_run.run_dir / "best_model.pt", split="val", device="cpu")
    best = straight_run.history[straight_run.best_epoch - 1]
    assert result["n"] == 14 and result["f1"] == best["f1"]
    assert result["loss"] == pytest.approx(best["val_loss"], rel=1e-5)
    assert result["roc_auc"] == pytest.approx(best["roc_auc"])


def test_resume_continues_exactly(straight_run, dataset: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    first = train(dataset, run_dir, small_config(epochs=1))
    assert _same_metrics(first.history[0], straight_run.history[0])  # seeded: reproducible
    # the saved best model scores exactly as the in-memory one
    loaded = load_model(run_dir / "best_model.pt")
    x, mask, _, _ = next(iter(torch.utils.data.DataLoader(
        data.ClipDataset(data.find_samples(dataset)[::8], train=False, frames=128), batch_size=16
    )))  # fmt: skip
    with torch.no_grad():
        assert torch.equal(loaded(x, mask)[0], first.model(x, mask)[0])
    with pytest.raises(SettingsError, match="--resume"):
        train(dataset, run_dir, small_config(epochs=2))
    args = argparse.ArgumentParser()
    add_train_arguments(args)
    config = train_config_from_args(
        args.parse_args([str(dataset), "--run-dir", str(run_dir), "--resume", "--epochs", "2"])
    )
    assert config == small_config(epochs=2, resume=True)  # the saved settings, epochs overridden
    second = train(dataset, run_dir, config)
    assert len(second.history) == 2
    assert all(map(_same_metrics, second.history, straight_run.history[:2]))
    assert len((run_dir / "metrics.csv").read_text().splitlines()) == 3


def test_command_line_config():
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    args = parser.parse_args(["data", *SMALL_ARGS, "--lr", "0.003", "--batch-size", "16"])
    assert train_config_from_args(args) == TrainConfig(lr=3e-3, batch_size=16, model=SMALL)
    assert train_config_from_args(parser.parse_args(["data"])) == TrainConfig()
    with pytest.raises(SystemExit):
        parser.parse_args(["data", "--channels", "4,x"])


def test_evaluate_command_writes_json(straight_run, dataset: Path, tmp_path: Path, capsys):
    out = tmp_path / "eval.json"
    weights = str(straight_run.run_dir / "best_model.pt")
    code = training_main(
        ["evaluate", str(dataset), "--weights", weights, "--device", "cpu", "-o", str(out)]
    )
    assert code == 0
    result = json.loads(out.read_text())
    assert result["n"] == 96 and set(result["confusion"]) == {"tp", "fp", "tn", "fn"}
    assert {"loss", "precision", "recall", "f1", "roc_auc", "pr_auc", "best_threshold"} <= set(
        result
    )
    table = capsys.readouterr().out
    assert "ROC-AUC" in table and "actual +" in table
    assert training_main(["evaluate", str(tmp_path / "missing"), "--weights", weights]) == 2
    assert "No data set" in capsys.readouterr().err


def test_torchrun_two_processes(dataset: Path, tmp_path: Path):
    run_dir = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "highlightsense", "train", str(dataset), "-o", str(run_dir),
        "--epochs", "1", "--batch-size", "16", "--lr", "3e-3", "--num-workers", "0",
        "--device", "cpu", "--log-samples", *SMALL_ARGS,
    ]  # fmt: skip
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=repo)
    print(f"torchrun 2 processes, 1 epoch: {time.perf_counter() - began:.1f} s")
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["world_size"] == 2 and len(record["epochs"]) == 1
    assert record["epochs"][0]["train_clips"] == 82 and record["epochs"][0]["val_clips"] == 14
    logs = [(run_dir / "samples" / f"rank{r}.tsv").read_text().splitlines() for r in (0, 1)]
    drawn = [[line.split("\t")[1] for line in log] for log in logs]  # epoch, index, path
    assert len(drawn[0]) == len(drawn[1]) == 41
    assert drawn[0] != drawn[1] and set(drawn[0]) != set(drawn[1])
    assert not (run_dir / "samples" / "rank2.tsv").exists()
    model = load_model(run_dir / "best_model.pt")
    assert model.config == SMALL


# --- preprocessing -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3 s video in a game folder, a 2 s audio clip at the top, and a broken file."""
    folder = tmp_path_factory.mktemp("clips")
    make_media(folder / "valorant" / "ace.mp4", 3, loud_spans=((1, 2),))
    make_media(folder / "short.m4a", 2, video=False)
    (folder / "cs2").mkdir()
    (folder / "cs2" / "broken.mp4").write_bytes(b"\0" * 2000)
    return folder


def test_preprocess_writes_the_training_layout(
    clip_folder, tiny_separator, tmp_path, capsys, monkeypatch
):
    repo, name = tiny_separator
    monkeypatch.setattr(preprocess_module, "TRAIN_FRAMES", 120)  # so the 3 s clip is too long
    out = tmp_path / "data"
    options = {"separator": name, "separator_repo": str(repo), "device": "cpu"}
    report = preprocess(clip_folder, out, label="positive", **options)
    ace = out / "base" / "Positive" / "valorant" / "ace.pt"
    short = out / "base" / "Positive" / "clips" / "short.pt"
    assert sorted(report.written) == sorted([ace, short])
    assert report.cropped == [clip_folder / "valorant" / "ace.mp4"]
    assert [clip for clip, _ in report.skipped] == [clip_folder / "cs2" / "broken.mp4"]
    package = torch.load(ace, weights_only=True)
    assert (package["clip_name"], package["game"], package["label"]) == ("ace", "valorant", 1)
    # training data is made at fp32 whatever the CPU ("auto" may pick bf16 for detect)
    settings = AnalysisSettings(
        separator=name, separator_repo=str(repo), use_cache=False, precision="fp32"
    )
    info = media.probe(clip_folder / "valorant" / "ace.mp4")
    expected = torch.from_numpy(Engine.create(settings).features(info))
    assert expected.shape[2] > 120 and package["tensor"].dtype == torch.float32
    assert torch.equal(package["tensor"], expected[:, :, :120])  # the app's features, cut
    # 2 s ≈ 87 frames (AAC decoding may add a few samples at the end)
    assert 87 <= torch.load(short, weights_only=True)["tensor"].shape[2] <= 90
    # resumable: done clips are not done again
    stamp = ace.stat().st_mtime_ns
    again = preprocess(clip_folder, out, label="positive", **options)
    assert again.written == [] and sorted(again.existing) == sorted([ace, short])
    assert ace.stat().st_mtime_ns == stamp and not list(out.rglob("*.tmp"))
    # the command line: the other class, then the data set is ready to train on
    common = ["--separator", name, "--separator-repo", str(repo), "--device", "cpu"]
    negatives = clip_folder / "valorant"
    assert (
        training_main(
            ["preprocess", str(negatives), "--label", "negative", "-o", str(out), *common]
        )
        == 0
    )
    samples = data.find_samples(out)
    assert [(s.label, s.game, s.path.name) for s in samples] == [
        (1, "clips", "short.pt"), (1, "valorant", "ace.pt"), (0, "clips", "ace.pt"),
    ]  # fmt: skip
    broken = ["preprocess", str(clip_folder / "cs2"), "--label", "positive", "-o", str(tmp_path)]
    assert training_main([*broken, *common]) == 2
    err = capsys.readouterr().err
    assert "skipped" in err and "broken.mp4" in err and "none of the 1 clips" in err


def test_preprocess_shards_clips_across_ranks(clip_folder, tmp_path, monkeypatch):
    def fake_features(self, info, progress=None, stems_dir=None):  # sharding under test
        if info.path.name == "broken.mp4":
            raise MediaError("broken")
        return np.zeros((2, 80, 10), np.float32)

    monkeypatch.setattr(Engine, "features", fake_features)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    report = preprocess(clip_folder, tmp_path, label="negative", device="cpu")
    # sorted clips: cs2/broken.mp4, short.m4a, valorant/ace.mp4: rank 0 takes the 1st and 3rd
    assert report.total == 2 and len(report.skipped) == 1
    assert report.written == [tmp_path / "base" / "Negative" / "valorant" / "ace.pt"]
    monkeypatch.setenv("RANK", "1")
    report = preprocess(clip_folder, tmp_path, label="negative", device="cpu")
    assert report.written == [tmp_path / "base" / "Negative" / "clips" / "short.pt"]
