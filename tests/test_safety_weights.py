"""Hostile weights are refused as WeightsError before anything is allocated for them, and weights
URLs are https only (redirects too), capped in size and bounded in time."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
import torch
from model_fixtures import random_crnn

from highlightsense import weights
from highlightsense.errors import WeightsError

ROOT = Path(__file__).resolve().parents[1]


def save_with_config(path: Path, config: object) -> Path:
    torch.save({"model": random_crnn().state_dict(), "epochs": 1, "config": config}, path)
    return path


ABSURD_CONFIGS = [
    ({"rnn_hidden": 10**9}, "rnn_hidden"),
    ({"rnn_layers": 1000}, "rnn_layers"),
    ({"attention_dim": -3}, "attention_dim"),
    ({"classifier_dim": 2.5}, "classifier_dim"),
    ({"rnn_hidden": True}, "rnn_hidden"),
    ({"max_frames": 0}, "max_frames"),
    ({"channels": [10**6] * 4}, "channels"),
    ({"channels": "32,64"}, "channels"),
    ({"channels": []}, "channels"),
    ({"pools": [[0, 0]] * 4}, "pools"),
    ({"pools": [[2, 2]] * 3}, "pools"),
    ({"pools": [[4, 1]] * 4}, "no frequency band"),
    ({"n_mels": 4}, "other features"),
    ({"in_channels": 3}, "other features"),
    ({"rnn_dropout": 1.5}, "rnn_dropout"),
    ({"dropout": [2, 0]}, "dropout"),
    ({"dropout": None}, "dropout"),
    # every value in range, but together 100 M+ parameters
    ({"channels": [2048] * 8, "pools": [[1, 1]] * 8, "rnn_hidden": 2048}, "parameters"),
]


@pytest.mark.parametrize(("config", "fragment"), ABSURD_CONFIGS)
def test_absurd_architecture_in_a_checkpoint(tmp_path, config, fragment):
    path = save_with_config(tmp_path / "best_model.pt", config)
    with pytest.raises(WeightsError, match=fragment) as caught:
        weights.read_checkpoint(path)
    assert "\n" not in str(caught.value)


def test_config_that_is_not_a_mapping(tmp_path):
    with pytest.raises(WeightsError, match="not a mapping"):
        weights.read_checkpoint(save_with_config(tmp_path / "best_model.pt", [1, 2, 3]))


@pytest.fixture(scope="module")
def exported(tmp_path_factory, checkpoint) -> Path:
    return weights.export_weights(checkpoint, tmp_path_factory.mktemp("hub") / "hub")


@pytest.mark.parametrize(("config", "fragment"), ABSURD_CONFIGS[::3])
def test_absurd_architecture_in_config_json(exported, tmp_path, config, fragment):
    folder = tmp_path / "hub"
    folder.mkdir()
    (folder / weights.SAFETENSORS_NAME).write_bytes(
        (exported / weights.SAFETENSORS_NAME).read_bytes()
    )
    data = json.loads((exported / weights.CONFIG_NAME).read_text())
    data["model"].update(config)
    (folder / weights.CONFIG_NAME).write_text(json.dumps(data))
    with pytest.raises(WeightsError, match=fragment):
        weights.read_checkpoint(folder)


def test_oversized_config_json(exported, tmp_path):
    folder = tmp_path / "hub"
    folder.mkdir()
    (folder / weights.SAFETENSORS_NAME).write_bytes(
        (exported / weights.SAFETENSORS_NAME).read_bytes()
    )
    data = json.loads((exported / weights.CONFIG_NAME).read_text())
    data["meta"]["padding"] = "x" * weights.MAX_CONFIG_BYTES
    (folder / weights.CONFIG_NAME).write_text(json.dumps(data))
    with pytest.raises(WeightsError, match="too large"):
        weights.read_checkpoint(folder)


def test_compressed_checkpoint_declaring_huge_tensors_is_refused_before_allocating(tmp_path):
    path = zip_bomb_checkpoint(tmp_path / "best_model.pt", 1 << 30)
    assert path.stat().st_size < 8 << 20
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from highlightsense import weights\n"
        "from highlightsense.errors import WeightsError\n"
        "try:\n"
        "    weights.read_checkpoint(Path(sys.argv[1]))\n"
        "    message = None\n"
        "except WeightsError as err:\n"
        "    message = str(err)\n"
        # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child of a big pytest
        # process would report the parent's peak; the new image's own peak starts afresh.
        "status = Path('/proc/self/status').read_text().split('VmHWM:')[1]\n"
        "peak = int(status.split()[0]) * 1024\n"
        "print(json.dumps({'message': message, 'peak': peak}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["message"] and "more than 160 MB" in report["message"]
    assert report["peak"] < 900 << 20  # the interpreter and torch: not the declared gigabyte


def zip_bomb_checkpoint(path: Path, declared: int) -> Path:
    """A real checkpoint whose tensor record is ``declared`` zero bytes, deflated (≈ 1000:1)."""
    plain = path.with_suffix(".plain")
    torch.save({"model": {"w": torch.zeros(4)}, "epochs": 1}, plain)
    with (
        zipfile.ZipFile(plain) as source,
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as bomb,
    ):
        for member in source.infolist():
            if member.filename.endswith("/data/0"):
                with bomb.open(member.filename, "w", force_zip64=True) as out:
                    block = bytes(1 << 24)
                    for _ in range(declared // len(block)):
                        out.write(block)
            else:
                bomb.writestr(member.filename, source.read(member))
    plain.unlink()
    return path


def test_not_a_zip_checkpoint(tmp_path):
    legacy = tmp_path / "best_model.pt"
    torch.save({"model": {}}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(WeightsError, match="not a loadable PyTorch checkpoint"):
        weights.read_checkpoint(legacy)


def test_wrong_shapes_are_refused_without_building_the_model(tmp_path, monkeypatch):
    state = random_crnn().state_dict()
    state["rnn.weight_ih_l0"] = torch.zeros(3, 3)
    path = tmp_path / "best_model.pt"
    torch.save({"model": state, "epochs": 1}, path)
    built = []
    real = weights.CRNN

    def counting(*args, **kwargs):
        model = real(*args, **kwargs)
        built.append(next(model.parameters()).device.type)
        return model

    monkeypatch.setattr(weights, "CRNN", counting)
    loaded, config, _ = weights.read_checkpoint(path)
    with pytest.raises(WeightsError, match="wrong shape: rnn.weight_ih_l0"):
        weights.build_model(loaded, config)
    assert built and set(built) == {"meta"}  # expected shapes only: no real model was made


# --- downloads ------------------------------------------------------------------------------------

PAYLOAD = b"weights bytes " * 1000
TRICKLE_BYTES = 120  # bytes the slow route sends, one at a time
TRICKLE_GAP = 0.25  # s between them: 30 s in all, far past the test's deadline


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # the end of the body is the end of the connection

    def log_message(self, *args: object) -> None:
        pass

    def send(self, code: int, headers: dict[str, str]) -> None:
        self.send_response(code)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()

    def do_GET(self) -> None:
        port = self.server.server_address[1]
        if self.path == "/ok.pt":
            self.send(200, {"Content-Length": str(len(PAYLOAD))})
            self.wfile.write(PAYLOAD)
        elif self.path == "/declared-huge.pt":
            self.send(200, {"Content-Length": str(50 << 30)})
            self.wfile.write(bytes(1 << 16))
        elif self.path == "/endless.pt":  # no length: sends until the client hangs up
            self.send(200, {})
            for _ in range(4096):  # bounded: 256 MB at most
                try:
                    self.wfile.write(bytes(1 << 16))
                except OSError:
                    return
        elif self.path == "/slow.pt":
            self.send(200, {})
            for _ in range(TRICKLE_BYTES):
                try:
                    self.wfile.write(b"x")
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(TRICKLE_GAP)
        elif self.path == "/to-http.pt":
            self.send(302, {"Location": "http://weights.example/ok.pt"})
        elif self.path == "/to-local.pt":
            self.send(302, {"Location": f"http://127.0.0.1:{port}/ok.pt"})
        else:
            self.send(404, {})


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def pinned(url: str, data: bytes = PAYLOAD) -> str:
    return f"{url}#sha256={hashlib.sha256(data).hexdigest()}"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("HIGHLIGHTSENSE_CACHE", str(tmp_path))
    return tmp_path / "weights"


def assert_nothing_kept(folder: Path) -> None:
    assert not folder.exists() or list(folder.iterdir()) == []


def test_a_good_download_and_a_redirect_within_loopback(server, cache):
    path = weights.resolve(pinned(f"{server}/ok.pt"))
    assert path.read_bytes() == PAYLOAD and path.parent == cache
    path.unlink()
    assert weights.resolve(pinned(f"{server}/to-local.pt")).read_bytes() == PAYLOAD


def test_a_redirect_to_plain_http_is_refused(server, cache):
    with pytest.raises(WeightsError, match="not https"):
        weights.resolve(pinned(f"{server}/to-http.pt"))
    assert_nothing_kept(cache)


def test_size_cap_declared_and_streamed(server, cache, monkeypatch):
    with pytest.raises(WeightsError, match="larger than"):
        weights.resolve(pinned(f"{server}/declared-huge.pt"))
    assert_nothing_kept(cache)
    monkeypatch.setattr(weights, "MAX_DOWNLOAD_BYTES", 1 << 20)
    with pytest.raises(WeightsError, match="sent more than 1 MB"):
        weights.resolve(pinned(f"{server}/endless.pt"))
    assert_nothing_kept(cache)


def test_overall_deadline_against_a_trickle(server, cache, monkeypatch):
    monkeypatch.setattr(weights, "DOWNLOAD_DEADLINE", 1.5)
    with pytest.raises(WeightsError, match="took more than 2 s"):
        weights.resolve(pinned(f"{server}/slow.pt"))
    assert_nothing_kept(cache)


@pytest.mark.parametrize("url", ["http://weights.example/w.pt", "ftp://127.0.0.1/w.pt",
                                 "file:///etc/passwd"])  # fmt: skip
def test_only_https_urls(url, cache):
    with pytest.raises(WeightsError):
        weights.resolve(pinned(url))
    assert_nothing_kept(cache)
