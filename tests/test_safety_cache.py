"""The feature cache is checked on read: a damaged entry is a miss, recomputed and overwritten; a
folder in the way or an unwritable cache never costs the analysis."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import ffmpeg_binary
from hypothesis import given, settings
from hypothesis import strategies as st

from highlightsense import cache
from highlightsense.engine import Engine
from highlightsense.settings import AnalysisSettings


@pytest.fixture
def cache_root(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("HIGHLIGHTSENSE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "features"


def spec(frames: int = 50, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(-5, 2, (2, 80, frames)).astype(np.float32)


def entry(key: str) -> Path:
    return cache._folder() / f"{key}{cache.SUFFIX}"


def raw_entry(header: dict, payload: bytes) -> bytes:
    text = json.dumps(header).encode()
    return cache.MAGIC + struct.pack("<I", len(text)) + text + payload


def test_round_trip(cache_root):
    original = spec()
    assert cache.store("k", original)
    loaded = cache.load("k")
    assert loaded.dtype == np.float32 and np.array_equal(loaded, original)


def damaged_entries(original: np.ndarray) -> dict[str, bytes]:
    good = cache._entry_bytes(original)
    payload = original.tobytes()
    digest = hashlib.sha256
    flipped = bytearray(good)
    flipped[-7] ^= 0x10
    nan = original.copy()
    nan[1, 3, 7] = np.nan
    shape = [2, 40, original.shape[2] * 2]  # same bytes, another shape: a checksum cannot tell
    return {
        "truncated": good[: len(good) // 2],
        "a flipped payload bit": bytes(flipped),
        "another magic": b"\x93NUMPY" + good[6:],
        "empty": b"",
        "header not json": cache.MAGIC + struct.pack("<I", 5) + b"{nope" + payload,
        "huge header length": cache.MAGIC + struct.pack("<I", 2**31) + b"{}",
        "wrong shape": raw_entry(
            {"dtype": "<f4", "shape": shape, "sha256": digest(payload).hexdigest()}, payload
        ),
        "float64": raw_entry(
            {
                "dtype": "<f8",
                "shape": [2, 80, original.shape[2] // 2],
                "sha256": digest(payload).hexdigest(),
            },
            payload,
        ),  # fmt: skip
        "shape of strings": raw_entry(
            {"dtype": "<f4", "shape": ["2", "80", "50"], "sha256": digest(payload).hexdigest()},
            payload,
        ),
        "absurd length": raw_entry(
            {"dtype": "<f4", "shape": [2, 80, 10**12], "sha256": digest(payload).hexdigest()},
            payload,
        ),
        "NaN inside, checksum right": cache._entry_bytes(nan),
        "trailing bytes": good + b"\0",
    }


def test_every_damaged_entry_is_a_miss(cache_root):
    original = spec()
    cases = damaged_entries(original)
    for name, data in cases.items():
        cache.store("k", original)
        entry("k").write_bytes(data)
        assert cache.load("k") is None, name
    assert len(cases) == 12


@settings(max_examples=80, deadline=None, database=None)
@given(position=st.integers(0, 10_000), bit=st.integers(0, 7))
def test_any_flipped_bit_is_a_miss_or_the_exact_array(tmp_path_factory, position, bit):
    # (not monkeypatch: a function-scoped fixture is not reset between hypothesis' examples)
    before = os.environ["HIGHLIGHTSENSE_CACHE"]  # the run's own, from conftest
    os.environ["HIGHLIGHTSENSE_CACHE"] = str(tmp_path_factory.mktemp("c"))
    try:
        original = spec(frames=20)
        cache.store("k", original)
        data = bytearray(entry("k").read_bytes())
        data[position % len(data)] ^= 1 << bit
        entry("k").write_bytes(bytes(data))
        loaded = cache.load("k")
        # A flip in the header's JSON may keep it meaning the same (a space turned into a tab).
        assert loaded is None or np.array_equal(loaded, original)
    finally:
        # put back, not deleted: without it the process's later tests used ~/.cache
        os.environ["HIGHLIGHTSENSE_CACHE"] = before


def test_things_in_the_way_are_tolerated(cache_root):
    entry("k").mkdir(parents=True)  # a folder where the entry goes
    assert cache.load("k") is None
    with pytest.warns(UserWarning, match="could not be written"):
        assert not cache.store("k", spec())
    assert entry("k").is_dir()  # not ours to remove
    os.mkfifo(entry("f"))
    assert cache.load("f") is None  # a pipe is not opened (that would block)

    root = cache_root.parent
    for path in sorted(root.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    cache_root.write_text("a file where the features folder goes")
    with pytest.warns(UserWarning, match="feature cache"):
        assert not cache.store("k", spec())


@pytest.fixture(scope="module")
def obs(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("obs") / "obs.mkv"
    subprocess.run(
        [ffmpeg_binary(), "-v", "error", "-y",
         "-f", "lavfi", "-i", "sine=frequency=300:duration=40:sample_rate=44100",
         "-f", "lavfi", "-i", "anoisesrc=amplitude=0.3:duration=40:sample_rate=44100",
         "-map", "0:a", "-map", "1:a", "-c:a", "aac", str(path)],
        check=True, timeout=120,
    )  # fmt: skip
    return path


def test_a_damaged_entry_is_recomputed_and_overwritten(obs, checkpoint, cache_root):
    settings_ = AnalysisSettings(weights=str(checkpoint), tracks=(1, 2))
    uncached = AnalysisSettings(weights=str(checkpoint), tracks=(1, 2), use_cache=False)
    fresh = Engine.create(uncached).analyze(obs)
    key = cache.feature_key(cache.content_hash(obs), "tracks:voice=1,game=2")
    frames = round(40 * 22050 / 512) + 1
    for data in damaged_entries(spec(frames)).values():
        entry(key).parent.mkdir(parents=True, exist_ok=True)
        entry(key).write_bytes(data)
        again = Engine.create(settings_).analyze(obs)
        assert not again.features_from_cache
        np.testing.assert_allclose(again.windows, fresh.windows, atol=1e-6)
        assert cache.load(key) is not None  # overwritten with the good features
    cached = Engine.create(settings_).analyze(obs)
    assert cached.features_from_cache
    np.testing.assert_allclose(cached.windows, fresh.windows, atol=1e-6)


def test_a_folder_at_the_entry_costs_nothing_but_the_cache(obs, checkpoint, cache_root):
    settings_ = AnalysisSettings(weights=str(checkpoint), tracks=(1, 2))
    key = cache.feature_key(cache.content_hash(obs), "tracks:voice=1,game=2")
    entry(key).mkdir(parents=True)
    for _ in range(2):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = Engine.create(settings_).analyze(obs)
        assert not result.features_from_cache and len(result.windows) > 0
        assert any("could not be written" in str(w.message) for w in caught)
