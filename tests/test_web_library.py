"""The web package's one call into the library, on real media and the tiny models: a render
with nothing chosen still writes its tables; a cancel stops the clip cutting at once."""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import pytest

from highlightsense.engine import Engine
from highlightsense.errors import Cancelled
from highlightsense.settings import AnalysisSettings
from highlightsense.web import controls, library
from highlightsense.web.jobs import Job

WINDOW = 10.0  # s: several windows in the 40 s test VOD


@pytest.fixture(scope="module")
def analysis(short_vod: Path, checkpoint: Path, tiny_separator, tmp_path_factory):
    repo, name = tiny_separator
    settings = AnalysisSettings(
        weights=str(checkpoint),
        separator=name,
        separator_repo=str(repo),
        window_sec=WINDOW,
        stride_sec=5.0,
        device="cpu",
        use_cache=False,
    )
    return Engine.create(settings).analyze(short_vod)


def job_for(analysis, folder: Path) -> Job:
    job = Job("a" * 32, folder, "b" * 32, name="short vod.mp4", analysis=analysis)
    folder.mkdir(parents=True)
    return job


def test_nothing_above_a_minimum_score_still_writes_the_tables(analysis, tmp_path: Path) -> None:
    job = job_for(analysis, tmp_path / "job")
    picks = controls.picks(3, "threshold", 99, 0.999, 0, 0, 0, "exact")
    library.render(job, picks, preview=True)
    assert job.result.highlights == [] and job.exact
    names = [path.name for path in job.files]
    assert names == [
        "short vod-highlights.zip",
        "short vod-highlights.csv",
        "short vod-highlights.json",
    ]
    with zipfile.ZipFile(job.files[0]) as archive:
        assert len(archive.namelist()) == 3  # both tables and the scores


def test_previews_then_exact_cuts_and_the_store_stays_bounded(analysis, tmp_path: Path) -> None:
    job = job_for(analysis, tmp_path / "job")
    for pad in range(6):  # six re-tunes, each with other spans
        picks = controls.picks(3, "percentile", 50, None, 0, pad, 0, "exact")
        library.render(job, picks, preview=True)
        assert not job.exact and all(p.exists() for p in job.result.clip_paths)
        library.render(job, picks, preview=False)
        assert job.exact
    clips = len(job.result.clip_paths)
    kept = list((job.folder / "store").iterdir())
    assert clips >= 1 and len(kept) <= 2 * 2 * clips  # two kept selections, preview + exact
    assert len(list(job.folder.glob("render-*"))) == 2


def test_cancel_stops_the_cutting_at_once(analysis, tmp_path: Path, started: list) -> None:
    job = job_for(analysis, tmp_path / "job")
    picks = controls.picks(8, "percentile", 50, None, 0, 3, 4, "exact")
    asked = time.monotonic() + 0.2

    def cancel() -> None:
        if time.monotonic() > asked:
            raise Cancelled("cancelled")

    with pytest.raises(Cancelled):
        library.render(job, picks, preview=False, cancel=cancel)
    stopped = time.monotonic() - asked
    print(f"cutting stopped {stopped:.2f} s after the cancel")
    assert stopped < 5.0  # a clip takes longer than this to encode on a busy machine
    assert started and all(proc.poll() is not None for proc in started)


def test_downloads_offer_the_editor_timelines(analysis, tmp_path: Path) -> None:
    job = job_for(analysis, tmp_path / "job")
    library.render(job, controls.picks(2, "percentile", 50, None, 0, 0, 0, "fast"), preview=True)
    names = [path.name for path in job.files]
    clips = [f"short vod-highlight_0{rank}.mp4" for rank in (1, 2)]
    assert names[3:5] == clips  # the clips right after the zip and the two tables
    timelines = {"timeline.otio", "timeline.xml", "timeline.fcpxml", "timeline.edl", "chapters.txt"}
    assert set(names[5:]) == {f"short vod-{name}" for name in timelines}
    with zipfile.ZipFile(job.files[0]) as archive:
        assert len(archive.namelist()) == 3 + len(clips) + len(timelines)
    otio_text = (tmp_path / "job").rglob("short vod-timeline.otio").__next__().read_text()
    assert "/" not in json.loads(otio_text)["tracks"]["children"][0]["children"][0][
        "media_references"]["DEFAULT_MEDIA"]["target_url"].removeprefix("file://")  # fmt: skip
