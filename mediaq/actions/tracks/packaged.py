"""Text subtitles in a streaming package (``subtitles: keep`` on package_hls /
package_dash): one WebVTT file per track, on the package's clock.

HLS names each file from a one-segment media playlist, a rendition of an
``EXT-X-MEDIA TYPE=SUBTITLES`` group; DASH from a ``text/vtt`` adaptation set with
``lang``. ``X-TIMESTAMP-MAP`` says the cue times are the media's own (fMP4 tracks start
at the same zero), which is what hls.js reads them against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from mediaq.actions.avio import MediaInfo, probe, writing
from mediaq.actions.base import ActionContext, OutputFile
from mediaq.actions.tracks.languages import choose_tracks, tracks_in
from mediaq.actions.tracks.subtitles import read_track, webvtt_text


@dataclass(frozen=True)
class PackagedSubtitles:
    """One subtitle track of a package: its WebVTT file and HLS playlist."""

    language: str
    vtt: Path
    playlist: Path
    cues: int


def package_subtitles(ctx: ActionContext, prefix: str, shift: float,
                      duration: float) -> list[PackagedSubtitles]:
    """WebVTT files for the text subtitle tracks chosen (``subtitle_languages``, else
    all); ``shift``: the source time the package starts at. Bitmap tracks are logged
    and left out (there is no OCR)."""
    if ctx.params.get("subtitles", "drop") != "keep":
        return []
    info: MediaInfo = probe(ctx.source_path)
    chosen, missing = choose_tracks(ctx.source_path, "subtitle",
                                    tracks_in(info.streams, "subtitle"),
                                    ctx.params.get("subtitle_languages"))
    if missing:
        ctx.log(f"{ctx.source_path.name}: no subtitles in {', '.join(missing)}")
    size = ((info.video.display_width, info.video.display_height) if info.video
            else (0, 0))
    made: list[PackagedSubtitles] = []
    names: dict[str, int] = {}
    for track in chosen:
        read = read_track(ctx.source_path, track.index, track.language, size)
        if not read.is_text:
            ctx.log(f"subtitle track {track.index} ({read.codec}, {read.language}) is "
                    f"pictures, not text: left out of the package")
            continue
        names[read.language] = names.get(read.language, 0) + 1
        label = f"sub_{read.language}" + (f"_{names[read.language]}"
                                          if names[read.language] > 1 else "")
        vtt = ctx.output_path(f"{prefix}{label}.vtt")
        playlist = ctx.output_path(f"{prefix}{label}.m3u8")
        text = webvtt_text(read.cues, shift).replace(
            "WEBVTT\n", "WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000\n", 1)
        with writing(vtt):
            vtt.write_text(text, encoding="utf-8")
        with writing(playlist):
            playlist.write_text("\n".join([
                "#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-PLAYLIST-TYPE:VOD",
                f"#EXT-X-TARGETDURATION:{max(1, math.ceil(duration))}",
                "#EXT-X-MEDIA-SEQUENCE:0", f"#EXTINF:{duration:.3f},", vtt.name,
                "#EXT-X-ENDLIST", ""]))
        made.append(PackagedSubtitles(read.language, vtt, playlist,
                                      sum(1 for c in read.cues if c.text)))
    return made


def subtitle_outputs(tracks: list[PackagedSubtitles], *, keep_playlist: bool
                     ) -> list[OutputFile]:
    files = []
    for track in tracks:
        meta = {"kind": "subtitles", "language": track.language, "cues": track.cues}
        files.append(OutputFile(track.vtt, role="sidecar", meta={**meta, "format": "webvtt"}))
        if keep_playlist:
            files.append(OutputFile(track.playlist, role="sidecar",
                                    meta={**meta, "kind": "playlist"}))
        else:
            track.playlist.unlink(missing_ok=True)
    return files
