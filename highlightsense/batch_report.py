"""A batch's report, from its rows: ``batch.csv`` and ``batch.json`` (one row per VOD),
``index.html`` (every VOD's score plot and clips on one static page, relative links only) and the
digest: the best moments of all VODs together (``digest.csv``) as a "best of" rough cut
(``digest.otio`` and the other timeline kinds asked for) whose clips point at the original media.

Writers take rows (results), never settings; every file is written atomically.
"""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from .errors import UserError
from .files import write_atomic
from .timecode import format_timestamp

ROW_FIELDS = (
    "source", "folder", "status", "duration_sec", "seconds", "highlights", "top_start_sec",
    "top_confidence", "error",
)  # fmt: skip
DIGEST_FIELDS = (
    "rank", "source", "folder", "start_sec", "end_sec", "start_ts", "end_ts", "confidence",
    "clip_path", "why",
)  # fmt: skip
DIGEST_KINDS = ("otio", "fcp7xml", "fcpxml", "edl")  # timeline kinds a multi-VOD cut can be
PLOT_WIDTH, PLOT_HEIGHT = 600, 80  # px of each VOD's score plot in index.html
MAX_PLOT_POINTS = 2000  # windows drawn per plot at most (a 6 h VOD has 4300)
MAX_SCORES_BYTES = 8 << 20  # bytes of a scores.csv read for the plot


def digest_rows(rows: Sequence, count: int) -> list[dict]:
    """The ``count`` most confident highlights of all done VODs, best first (each VOD's
    near-duplicates were already removed by its selection)."""
    picks = [(pick, row) for row in rows if row.status in ("done", "skipped") for pick in row.picks]
    picks.sort(key=lambda item: (-item[0]["confidence"], item[1].folder, item[0]["rank"]))
    digest = []
    for rank, (pick, row) in enumerate(picks[:count], 1):
        clip = pick.get("clip_path") or ""
        digest.append(
            {
                "rank": rank,
                "source": row.source,
                "folder": row.folder,
                "start_sec": pick["start_sec"],
                "end_sec": pick["end_sec"],
                "start_ts": format_timestamp(pick["start_sec"]),
                "end_ts": format_timestamp(pick["end_sec"]),
                "confidence": pick["confidence"],
                "clip_path": f"{row.folder}/{clip}" if clip else "",
                "why": pick.get("why") or "",
                "media": row.media,
            }
        )
    return digest


def _csv_text(fields: Sequence[str], rows: Sequence[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _read_scores(path: Path) -> list[tuple[float, float]]:
    """(window centre s, confidence) from a VOD's scores.csv, thinned to the plot's points."""
    try:
        if path.stat().st_size > MAX_SCORES_BYTES:
            return []
        with open(path, newline="") as file:
            points = [
                ((float(r["start_sec"]) + float(r["end_sec"])) / 2, float(r["confidence"]))
                for r in csv.DictReader(file)
            ]
    except (OSError, ValueError, KeyError):
        return []
    step = max(1, -(-len(points) // MAX_PLOT_POINTS))
    return points[::step]


def score_svg(points: Sequence[tuple[float, float]], duration: float) -> str:
    """An inline SVG line of the scores over the VOD (0 at the bottom, 1 at the top)."""
    if not points or duration <= 0:
        return ""
    xy = " ".join(
        f"{PLOT_WIDTH * min(t / duration, 1):.1f},{PLOT_HEIGHT * (1 - p):.1f}" for t, p in points
    )
    return (
        f'<svg width="{PLOT_WIDTH}" height="{PLOT_HEIGHT}" viewBox="0 0 {PLOT_WIDTH} '
        f'{PLOT_HEIGHT}" role="img" aria-label="scores over time">'
        f'<rect width="100%" height="100%" fill="#f4f2fa"/>'
        f'<polyline fill="none" stroke="#6b4fbb" stroke-width="1.5" points="{xy}"/></svg>'
    )


def _link(folder: str, *parts: str) -> str:
    return "/".join(quote(p) for p in (folder, *parts))


def index_html(rows: Sequence, digest: Sequence[dict], out_dir: Path) -> str:
    """One static page: a line per VOD, its score plot and its clips, then the digest."""
    e = html.escape
    done = sum(r.status in ("done", "skipped") for r in rows)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>HighlightSense batch</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:70em}section{margin:2em 0}"
        "video{width:240px;margin:4px}.failed{color:#a00}td,th{padding:2px 8px}</style>",
        f"</head><body><h1>HighlightSense batch</h1><p>{done} of {len(rows)} VODs done.</p>",
    ]
    if digest:
        parts.append(
            "<h2>Best moments of all VODs</h2><table><tr><th>#</th><th>VOD</th>"
            "<th>time</th><th>confidence</th><th>clip</th></tr>"
        )
        for d in digest:
            clip = f"<a href='{quote(d['clip_path'])}'>clip</a>" if d["clip_path"] else ""
            parts.append(
                f"<tr><td>{d['rank']}</td><td>{e(d['folder'])}</td>"
                f"<td>{d['start_ts']}–{d['end_ts']}</td><td>{d['confidence']:.3f}</td>"
                f"<td>{clip}</td></tr>"
            )
        parts.append("</table>")
    for row in rows:
        parts.append(f"<section id='{e(row.folder, quote=True)}'><h2>{e(row.folder)}</h2>")
        parts.append(f"<p>{e(row.source)} · {e(row.status)}")
        if row.duration_sec:
            parts.append(f" · {format_timestamp(row.duration_sec)} · {row.highlights} highlights")
        parts.append("</p>")
        if row.status == "failed":
            parts.append(f"<p class='failed'>{e(row.error)}</p></section>")
            continue
        points = _read_scores(out_dir / row.folder / "scores.csv")
        parts.append(score_svg(points, row.duration_sec or 0.0))
        parts.append(
            f"<p><a href='{_link(row.folder, 'scores.html')}'>interactive plot</a> · "
            f"<a href='{_link(row.folder, 'highlights.csv')}'>table</a></p>"
        )
        for pick in row.picks:
            if pick.get("clip_path"):
                source = _link(row.folder, *pick["clip_path"].split("/"))
                title = f"#{pick['rank']} {pick['confidence']:.2f}"
                parts.append(f"<video controls preload='none' title='{title}' src='{source}'>")
                parts.append("</video>")
        parts.append("</section>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def digest_timelines(digest: Sequence[dict], kinds: Sequence[str], out_dir: Path) -> list[Path]:
    """``digest.<ext>`` for each timeline kind: one rough cut of the best moments of all VODs,
    each clip on its original media with a marker saying which VOD and why."""
    import opentimelineio as otio

    from . import media, timelines
    from .settings import TIMELINE_FILES

    kinds = [kind for kind in dict.fromkeys(("otio", *kinds)) if kind in DIGEST_KINDS]
    if not digest:
        return []
    infos: dict[str, media.MediaInfo] = {}
    video = otio.schema.Track(name="V1", kind=otio.schema.TrackKind.Video)
    audio = otio.schema.Track(name="A1", kind=otio.schema.TrackKind.Audio)
    for item in digest:
        if item["media"] not in infos:
            try:
                infos[item["media"]] = media.probe(item["media"])
            except UserError:  # moved or deleted since it was analysed: left out of the cut
                infos[item["media"]] = None
        info = infos[item["media"]]
        if info is None:
            continue
        marker = timelines.Marker(
            rank=item["rank"],
            start_sec=item["start_sec"],
            end_sec=item["end_sec"],
            confidence=item["confidence"],
            why=f"{item['folder']}: {item['why']}",
        )
        one = timelines.build_timeline(info, [marker])
        clips = [track[0].deepcopy() for track in one.tracks]
        if info.has_video:
            video.append(clips[0])
            audio.append(clips[1])
        else:
            gap = otio.schema.Gap(source_range=clips[0].source_range)
            gap.markers.extend(m.deepcopy() for m in clips[0].markers)  # all markers on V1
            clips[0].markers.clear()
            video.append(gap)
            audio.append(clips[0])
    # The formats' writers take one media's facts (its rate, whether it has a picture): those of
    # a video when there is one; audio alone gets one sound track, as build_timeline does.
    found = [info for info in infos.values() if info is not None]
    if not found:
        return []
    first = next((i for i in found if i.has_video), found[0])
    tracks = [video, audio] if first.has_video else [audio]
    timeline = otio.schema.Timeline(name="best of the batch", tracks=tracks)
    timeline.global_start_time = otio.opentime.RationalTime(
        0, float(timelines.timeline_rate(first))
    )
    written = []
    for kind in kinds:
        path = out_dir / ("digest" + Path(TIMELINE_FILES[kind]).suffix)
        write_atomic(path, timelines.timeline_text(timeline, kind, first))
        written.append(path)
    return written


def write_report(
    rows: Sequence, out_dir: Path, *, digest: int = 20, timelines: Sequence[str] = ()
) -> list[Path]:
    """batch.csv, batch.json, index.html, digest.csv and the digest's timelines."""
    best = digest_rows(rows, digest)
    paths = [out_dir / name for name in ("batch.csv", "batch.json", "index.html")]
    write_atomic(paths[0], _csv_text(ROW_FIELDS, [row.as_dict() for row in rows]))
    summary = {
        "vods": len(rows),
        "done": sum(r.status in ("done", "skipped") for r in rows),
        "failed": sum(r.status == "failed" for r in rows),
        "rows": [{k: row.as_dict()[k] for k in ROW_FIELDS} for row in rows],
        "digest": [{k: d[k] for k in DIGEST_FIELDS} for d in best],
    }
    write_atomic(paths[1], json.dumps(summary, indent=2) + "\n")
    write_atomic(paths[2], index_html(rows, best, out_dir))
    if best:
        paths.append(out_dir / "digest.csv")
        write_atomic(paths[-1], _csv_text(DIGEST_FIELDS, best))
        paths += digest_timelines(best, timelines, out_dir)
    return paths
