"""The Space on ZeroGPU, without a GPU: the front matter and pins against ZeroGPU's documented
rules, the size of every GPU call, and whole analyses through the real ``spaces`` package.

ZeroGPU's own server is replaced by a fake one behind spaces' real client (an httpx transport):
it records the seconds each call asks for, after spaces' duration factor, and answers as the
hub docs and spaces 0.51.3 say the server does (a per-call cap, a daily quota, no free GPU).
Everything else is the real thing: ``spaces.GPU``'s wrapper forks its worker process, pickles
the call there and back, and turns the server's refusals into its ``gr.Error``s; only CUDA's
start inside the worker is skipped (there is no GPU here).
"""

from __future__ import annotations

import json
import math
import multiprocessing
import re
import sys
import types
from importlib import metadata, resources
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from conftest import make_media
from packaging.requirements import Requirement

from highlightsense.engine import Engine
from highlightsense.errors import GpuRefused, MediaError
from highlightsense.settings import DEFAULT_SEPARATOR, AnalysisSettings
from highlightsense.web import messages, zerogpu

REPO = Path(__file__).resolve().parents[1]
# hub-docs docs/hub/spaces-zerogpu.md (2026-08): "Supported Versions"
ZEROGPU_PYTHON = ("3.12.12", "3.10.13")
ZEROGPU_TORCH = ("2.8.0", "2.9.1", "2.10.0", "2.11.0")
FACTOR = zerogpu.DURATION_FACTOR


def front_matter() -> dict:
    text = (REPO / "README.md").read_text()
    match = re.match(r"---\n(.*?)\n---\n", text, flags=re.S)
    assert match, "README.md starts with the Space's YAML front matter"
    return yaml.safe_load(match.group(1))


def requirements() -> list[Requirement]:
    lines = (REPO / "requirements.txt").read_text().splitlines()
    return [Requirement(line.split("  #")[0].strip()) for line in lines if line[:1].isalnum()]


def pins(python: str | None = None) -> dict[str, str]:
    """name → pinned version of the requirements that apply to ``python`` (this one if None)."""
    env = None if python is None else {"python_full_version": python, "python_version": python[:4]}
    found = {}
    for req in requirements():
        if req.marker is None or req.marker.evaluate(env):
            assert req.name not in found, f"{req.name} pinned twice for Python {python}"
            (spec,) = req.specifier
            found[req.name] = spec.version
    return found


# --- the front matter and the pins ----------------------------------------------------------


def test_front_matter_follows_zerogpu_and_the_pins():
    meta = front_matter()
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py"
    assert meta["python_version"] in ZEROGPU_PYTHON
    assert meta["sdk_version"] == pins()["gradio"] == metadata.version("gradio")
    # every model the app downloads from the Hub: Demucs' default separator, as demucs names
    # its repository (the CRNN's published weights come from GitHub, verified by blob id)
    from demucs.hf import DEFAULT_NAMESPACE, hf_repo_name

    separator_repo = f"{DEFAULT_NAMESPACE}/{hf_repo_name(DEFAULT_SEPARATOR)}"
    assert separator_repo in meta["preload_from_hub"]
    assert set(meta["models"]) <= {item.split()[0] for item in meta["preload_from_hub"]}


def test_the_space_gets_a_zerogpu_torch_and_this_machine_keeps_its_own():
    space = pins(front_matter()["python_version"])
    assert space["torch"] in ZEROGPU_TORCH
    assert space["spaces"] == metadata.version("spaces")
    here = pins()
    assert here["torch"] == metadata.version("torch").split("+")[0]
    # the same pins otherwise: only torch follows the Space's Python
    assert {k: v for k, v in space.items() if k != "torch"} == {
        k: v for k, v in here.items() if k != "torch"
    }


def test_the_duration_factor_is_the_largest_spaces_applies():
    configs = json.loads(resources.files("spaces.zero").joinpath("configs.json").read_text())
    factors = [config["duration_factor"] for config in configs]
    assert len(factors) >= 2 and max(factors) == FACTOR


# --- the size of every call -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("minutes", "separate", "score"),
    [
        # slices of floor((40 / 1.5 - 8) / 0.02) = 933 s: a request of ceil(1.5 (8 + 0.02 s))
        (10, [31], 13),
        (60, [40, 40, 40, 37], 15),
        (360, [40] * 23 + [17], 29),  # the 23 slices leave 141 s
    ],
)
def test_every_call_fits_the_cap_and_an_hour_fits_a_free_visitor(minutes, separate, score):
    speed = zerogpu.ESTIMATE
    assert zerogpu.slice_seconds(speed) == 933
    calls = zerogpu.plan(minutes * 60, speed)
    assert calls == [*separate, score]
    assert all(seconds * FACTOR <= zerogpu.RESERVE_MAX for seconds in calls)
    assert zerogpu.DAILY_QUOTA["unauthenticated"] >= 2 * zerogpu.RESERVE_MAX
    if minutes <= 60:
        assert sum(calls) * FACTOR <= zerogpu.DAILY_QUOTA["free"]


def test_measured_figures_replace_the_estimate(tmp_path):
    path = tmp_path / "gpu_speed.json"
    block = {"overhead_s": 4.0, "separate_s_per_vod_s": 0.01, "score_s_per_vod_s": 0.001}
    path.write_text(json.dumps({"zerogpu": block | {"device": "H100"}}))
    speed = zerogpu.gpu_speed(path)
    assert (speed.overhead, speed.separate, speed.score) == (4.0, 0.01, 0.001)
    assert zerogpu.slice_seconds(speed) == math.floor((40 / 1.5 - 4) / 0.01)  # 2266 s
    for broken in ("{", '{"zerogpu": {"overhead_s": -1}}', "[]"):
        path.write_text(broken)
        assert zerogpu.gpu_speed(path) == zerogpu.ESTIMATE
    assert zerogpu.gpu_speed(tmp_path / "missing.json") == zerogpu.ESTIMATE


def test_without_zerogpu_spaces_changes_nothing():
    import spaces

    def work(x):
        return x + 1

    assert not zerogpu.on_zero_gpu()
    assert zerogpu.runner() is None
    assert spaces.GPU(duration=30)(work) is work


# --- through the real spaces package, with a fake ZeroGPU server ----------------------------


class FakeZeroGpu:
    """ZeroGPU's device API as spaces' client talks to it. Each call's reservation is taken
    from the visitor's quota (the most it can use); ``cap`` is the longest call allowed."""

    def __init__(self, quota: float = 300, cap: float = 300, busy: bool = False):
        self.quota, self.cap, self.busy = quota, cap, busy
        self.requests: list[int] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path != "/schedule":
            return httpx.Response(200)  # /allow, /release
        if self.busy:
            return httpx.Response(503)
        seconds = int(request.url.params["durationSeconds"])
        self.requests.append(seconds)
        if seconds > self.cap:
            return httpx.Response(429, json={"left": int(self.quota), "wait": -1})
        if seconds > self.quota:
            return httpx.Response(429, json={"left": int(self.quota), "wait": 3600})
        self.quota -= seconds
        token = f"token-{len(self.requests)}"
        return httpx.Response(
            200, json={"idle": True, "nvidiaIndex": 0, "nvidiaUUID": "GPU-0", "allowToken": token}
        )


@pytest.fixture
def zero_gpu(monkeypatch):
    """spaces in its ZeroGPU mode, talking to a fake server on the current cards (factor 1.5);
    CUDA's start inside the worker skipped. Returns a function installing a server."""
    import spaces.config
    import spaces.zero
    import spaces.zero.config

    configs = json.loads(resources.files("spaces.zero").joinpath("configs.json").read_text())
    card = max(configs, key=lambda config: config["duration_factor"])
    monkeypatch.setattr(spaces.config.Config, "zero_gpu", True)
    monkeypatch.setattr(spaces.zero.config, "get_config", lambda: card)
    # spaces' CUDA emulation needs a CUDA build of torch: in its place, what spaces itself uses
    # where torch is missing (spaces/zero/torch/__init__.py), so the worker starts no CUDA
    emulation = types.ModuleType("spaces.zero.torch")
    for name in ("enter_mode", "patch", "unpatch", "init", "move"):
        setattr(emulation, name, lambda *args, **kwargs: None)
    emulation.pack = emulation.size = lambda *args, **kwargs: 0
    emulation.is_in_bad_fork = lambda *args, **kwargs: False
    monkeypatch.setitem(sys.modules, "spaces.zero.torch", emulation)
    monkeypatch.setattr(spaces.zero, "torch", emulation, raising=False)
    import spaces.zero.api
    import spaces.zero.client

    def install(server: FakeZeroGpu) -> FakeZeroGpu:
        transport = httpx.MockTransport(server)
        monkeypatch.setattr(
            spaces.zero.client,
            "api_client",
            lambda: spaces.zero.api.APIClient(
                httpx.Client(base_url="http://zerogpu", transport=transport)
            ),
        )
        return server

    before = set(multiprocessing.active_children())
    yield install
    for worker in set(multiprocessing.active_children()) - before:  # spaces' forked workers
        worker.terminate()
        worker.join(10)


@pytest.fixture(scope="module")
def vod(tmp_path_factory):
    return make_media(tmp_path_factory.mktemp("z") / "vod.mp4", 70, loud_spans=((30, 40),))


# a slow GPU, so that the 70 s VOD takes two slices: floor((40 / 1.5 - 8) / 0.3) = 62 s
SLOW = zerogpu.GpuSpeed(overhead=8.0, separate=0.3, score=0.0005, source="test")


def engine_for(tiny_separator, checkpoint, use_cache: bool, runtime: str = "torch") -> Engine:
    """On the CPU, GPU calls separate with torch whatever the runtime asked for (they run in a
    forked worker, where OpenVINO would hang: Engine.analyze), so the one-pass runs compared
    with them use torch too."""
    repo, name = tiny_separator
    settings = AnalysisSettings(
        weights=str(checkpoint),
        separator=name,
        separator_repo=str(repo),
        separator_runtime=runtime,
        use_cache=use_cache,
    )
    return Engine.create(settings)


def test_an_analysis_through_spaces_asks_for_what_the_plan_says(
    zero_gpu, vod, tiny_separator, checkpoint
):
    server = zero_gpu(FakeZeroGpu())
    run = zerogpu.runner(speed=SLOW)
    assert run is not None
    engine = engine_for(tiny_separator, checkpoint, use_cache=False, runtime="auto")
    slice_sec = zerogpu.slice_seconds(SLOW)
    assert slice_sec == 62
    sliced = engine.analyze(vod, gpu=run, slice_sec=slice_sec)
    plain = engine_for(tiny_separator, checkpoint, use_cache=False).analyze(vod)
    np.testing.assert_allclose(sliced.windows, plain.windows, atol=1e-4)
    planned = zerogpu.plan(70, SLOW)
    # 62 s: ceil(1.5 (8 + 18.6)) = 40; the 8 s rest: ceil(1.5 (8 + 2.4...)) = 16; scoring 13
    assert planned == [40, 16, 13]
    assert server.requests == [round(s * FACTOR) for s in planned] == [60, 24, 20]
    assert all(r <= zerogpu.RESERVE_MAX for r in server.requests)


@pytest.mark.parametrize(
    ("server", "sentence"),
    [
        (FakeZeroGpu(quota=30), zerogpu.QUOTA),  # less left than the first call asks
        (FakeZeroGpu(cap=30), zerogpu.QUOTA),  # longer than any call may be: illegal duration
        (FakeZeroGpu(busy=True), zerogpu.NO_GPU),  # no GPU free
    ],
)
def test_refusals_become_one_sentence(zero_gpu, vod, tiny_separator, checkpoint, server, sentence):
    zero_gpu(server)
    engine = engine_for(tiny_separator, checkpoint, use_cache=False)
    with pytest.raises(GpuRefused) as caught:
        engine.analyze(vod, gpu=zerogpu.runner(speed=SLOW), slice_sec=62)
    assert messages.for_visitor(caught.value) == sentence
    assert sentence.count(". ") == 0 and sentence.endswith((".", ")."))


def test_slices_finished_before_the_quota_ran_out_are_kept(
    zero_gpu, vod, tiny_separator, checkpoint, tmp_path, monkeypatch
):
    monkeypatch.setenv("HIGHLIGHTSENSE_CACHE", str(tmp_path / "cache"))
    engine = engine_for(tiny_separator, checkpoint, use_cache=True)
    first = zero_gpu(FakeZeroGpu(quota=70))  # the first slice (60 s) fits, the second does not
    with pytest.raises(GpuRefused, match="kept"):
        engine.analyze(vod, gpu=zerogpu.runner(speed=SLOW), slice_sec=62)
    assert first.requests == [60, 24]
    entries = list((tmp_path / "cache" / "features").glob("*.feat"))
    assert len(entries) == 1  # the first slice
    again = zero_gpu(FakeZeroGpu(quota=300))  # later, or logged in
    resumed = engine.analyze(vod, gpu=zerogpu.runner(speed=SLOW), slice_sec=62)
    assert again.requests == [24, 20]  # the second slice and scoring: the first was kept
    plain = engine_for(tiny_separator, checkpoint, use_cache=False).analyze(vod)
    np.testing.assert_allclose(resumed.windows, plain.windows, atol=1e-4)
    entries = list((tmp_path / "cache" / "features").glob("*.feat"))
    assert len(entries) == 1  # the whole VOD's features; its slices are gone


def fails_in_the_worker(path: str) -> None:
    raise MediaError(f"{path} is not a video; choose a video file.")


def test_a_users_mistake_inside_a_gpu_call_keeps_its_type(zero_gpu):
    server = zero_gpu(FakeZeroGpu())
    run = zerogpu.runner(speed=SLOW)
    with pytest.raises(MediaError, match="choose a video file"):
        run(10.0, fails_in_the_worker, "notes.txt")
    assert server.requests == [round(math.ceil(1.5 * (8 + 0.3 * 10)) * FACTOR)]  # 17 → 26


def test_requests_are_sized_from_the_covered_seconds():
    assert zerogpu.requested(600, "separate", zerogpu.ESTIMATE, 60) == 30  # 1.5 * 20.0
    assert zerogpu.requested(600.1, "separate", zerogpu.ESTIMATE, 60) == 31
    assert zerogpu.requested(600, "score", zerogpu.ESTIMATE, 60) == 13  # ceil(1.5 * 8.3)
    assert zerogpu.requested(10**6, "separate", zerogpu.ESTIMATE, 60) == 40  # never above
    assert zerogpu.requested(10**6, "separate", zerogpu.ESTIMATE, 120) == 80


def test_the_app_runs_through_spaces_without_zerogpu(tmp_path_factory, checkpoint):
    """``python app.py`` imports the real spaces first (before torch, as ZeroGPU needs), and
    without ZeroGPU a /detect call analyses and cuts in the app's own process."""
    from app_server import app_env, shared_vod, start_app
    from gradio_client import Client, handle_file

    home = tmp_path_factory.mktemp("spaces-app")
    env = app_env(tmp_path_factory, checkpoint, home) | {"PYTHONPROFILEIMPORTTIME": "1"}
    app = start_app(env, home)
    try:
        vod = handle_file(str(shared_vod(tmp_path_factory)))
        report, archive, clips, *_ = Client(app.url).predict(
            vod, "", 3, 50.0, None, 5.0, 0.0, 0.0, "exact", api_name="/detect"
        )
    finally:
        app.stop()
    imported = [
        line.rsplit("|", 1)[-1].strip()
        for line in app.log().splitlines()
        if line.startswith("import time:")
    ]
    assert "spaces.zero.decorator" in imported and "spaces.zero.torch" not in imported
    assert imported.index("spaces") < imported.index("torch")
    assert 1 <= len(report["highlights"]) <= 3 and Path(archive).is_file()
    assert len(clips) == len(report["highlights"]) and all(Path(c).is_file() for c in clips)


def test_the_owner_may_reserve_30_to_120_seconds_a_call(monkeypatch):
    from highlightsense.web import config

    monkeypatch.delenv(config.GPU_SECONDS_ENV, raising=False)
    assert config.gpu_reserve() == zerogpu.RESERVE_MAX == 60
    monkeypatch.setenv(config.GPU_SECONDS_ENV, "90")
    assert config.gpu_reserve() == 90
    for refused in ("300", "20", "nan", "-5"):  # 300: the old default, 450 s with the factor
        monkeypatch.setenv(config.GPU_SECONDS_ENV, refused)
        with pytest.raises(SystemExit, match="HIGHLIGHTSENSE_GPU_SECONDS"):
            config.gpu_reserve()
