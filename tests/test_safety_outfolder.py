"""``-o`` never deletes, moves or hides a user's files; full, read-only and forbidden disks give
one sentence naming the folder; our own abandoned staging folders are swept, nothing else."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_media

from highlightsense import cli, outfolder
from highlightsense.errors import OutputError


def run_cli(*args: str, env: dict, cwd: Path | None = None, timeout: float = 300):
    return subprocess.run(
        [sys.executable, "-m", "highlightsense", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory, checkpoint, tiny_separator) -> dict:
    repo, name = tiny_separator
    return {
        "HIGHLIGHTSENSE_CACHE": str(tmp_path_factory.mktemp("cache")),
        "HIGHLIGHTSENSE_WEIGHTS": str(checkpoint),
        "HIGHLIGHTSENSE_SEPARATOR": name,
        "HIGHLIGHTSENSE_SEPARATOR_REPO": str(repo),
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }


@pytest.fixture(scope="module")
def vod(tmp_path_factory) -> Path:
    return make_media(tmp_path_factory.mktemp("vod") / "vod.mp4", 35, loud_spans=((10, 14),))


def snapshot(folder: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every entry below ``folder``: its mode and, for files, its bytes."""
    entries = {".": (os.lstat(folder).st_mode, None)}
    for path in sorted(folder.rglob("*")):
        info = os.lstat(path)
        data = path.read_bytes() if stat.S_ISREG(info.st_mode) else None
        entries[str(path.relative_to(folder))] = (info.st_mode, data)
    return entries


def user_folder(root: Path) -> Path:
    folder = root / "Videos"
    (folder / "holiday").mkdir(parents=True)
    (folder / "holiday" / "beach.mp4").write_bytes(b"\0\1\2 a user's video")
    (folder / "notes.txt").write_text("do not lose me\n")
    (folder / ".hidden").write_text("mine too\n")
    folder.chmod(0o751)
    return folder


def main_in_process(args: list[str], env: dict, monkeypatch, capsys) -> tuple[int, str]:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code = cli.main(args)
    return code, capsys.readouterr().err


def test_refuses_folders_holding_user_files_and_changes_nothing(
    vod, cli_env, tmp_path, monkeypatch, capsys
):
    videos = user_folder(tmp_path)
    a_file = tmp_path / "existing.mp4"
    a_file.write_bytes(b"the user's file")
    link = tmp_path / "link"
    link.symlink_to(videos)
    # an earlier output of ours, into which the user dropped a file of their own
    ours_plus = tmp_path / "ours-plus"
    ours_plus.mkdir()
    (ours_plus / outfolder.MARKER).write_text(outfolder.MARKER_TEXT)
    (ours_plus / "highlights.json").write_text("{}")
    (ours_plus / "my edit.mp4").write_bytes(b"user")
    before = {p: snapshot(p) for p in (videos, ours_plus)}
    parent_before = sorted(p.name for p in tmp_path.iterdir())
    for out in (videos, a_file, link, ours_plus):
        code, err = main_in_process(
            ["detect", str(vod), "-o", str(out), "-q"], cli_env, monkeypatch, capsys
        )
        assert code == 2, (out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        assert "Traceback" not in err
    assert {p: snapshot(p) for p in before} == before
    assert a_file.read_bytes() == b"the user's file"
    assert link.is_symlink() and link.resolve() == videos
    assert sorted(p.name for p in tmp_path.iterdir()) == parent_before  # nothing hidden beside


def test_dot_as_output_in_a_folder_of_user_files(vod, cli_env, tmp_path):
    """``-o .`` as a real subprocess: the current folder is refused and left exactly as it was."""
    videos = user_folder(tmp_path)
    before = snapshot(videos)
    began = time.monotonic()
    proc = run_cli("detect", str(vod), "-o", ".", "-q", env=cli_env, cwd=videos)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "did not write" in proc.stderr
    assert snapshot(videos) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Videos"]
    assert time.monotonic() - began < 120  # refused before any analysis, not after it


def test_empty_folder_is_used_in_place_and_a_rerun_replaces_our_output(vod, cli_env, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    out.chmod(0o755)
    inode = out.stat().st_ino
    proc = run_cli("detect", str(vod), "-o", str(out), "--window", "10", "--percentile", "0",
                   "--top-n", "2", "-q", env=cli_env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_ino == inode and stat.S_IMODE(out.stat().st_mode) == 0o755
    assert (out / outfolder.MARKER).is_file()
    assert sorted(p.name for p in (out / "clips").iterdir()) == [
        "highlight_01.mp4",
        "highlight_02.mp4",
    ]
    assert outfolder.is_ours(out)

    proc = run_cli("detect", str(vod), "-o", str(out), "--percentile", "0", "--top-n", "1",
                   "--no-clips", "-q", env=cli_env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "highlights.json").read_text())
    assert len(summary["highlights"]) == 1 and summary["settings"]["clips"] is False
    assert not (out / "clips").exists()  # the earlier output was replaced, not merged
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [outfolder.MARKER, "highlights.csv", "highlights.json", "scores.csv", "scores.html"]
    )
    assert out.stat().st_ino == inode and stat.S_IMODE(out.stat().st_mode) == 0o755
    assert [p.name for p in tmp_path.iterdir()] == ["empty"]  # no staging left anywhere


def test_output_written_before_the_marker_is_still_recognised(tmp_path):
    old = tmp_path / "old"
    (old / "clips").mkdir(parents=True)
    (old / "clips" / "highlight_01.mp4").write_bytes(b"clip")
    summary = {"input": "v.mp4", "model": "m", "settings": {}, "windows": 3, "highlights": []}
    (old / "highlights.json").write_text(json.dumps(summary))
    (old / "scores.csv").write_text("window_index\n")
    assert outfolder.is_ours(old)
    (old / "clips" / "my cut.mp4").write_bytes(b"user")
    assert not outfolder.is_ours(old)
    (old / "clips" / "my cut.mp4").unlink()
    (old / "highlights.json").write_text(json.dumps({"input": "v.mp4"}))  # not our summary
    assert not outfolder.is_ours(old)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_sweep_removes_only_our_abandoned_staging_folders(tmp_path):
    def staging(name: str, marker: bool = True) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "scores.csv").write_text("x")
        if marker:
            (folder / outfolder.MARKER).write_text(outfolder.MARKER_TEXT)
        return folder

    dead = dead_pid()
    abandoned = staging(f".out.partial-{dead}-0123abcd")
    abandoned_old = staging(f".out.old-{dead}-89abcdef")
    live = staging(f".out.partial-{os.getppid()}-0123abcd")  # pytest's parent is alive
    stale = staging(f".out.partial-{os.getppid()}-fedcba98")
    os.utime(stale, (time.time() - 2 * outfolder.STALE_SECONDS,) * 2)
    no_marker = staging(f".out.partial-{dead}-00000000", marker=False)
    lookalike = staging(f".out.partial-{dead}-xyz")  # not our name pattern
    users = staging(f"out.partial-{dead}-0123abcd")  # not hidden: not ours
    removed = outfolder.sweep(tmp_path)
    assert sorted(removed) == sorted([abandoned, abandoned_old, stale])
    for folder in (abandoned, abandoned_old, stale):
        assert not folder.exists()
    for folder in (live, no_marker, lookalike, users):
        assert (folder / "scores.csv").read_text() == "x"


# --- disks that cannot be written ---------------------------------------------------------------


def mount_namespace_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
         "mount -t tmpfs -o size=64k tmpfs /mnt && echo ok"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    return probe.stdout.strip() == "ok"


needs_mounts = pytest.mark.skipif(
    not mount_namespace_works(), reason="needs unshare with a mount namespace for a small tmpfs"
)


def run_on_tmpfs(mountpoint: Path, options: str, args: list[str], env: dict):
    """The CLI in a private mount namespace where ``mountpoint`` is a tmpfs with ``options``."""
    mountpoint.mkdir(exist_ok=True)
    script = 'mount -t tmpfs -o "$1" tmpfs "$2" && shift 2 && exec "$@"'
    command = [sys.executable, "-m", "highlightsense", *args]
    return subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh",
         options, str(mountpoint), *command],
        capture_output=True, text=True, timeout=300, env={**os.environ, **env},
    )  # fmt: skip


def assert_one_line_naming(proc, folder: Path, fragment: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(folder) in lines[0] and fragment in lines[0], lines[0]
    for internal in (".partial-", ".store", "span_", ".part", "Traceback"):
        assert internal not in lines[0]


@needs_mounts
@pytest.mark.parametrize(
    ("size", "extra", "stage"),
    [("96k", [], "cutting a clip"), ("1m", ["--no-clips"], "writing the plot")],
)
def test_disk_filling_up_is_one_sentence_naming_the_folder(
    vod, cli_env, tmp_path, size, extra, stage
):
    mnt = tmp_path / "small"
    out = mnt / "out"
    args = ["detect", str(vod), "-o", str(out), "--percentile", "0", "--top-n", "3", "-q", *extra]
    proc = run_on_tmpfs(mnt, f"size={size}", args, cli_env)
    assert_one_line_naming(proc, out, "full")
    assert "damaged" not in proc.stderr, stage


@needs_mounts
def test_read_only_output_is_one_sentence_naming_the_folder(vod, cli_env, tmp_path):
    mnt = tmp_path / "ro"
    proc = run_on_tmpfs(mnt, "ro", ["detect", str(vod), "-o", str(mnt / "out"), "-q"], cli_env)
    assert_one_line_naming(proc, mnt, "read-only")


@needs_mounts
def test_a_cache_that_cannot_be_written_does_not_lose_the_analysis(vod, cli_env, tmp_path):
    mnt = tmp_path / "cache"
    env = {**cli_env, "HIGHLIGHTSENSE_CACHE": str(mnt)}
    # Weights and separator come from files elsewhere: only the feature cache is on this disk.
    out = tmp_path / "out"
    proc = run_on_tmpfs(mnt, "ro", ["detect", str(vod), "-o", str(out), "--no-clips"], env)
    assert proc.returncode == 0, proc.stderr
    assert "feature cache" in proc.stderr and "could not be written" in proc.stderr
    assert json.loads((out / "highlights.json").read_text())["windows"] > 0


def test_permission_denied_is_one_sentence(tmp_path):
    """EACCES (a folder of someone else's): the same sentence, from the errno alone."""
    err = outfolder.disk_error(PermissionError(13, "Permission denied", str(tmp_path)), tmp_path)
    assert isinstance(err, OutputError)
    assert str(tmp_path) in str(err) and "permission" in str(err) and "\n" not in str(err)
    if os.geteuid() != 0:  # root ignores folder modes
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(OutputError, match="permission"):
            outfolder.stage(locked / "out")
