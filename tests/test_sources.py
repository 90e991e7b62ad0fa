"""sources.py: link validation, yt-dlp info checks and the download flow, all offline."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path
from typing import Any

import pytest
import yt_dlp
from conftest import make_media
from hypothesis import given, settings
from hypothesis import strategies as st

from highlightsense import sources
from highlightsense.errors import Cancelled, MediaError, SourceError

VIDEO_ID = "dQw4w9WgXcQ"
WATCH = f"https://www.youtube.com/watch?v={VIDEO_ID}"
VOD = "https://www.twitch.tv/videos/2212345678"
KICK_ID = "5c2a3d1e-0b4a-4c8e-9f00-1234567890ab"
KICK = f"https://kick.com/somestreamer/videos/{KICK_ID}"


@pytest.mark.parametrize(
    ("url", "canonical"),
    [
        (VOD, VOD),
        ("https://twitch.tv/videos/2212345678?t=1h2m3s", VOD),
        ("https://m.twitch.tv/videos/2212345678/", VOD),
        ("www.twitch.tv/videos/2212345678", VOD),
        ("HTTPS://WWW.TWITCH.TV/videos/2212345678", VOD),
        (f"  {WATCH}\n", WATCH),
        (f"https://youtube.com/watch?v={VIDEO_ID}&t=42s&list=PL0123456789", WATCH),
        (f"https://m.youtube.com/watch?v={VIDEO_ID}", WATCH),
        (f"https://www.youtube.com./watch?v={VIDEO_ID}#comments", WATCH),
        (f"https://youtu.be/{VIDEO_ID}?t=5", WATCH),
        (f"youtu.be/{VIDEO_ID}", WATCH),
        (KICK, KICK),
        (f"https://www.kick.com/SomeStreamer/videos/{KICK_ID.upper()}/?t=90", KICK),
        (f"kick.com/somestreamer/videos/{KICK_ID}#chat", KICK),
        (f"https://kick.com./somestreamer/videos/{KICK_ID}", KICK),
    ],
)
def test_accepted_links(url: str, canonical: str) -> None:
    assert sources.is_url(url)
    assert sources.check_url(url) == canonical


@pytest.mark.parametrize(
    "url",
    [
        "",
        "   ",
        "not a link",
        "http://www.twitch.tv/videos/2212345678",
        "ftp://www.twitch.tv/videos/2212345678",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "data:text/plain,hello",
        "https://evil.example/videos/2212345678",
        "https://www.twitch.tv.evil.example/videos/2212345678",
        "https://evil.example/?https://www.twitch.tv/videos/2212345678",
        "https://user:secret@www.twitch.tv/videos/2212345678",
        "https://www.twitch.tv@evil.example/videos/2212345678",
        "https://www.twitch.tv:8443/videos/2212345678",
        "https://www.twitch.tv:443/videos/2212345678",
        "https://www.twitch.tv:http/videos/2212345678",
        "https://127.0.0.1/videos/2212345678",
        "https://[::1]/watch?v=dQw4w9WgXcQ",
        "https://2130706433/videos/2212345678",
        "https://www.twitch.tv/somestreamer",
        "https://www.twitch.tv/somestreamer/clip/FunnyClipSlug",
        "https://www.twitch.tv/videos/",
        "https://www.twitch.tv/videos/v2212345678",
        "https://www.twitch.tv/videos/２２１２",
        "https://www.youtube.com/@somestreamer",
        "https://www.youtube.com/channel/UC0123456789abcdefghijkl",
        f"https://www.youtube.com/live/{VIDEO_ID}",
        "https://www.youtube.com/playlist?list=PL0123456789",
        f"https://www.youtube.com/shorts/{VIDEO_ID}",
        "https://www.youtube.com/watch?v=tooshort",
        f"https://www.youtube.com/watch?v={VIDEO_ID}&v=aaaaaaaaaaa",
        "https://www.youtube.com/watch",
        f"https://www.youtube.com/embed/{VIDEO_ID}",
        f"https://www.youtu.be/{VIDEO_ID}",
        "https://youtu.be/",
        f"https://youtu.be/{VIDEO_ID}/extra",
        f"https://www.you\ntube.com/watch?v={VIDEO_ID}",
        f"https://www.youtubé.com/watch?v={VIDEO_ID}",
        VOD + "?" + "x" * sources.MAX_URL_LENGTH,
        "https://kick.com/somestreamer",
        "https://kick.com/somestreamer/videos",
        "https://kick.com/somestreamer/clips/clip_01HXYZ",
        f"https://kick.com/videos/{KICK_ID}",
        f"https://kick.com/somestreamer/videos/{KICK_ID[:-1]}",
        f"https://kick.com/somestreamer/videos/{KICK_ID}/extra",
        f"https://kick.com/some.streamer/videos/{KICK_ID}",
        f"https://kick.com/{'a' * 65}/videos/{KICK_ID}",
        f"http://kick.com/somestreamer/videos/{KICK_ID}",
        f"https://kick.com:443/somestreamer/videos/{KICK_ID}",
        f"https://user@kick.com/somestreamer/videos/{KICK_ID}",
        f"https://kick.com.evil.example/somestreamer/videos/{KICK_ID}",
        f"https://clips.kick.com/somestreamer/videos/{KICK_ID}",
        f"https://evil.example/somestreamer/videos/{KICK_ID}",
    ],
)
def test_refused_links(url: str) -> None:
    with pytest.raises(SourceError) as caught:
        sources.check_url(url)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 300
    assert "https://www.twitch.tv/videos/<number>" in message and "https://youtu.be/<id>" in message
    assert "https://kick.com/<channel>/videos/<id>" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://anything.example/x", True),
        ("file:///etc/passwd", True),
        ("www.youtube.com/watch?v=x", True),
        ("kick.com/somestreamer/videos/x", True),
        ("vod.mp4", False),
        ("/home/me/vod.mp4", False),
        ("C:\\vods\\stream.mp4", False),
        ("my vod: part 2.mp4", False),
        ("youtube.com.mp4", False),
    ],
)
def test_is_url(text: str, expected: bool) -> None:
    assert sources.is_url(text) is expected


def check_or_refuse(text: str) -> str | None:
    try:
        return sources.check_url(text)
    except SourceError as err:
        assert "\n" not in str(err)
        return None


@given(st.text(max_size=200))
def test_random_text_is_refused_or_canonical(text: str) -> None:
    canonical = check_or_refuse(text)
    assert canonical is None or sources.check_url(canonical) == canonical


PIECE_CHOICES = (
    st.sampled_from(["https://", "http://", "", "HTTPS://", "https://u:p@", "//"]),
    st.sampled_from(
        ["www.twitch.tv", "twitch.tv", "youtu.be", "www.youtube.com", "kick.com", "evil.example"]
    ),
    st.sampled_from(["", ":443", ":0", ":99999", ".", "@evil.example"]),
    st.sampled_from(["/videos/", "/watch", "/", "/live/", "/videos/1/../"]),
    st.text(alphabet="0123456789abcXYZ_-?=&#/%.", max_size=20),
)
VALID_PIECES = {  # a link each site accepts, piece by piece
    "twitch": ("https://", "www.twitch.tv", "", "/videos/", "2212345678"),
    "youtube": ("https://", "www.youtube.com", "", "/watch", "?v=dQw4w9WgXcQ"),
    "youtu.be": ("", "youtu.be", "", "/", "dQw4w9WgXcQ"),
    "kick": ("https://", "kick.com", "", "/somestreamer/videos/", KICK_ID),
}


@st.composite
def link_pieces(draw: st.DrawFn) -> tuple[str, ...]:
    """Scheme, host, port, path, rest: each piece is a valid link's (3 in 4) or a random one."""
    valid = VALID_PIECES[draw(st.sampled_from(sorted(VALID_PIECES)))]
    return tuple(
        good if draw(st.integers(0, 3)) else draw(choices)
        for good, choices in zip(valid, PIECE_CHOICES, strict=True)
    )


TWITCH_HOSTS = ["www.twitch.tv", "twitch.tv", "m.twitch.tv", "WWW.TWITCH.TV"]
YOUTUBE_HOSTS = ["www.youtube.com", "youtube.com", "m.youtube.com", "www.youtube.com."]


@st.composite
def accepted_links(draw: st.DrawFn) -> tuple[str, str]:
    """(link as a person pastes it, its canonical form): Twitch VODs and YouTube videos with the
    variations people paste (scheme or none, host spellings, tracking queries, fragments)."""
    scheme = draw(st.sampled_from(["https://", "HTTPS://", ""]))
    tail = draw(st.sampled_from(["", "?t=1h2m3s", "#comments", "?t=5&list=PL0123456789"]))
    if draw(st.booleans()):
        video = str(draw(st.integers(1, 10**11)))
        host = draw(st.sampled_from(TWITCH_HOSTS))
        slash = draw(st.sampled_from(["", "/"]))
        return (
            f"{scheme}{host}/videos/{video}{slash}{tail}",
            f"https://www.twitch.tv/videos/{video}",
        )
    video = draw(st.text(alphabet="0123456789abcXYZ_-", min_size=11, max_size=11))
    canonical = f"https://www.youtube.com/watch?v={video}"
    if draw(st.booleans()):
        return f"{scheme}youtu.be/{video}{tail}", canonical
    host = draw(st.sampled_from(YOUTUBE_HOSTS))
    return f"{scheme}{host}/watch?v={video}{tail.replace('?', '&')}", canonical


def test_link_like_text_is_refused_or_canonical() -> None:
    """Links built from pieces: the accepting branch is reached for a stated share of them."""
    accepted = []

    @settings(max_examples=200, database=None)
    @given(link_pieces())
    def check(pieces: tuple[str, ...]) -> None:
        canonical = check_or_refuse("".join(pieces))
        if canonical is not None:
            assert canonical.startswith(
                ("https://www.twitch.tv/videos/", "https://www.youtube.com/", "https://kick.com/")
            )
            assert sources.check_url(canonical) == canonical
            accepted.append(canonical)

    check()
    assert len(accepted) >= 20, len(accepted)  # ≥ 10 % of the examples reach the assertions


def test_pasted_links_become_their_canonical_form() -> None:
    reached = []

    @settings(max_examples=200, database=None)
    @given(accepted_links())
    def check(case: tuple[str, str]) -> None:
        link, canonical = case
        assert sources.check_url(link) == canonical
        assert sources.check_url(canonical) == canonical
        reached.append(link)

    check()
    assert len(reached) >= 150, len(reached)  # every example reaches the assertion


# --- check_info --------------------------------------------------------------------------------

HOUR = 3600.0  # s


@pytest.mark.parametrize(
    "info",
    [
        {"duration": HOUR, "live_status": "was_live", "title": "Finished stream"},
        {"duration": 6 * HOUR, "is_live": False},
        {"duration": 90, "live_status": "not_live", "was_live": False},
    ],
)
def test_info_accepted(info: dict[str, Any]) -> None:
    sources.check_info(info, 6 * HOUR)


@pytest.mark.parametrize(
    ("info", "fragment"),
    [
        ({"_type": "playlist", "title": "Best of", "entries": []}, "playlist"),
        ({"duration": HOUR, "is_live": True, "title": "Still recording"}, "live"),
        ({"duration": HOUR, "live_status": "is_live"}, "live"),
        ({"live_status": "is_upcoming"}, "upcoming"),
        ({"duration": HOUR, "live_status": "post_live"}, "live"),
        ({"title": "No length"}, "how long"),
        ({"duration": None}, "how long"),
        ({"duration": 0}, "how long"),
        ({"duration": float("nan")}, "how long"),
        ({"duration": "3600"}, "how long"),
        (
            {"duration": 7 * HOUR + 12 * 60, "title": "Marathon"},
            "lasts 7 h 12 min, more than the 6 h",
        ),
    ],
)
def test_info_refused(info: dict[str, Any], fragment: str) -> None:
    with pytest.raises(SourceError, match=fragment) as caught:
        sources.check_info(info, 6 * HOUR)
    assert "\n" not in str(caught.value)


def test_info_refusal_names_the_video_safely() -> None:
    with pytest.raises(SourceError, match=r"^`Line\?break` is a live"):
        sources.check_info({"title": "Line\nbreak", "is_live": True})


# --- fetch -------------------------------------------------------------------------------------


def test_refused_link_never_reaches_the_network(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access")

    monkeypatch.setattr(sources.yt_dlp, "YoutubeDL", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    with pytest.raises(SourceError, match="not a supported link"):
        sources.fetch("https://evil.example/videos/1", tmp_path)


def test_yt_dlp_accepts_the_options_and_loads_only_three_extractors(tmp_path: Path) -> None:
    with yt_dlp.YoutubeDL(sources.ydl_params(tmp_path, 100, lambda status: None)) as ydl:
        assert set(ydl._ies) == {"TwitchVod", "KickVOD", "Youtube"}
        # each canonical link is one that exactly its own extractor (yt-dlp's own pattern) takes
        for link, extractor in ((VOD, "TwitchVod"), (KICK, "KickVOD"), (WATCH, "Youtube")):
            assert [key for key, ie in ydl._ies.items() if ie.suitable(link)] == [extractor]
        assert ydl.params["noplaylist"] and ydl.params["max_filesize"] == 100


class FakeYoutubeDL:
    """Stands in for yt_dlp.YoutubeDL: describes ``info`` and 'downloads' ``source``."""

    info: dict[str, Any] = {}
    source: Path | None = None
    statuses: list[dict[str, Any]] = []
    seen: list[FakeYoutubeDL] = []

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params
        self.downloaded = False
        self.seen.append(self)

    def __enter__(self) -> FakeYoutubeDL:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def extract_info(self, url: str, download: bool, process: bool) -> dict[str, Any]:
        assert not download and not process
        self.url = url
        if isinstance(self.info, Exception):
            raise self.info
        return dict(self.info)

    def process_ie_result(self, info: dict[str, Any], download: bool) -> dict[str, Any]:
        self.downloaded = True
        work = Path(self.params["paths"]["home"])
        target = work / f"Youtube-{VIDEO_ID}.mp4"
        (work / f"Youtube-{VIDEO_ID}.f137.mp4.part").write_bytes(b"partial")
        for status in self.statuses:
            for hook in self.params["progress_hooks"]:
                hook({"filename": str(target), **status})
        if self.source is not None:
            shutil.copy(self.source, target)
        return {**info, "requested_downloads": [{"filepath": str(target)}]}


@pytest.fixture(scope="module")
def download(media_dir: Path) -> Path:
    """What the fake download delivers: 6 s of video with sound."""
    return make_media(media_dir / "downloaded.mp4", 6)


@pytest.fixture
def fake_ydl(monkeypatch: pytest.MonkeyPatch, download: Path) -> type[FakeYoutubeDL]:
    class Fake(FakeYoutubeDL):
        info = {"id": VIDEO_ID, "title": "A stream", "duration": 6.0, "live_status": "was_live"}
        source = download
        statuses = [
            {"status": "downloading", "downloaded_bytes": 50, "total_bytes": 200},
            {"status": "downloading", "downloaded_bytes": 150, "total_bytes_estimate": 200},
            {"status": "finished", "downloaded_bytes": 200, "total_bytes": 200},
        ]
        seen: list[FakeYoutubeDL] = []

    monkeypatch.setattr(sources.yt_dlp, "YoutubeDL", Fake)
    return Fake


def test_fetch_downloads_probes_and_cleans_up(
    fake_ydl: type[FakeYoutubeDL], tmp_path: Path
) -> None:
    reports: list[tuple[float, str]] = []
    path = sources.fetch(
        f"https://youtu.be/{VIDEO_ID}", tmp_path, progress=lambda f, m: reports.append((f, m))
    )
    assert path == tmp_path / f"Youtube-{VIDEO_ID}.mp4" and path.is_file()
    assert list(tmp_path.iterdir()) == [path]  # no partial files, no work folder
    assert [f for f, _ in reports] == [0.25, 0.75, 1.0]
    assert reports[0][1] == f"downloading Youtube-{VIDEO_ID}.mp4"
    [ydl] = fake_ydl.seen
    assert ydl.url == WATCH
    params = ydl.params
    assert params["noplaylist"] and params["restrictfilenames"]
    assert params["allowed_extractors"] == ["twitch:vod", "kick:vod", "youtube"]
    assert params["max_filesize"] == sources.MAX_BYTES
    assert params["format"] == sources.VIDEO_FORMAT
    assert Path(params["ffmpeg_location"]).is_file()


def test_fetch_refuses_live_before_downloading(
    fake_ydl: type[FakeYoutubeDL], tmp_path: Path
) -> None:
    fake_ydl.info = {**fake_ydl.info, "live_status": "is_live"}
    with pytest.raises(SourceError, match="live"):
        sources.fetch(VOD, tmp_path)
    assert not fake_ydl.seen[0].downloaded
    assert list(tmp_path.iterdir()) == []


def test_fetch_refuses_too_long(fake_ydl: type[FakeYoutubeDL], tmp_path: Path) -> None:
    fake_ydl.info = {**fake_ydl.info, "duration": 3 * HOUR}
    with pytest.raises(SourceError, match="more than the 2 h limit"):
        sources.fetch(VOD, tmp_path, max_duration=2 * HOUR)
    assert not fake_ydl.seen[0].downloaded


def test_fetch_translates_yt_dlp_errors(fake_ydl: type[FakeYoutubeDL], tmp_path: Path) -> None:
    fake_ydl.info = yt_dlp.utils.DownloadError(
        "ERROR: [youtube] dQw4w9WgXcQ: Private video (caused by ExtractorError('...'))\nmore"
    )
    with pytest.raises(SourceError) as caught:
        sources.fetch(WATCH, tmp_path)
    assert str(caught.value) == (
        f"could not download {WATCH} ([youtube] {VIDEO_ID}: Private video); "
        "check the link is public and try again."
    )


def test_fetch_progress_raising_cancels(fake_ydl: type[FakeYoutubeDL], tmp_path: Path) -> None:
    def progress(fraction: float, message: str) -> None:
        raise Cancelled("stop")

    with pytest.raises(Cancelled):
        sources.fetch(WATCH, tmp_path, progress=progress)
    assert list(tmp_path.iterdir()) == []


def test_fetch_stops_downloads_over_the_size_cap(
    fake_ydl: type[FakeYoutubeDL], tmp_path: Path
) -> None:
    with pytest.raises(SourceError, match="larger than"):
        sources.fetch(WATCH, tmp_path, max_bytes=100)
    assert list(tmp_path.iterdir()) == []


def test_fetch_reports_a_skipped_download(fake_ydl: type[FakeYoutubeDL], tmp_path: Path) -> None:
    fake_ydl.source = None  # what yt-dlp's max_filesize does: skip the file, raise nothing
    with pytest.raises(SourceError, match="was not downloaded"):
        sources.fetch(WATCH, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_fetch_probes_what_it_downloaded(fake_ydl: type[FakeYoutubeDL], tmp_path: Path) -> None:
    fake_ydl.source = tmp_path / "page.html"
    fake_ydl.source.write_text("<html>Sign in to confirm you are not a bot</html>")
    out = tmp_path / "out"
    with pytest.raises(MediaError, match="a text file"):
        sources.fetch(WATCH, out)
    assert list(out.iterdir()) == []


def test_fetch_a_kick_vod_as_a_twitch_one(fake_ydl: type[FakeYoutubeDL], tmp_path: Path) -> None:
    """A Kick link takes the Twitch path: checked, described, limited, downloaded, probed."""
    path = sources.fetch(f"https://www.kick.com/SomeStreamer/videos/{KICK_ID}?t=3", tmp_path)
    assert path.is_file() and list(tmp_path.iterdir()) == [path]
    [ydl] = fake_ydl.seen
    assert ydl.url == KICK and ydl.downloaded
    assert "kick:vod" in ydl.params["allowed_extractors"]
    assert ydl.params["max_filesize"] == sources.MAX_BYTES


@pytest.mark.parametrize(
    ("info", "fragment"),
    [
        ({"duration": 3 * HOUR, "title": "Kick marathon"}, "more than the 2 h limit"),
        ({"duration": HOUR, "is_live": True, "title": "Kick live"}, "live"),
    ],
)
def test_fetch_refuses_a_kick_vod_as_a_twitch_one(
    fake_ydl: type[FakeYoutubeDL], tmp_path: Path, info: dict[str, Any], fragment: str
) -> None:
    fake_ydl.info = {**fake_ydl.info, **info}
    with pytest.raises(SourceError, match=fragment):
        sources.fetch(KICK, tmp_path, max_duration=2 * HOUR)
    assert not fake_ydl.seen[0].downloaded and list(tmp_path.iterdir()) == []
