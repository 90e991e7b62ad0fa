"""What render writes beyond clips and tables: 9:16 clips and editor timelines, wired from the
selection (the library pieces have their own tests in test_vertical and test_timelines)."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import opentimelineio as otio
import pytest
from conftest import make_media

from highlightsense import media, pipeline, tools, vertical
from highlightsense.errors import SettingsError
from highlightsense.results import Analysis
from highlightsense.settings import AnalysisSettings, Selection


@pytest.fixture(scope="module")
def analysis(tmp_path_factory) -> Analysis:
    """A real 12 s video with three hand-scored windows (the best at 6-9 s)."""
    path = make_media(tmp_path_factory.mktemp("out") / "vod.mp4", 12)
    info = media.probe(path)
    windows = np.array([[0.0, 3.0, 0.2], [6.0, 9.0, 0.9], [3.0, 6.0, 0.5]])
    attention = np.zeros((3, 10))
    attention[1, 4] = 1.0  # the best window listened hardest at its 5th step
    loudness = np.full((2, 520), -40.0, dtype=np.float32)
    return Analysis(
        source=path, info=info, windows=windows, attention=attention, loudness=loudness,
        model_identity="m", producer="p", settings=AnalysisSettings(), step_frames=16,
    )  # fmt: skip


def _size(path) -> tuple[int, int]:
    out = subprocess.run(
        [tools.ffprobe_path(), "-v", "error", "-select_streams", "v:0", "-show_entries",
         "stream=width,height", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    width, height = out.strip().split(",")
    return int(width), int(height)


def test_render_writes_vertical_clips_and_timelines(analysis, tmp_path):
    chosen = Selection(
        percentile=0, nms_sec=0, top_n=2, clips=False, vertical="crop", center_x="0.25",
        timelines=("otio", "chapters"), timeline_order="time",
    )  # fmt: skip
    result = pipeline.render(analysis, chosen, tmp_path)
    assert [p.name for p in result.vertical_paths] == ["highlight_01.mp4", "highlight_02.mp4"]
    assert all(_size(p) == (1080, 1920) for p in result.vertical_paths)
    assert result.vertical_note == "9:16 crop centred on x = 40 px."  # a quarter of 160 px
    timeline = otio.adapters.read_from_file(str(tmp_path / "timeline.otio"))
    starts = [c.source_range.start_time.to_seconds() for c in timeline.find_clips()]
    assert starts[:2] == pytest.approx([3.0, 6.0], abs=0.05)  # time order, not rank order
    summary = json.loads((tmp_path / "highlights.json").read_text())
    assert summary["vertical"] == result.vertical_note
    best = summary["highlights"][0]
    assert best["vertical_clip_path"] == "clips_vertical/highlight_01.mp4"
    # step 4 of 16 frames: 6 s + 4.5 * 16 / 43.07 s ≈ 7.7 s
    assert best["why"].startswith("The model listened hardest at 00:00:07")
    chapters = (tmp_path / "chapters.txt").read_text().splitlines()
    assert chapters[0].startswith("0:00")


def test_stack_without_a_face_is_framed_whole(analysis):
    class NoFace:
        region, how = None, "no face was found in 6 frames."

    layout, note = vertical.layout_for(analysis.info, "stack", suggest=lambda info: NoFace())
    assert layout.kind == "fit"
    assert note == "No face was found in 6 frames. Framed as fit (the whole frame) instead."
    layout, note = vertical.layout_for(analysis.info, "stack", facecam="0,0,0.5,0.5")
    assert (layout.kind, layout.facecam.text()) == ("stack", "0,0,80,45")
    assert note.startswith("Facecam 0,0,80,45 on top")


@pytest.mark.parametrize(
    "values",
    [{"timelines": ("otio", "avid")}, {"vertical": "square"}, {"timeline_order": "score"}],
)
def test_selection_refuses_unknown_outputs(values):
    with pytest.raises(SettingsError):
        Selection(**values)


def test_detect_flags_map_onto_the_two_kinds_of_settings_by_name():
    from highlightsense import cli

    args = cli.build_parser().parse_args(
        ["detect", "vod.mp4", "--window", "20", "--nms", "4", "--no-clips", "--timeline", "all",
         "--vertical", "crop", "--center-x", "0.3", "--no-cache", "--device", "cpu"]
    )  # fmt: skip
    assert AnalysisSettings.pick(vars(args)) == AnalysisSettings(
        window_sec=20, use_cache=False, device="cpu"
    )
    assert Selection.pick(vars(args)) == Selection(
        nms_sec=4, clips=False, vertical="crop", center_x="0.3",
        timelines=("otio", "fcp7xml", "fcpxml", "edl", "chapters"),
    )  # fmt: skip
    # flags not given take the dataclasses' defaults: nothing else holds one
    bare = cli.build_parser().parse_args(["detect", "vod.mp4"])
    assert AnalysisSettings.pick(vars(bare)) == AnalysisSettings()
    assert Selection.pick(vars(bare)) == Selection()
