"""The app's Vertical (9:16) choice (highlightsense/web/framing.py and its render): boxes moved by
clicks, the pictures that show them, and vertical clips cut for the results on screen without
analysing again, on a generated video whose facecam corner is red and whose gameplay is green."""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path

import numpy as np
import pytest
from test_vertical import GREEN, RED, check_clip, is_colour, make_layout_source, middle_frame

from highlightsense import faces, media
from highlightsense.engine import Engine
from highlightsense.settings import AnalysisSettings
from highlightsense.vertical import Region
from highlightsense.web import controls, framing, library
from highlightsense.web.controls import BadInput
from highlightsense.web.jobs import Job

W, H = 320, 180  # the generated video: red facecam 0,0,80,45; green gameplay; blue right tenth
FACECAM, GAMEPLAY = "0,0,80,45", "80,45,160,135"


@pytest.fixture(scope="module")
def info(media_dir: Path) -> media.MediaInfo:
    return media.probe(make_layout_source(media_dir / "web layout.mp4", W, H))


@pytest.fixture(scope="module")
def frame(info: media.MediaInfo) -> np.ndarray:
    return faces.frame_at(info, 1.0)  # the preview size: the video's own 320x180


# --- clicks and checks ---------------------------------------------------------------------------


def test_a_click_centres_the_box_on_it_inside_the_frame(info, frame) -> None:
    scale = frame.shape[1] / W  # preview pixels per source pixel
    moved = framing.click(info, frame.shape[1], "stack", "facecam", FACECAM, [160 * scale, 90])
    assert moved == "120,68,80,45"  # centred on (160, 90)
    corner = framing.click(info, frame.shape[1], "stack", "facecam", FACECAM, [319, 179])
    assert corner == "240,135,80,45"  # kept inside the frame
    # no gameplay box yet: a click places a full-height slice shaped like the stack's bottom
    placed = framing.click(info, frame.shape[1], "stack", "gameplay", None, [10, 90])
    assert placed == f"0,0,{round(H * 1080 / 1280)},{H}"
    assert framing.click(info, frame.shape[1], "crop", "facecam", None, [80, 5]) == 25.0


@pytest.mark.parametrize(
    "at", [None, "10,10", [1], [1, 2, 3], ["x", 1], [-1, 5], [5, 10**400], [float("nan"), 1]]
)
def test_a_click_with_nonsense_changes_nothing(info, frame, at) -> None:
    assert framing.click(info, frame.shape[1], "stack", "facecam", FACECAM, at) is None


def test_choices_are_checked_with_one_sentence(info) -> None:
    chosen, layout = framing.checked(info, "stack", FACECAM, "", 50)
    assert chosen == framing.Framing("stack", FACECAM, None, None)
    assert layout.facecam == Region(0, 0, 80, 45) and layout.gameplay is None
    assert framing.checked(info, "off", "junk", None, None) == (None, None)
    crop, _ = framing.checked(info, "crop", None, None, 25)
    assert crop.center_x == "0.2500"
    refusals = {
        ("stack", "", "", 50): "Show where the facecam is first",
        ("stack", "0,0,400,45", "", 50): "The facecam '0,0,400,45' reaches past the 320x180 frame",
        ("stack", "rm -rf /", "", 50): "The facecam box must be four numbers",
        ("stack", "1," * 60, "", 50): "The facecam box must be four numbers",
        ("crop", None, None, 101): "The slice position must be a number between 0 and 100",
        ("sideways", None, None, 50): "The vertical layout must be one of",
    }
    for choice, start in refusals.items():
        with pytest.raises(BadInput) as refused:
            framing.checked(info, *choice)
        assert str(refused.value).startswith(start), str(refused.value)
    no_picture = dataclasses.replace(info, has_video=False, width=None, height=None)
    with pytest.raises(BadInput, match="no picture"):
        framing.checked(no_picture, "fit", None, None, 50)


# --- the pictures ----------------------------------------------------------------------------


def test_the_frame_shows_the_boxes_where_they_are(info, frame) -> None:
    _, layout = framing.checked(info, "stack", "100,60,80,45", GAMEPLAY, 50)
    drawn = framing.annotated(frame, info, layout)
    assert drawn.shape == frame.shape and not np.shares_memory(drawn, frame)
    # the facecam box's right edge (x = 179) is drawn red on green gameplay, below its label
    assert np.abs(drawn[95, 178].astype(int) - framing.FACECAM_COLOUR).max() < 10
    assert np.abs(frame[95, 178].astype(int) - GREEN).max() < 40  # the frame itself is green
    # crop: what the phone leaves out is darkened, the slice is not
    _, crop = framing.checked(info, "crop", None, None, 25)
    shaded = framing.annotated(frame, info, crop)
    assert shaded[90, 300].mean() < frame[90, 300].mean() / 2
    assert np.array_equal(shaded[90, 60], frame[90, 60])


def test_the_phone_picture_is_the_layout(info, frame) -> None:
    """The red facecam corner on top, the green gameplay below, as the clip will be."""
    _, layout = framing.checked(info, "stack", FACECAM, GAMEPLAY, 50)
    phone = framing.phone(frame, info, layout)
    assert phone.shape == (framing.PHONE_HEIGHT, framing.PHONE_WIDTH, 3)
    assert np.abs(phone[30, 108].astype(int) - RED).max() < 40
    assert np.abs(phone[250, 108].astype(int) - GREEN).max() < 40
    _, fit = framing.checked(info, "fit", None, None, 50)
    whole = framing.phone(frame, info, fit)
    middle = framing.PHONE_HEIGHT // 2
    assert np.abs(whole[middle, 10].astype(int) - GREEN).max() < 60  # the picture, mid-height


# --- cut for the results on screen -------------------------------------------------------------


@pytest.fixture(scope="module")
def analysis(info, checkpoint: Path, tiny_separator):
    repo, name = tiny_separator
    settings = AnalysisSettings(
        weights=str(checkpoint),
        separator=name,
        separator_repo=str(repo),
        window_sec=2.0,
        stride_sec=1.0,
        device="cpu",
        use_cache=False,
    )
    return Engine.create(settings).analyze(info.path)


def test_vertical_clips_for_the_results_on_screen(analysis, info, tmp_path: Path) -> None:
    job = Job("a" * 32, tmp_path / "job", "b" * 32, name="stream.mp4", analysis=analysis)
    job.folder.mkdir()
    picks = controls.picks(1, "percentile", 50, None, 0, 0.5, 0.5, "fast")
    library.render(job, picks, preview=True)
    assert job.exact and job.result.vertical_paths == []
    landscape = job.result.clip_paths[0].stat().st_ino  # a link to the job's store of cuts
    span = (job.result.highlights[0].start_sec, job.result.highlights[0].end_sec)

    job.framing, _ = framing.checked(info, "stack", FACECAM, GAMEPLAY, 50)
    library.render(job, picks, preview=True)  # what the page shows at once: landscape copies
    assert not job.exact and job.result.vertical_paths == []
    library.render(job, picks, preview=False)  # then the vertical cuts
    assert job.exact
    [clip] = job.result.vertical_paths
    check_clip(clip, span[1] - span[0])
    picture = middle_frame(clip, (span[1] - span[0]) / 2)
    assert is_colour(picture, 540, 320, RED) and is_colour(picture, 540, 1300, GREEN)
    assert job.result.clip_paths[0].stat().st_ino == landscape  # not cut again
    names = [path.name for path in job.files]
    assert names[-1] == "stream-vertical-highlight_01.mp4"
    with zipfile.ZipFile(job.files[0]) as archive:
        assert "stream-highlights/stream-vertical-highlight_01.mp4" in archive.namelist()

    job.framing = None  # back to landscape only: nothing vertical offered any more
    library.render(job, picks, preview=True)
    assert job.exact and job.result.vertical_paths == []
    assert not any("vertical" in path.name for path in job.files)


def test_new_framings_do_not_grow_the_store(analysis, info, tmp_path: Path) -> None:
    """A stranger moving the facecam again and again: vertical cuts no kept selection links to
    are removed like landscape ones."""
    job = Job("a" * 32, tmp_path / "job", "b" * 32, name="stream.mp4", analysis=analysis)
    job.folder.mkdir()
    picks = controls.picks(1, "percentile", 50, None, 0, 0.5, 0.5, "fast")
    for x in (0, 20, 40, 60):  # four facecam places, each cut once
        job.framing, _ = framing.checked(info, "stack", f"{x},0,80,45", GAMEPLAY, 50)
        library.render(job, picks, preview=False)
    vertical_cuts = list((job.folder / "store").glob("vertical_*"))
    assert len(vertical_cuts) <= library.KEEP_RENDERS  # the selections kept, one clip each
