"""vertical.py and faces.py: real 9:16 cuts of generated media, checked by decoding them again."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import ffmpeg_binary, make_media
from hypothesis import given, note
from hypothesis import strategies as st

from highlightsense import clips, faces, media, tools, vertical
from highlightsense.errors import MediaError, SettingsError
from highlightsense.vertical import Layout, Region

RED, GREEN, BLUE = (255, 0, 0), (0, 200, 0), (0, 0, 255)  # RGB of the generated areas
COLOUR_TOLERANCE = 40  # per channel, after two lossy encodes and scaling
SPAN = (1.0, 3.0)  # s cut in every test clip
RATE = 10  # frames/s of the generated sources
SOURCE_SECONDS = 5


def make_layout_source(path: Path, width: int, height: int, *, codec: tuple[str, ...] = ()) -> Path:
    """Green gameplay with a red facecam in the top-left quarter and a blue right tenth.

    Audio: a 440 Hz tone with a loud noise burst at 2.0-2.5 s, so alignment shows.
    """
    cam_w, cam_h, band = width // 4, height // 4, width // 10
    picture = (
        # 4:4:4 first: the colour source's default 4:2:0 would round odd sizes down.
        f"color=c=0x00C800:s={width}x{height}:r={RATE}:d={SOURCE_SECONDS},format=yuv444p,"
        f"drawbox=x=0:y=0:w={cam_w}:h={cam_h}:color=0xFF0000:t=fill,"
        f"drawbox=x={width - band}:y=0:w={band}:h={height}:color=0x0000FF:t=fill"
    )
    sound = (
        f"sine=frequency=440:duration={SOURCE_SECONDS}:sample_rate=44100,volume=0.1[s];"
        f"anoisesrc=color=white:amplitude=0.8:duration={SOURCE_SECONDS}:sample_rate=44100,"
        "volume='between(t,2,2.5)':eval=frame[b];[s][b]amix=inputs=2:normalize=0[a]"
    )
    cmd = [
        ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", picture, "-filter_complex", sound, "-map", "0:v", "-map", "[a]",
        *(codec or ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p")),
        "-c:a", "aac", "-b:a", "128k", str(path),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=120)
    return path


def ffprobe(path: Path) -> dict:
    cmd = [
        tools.ffprobe_path(), "-v", "error", "-show_entries",
        "format=duration:stream=codec_type,codec_name,width,height,pix_fmt,duration",
        "-of", "json", str(path),
    ]  # fmt: skip
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, timeout=30).stdout)


def middle_frame(path: Path, at: float = 1.0) -> np.ndarray:
    """The clip's frame ``at`` seconds in, full size, RGB (1920, 1080, 3)."""
    cmd = [
        tools.ffmpeg_path(), "-v", "error", "-ss", str(at), "-i", str(path), "-frames:v", "1",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1",
    ]  # fmt: skip
    raw = subprocess.run(cmd, check=True, capture_output=True, timeout=30).stdout
    return np.frombuffer(raw, dtype=np.uint8).reshape(vertical.HEIGHT, vertical.WIDTH, 3)


def colour_at(frame: np.ndarray, x: int, y: int) -> np.ndarray:
    """Mean RGB of the 9x9 pixels around (x, y)."""
    return frame[y - 4 : y + 5, x - 4 : x + 5].reshape(-1, 3).mean(axis=0)


def is_colour(frame: np.ndarray, x: int, y: int, rgb: tuple[int, int, int]) -> bool:
    return bool(np.all(np.abs(colour_at(frame, x, y) - rgb) < COLOUR_TOLERANCE))


def check_clip(path: Path, seconds: float = SPAN[1] - SPAN[0]) -> None:
    """1080x1920 H.264 + AAC, faststart, ``seconds`` long (SPAN's length)."""
    report = ffprobe(path)
    streams = {s["codec_type"]: s for s in report["streams"]}
    assert (streams["video"]["width"], streams["video"]["height"]) == (1080, 1920)
    assert streams["video"]["codec_name"] == "h264" and streams["video"]["pix_fmt"] == "yuv420p"
    assert streams["audio"]["codec_name"] == "aac"
    assert float(report["format"]["duration"]) == pytest.approx(seconds, abs=0.1)
    data = path.read_bytes()
    assert 0 < data.find(b"moov") < data.find(b"mdat")


@pytest.fixture(scope="module")
def landscape(media_dir: Path) -> media.MediaInfo:
    return media.probe(make_layout_source(media_dir / "layout 320x180.mp4", 320, 180))


@pytest.fixture(scope="module")
def stacked(landscape: media.MediaInfo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    layout = Layout("stack", facecam=Region(0, 0, 80, 45), gameplay=Region(80, 45, 160, 135))
    [path] = vertical.cut_vertical(landscape, [SPAN], tmp_path_factory.mktemp("stack"), layout)
    return path


# --- the layouts -------------------------------------------------------------------------------


def test_stack_puts_facecam_on_top_and_gameplay_below(stacked: Path) -> None:
    check_clip(stacked)
    assert stacked.name == "highlight_01.mp4"
    frame = middle_frame(stacked)
    top = vertical.STACK_TOP
    for x in (40, 540, 1040):
        assert is_colour(frame, x, 40, RED) and is_colour(frame, x, top - 20, RED)
        assert is_colour(frame, x, top + 20, GREEN) and is_colour(frame, x, 1880, GREEN)


def test_stack_audio_is_the_originals(
    stacked: Path, landscape: media.MediaInfo, tmp_path: Path
) -> None:
    [flat] = clips.cut_clips(landscape, [SPAN], tmp_path)
    ours = media.read_audio_all(media.probe(stacked), channels=1)[0]
    theirs = media.read_audio_all(media.probe(flat), channels=1)[0]
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    # The burst starts about 2.0 s into the source: SPAN[0] s earlier in the clip.
    source = media.read_audio_all(landscape, channels=1)[0]
    onset = np.flatnonzero(np.abs(source) > 0.4)[0] / 44100
    assert onset == pytest.approx(2.0, abs=0.05)
    loud = np.flatnonzero(np.abs(ours) > 0.4)
    assert loud[0] / 44100 == pytest.approx(onset - SPAN[0], abs=0.003)


def test_stack_without_gameplay_region_shows_the_whole_frame(
    landscape: media.MediaInfo, tmp_path: Path
) -> None:
    layout = Layout("stack", facecam=Region(0, 0, 80, 45))
    [path] = vertical.cut_vertical(landscape, [SPAN], tmp_path, layout)
    frame = middle_frame(path)
    # The whole 16:9 frame fills a 1080x1280 part: its middle is green, the red corner and the
    # blue band are cropped off the sides (scaled to cover, never squeezed).
    assert is_colour(frame, 540, vertical.STACK_TOP + 640, GREEN)
    assert is_colour(frame, 540, vertical.STACK_TOP + 20, GREEN)


def test_crop_is_centred_on_the_chosen_x(landscape: media.MediaInfo, tmp_path: Path) -> None:
    # 9:16 of a 180-pixel-high frame is 101 pixels wide; centred at x=300 it is pushed left to
    # end at the frame's edge: its right 32 pixels are the blue band.
    layout = Layout("crop", center_x=300)
    [path] = vertical.cut_vertical(landscape, [SPAN], tmp_path, layout)
    check_clip(path)
    frame = middle_frame(path)
    assert is_colour(frame, 1070, 960, BLUE) and is_colour(frame, 100, 960, GREEN)
    assert vertical.crop_box(320, 180, 300) == Region(219, 0, 101, 180)


def test_fit_shows_the_whole_frame_over_a_blur(landscape: media.MediaInfo, tmp_path: Path) -> None:
    [path] = vertical.cut_vertical(landscape, [SPAN], tmp_path, Layout("fit"))
    check_clip(path)
    frame = middle_frame(path)
    # The frame scaled to 1080x608 sits in the middle: rows 656-1263.
    assert is_colour(frame, 100, 700, RED)  # its top-left quarter
    assert is_colour(frame, 1060, 1200, BLUE)  # its right tenth
    assert is_colour(frame, 540, 1100, GREEN)
    assert frame[:600].mean() > 20  # the blurred copy fills the rest, not black bars


def test_odd_sized_input(media_dir: Path, tmp_path: Path) -> None:
    # x264 encodes odd sizes in 4:4:4 only.
    codec = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv444p")
    info = media.probe(make_layout_source(media_dir / "odd.mp4", 321, 181, codec=codec))
    assert (info.width, info.height) == (321, 181)
    layout = Layout("stack", facecam=Region(1, 1, 79, 45), gameplay=Region(81, 47, 159, 133))
    [path] = vertical.cut_vertical(info, [SPAN], tmp_path, layout)
    check_clip(path)
    frame = middle_frame(path)
    assert is_colour(frame, 540, 300, RED) and is_colour(frame, 540, 1300, GREEN)
    [path] = vertical.cut_vertical(info, [SPAN], tmp_path / "fit", Layout("fit"))
    check_clip(path)


def test_portrait_input(media_dir: Path, tmp_path: Path) -> None:
    info = media.probe(make_layout_source(media_dir / "portrait.mp4", 180, 320))
    [path] = vertical.cut_vertical(info, [SPAN], tmp_path, Layout("crop"))
    check_clip(path)
    frame = middle_frame(path)
    # Already 9:16: the crop is the whole frame, so every area lands where it was, scaled x6.
    assert vertical.crop_box(180, 320, None) == Region(0, 0, 180, 320)
    assert is_colour(frame, 100, 100, RED) and is_colour(frame, 1070, 1500, BLUE)
    assert is_colour(frame, 540, 1500, GREEN)


def test_audio_only_is_refused_in_one_sentence(media_dir: Path, tmp_path: Path) -> None:
    info = media.probe(make_media(media_dir / "talk.m4a", 4, video=False))
    for call in (
        lambda: vertical.cut_vertical(info, [SPAN], tmp_path / "out", Layout("fit")),
        lambda: faces.frame_at(info, 1.0),
        lambda: faces.suggest_facecam(info),
    ):
        with pytest.raises(MediaError, match="talk.m4a` has no picture") as caught:
            call()
        assert "\n" not in str(caught.value) and str(caught.value).endswith(".")
    assert not (tmp_path / "out").exists()


def test_bad_layouts_are_refused_before_cutting(landscape: media.MediaInfo, tmp_path: Path) -> None:
    for layout, words in [
        (Layout("stack"), "needs a facecam region"),
        (Layout("stack", facecam=Region(300, 0, 80, 45)), "reaches past"),
        (Layout("stack", facecam=Region(0, 0, 80, 45), gameplay=Region(0, 0, 8, 8)), "smaller"),
        (Layout("diagonal"), "unknown vertical layout"),
        (Layout("crop", center_x=999), "outside"),
    ]:
        with pytest.raises(SettingsError, match=words):
            vertical.cut_vertical(landscape, [SPAN], tmp_path, layout)
    assert list(tmp_path.iterdir()) == []


def test_the_graph_reads_only_the_real_picture(landscape: media.MediaInfo) -> None:
    for layout in (Layout("stack", facecam=Region(0, 0, 80, 45)), Layout("crop"), Layout("fit")):
        graph, label = vertical.filter_graph(landscape, layout)
        assert "[0:V:0]" in graph and "[0:v:0]" not in graph
        assert graph.endswith(label) and "format=pix_fmts=yuv420p" in graph
    command = vertical.vertical_command(landscape, SPAN, Path("/x/o.mp4"), layout=Layout("fit"))
    flat = clips.cut_command(landscape, SPAN, Path("/x/o.mp4"))
    # The same input safety flags and seeking as the landscape clips, from the same place.
    assert command[: command.index("-t") + 2] == flat[: flat.index("-t") + 2]
    with pytest.raises(ValueError):
        vertical.vertical_command(landscape, SPAN, Path("/x/o.mp4"), layout=Layout(), copy=True)


# --- regions -----------------------------------------------------------------------------------


def test_regions_in_pixels_and_fractions() -> None:
    assert vertical.parse_region("10, 20, 300, 200", 1920, 1080) == Region(10, 20, 300, 200)
    assert vertical.parse_region("0,0,0.25,0.25", 1920, 1080) == Region(0, 0, 480, 270)
    assert vertical.parse_region("0.75,0,0.25,1", 1920, 1080) == Region(1440, 0, 480, 1080)
    assert vertical.parse_region("0.333,0,0.667,1", 1001, 1080) == Region(333, 0, 668, 1080)
    assert vertical.parse_center("0.5", 1920) == 960 and vertical.parse_center("700", 1920) == 700


@pytest.mark.parametrize(
    "text",
    ["", "a,b,c,d", "1,2,3", "1,2,3,4,5", "-1,0,100,100", "0,0,2000,100", "0,0,8,8",
     "nan,0,100,100", "inf,0,100,100", "0.5,0.5,0.6,0.2", "1e400,0,1,1"],
)  # fmt: skip
def test_nonsense_regions_are_refused(text: str) -> None:
    with pytest.raises(SettingsError) as caught:
        vertical.parse_region(text, 1920, 1080, what="facecam region")
    message = str(caught.value)
    assert message.startswith("the facecam region") and message.endswith(".")
    assert "\n" not in message


reached = {"regions": 0, "fractions": 0, "crops": 0}


@given(st.integers(16, 4000), st.integers(16, 4000), st.data())
def test_rectangles_inside_the_frame_are_taken_as_given(
    width: int, height: int, data: st.DataObject
) -> None:
    least = vertical.MIN_REGION
    x, y = data.draw(st.integers(0, width - least)), data.draw(st.integers(0, height - least))
    w, h = data.draw(st.integers(least, width - x)), data.draw(st.integers(least, height - y))
    note(f"{x},{y},{w},{h} in {width}x{height}")
    assert vertical.parse_region(f"{x},{y},{w},{h}", width, height) == Region(x, y, w, h)
    reached["regions"] += 1
    for past in (f"{x},{y},{width - x + 1},{h}", f"{x},{y},{w},{height - y + 1}"):
        with pytest.raises(SettingsError, match="reaches past"):
            vertical.parse_region(past, width, height)


@given(st.integers(64, 4000), st.integers(64, 4000), st.data())
def test_fractions_of_the_frame_lie_inside_it(width: int, height: int, data: st.DataObject) -> None:
    x, y = data.draw(st.floats(0, 0.75)), data.draw(st.floats(0, 0.75))
    w, h = data.draw(st.floats(0.25, 1 - x)), data.draw(st.floats(0.25, 1 - y))
    text = f"{x:.6f},{y:.6f},{w:.6f},{h:.6f}"
    region = vertical.parse_region(text, width, height)
    note(f"{text} in {width}x{height} -> {region}")
    reached["fractions"] += 1
    assert region.x >= 0 and region.x + region.w <= width
    assert region.y >= 0 and region.y + region.h <= height
    assert abs(region.x - x * width) <= 1 and abs(region.w - w * width) <= 2
    assert min(region.w, region.h) >= vertical.MIN_REGION


@given(st.integers(2, 5000), st.integers(2, 5000), st.none() | st.floats(0, 5000))
def test_crop_boxes_are_9_16_inside_the_frame(
    width: int, height: int, center: float | None
) -> None:
    box = vertical.crop_box(width, height, center)
    reached["crops"] += 1
    assert box.x >= 0 and box.x + box.w <= width and box.y >= 0 and box.y + box.h <= height
    assert box.w == width or box.h == height  # as big as the frame allows
    assert abs(box.w * 16 - box.h * 9) <= 16  # 9:16 within a pixel
    if center is not None and box.w / 2 <= center <= width - box.w / 2:
        assert abs(box.x + box.w / 2 - center) <= 1


def test_the_region_properties_ran() -> None:
    assert min(reached.values()) >= 100, reached  # every example of each reached its checks


# --- frames and faces --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def facecam_source(media_dir: Path) -> tuple[media.MediaInfo, tuple[int, int, int, int]]:
    """A 640x360 moving test picture with a photo of a face (the astronaut that scikit-image
    ships) in its top-right corner, and where that photo lies (x, y, w, h)."""
    import cv2
    from skimage import data

    photo = media_dir / "astronaut.png"
    small = cv2.resize(data.astronaut(), (160, 160), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(photo), cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
    path = media_dir / "facecam.mp4"
    cmd = [
        ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate={RATE}:duration=6",
        "-loop", "1", "-i", str(photo),
        "-f", "lavfi", "-i", "sine=duration=6",
        "-filter_complex", "[0:v][1:v]overlay=x=470:y=10:shortest=1[v]",
        "-map", "[v]", "-map", "2:a", "-c:v", "libx264", "-preset", "ultrafast",
        "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=120)
    return media.probe(path), (470, 10, 160, 160)


def test_frame_at_is_a_bounded_rgb_frame(landscape: media.MediaInfo) -> None:
    frame = faces.frame_at(landscape, 2.0)
    assert frame.shape == (180, 320, 3) and frame.dtype == np.uint8
    assert np.all(np.abs(frame[90, 160].astype(int) - GREEN) < COLOUR_TOLERANCE)
    assert np.all(np.abs(frame[10, 10].astype(int) - RED) < COLOUR_TOLERANCE)
    small = faces.frame_at(landscape, 99.0, side=64)  # past the end: the last second
    assert small.shape == (36, 64, 3)


def test_suggested_facecam_surrounds_the_face(
    facecam_source: tuple[media.MediaInfo, tuple[int, int, int, int]],
) -> None:
    info, (px, py, pw, ph) = facecam_source
    suggestion = faces.suggest_facecam(info, frames=3)
    region = suggestion.region
    assert region is not None, suggestion.how
    assert "3 of 3 frames" in suggestion.how and region.text() in suggestion.how
    # The astronaut's face is in the upper middle of the photo; the region holds it all,
    # lies inside the frame and has the stack layout's top-part shape.
    face_x, face_y = px + pw * 0.45, py + ph * 0.3
    assert region.x <= face_x <= region.x + region.w and region.y <= face_y <= region.y + region.h
    assert region.x + region.w <= info.width and region.y + region.h <= info.height
    assert region.x > info.width / 2  # the right half, where the photo is
    assert region.w / region.h == pytest.approx(vertical.WIDTH / vertical.STACK_TOP, rel=0.05)


def test_no_face_no_suggestion(landscape: media.MediaInfo) -> None:
    suggestion = faces.suggest_facecam(landscape, frames=2)
    assert suggestion.region is None
    assert "no face was found in 2 frames" in suggestion.how
