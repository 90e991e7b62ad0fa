"""The demo VOD: 75 s that look and sound like a stream moment, synthesised with ffmpeg once
(in the background at start-up) and kept in the work dir.

A game scene (a drifting landscape, a player and enemies moving across it), a facecam, game
sound (a rumbling score with shots) and a streamer who talks, then shouts twice: at the shouts
the screen flashes and the game gets loud.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from .. import tools
from ..files import atomic_path

NAME = "highlightsense-example-v2.mp4"  # bump the version when the recipe changes
SECONDS = 75
SHOUTS = ((20.0, 26.0), (47.0, 52.0))  # s, the moments a good model picks
TIMEOUT = 180.0  # s for ffmpeg to write it
SIZE = "640x360"
RATE = 20  # frames per second


def _during(spans: tuple[tuple[float, float], ...]) -> str:
    return "(" + "+".join(f"between(t,{a},{b})" for a, b in spans) + ")"


def command(target: Path) -> list[str]:
    """The ffmpeg command writing the demo VOD to ``target`` (H.264 + AAC mp4)."""
    shout = _during(SHOUTS)
    pitch = f"(150+170*{shout}+25*sin(2*PI*3*t))"  # Hz: a talking voice, raised when shouting
    syllables = "(0.55+0.45*sin(2*PI*4.5*t))"
    harmonics = "+".join(
        f"{w}*sin({2 * k}*PI*{pitch}*t)"
        for k, w in ((1, 1), (2, 0.7), (3, 0.5), (4, 0.3), (5, 0.2))
    )
    voice = f"(0.06+0.5*{shout})*{syllables}*({harmonics})/2.7"
    score = "0.07*sin(2*PI*55*t)*(0.6+0.4*sin(2*PI*1.5*t))+0.04*sin(2*PI*82.5*t)"
    shots = f"(0.08+0.5*{shout})*lt(mod(t,0.7),0.03)*sin(2*PI*900*t*(1-mod(t,0.7)))"
    game = f"{score}+{shots}"
    audio = (
        f"aevalsrc='{voice}':s=22050:d={SECONDS},aresample=44100,"
        "aformat=channel_layouts=stereo[voice];"
        f"aevalsrc='{game}':s=22050:d={SECONDS},aresample=44100,"
        "aformat=channel_layouts=stereo[game];"
        f"anoisesrc=color=brown:amplitude=0.03:duration={SECONDS}:sample_rate=44100:seed=7,"
        "aformat=channel_layouts=stereo[wind];"
        "[voice][game][wind]amix=inputs=3:normalize=0,alimiter=limit=0.9[a]"
    )
    video = (
        f"gradients=s=160x90:r={RATE}:d={SECONDS}:speed=0.01:n=3:"
        "c0=0x1e3a8a:c1=0x0f766e:c2=0x65a30d:seed=3,scale=640:360,"
        "drawbox=x=0:y=270:w=640:h=90:color=0x3f2a14:t=fill,"  # the ground
        "drawbox=x='mod(t*70,600)':y=230:w=24:h=40:color=0xfacc15:t=fill,"  # the player
        "drawbox=x='600-mod(t*110,600)':y=238:w=20:h=32:color=0xdc2626:t=fill,"  # enemies
        "drawbox=x='mod(t*45+300,600)':y=120+40*sin(t):w=18:h=18:color=0xf97316:t=fill,"
        "drawbox=x=472:y=8:w=160:h=110:color=0x111827:t=fill,"  # the facecam
        "drawbox=x=522:y=28:w=60:h=60:color=0xfcd34d:t=fill,"
        f"drawbox=x=0:y=0:w=640:h=360:color=0xffffff@0.35:t=fill:enable='{shout}*lt(mod(t,0.5),0.15)',"
        f"drawbox=x=0:y=0:w=640:h=360:color=0xef4444:t=12:enable='{shout}'"
    )
    return [
        tools.ffmpeg_path(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", video, "-filter_complex", audio,
        "-map", "0:v", "-map", "[a]", "-t", str(SECONDS),
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "28", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart", "-f", "mp4", f"file:{target}",
    ]  # fmt: skip


def make(folder: Path) -> Path:
    """The demo VOD in ``folder``, written there first if it is not there yet."""
    target = folder / NAME
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as partial:  # two apps sharing a cache folder may both make it
        subprocess.run(command(partial), check=True, capture_output=True, timeout=TIMEOUT)
    return target
