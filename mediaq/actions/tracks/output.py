"""What ``transcode_video`` does with the tracks it planned: subtitle cues read once for
every rendition, extracted sidecars (WebVTT/SRT for text, .sup/.mks for pictures), and
the summary for ``output_data``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from mediaq.actions.avio import MediaInfo, writing
from mediaq.actions.base import ActionContext, OutputFile
from mediaq.actions.tracks.bitmaps import SIDECAR_OF, carries, write_sidecar
from mediaq.actions.tracks.languages import ChosenTrack
from mediaq.actions.tracks.subtitles import SubtitleTrack, read_track, srt_text, webvtt_text
from mediaq.actions.video_rendition import MUXER_OF


class PlannedTracks(Protocol):
    """What a rendition says about its tracks (video_rendition.Rendition)."""

    @property
    def audio_tracks(self) -> tuple[ChosenTrack, ...]: ...
    @property
    def subtitles(self) -> str: ...
    @property
    def subtitle_tracks(self) -> tuple[ChosenTrack, ...]: ...
    @property
    def missing_languages(self) -> tuple[str, ...]: ...
    @property
    def label(self) -> str: ...
    @property
    def container(self) -> str: ...


def left_out(rendition: PlannedTracks, track: SubtitleTrack) -> str | None:
    """Why ``subtitles: keep`` cannot carry ``track`` in this rendition (None: it can)."""
    if rendition.subtitles != "keep" or track.is_text:
        return None
    if carries(MUXER_OF[rendition.container], track.codec):
        return None
    return (f"{rendition.container} cannot carry {track.codec} pictures "
            f"(container: mkv can; subtitles: burn draws them)")


def load_subtitles(ctx: ActionContext, info: MediaInfo,
                   renditions: list[Any]) -> dict[int, SubtitleTrack]:
    """The cues of every subtitle track some rendition keeps, extracts or burns, read
    once each; tracks that cannot serve the mode asked are logged and left out."""
    assert info.video is not None
    size = (info.video.display_width, info.video.display_height)
    tracks: dict[int, SubtitleTrack] = {}
    for rendition in renditions:
        for chosen in rendition.subtitle_tracks:
            if chosen.index not in tracks:
                tracks[chosen.index] = read_track(ctx.source_path, chosen.index,
                                                  chosen.language, size)
            reason = left_out(rendition, tracks[chosen.index])
            if reason:
                track = tracks[chosen.index]
                ctx.log(f"{rendition.label}: subtitle track {track.index} ({track.codec}, "
                        f"{track.language}) not kept: {reason}")
    return tracks


def write_extracted(ctx: ActionContext, rendition: PlannedTracks, video: Path,
                    subtitles: dict[int, SubtitleTrack], origin: float) -> list[OutputFile]:
    """``subtitles: extract``: ``{video stem}.{language}.vtt`` and ``.srt`` per text track,
    ``.sup`` per PGS track and ``.mks`` per DVD or DVB track (a second track of a language
    gets ``.{language}.2``), timed on the output's clock."""
    if rendition.subtitles != "extract":
        return []
    files: list[OutputFile] = []
    seen: dict[str, int] = {}
    for chosen in rendition.subtitle_tracks:
        track = subtitles.get(chosen.index)
        if track is None:
            continue
        seen[track.language] = seen.get(track.language, 0) + 1
        tag = track.language + (f".{seen[track.language]}" if seen[track.language] > 1 else "")
        if not track.is_text:
            suffix, muxer = SIDECAR_OF[track.codec]
            path = ctx.output_path(f"{video.stem}.{tag}.{suffix}")
            cues = write_sidecar(track, path, origin)
            files.append(OutputFile(path, role="sidecar", meta={
                "kind": "subtitles", "format": "pgs" if suffix == "sup" else muxer,
                "codec": track.codec, "language": track.language, "cues": cues,
                "rendition": rendition.label}))
            continue
        for suffix, text in (("vtt", webvtt_text(track.cues, origin)),
                             ("srt", srt_text(track.cues, origin))):
            path = ctx.output_path(f"{video.stem}.{tag}.{suffix}")
            with writing(path):
                path.write_text(text, encoding="utf-8")
            files.append(OutputFile(path, role="sidecar", meta={
                "kind": "subtitles", "format": "webvtt" if suffix == "vtt" else "srt",
                "language": track.language, "cues": sum(1 for c in track.cues if c.text),
                "rendition": rendition.label}))
    return files


def track_data(rendition: PlannedTracks, subtitles: dict[int, SubtitleTrack],
               files: list[OutputFile]) -> dict[str, Any]:
    """The tracks part of a transcode's output_data."""
    data: dict[str, Any] = {
        "audio_tracks": [{"source_index": t.index, "language": t.language}
                         for t in rendition.audio_tracks],
        "subtitles": rendition.subtitles,
    }
    if rendition.subtitle_tracks:
        data["subtitle_tracks"] = [_track_entry(rendition, t, subtitles.get(t.index))
                                   for t in rendition.subtitle_tracks]
    if files:
        data["subtitle_files"] = [f.staging_path.name for f in files]
    if rendition.missing_languages:
        data["missing_languages"] = list(rendition.missing_languages)
    return data


def _track_entry(rendition: PlannedTracks, chosen: ChosenTrack,
                 track: SubtitleTrack | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"source_index": chosen.index, "language": chosen.language,
                             "codec": track.codec if track else None}
    reason = left_out(rendition, track) if track else None
    if reason:
        entry["left_out"] = reason
    return entry
