"""The web package without a server: checks of what callers send, visitor messages, the job
registry's promises (nobody's traffic evicts another visitor's work; a disk ceiling), job
progress, and the plots' axes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from highlightsense.errors import (
    Cancelled,
    MediaError,
    SeparatorError,
    SourceError,
    ToolError,
    WeightsError,
)
from highlightsense.plots import attention_figure, score_figure, time_ticks
from highlightsense.web import controls, messages
from highlightsense.web.controls import BadInput
from highlightsense.web.jobs import Busy, Jobs
from highlightsense.web.messages import JobTimeout, for_visitor

# --- controls --------------------------------------------------------------------------------


def test_picks_map_onto_the_library_settings() -> None:
    picks = controls.picks(5, "threshold", 90, 0.7, 12, 1, 2, "fast")
    assert picks.settings() == {
        "top_n": 5,
        "percentile": 90.0,
        "threshold": 0.7,
        "nms_sec": 12.0,
        "pad_before": 1.0,
        "pad_after": 2.0,
        "copy": True,
    }
    assert (
        controls.picks(5, "percentile", 90, None, 12, 1, 2, "exact").settings()["threshold"] is None
    )


@pytest.mark.parametrize(
    ("values", "sentence"),
    [
        ((0,), "The number of clips must be a whole number between 1 and 50."),
        ((2.5,), "The number of clips must be a whole number between 1 and 50."),
        ((10**400,), "The number of clips must be a whole number"),
        ((float("nan"),), "The number of clips must be a whole number"),
        (([1],), "The number of clips must be a whole number"),
        ((True,), "The number of clips must be a whole number"),
        ((3, "loudest"), "How picky must be one of: percentile, threshold."),
        ((3, "percentile", 10), "The share to beat must be a number between 50 and 100."),
        ((3, "threshold", 90, 1.5), "The minimum score must be a number between 0 and 1."),
        (
            (3, "percentile", 90, 0.5, 5, -1),
            "The padding before must be a number between 0 and 60.",
        ),
        ((3, "percentile", 90, 0.5, 5, 0, 0, "slow"), "The cut must be one of: exact, fast."),
    ],
)
def test_bad_controls_get_one_sentence(values: tuple, sentence: str) -> None:
    with pytest.raises(BadInput) as caught:
        controls.picks(*values)
    assert str(caught.value).startswith(sentence)


def test_links_are_text_of_bounded_length() -> None:
    assert controls.link_text("  https://youtu.be/x  ") == "https://youtu.be/x"
    assert controls.link_text(None) == ""
    for bad in (["https://youtu.be/x"], "x" * 3000, 12):
        with pytest.raises(BadInput):
            controls.link_text(bad)


# --- messages --------------------------------------------------------------------------------


def _caused(error: Exception, cause: Exception) -> Exception:
    error.__cause__ = cause
    return error


def test_damaged_file_message_has_no_tool_output() -> None:
    error = _caused(
        MediaError(
            "`random.mp4` could not be read (ffprobe exited with status 1: moov atom not found"
            " | random.mp4: Invalid data found); choose an mp4, mov or mkv file."
        ),
        ToolError("ffprobe exited with status 1"),
    )
    text = for_visitor(error)
    assert text == (
        "random.mp4 could not be read because it is damaged or incomplete; "
        "try the file again or re-export it."
    )


def test_messages_name_environment_variables_not_flags() -> None:
    assert "HIGHLIGHTSENSE_WEIGHTS" in for_visitor(
        WeightsError("No weights at x; check --weights.")
    )
    assert "HIGHLIGHTSENSE_SEPARATOR_REPO" in for_visitor(SeparatorError("pass --separator-repo"))
    text = messages.plain("remux it (`ffmpeg -i <file> -c copy out.mp4`) and pass --weights W")
    assert text == "remux it and set HIGHLIGHTSENSE_WEIGHTS W"
    for error in (WeightsError("--weights"), SeparatorError("--separator-repo")):
        assert "--" not in for_visitor(error) and "`" not in for_visitor(error)


def test_download_failures_do_not_blame_the_link() -> None:
    error = SourceError(
        "could not download https://www.twitch.tv/videos/1 (HTTPSConnectionPool(host='x'): "
        "Max retries exceeded); check the link is public and try again."
    )
    text = for_visitor(error)
    assert text == messages.NO_DOWNLOAD
    assert "HTTPS" not in text


def test_bugs_and_cancels_get_fixed_sentences() -> None:
    assert for_visitor(ValueError("invalid literal for int()")) == messages.GENERIC
    assert for_visitor(OverflowError("int too large to convert to float")) == messages.GENERIC
    assert for_visitor(Cancelled("x")) == messages.CANCELLED
    assert for_visitor(JobTimeout("This VOD took too long.")) == "This VOD took too long."


# --- jobs ------------------------------------------------------------------------------------


def registry(tmp_path: Path, **limits: float) -> Jobs:
    return Jobs(
        tmp_path / "work",
        ttl=limits.get("ttl", 3600.0),
        max_bytes=limits.get("max_bytes", 1e12),
        uploads=tmp_path / "uploads",
        orphan_age=limits.get("orphan_age", 60.0),
        capacity=int(limits.get("capacity", 4)),
    )


def finished(jobs: Jobs, owner: str):
    job = jobs.start(owner)
    jobs.succeeded(job)
    return job


def test_others_traffic_never_evicts_a_visitors_results(tmp_path: Path) -> None:
    jobs = registry(tmp_path, capacity=3)
    mine = finished(jobs, "a" * 32)
    running = jobs.start("b" * 32)
    flood = [finished(jobs, "c" * 32)]  # the registry is full now
    for _ in range(10):  # the flooder's own older jobs make room for its new ones
        flood.append(finished(jobs, "c" * 32))
    assert jobs.find(mine.id) is mine and mine.folder.is_dir()
    assert jobs.find(running.id) is running
    assert [job for job in flood if jobs.find(job.id)] == [flood[-1]]
    # a full registry of other visitors' latest results and running jobs refuses new work
    with pytest.raises(Busy, match="busy with other visitors' work"):
        jobs.start("d" * 32)
    assert jobs.find(mine.id) is mine


def test_a_visitors_new_results_replace_its_old_ones_only_on_success(tmp_path: Path) -> None:
    jobs = registry(tmp_path)
    owner = "a" * 32
    old = finished(jobs, owner)
    attempt = jobs.start(owner)
    attempt.state = "failed"  # a bad file after a good run
    assert jobs.find(old.id) is old
    new = finished(jobs, owner)
    assert jobs.find(old.id) is None and not old.folder.exists()
    assert jobs.find(attempt.id) is None
    assert jobs.find(new.id) is new


def test_disk_ceiling_prunes_oldest_finished_then_refuses(tmp_path: Path) -> None:
    jobs = registry(tmp_path, max_bytes=3000)
    first, second = finished(jobs, "a" * 32), finished(jobs, "b" * 32)
    first.used, second.used = time.time() - 100, time.time() - 50
    (first.folder / "clip").write_bytes(bytes(1500))
    (second.folder / "clip").write_bytes(bytes(1000))
    third = jobs.start("c" * 32, needed=1000)  # 3500 bytes would pass the ceiling: drop `first`
    assert jobs.find(first.id) is None and jobs.find(second.id) is second
    (third.folder / "input").write_bytes(bytes(2500))
    fourth = jobs.start("d" * 32)  # `second` goes too
    assert jobs.find(second.id) is None
    (fourth.folder / "input").write_bytes(bytes(1000))
    with pytest.raises(Busy, match="disk is full"):  # only running work is left to drop
        jobs.start("e" * 32)
    assert jobs.find(third.id) is third and jobs.find(fourth.id) is fourth


def test_orphaned_uploads_are_swept_linked_ones_kept(tmp_path: Path) -> None:
    jobs = registry(tmp_path, orphan_age=60)
    uploads = tmp_path / "uploads" / "abc"
    uploads.mkdir(parents=True)
    orphan, held, fresh = (uploads / name for name in ("orphan.mp4", "held.mp4", "fresh.mp4"))
    for path in (orphan, held, fresh):
        path.write_bytes(b"x")
    job = jobs.start("a" * 32)
    os.link(held, job.folder / "held.mp4")  # what keep_input does
    old = time.time() - 3600
    for path in (orphan, held):
        os.utime(path, (old, old))
    jobs.prune()
    assert not orphan.exists() and held.exists() and fresh.exists()


def test_job_progress_survives_as_a_file_and_stops_the_job(tmp_path: Path) -> None:
    jobs = registry(tmp_path)
    job = jobs.start("a" * 32)
    progress = job.progress(limit=3600).part(0.0, 0.5, (("Separating", 0.8), ("Scoring", 1.0)))
    progress(0.5, "Separated 3 of 6 chunks")
    record = json.loads(job.progress_file.read_text())
    assert record["stage"] == "Separating" and record["fraction"] == pytest.approx(0.25)
    assert record["eta"] is not None and record["eta"] >= 0
    job.cancel_flag.touch()
    with pytest.raises(Cancelled):
        progress(0.9, "")
    late = jobs.start("b" * 32).progress(limit=1e-9)
    time.sleep(0.01)
    with pytest.raises(JobTimeout, match="took longer than"):
        late(0.1)


# --- plots -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("begin", "end", "step"), [(0, 60, 10), (0, 171, 30), (0, 7200, 1800), (3600, 3630, 5)]
)
def test_time_ticks_fall_on_round_times(begin: float, end: float, step: float) -> None:
    ticks = time_ticks(begin, end)
    assert ticks[0] == pytest.approx(np.ceil(begin / step) * step)
    assert np.allclose(np.diff(ticks), step)
    assert 2 <= len(ticks) <= 7 and ticks[-1] <= end


def test_a_vod_shorter_than_a_window_still_has_a_curve() -> None:
    figure = score_figure(np.array([[0.0, 12.0, 0.8]]), 0.8, [0], 12.0)
    assert list(figure.data[0].x) == [0.0, 12.0] and list(figure.data[0].y) == [0.8, 0.8]
    assert figure.layout.title.text is None  # the page's label is the only title


def test_why_plot_spans_the_padded_clip() -> None:
    attention = np.full(20, 0.05)
    loudness = np.zeros((2, 1400))
    figure = attention_figure((8.0, 40.0), (10.0, 30.0), attention, 0.37, loudness, 0.0232)
    assert tuple(figure.layout.xaxis.range) == (8.0, 40.0)
    assert figure.data[0].fill == "tozeroy"  # attention is an area behind the lines
    assert figure.layout.yaxis2.range[1] == pytest.approx(0.15)


# --- the service's answers without a server ------------------------------------------------


def test_cancel_with_nothing_running_says_so(tmp_path: Path) -> None:
    from highlightsense.web.service import PAGE, Config, Service

    config = Config(tmp_path, 3600.0, 600.0, 1e9, "1gb", 5, 60.0, 600.0, "cpu")
    app = Service(config)
    answer = dict(zip(PAGE, app.cancel({"visitor": "a" * 32}), strict=True))
    assert "Nothing is running" in answer["status"]
    answer = dict(zip(PAGE, app.cancel({"visitor": "a" * 32, "pending": "queued"}), strict=True))
    assert "Cancelled before it started" in answer["status"]
    job = app.jobs.start("a" * 32)
    answer = dict(zip(PAGE, app.cancel({"visitor": "a" * 32, "pending": job.id}), strict=True))
    assert "earlier results are still here" in answer["status"] and job.cancel_flag.exists()
    assert answer["state"]["pending"] == ""


def test_the_pages_queue_looks_for_work_calmly_when_idle(tmp_path: Path, monkeypatch) -> None:
    """Gradio's queue looks for work every 1 ms when idle (an idle app took 1.66 CPU-s in 30 s,
    shared machine); the app's page uses Gradio's own Windows intervals (0.18 CPU-s)."""
    import app
    from highlightsense.web import config
    from highlightsense.web.service import Service

    monkeypatch.setenv(config.WORKDIR_ENV, str(tmp_path / "work"))
    demo = app.build(Service(config.Config.from_env()))
    assert demo._queue.sleep_when_free == config.QUEUE_IDLE_POLL == 0.05
    assert demo._queue.progress_update_sleep_when_free == config.PROGRESS_POLL == 0.1
