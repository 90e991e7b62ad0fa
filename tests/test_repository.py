"""The repository holds what people write (code, docs, configuration), never what a run makes:
coverage data, caches, outputs, weights or other large binaries."""

from __future__ import annotations

import subprocess
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath

import pytest

REPO = Path(__file__).resolve().parents[1]
# the kinds of file the repository holds: source, docs, configuration, and these names
KINDS = {".py", ".md", ".txt", ".toml", ".cfg", ".ini", ".yml", ".yaml", ".json", ".sh"}
NAMES = {"LICENSE", ".gitignore", ".gitattributes", ".ci/run"}  # file names or paths
MAX_BYTES = 256 * 1024  # a tracked file larger than this is data, not something people wrote
# what runs leave behind (tests, coverage, builds, the app, the command line, training)
GENERATED = (
    ".coverage",
    ".coverage.*",
    "coverage.xml",
    "htmlcov/*",
    "*.pyc",
    "__pycache__/*",
    ".pytest_cache/*",
    ".ruff_cache/*",
    ".hypothesis/*",
    "*.egg-info/*",
    "build/*",
    "dist/*",
    "highlights/*",
    "weights/best_model.pt",
    "weights/model.safetensors",
    ".venv/*",
)
# a path of each generated kind, for `git check-ignore`
GENERATED_EXAMPLES = (
    ".coverage",
    ".coverage.host.1234.567890",
    "coverage.xml",
    "htmlcov/index.html",
    "highlightsense/__pycache__/cli.cpython-311.pyc",
    ".pytest_cache/README.md",
    ".ruff_cache/CACHEDIR.TAG",
    ".hypothesis/examples/x",
    "highlightsense.egg-info/PKG-INFO",
    "build/lib/x.py",
    "dist/highlightsense-0.1.0.tar.gz",
    "highlights/vod/scores.csv",
    "weights/best_model.pt",
    ".venv/bin/python",
)


def git(*args: str) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, timeout=60)
    except FileNotFoundError:
        pytest.skip("git is not installed")
    if done.returncode == 128:  # "not a git repository"
        pytest.skip("not a git checkout")
    return done


def tracked() -> list[str]:
    done = git("ls-files", "-z")
    assert done.returncode == 0, done.stderr
    return [name for name in done.stdout.decode().split("\0") if name]


def is_generated(name: str) -> bool:
    path = PurePosixPath(name)
    candidates = [name, path.name] + ["/".join(path.parts[i:]) for i in range(1, len(path.parts))]
    return any(fnmatch(c, pattern) for c in candidates for pattern in GENERATED)


def test_only_files_people_write_are_tracked() -> None:
    files = tracked()
    assert len(files) >= 50 and "highlightsense/pipeline.py" in files  # the listing is real
    generated = [name for name in files if is_generated(name)]
    assert generated == [], f"generated files are tracked: {generated}"
    odd = [
        n
        for n in files
        if PurePosixPath(n).suffix not in KINDS and not {n, PurePosixPath(n).name} & NAMES
    ]
    assert odd == [], f"files of an unexpected kind are tracked: {odd}"
    large = [n for n in files if (REPO / n).is_file() and (REPO / n).stat().st_size > MAX_BYTES]
    assert large == [], f"large files are tracked: {large}"


def test_what_runs_make_is_ignored() -> None:
    done = git("check-ignore", "--no-index", *GENERATED_EXAMPLES)
    ignored = done.stdout.decode().split()
    assert ignored == list(GENERATED_EXAMPLES), set(GENERATED_EXAMPLES) - set(ignored)


@pytest.mark.parametrize(
    ("name", "generated"),
    [
        (".coverage", True),
        ("sub/.coverage.host.1.2", True),
        ("highlightsense/__pycache__/cli.cpython-311.pyc", True),
        ("highlights/vod/clips/highlight_01.mp4", True),
        ("weights/README.md", False),
        ("highlightsense/coverage.py", False),
        ("tests/test_build.py", False),
    ],
)
def test_the_check_tells_generated_files_apart(name: str, generated: bool) -> None:
    assert is_generated(name) is generated
