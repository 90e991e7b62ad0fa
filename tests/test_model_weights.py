"""The CRNN and its weights: both namings, safetensors export, refusals."""

from __future__ import annotations

import http.server
import threading
from functools import partial
from pathlib import Path

import pytest
import torch
from model_fixtures import random_crnn, save_checkpoint, training_names

from highlightsense import weights
from highlightsense.errors import WeightsError
from highlightsense.model import CRNN


def test_architecture_matches_the_spec():
    model = CRNN()
    n_params = sum(p.numel() for p in model.parameters())
    assert 5.9e6 < n_params < 6.2e6  # "about 6 M parameters"
    names = set(model.state_dict())
    assert {"cnn.0.bn.weight", "cnn.3.bn.running_var", "attention.V.weight"} <= names
    assert {"classifier.1.weight", "classifier.4.bias", "rnn.weight_ih_l1_reverse"} <= names
    assert "cnn.0.bn.running_mean" not in names  # block 0 is instance norm
    logits, attention = model.eval()(torch.randn(3, 2, 80, 2584), torch.ones(3, 2584))
    assert logits.shape == (3,) and attention.shape == (3, 161)
    assert torch.allclose(attention.sum(1), torch.ones(3))


@torch.no_grad()
def test_mask_gives_zero_attention_to_padding():
    model = random_crnn()
    mask = torch.zeros(1, 2584)
    mask[0, :1292] = 1
    _, attention = model(torch.randn(1, 2, 80, 2584), mask)
    steps = len(range(0, 1292, 16))  # mask[:, ::16] cut to the GRU length
    assert attention[0, steps:].abs().max() == 0
    assert float(attention[0, :steps].sum()) == pytest.approx(1.0, abs=1e-5)


@torch.no_grad()
def test_both_namings_load_and_score_identically(tmp_path):
    x, mask = torch.randn(2, 2, 80, 2584), torch.ones(2, 2584)
    inference = save_checkpoint(tmp_path / "inference.pt", naming="inference")
    training = save_checkpoint(tmp_path / "training.pt", naming="training")
    assert "cnn.1.norm.weight" in torch.load(training, weights_only=True)["model"]
    a = weights.load_model(inference)(x, mask)[0]
    b = weights.load_model(training)(x, mask)[0]
    reference = random_crnn()(x, mask)[0]
    torch.testing.assert_close(a, reference, rtol=0, atol=0)
    torch.testing.assert_close(b, reference, rtol=0, atol=0)


def test_loading_is_cached(checkpoint):
    assert weights.load(checkpoint) is weights.load(checkpoint)
    assert weights.load(checkpoint).identity.startswith("best_model.pt@sha256:")


def test_safetensors_export_round_trip(checkpoint, tmp_path):
    out = weights.export_weights(checkpoint, tmp_path / "export")
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "config.json", "README.md"}
    assert "license: mit" in (out / "README.md").read_text()
    x, mask = torch.randn(1, 2, 80, 2584), torch.ones(1, 2584)
    reference = weights.load_model(checkpoint)(x, mask)[0]
    for path in (out, out / "model.safetensors"):
        torch.testing.assert_close(weights.load_model(path)(x, mask)[0], reference)


class Evil:
    def __reduce__(self):
        return (Path.touch, (Path("/tmp/highlightsense-pwned"),))


def test_pickled_code_is_never_run(tmp_path):
    marker = Path("/tmp/highlightsense-pwned")
    marker.unlink(missing_ok=True)
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "epochs": Evil()}, path)
    with pytest.raises(WeightsError, match="not a loadable PyTorch checkpoint"):
        weights.load_model(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda s: {k: v for k, v in s.items() if not k.startswith("rnn.")}, "missing: rnn"),
        (lambda s: {**s, "extra.weight": torch.zeros(1)}, "unexpected: extra.weight"),
        (lambda s: {**s, "classifier.4.bias": torch.zeros(3)}, "wrong shape: classifier.4.bias"),
        (lambda s: {**s, "classifier.4.bias": torch.tensor([float("nan")])}, "NaN"),
    ],
)
def test_wrong_weights_name_what_did_not_match(tmp_path, mutate, message):
    path = tmp_path / "bad.pt"
    torch.save({"model": mutate(random_crnn().state_dict()), "epochs": 1}, path)
    with pytest.raises(WeightsError, match=message):
        weights.load_model(path)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04broken zip"])
def test_corrupt_files_are_refused(tmp_path, content):
    path = tmp_path / "best_model.pt"
    path.write_bytes(content)
    with pytest.raises(WeightsError):
        weights.load_model(path)


def test_training_names_are_the_notebook_names():
    names = set(training_names(CRNN().state_dict()))
    assert {"cnn.0.norm.weight", "attn.fc1.weight", "attn.fc2.weight"} <= names


@pytest.fixture
def http_dir(tmp_path):
    """A real HTTP server on loopback serving tmp_path/srv."""
    root = tmp_path / "srv"
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_url_weights_are_verified_by_hash(http_dir, checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("HIGHLIGHTSENSE_CACHE", str(tmp_path / "cache"))
    root, base = http_dir
    (root / "m.pt").write_bytes(checkpoint.read_bytes())
    digest = weights.sha256_file(checkpoint)
    path = weights.resolve(f"{base}/m.pt#sha256={digest}")
    assert path.read_bytes() == checkpoint.read_bytes()
    with pytest.raises(WeightsError, match="not"):
        weights.resolve(f"{base}/m.pt#sha256={'0' * 64}")
    with pytest.raises(WeightsError, match="pinned by its hash"):
        weights.resolve(f"{base}/m.pt")
    with pytest.raises(WeightsError, match="https"):
        weights.resolve(f"http://example.com/m.pt#sha256={digest}")
    assert not list((tmp_path / "cache" / "weights").glob(".*.part"))


def test_published_checkpoint_is_verified_by_blob_id(http_dir, checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("HIGHLIGHTSENSE_CACHE", str(tmp_path / "cache"))
    root, base = http_dir
    (root / "best_model.pt").write_bytes(checkpoint.read_bytes())
    blob = weights.git_blob_id(checkpoint)

    class Local(weights.Published):
        @property
        def url(self) -> str:
            return f"{base}/best_model.pt"

    good = Local(repo="x/y", commit="c", path="best_model.pt", blob=blob)
    assert weights.fetch_published(good).read_bytes() == checkpoint.read_bytes()
    (root / "best_model.pt").write_bytes(b"tampered")
    assert weights.fetch_published(good).read_bytes() == checkpoint.read_bytes()  # cached
    with pytest.raises(WeightsError, match="git blob id"):
        weights.fetch_published(Local(repo="x/y", commit="c", path="best_model.pt", blob="0" * 40))


def test_git_blob_id_matches_git(tmp_path):
    import subprocess

    path = tmp_path / "f.bin"
    path.write_bytes(b"hello\n")
    expected = subprocess.run(
        ["git", "hash-object", str(path)], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert weights.git_blob_id(path) == expected


def test_no_weights_anywhere_lists_what_was_tried(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HIGHLIGHTSENSE_WEIGHTS", raising=False)
    monkeypatch.setenv("HIGHLIGHTSENSE_CACHE", str(tmp_path / "cache"))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(weights.urllib.request, "urlopen", offline)
    with pytest.raises(WeightsError) as info:
        weights.resolve(None)
    text = str(info.value)
    assert "HIGHLIGHTSENSE_WEIGHTS" in text and "weights/ (no best_model.pt" in text
    assert "published checkpoint" in text and "\n" not in text


def test_missing_local_path(tmp_path):
    with pytest.raises(WeightsError, match="No weights at"):
        weights.resolve(tmp_path / "nope.pt")


def test_hf_weights_come_through_huggingface_hub_and_its_cache(checkpoint, tmp_path):
    """hf:// goes through huggingface_hub: here offline, from a cache laid out as the hub's."""
    import os
    import subprocess
    import sys

    export = weights.export_weights(checkpoint, tmp_path / "export")
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someone--highlights"
    snapshot = repo / "snapshots" / commit
    (snapshot / "v2").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for name in ("model.safetensors", "config.json"):
        (snapshot / name).write_bytes((export / name).read_bytes())
    (snapshot / "v2" / "best_model.pt").write_bytes(checkpoint.read_bytes())
    code = (
        "from highlightsense import weights\n"
        "for spec in ('hf://someone/highlights', 'hf://someone/highlights/v2/best_model.pt@main'):\n"
        "    print(weights.resolve(spec), weights.load(spec).identity)\n"
        "try:\n"
        "    weights.resolve('hf://someone/missing')\n"
        "except weights.WeightsError as err:\n"
        "    print('refused:', err)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"{snapshot} ") and "@sha256:" in lines[0]
    assert lines[1].startswith(f"{snapshot / 'v2' / 'best_model.pt'} ")
    assert lines[2].startswith("refused: Could not fetch hf://someone/missing")
