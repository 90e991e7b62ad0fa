"""The pipeline in-process: slices for GPU calls equal the one-pass features; progress; cancel."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from conftest import make_media

from highlightsense import media, pipeline
from highlightsense.errors import Cancelled


@pytest.fixture(scope="module")
def settings(tiny_separator, checkpoint):
    repo, name = tiny_separator
    return pipeline.Settings(
        weights=str(checkpoint), separator=name, separator_repo=str(repo), use_cache=False,
        slice_sec=60.0,
    )  # fmt: skip


@pytest.fixture(scope="module")
def vod(tmp_path_factory):
    return make_media(tmp_path_factory.mktemp("p") / "vod.mp4", 125, loud_spans=((50, 60),))


def test_plan_slices_cover_every_frame_once():
    assert pipeline.plan_slices(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert pipeline.plan_slices(3, 100) == [(0, 3)]


def test_slices_concatenate_to_the_whole_track_features(vod, settings):
    info = media.probe(vod)
    whole, _ = pipeline.compute_features(info, settings)
    mix = pipeline.measure_mix(info)
    assert mix.frames == whole.shape[2]
    # slice edges placed off the Demucs and frame grids on purpose
    edges = [0, 1111, 3900, mix.frames]
    parts = [
        pipeline.features_range(info, settings, mix, (a, b))
        for a, b in zip(edges, edges[1:], strict=False)
    ]
    sliced = np.concatenate(parts, axis=2)
    assert sliced.shape == whole.shape
    above = whole > np.log(1e-6)  # ignore the log floor, where tiny differences blow up
    assert np.abs(sliced - whole)[above].max() < 1e-3


def test_gpu_runner_path_gives_the_same_scores(vod, settings):
    """The ZeroGPU path: every call's arguments and result go through pickle, as they do there."""
    calls = []

    def gpu(fn, *args):
        calls.append(fn.__name__)
        args = pickle.loads(pickle.dumps(args))
        return pickle.loads(pickle.dumps(fn(*args)))

    plain = pipeline.analyze_source(vod, settings)
    sliced = pipeline.analyze_source(vod, settings, gpu=gpu)
    assert calls == ["features_range"] * 3 + ["score_features"]  # 125 s in 60 s slices
    np.testing.assert_allclose(sliced.windows, plain.windows, atol=1e-4)


def test_progress_is_monotonic_and_raising_in_it_cancels(vod, settings, tmp_path):
    seen = []

    def progress(fraction, message):
        seen.append(fraction)

    models = {k: getattr(settings, k) for k in ("weights", "separator", "separator_repo")}
    pipeline.analyze(vod, out_dir=tmp_path / "ok", progress=progress, clips=False, **models)
    assert seen[-1] == pytest.approx(1.0) and all(
        b >= a - 1e-9 for a, b in zip(seen, seen[1:], strict=False)
    )

    def cancel(fraction, message):
        if fraction > 0.3:
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        pipeline.analyze(
            vod, out_dir=tmp_path / "cancelled", progress=cancel, use_cache=False, **models
        )
    assert not (tmp_path / "cancelled").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ok"]  # no staging folder left behind
