"""``package_chunked``: the chunks of every rung stitched (no re-encode) and packaged as
HLS and MPEG-DASH over the same fMP4 segments.

Each rung's chunk files are concatenated packet by packet, as ``stitch_video`` does
(each chunk back at its place on the source's clock), straight into the streaming
actions' CMAF segmenter (:func:`~mediaq.actions.streaming.segmenter.open_fmp4_track`),
which cuts a segment at every keyframe. The chunks put their keyframes on one grid for
every rung (``encode_chunk_ladder``), so every rung's segments start at the same times;
that is checked before anything is kept. The audio track (``encode_audio_track``) is
segmented once beside them. The master playlist and the MPD are the streaming actions'
own writers (:func:`~mediaq.actions.streaming.hls.hls_master`,
:func:`~mediaq.actions.streaming.dash.dash_manifest`), over the same init and media
segments.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from mediaq.actions import action
from mediaq.actions.avio import common_origin, open_media, reading, writing
from mediaq.actions.base import ActionContext, ActionResult, OutputFile
from mediaq.actions.chunked.encode import output_path_of
from mediaq.actions.chunked.ladder import rung_of
from mediaq.actions.chunked.stitch import (
    SLUG,
    audio_packets,
    check_same_settings,
    ordered_chunks,
    video_packets,
)
from mediaq.actions.clip import AAC_CODEC_STRING, inspect_clip, remove_quietly, safe_stem
from mediaq.actions.media_output import OutputGroup, media_outputs
from mediaq.actions.streaming.dash import dash_manifest
from mediaq.actions.streaming.hls import hls_master
from mediaq.actions.streaming.ladder import Rung
from mediaq.actions.streaming.segmenter import (
    TrackFiles,
    avc_codec_string,
    first_decode_time,
    open_fmp4_track,
    read_media_playlist,
    track_outputs,
    track_summary,
)
from mediaq.errors import PermanentError

# The segmenter's target length: shorter than any GOP, so it cuts at every keyframe and
# the segments are the chunks' GOPs.
EVERY_KEYFRAME = 0.01
# Segment boundaries of two rungs closer than this (seconds) are the same boundary.
ALIGNED = 1e-3


@action("package_chunked", {
    "properties": {
        # The slugs of the steps this one needs: the ladder chunks and the audio track.
        "chunks_step": {**SLUG, "default": "encode_chunks"},
        "audio_step": {**SLUG, "default": "encode_audio"},
    },
})
def package_chunked(ctx: ActionContext) -> ActionResult:
    """Stitch every rung's chunks (no re-encode) into HLS and DASH over shared segments."""
    source = ctx.source_path
    chunks = ordered_chunks(ctx)
    rungs = ladder_of(chunks)
    audio_item = ctx.needs_outputs.get(ctx.params["audio_step"])
    audio_path = output_path_of(ctx, audio_item, "the audio track") if audio_item else None
    clip = inspect_clip(source)
    with open_media(source) as container, reading(source):
        vstream: Any = container.streams.video[0]
        astream = container.streams.audio[0] if container.streams.audio else None
        origin = common_origin(vstream, astream if audio_path else None)
        source_tb = Fraction(vstream.time_base)
    stem = safe_stem(source)
    prefix = f"{stem}_chunked_"
    packager = Packager(ctx, chunks, source_tb, round(Fraction(origin) / source_tb))
    master, mpd = ctx.output_path(f"{stem}.m3u8"), ctx.output_path(f"{stem}.mpd")
    try:
        with media_outputs() as outputs:
            for rung in rungs:
                packager.video_track(outputs, prefix, rung)
            if audio_path is not None:
                packager.audio_track(outputs, prefix, audio_path)
        tracks = [packager.read_back(label, rung) for label, rung in packager.tracks]
        check_aligned(tracks)
        with writing(master):
            master.write_text(hls_master(tracks, clip.rate))
        longest = max(s for t in tracks if t.rung for _, s in t.segments)
        with writing(mpd):
            mpd.write_text(dash_manifest(tracks, clip, math.ceil(longest)))
    except BaseException:
        remove_quietly([master, mpd, *sorted(ctx.staging_dir.glob(f"{prefix}*"))])
        raise
    videos = [t for t in tracks if t.rung is not None]
    outputs_: list[OutputFile] = [
        OutputFile(master, role="rendition", meta={"format": "hls", "renditions": len(videos),
                                                   "duration": round(videos[0].duration, 3)}),
        OutputFile(mpd, role="rendition", meta={"format": "dash", "renditions": len(videos),
                                                "duration": round(videos[0].duration, 3)})]
    for track in tracks:
        outputs_.extend(track_outputs(track, keep_playlist=True))
    return ActionResult(outputs=outputs_, data={
        "master": master.name, "manifest": mpd.name, "chunks": len(chunks),
        "frame_count": sum(c["frame_count"] for c in chunks),
        "segments": len(videos[0].segments), "duration": round(videos[0].duration, 3),
        "fps": float(clip.rate), "origin": origin,
        "renditions": [track_summary(t) for t in videos],
        "audio": next((track_summary(t) for t in tracks if t.rung is None), None),
    })


def ladder_of(chunks: list[dict[str, Any]]) -> list[Rung]:
    """The rungs every chunk was encoded at (chunk 0's), refusing a chunk with others."""
    first = chunks[0].get("renditions")
    if not first:
        raise PermanentError("package_chunked: chunk 0 has no renditions (encode the "
                             "chunks with encode_chunk_ladder)")
    names = [r["name"] for r in first]
    for chunk in chunks[1:]:
        theirs = [r["name"] for r in chunk.get("renditions") or []]
        if theirs != names:
            raise PermanentError(f"package_chunked: chunk {chunk['chunk_index']} was encoded "
                                 f"at {theirs}, chunk 0 at {names}: re-encode it with the "
                                 "same step parameters")
    return [rung_of(r) for r in first]


def rung_file(ctx: ActionContext, chunk: dict[str, Any], label: str) -> Path:
    """The file a ladder chunk task wrote for rung ``label``, as a path here (fetched
    now if another host encoded it)."""
    for output in chunk.get("outputs") or []:
        if output.get("rendition") == label:
            return ctx.local_path(output)
    raise PermanentError(f"package_chunked: chunk {chunk['chunk_index']} has no recorded "
                         f"file for rung {label}")


class Packager:
    """Writes each rung (and the audio) as a CMAF track from the chunks' packets."""

    def __init__(self, ctx: ActionContext, chunks: list[dict[str, Any]], tb: Fraction,
                 origin_pts: int) -> None:
        self.ctx = ctx
        self.chunks = chunks
        self.tb = tb
        self.origin_pts = origin_pts
        self.tracks: list[tuple[str, Rung | None]] = []
        self.playlists: dict[str, Path] = {}
        self.audio: tuple[int, int, str] | None = None  # sample rate, channels, codec

    def _open(self, outputs: OutputGroup, name: str, *, late: bool,
              seconds: float = EVERY_KEYFRAME) -> Any:
        output = open_fmp4_track(outputs, self.ctx, name, seconds, late=late)
        self.playlists[name] = output.path
        return output

    def video_track(self, outputs: OutputGroup, prefix: str, rung: Rung) -> None:
        chunks = self.chunks
        inputs = [av.open(str(rung_file(self.ctx, c, rung.label)),
                          options={"protocol_whitelist": "file"}) for c in chunks]
        try:
            check_same_settings(inputs, chunks)
            # Late: the video starts after the audio (the first chunk's place on the clock).
            late = int(chunks[0]["start_pts"]) - self.origin_pts > 0
            output = self._open(outputs, f"{prefix}{rung.label}", late=late)
            template = inputs[0].streams.video[0]
            stream = output.add_stream(
                lambda c: c.add_stream_from_template(template, opaque=True))
            stream.time_base = self.tb
            total = sum(c["frame_count"] for c in chunks)
            for _when, _order, packet in video_packets(self.ctx, inputs, chunks, stream,
                                                       self.tb, self.origin_pts, total):
                output.mux(packet)
        finally:
            for opened in inputs:
                opened.close()
        self.tracks.append((f"{prefix}{rung.label}", rung))

    def audio_track(self, outputs: OutputGroup, prefix: str, path: Path) -> None:
        with av.open(str(path)) as opened:
            audio: Any = opened.streams.audio[0]
            first = next((p for p in opened.demux(audio) if p.dts is not None), None)
            late = first is not None and first.dts * first.time_base > 0
            context = audio.codec_context
            codec = AAC_CODEC_STRING if context.name == "aac" else context.name
            self.audio = (int(context.sample_rate), int(context.channels), codec)
        with av.open(str(path)) as opened:
            # Every audio packet is a keyframe: segments as long as the video's GOPs.
            output = self._open(outputs, f"{prefix}audio", late=late,
                                seconds=float(self.chunks[0].get("gop_seconds") or 2))
            template = opened.streams.audio[0]
            stream = output.add_stream(
                lambda c: c.add_stream_from_template(template, opaque=True))
            for _when, _order, packet in audio_packets(opened, stream):
                output.mux(packet)
        self.tracks.append((f"{prefix}audio", None))

    def read_back(self, name: str, rung: Rung | None) -> TrackFiles:
        playlist = self.playlists[name]
        init, segments = read_media_playlist(playlist)
        start = first_decode_time(init, segments[0][0])
        label = rung.label if rung else "audio"
        if rung is not None:
            return TrackFiles(label=label, rung=rung, playlist=playlist, init=init,
                              segments=segments, codec=avc_codec_string(init), start=start)
        assert self.audio is not None
        rate, channels, codec = self.audio
        return TrackFiles(label=label, rung=None, playlist=playlist, init=init,
                          segments=segments, codec=codec, sample_rate=rate,
                          channels=channels, start=start)


def check_aligned(tracks: list[TrackFiles]) -> None:
    """Every rung's segments start at the same times (a player switches at any of them)."""
    videos = [t for t in tracks if t.rung is not None]

    def bounds(track: TrackFiles) -> list[float]:
        at, out = track.start, []
        for _, seconds in track.segments:
            out.append(at)
            at += seconds
        return out

    first = bounds(videos[0])
    for track in videos[1:]:
        theirs = bounds(track)
        if len(theirs) != len(first) or any(abs(a - b) > ALIGNED
                                            for a, b in zip(theirs, first, strict=True)):
            raise PermanentError(f"package_chunked: rung {track.label} has {len(theirs)} "
                                 f"segments not aligned with rung {videos[0].label}'s "
                                 f"{len(first)} (chunks encoded with other GOP settings?)")
