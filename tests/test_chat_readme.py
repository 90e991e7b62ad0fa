"""The README's Chat section runs as written: its command on the planted VOD, with its example
chat file (the section's text block) as chat.txt."""

from __future__ import annotations

import json
import os

from test_readme import REPO, run, sections


def test_the_chat_example_runs_as_written(tmp_path, planted_vod, learned_checkpoint,
                                          tiny_separator, features_cache):  # fmt: skip
    blocks = sections()["Chat"]
    (command,) = [text.strip() for language, text in blocks if language == "bash"]
    (chat_file,) = [text for language, text in blocks if language == "text"]
    assert command.startswith("python -m highlightsense detect my_vod.mp4 --chat chat.txt")
    (tmp_path / "my_vod.mp4").symlink_to(planted_vod.path)
    (tmp_path / "chat.txt").write_text(chat_file)
    repo, name = tiny_separator
    env = {
        **os.environ,
        "HIGHLIGHTSENSE_WEIGHTS": str(learned_checkpoint),
        "HIGHLIGHTSENSE_SEPARATOR": name,
        "HIGHLIGHTSENSE_SEPARATOR_REPO": str(repo),
        "HIGHLIGHTSENSE_CACHE": str(features_cache),  # the planted VOD's features, run-wide
        "PYTHONPATH": str(REPO),
    }
    done = run(command, tmp_path, env)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "highlights" / "my_vod" / "highlights.json").read_text())
    assert summary["chat"]["format"] == "text log"
    assert summary["chat"]["messages"] == len(chat_file.strip().splitlines()) == 7
    assert summary["chat"]["words"] == ["monkaS", "catJAM"]
    assert all("signals" in h for h in summary["highlights"])
