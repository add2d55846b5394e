"""Streaming actions: HLS and DASH rendition ladders from one decoding pass.

``package_hls`` and ``package_dash`` decode the source once and encode every rung of a
rendition ladder from that one pass. Each track (every video rung, and the audio once)
goes through FFmpeg's hls muxer as a CMAF segmenter: fMP4 init + numbered ``.m4s``
segments cut at keyframes that are forced on the segment grid. The master playlist and
the MPD are written here, from the segments actually produced (measured bit rates, the
exact codec strings from each init segment). The dash muxer is not used because it
cannot see the sample aspect ratio PyAV gives each rung, so it refuses a ladder whose
even-rounded sizes differ in shape by a pixel (e.g. 426x240 beside 640x360).

Everything lands flat in the step's staging folder, named ``{stem}_{hls|dash}_{rung}…``,
and every file is listed as an output (the engine publishes only listed files).

Frames to encode are turned upright (rotation), deinterlaced and resampled to a constant
frame rate before scaling, so outputs play the right way up at a steady rate everywhere.
Scaling keeps one swscale context per output size
(:class:`~mediaq.actions.frames.Scaler`), four times cheaper than ``frame.reformat()``.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from av.audio.frame import AudioFrame
from av.container import OutputContainer

from mediaq.actions import action
from mediaq.actions.avio import (
    BITRATE_SCHEMA,
    AudioEncoderFeed,
    ProgressClock,
    add_audio_stream,
    choose_video_encoder,
    encoder_options,
    open_media,
    open_output,
    output_layout,
    parse_bitrate,
    reading,
    writing,
)
from mediaq.actions.base import ActionContext, ActionResult, OutputFile
from mediaq.actions.clip import (
    AAC_CODEC_STRING,
    DEFAULT_BITS_PER_PIXEL_SECOND,
    HARDWARE_SCHEMA,
    NAMED_RUNGS,
    PRESETS,
    SourceClip,
    add_h264_stream,
    close_quietly,
    constant_rate,
    encode_frame,
    even,
    fit_inside,
    frame_count,
    inspect_clip,
    remove_quietly,
    safe_stem,
    upright_frames,
)
from mediaq.actions.frames import Scaler
from mediaq.errors import PermanentError

# =========================================================================== ladders

RENDITION_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"enum": list(NAMED_RUNGS)},
        {"type": "object", "additionalProperties": False, "required": ["width", "height"],
         "properties": {
             "width": {"type": "integer", "minimum": 16, "maximum": 7680},
             "height": {"type": "integer", "minimum": 16, "maximum": 4320},
             "bitrate": BITRATE_SCHEMA,
             "name": {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,32}$"},
         }},
    ],
}

PACKAGE_SCHEMA: dict[str, Any] = {
    "properties": {
        "renditions": {"type": "array", "items": RENDITION_SCHEMA, "minItems": 1,
                       "maxItems": 8, "default": ["720p", "480p", "360p"]},
        "segment_seconds": {"type": "integer", "minimum": 1, "maximum": 30, "default": 4},
        "codec": {"enum": ["h264"], "default": "h264"},
        "crf": {"type": "integer", "minimum": 0, "maximum": 51, "default": 23},
        "preset": {"enum": PRESETS, "default": "veryfast"},
        "audio": {"type": "boolean", "default": True},
        "audio_bitrate": {**BITRATE_SCHEMA, "default": "128k"},
        "hardware": HARDWARE_SCHEMA,
    },
}


@dataclass(frozen=True)
class Rung:
    """One rendition of a ladder."""

    label: str
    width: int
    height: int
    max_bitrate: int
    sar: Fraction  # makes width x height show at the source's display aspect


def plan_ladder(specs: list[str | dict[str, Any]], clip: SourceClip) -> list[Rung]:
    """The rungs asked for, never larger than the source (at least one is kept), each
    size once."""
    # The source's size in square pixels: the most any rung may be.
    src_w, src_h = even(clip.height * clip.aspect), even(clip.height)
    rungs: list[Rung] = []
    for spec in specs:
        rung = _rung(spec, clip.aspect)
        too_big = rung.width > src_w or rung.height > src_h
        if not too_big and all((r.width, r.height) != (rung.width, rung.height) for r in rungs):
            rungs.append(rung)
    if not rungs:
        rungs.append(_sized_rung(f"{src_h}p", src_w, src_h, None, clip.aspect))
    return rungs


def _rung(spec: str | dict[str, Any], aspect: Fraction) -> Rung:
    if isinstance(spec, str):
        short = int(spec[:-1])  # "720p": the short side, portrait or landscape
        if aspect >= 1:
            return _sized_rung(spec, even(short * aspect), short, None, aspect)
        return _sized_rung(spec, short, even(short / aspect), None, aspect)
    width, height = fit_inside(aspect, spec["width"], spec["height"])
    label = spec.get("name") or f"{width}x{height}"
    return _sized_rung(label, width, height, parse_bitrate(spec.get("bitrate")), aspect)


def _sized_rung(label: str, width: int, height: int, bitrate: int | None,
                aspect: Fraction) -> Rung:
    cap = bitrate or round(width * height * DEFAULT_BITS_PER_PIXEL_SECOND, -3)
    sar = (aspect * height / width).limit_denominator(4096)
    return Rung(label=label, width=width, height=height, max_bitrate=int(cap), sar=sar)


def segment_starts(count: int, rate: Fraction, seconds: int) -> set[int]:
    """Frames that open a segment: the first at or after each multiple of ``seconds``.
    A last segment shorter than half a segment is merged into the one before it, so no
    tiny tail inflates the peak bit rate."""
    starts = {0}
    per_segment = seconds * rate
    j = 1
    while (index := math.ceil(j * per_segment)) < count:
        if count - index >= per_segment / 2:
            starts.add(index)
        j += 1
    return starts


@dataclass
class SegmentedTrack:
    """One track cut into fMP4 segments by an hls muxer."""

    label: str
    playlist: Path
    output: OutputContainer
    stream: Any
    rung: Rung | None = None  # None: the audio track
    audio: AudioEncoderFeed | None = None
    scale: Scaler | None = None  # video tracks


@dataclass(frozen=True)
class TrackFiles:
    """What a segmented track produced, read back from its media playlist."""

    label: str
    rung: Rung | None
    playlist: Path
    init: Path
    segments: list[tuple[Path, float]]  # file, seconds
    codec: str
    sample_rate: int = 0  # audio only
    channels: int = 0

    @property
    def duration(self) -> float:
        return sum(seconds for _, seconds in self.segments)

    @property
    def peak_bps(self) -> int:
        return max(round(p.stat().st_size * 8 / max(s, 1e-3)) for p, s in self.segments)

    @property
    def average_bps(self) -> int:
        size = sum(p.stat().st_size for p, _ in self.segments)
        return round(size * 8 / max(self.duration, 1e-3))


class LadderSegmenter:
    """Decodes the source once and writes every rung (and the audio once) as CMAF tracks."""

    def __init__(self, ctx: ActionContext, clip: SourceClip, rungs: list[Rung],
                 prefix: str) -> None:
        self.ctx = ctx
        self.clip = clip
        self.rungs = rungs
        self.prefix = prefix
        self.params = ctx.params
        self.seconds: int = ctx.params["segment_seconds"]
        self.encoder = choose_video_encoder(ctx.params["codec"], ctx.params["hardware"], ctx)
        self.with_audio = bool(ctx.params["audio"]) and clip.audio_rate is not None

    def run(self) -> list[TrackFiles]:
        """Encode, segment and read back every track (video rungs first, then audio)."""
        tracks: list[SegmentedTrack] = []
        try:
            tracks.extend(self._video_track(rung) for rung in self.rungs)
            if self.with_audio:
                tracks.append(self._audio_track())
            self._pump(tracks)
            for track in tracks:
                with writing(track.playlist):
                    track.output.close()
            return [self._read_back(track) for track in tracks]
        except BaseException:
            for track in tracks:
                close_quietly(track.output)
            remove_quietly(sorted(self.ctx.staging_dir.glob(f"{self.prefix}*")))
            raise

    def _open(self, label: str) -> tuple[Path, OutputContainer]:
        name = f"{self.prefix}{label}"
        playlist = self.ctx.output_path(f"{name}.m3u8")
        # The segment name is a printf pattern: a literal % in the folder must be doubled.
        pattern = str(playlist.parent).replace("%", "%%") + f"/{name}_%05d.m4s"
        options = {
            "hls_time": str(self.seconds), "hls_segment_type": "fmp4",
            "hls_playlist_type": "vod", "hls_list_size": "0", "start_number": "1",
            "hls_flags": "independent_segments", "hls_segment_filename": pattern,
            "hls_fmp4_init_filename": f"{name}_init.mp4",
            # Each track has its own muxer: shifting each one's negative timestamps (the
            # B-frame delay, the AAC priming) to zero would shift them by different amounts
            # and put audio and video out of sync. An edit list in each init hides them.
            "avoid_negative_ts": "disabled",
        }
        return playlist, open_output(playlist, format="hls", options=options)

    def _video_track(self, rung: Rung) -> SegmentedTrack:
        playlist, output = self._open(rung.label)
        per_segment = math.ceil(self.seconds * self.clip.rate)
        options = encoder_options(self.encoder, crf=self.params["crf"],
                                  preset=self.params["preset"], max_bitrate=rung.max_bitrate)
        # Keyframes come from segment_starts(); the encoder must add none of its own
        # (no scene cuts, and a GOP ceiling past the longest segment).
        options.update({"sc_threshold": "0", "forced-idr": "1"})
        with writing(playlist):
            stream = add_h264_stream(output, self.encoder, width=rung.width,
                                     height=rung.height, rate=self.clip.rate, options=options,
                                     gop=2 * per_segment, sar=rung.sar)
        return SegmentedTrack(rung.label, playlist, output, stream, rung=rung,
                              scale=Scaler(rung.width, rung.height))

    def _audio_track(self) -> SegmentedTrack:
        playlist, output = self._open("audio")
        assert self.clip.audio_rate is not None
        rate = self.clip.audio_rate if self.clip.audio_rate in (44_100, 48_000) else 48_000
        with writing(playlist):
            stream = add_audio_stream(output, "aac", rate=rate,
                                      layout=output_layout(self.clip.audio_channels),
                                      bit_rate=parse_bitrate(self.params["audio_bitrate"]))
        return SegmentedTrack("audio", playlist, output, stream, audio=AudioEncoderFeed(stream))

    def _pump(self, tracks: list[SegmentedTrack]) -> None:
        clip, source = self.clip, self.clip.path
        videos = [t for t in tracks if t.rung is not None]
        audio = next((t for t in tracks if t.audio is not None), None)
        count = frame_count(clip.duration, clip.rate)
        starts = segment_starts(count, clip.rate, self.seconds)
        clock = ProgressClock(self.ctx, clip.duration, "packaging", count_frames=True)

        def on_audio(frame: AudioFrame) -> None:
            assert audio is not None and audio.audio is not None
            with writing(audio.playlist):
                audio.output.mux(audio.audio.push(frame))

        with open_media(source) as container, reading(source):
            vstream: Any = container.streams.video[0]
            vstream.codec_context.thread_type = "AUTO"
            astream = container.streams.audio[0] if audio is not None else None
            frames = upright_frames(container, vstream, astream, on_audio if audio else None)
            index = -1
            for index, frame in enumerate(constant_rate(frames, start=0.0, rate=clip.rate,
                                                        count=count)):
                for track in videos:
                    assert track.scale is not None
                    with writing(track.playlist):
                        track.output.mux(encode_frame(track.stream, track.scale(frame), index,
                                                      key=index in starts))
                clock.tick(index / float(clip.rate))
            if index < 0:
                raise PermanentError(f"{source.name}: the video stream has no decodable "
                                     f"frame")
            for _ in frames:  # the audio after the last video frame
                pass
        for track in tracks:
            with writing(track.playlist):
                if track.audio is not None:
                    track.output.mux(track.audio.push(None))
                else:
                    track.output.mux(track.stream.encode(None))

    def _read_back(self, track: SegmentedTrack) -> TrackFiles:
        init, segments = read_media_playlist(track.playlist)
        if track.rung is not None:
            return TrackFiles(label=track.label, rung=track.rung, playlist=track.playlist,
                              init=init, segments=segments, codec=avc_codec_string(init))
        audio = track.stream.codec_context
        return TrackFiles(label=track.label, rung=None, playlist=track.playlist, init=init,
                          segments=segments, codec=AAC_CODEC_STRING,
                          sample_rate=int(audio.sample_rate), channels=int(audio.channels))


def read_media_playlist(playlist: Path) -> tuple[Path, list[tuple[Path, float]]]:
    """The init segment and (segment, seconds) list an hls muxer wrote."""
    folder = playlist.parent
    init: Path | None = None
    segments: list[tuple[Path, float]] = []
    seconds = 0.0
    for line in playlist.read_text().splitlines():
        if line.startswith("#EXT-X-MAP:"):
            match = re.search(r'URI="([^"]+)"', line)
            init = folder / match.group(1) if match else None
        elif line.startswith("#EXTINF:"):
            seconds = float(line[len("#EXTINF:"):].split(",")[0])
        elif line and not line.startswith("#"):
            segments.append((folder / line, seconds))
    if init is None or not init.exists() or not segments:
        raise PermanentError(f"{playlist.name}: the segmenter wrote no media (is the "
                             f"source empty?)")
    return init, segments


def avc_codec_string(init: Path) -> str:
    """``avc1.PPCCLL`` (profile, constraints, level) from the avcC box of an init segment."""
    data = init.read_bytes()
    at = data.find(b"avcC")
    if at < 0 or len(data) < at + 8:
        return "avc1.640028"  # High@4.0: what players assume when told nothing better
    profile, constraints, level = data[at + 5], data[at + 6], data[at + 7]
    return f"avc1.{profile:02x}{constraints:02x}{level:02x}"


def _track_outputs(track: TrackFiles, *, keep_playlist: bool) -> list[OutputFile]:
    meta = {"rendition": track.label}
    files = [OutputFile(track.init, role="sidecar", meta={**meta, "kind": "init"})]
    files += [OutputFile(path, role="sidecar", meta={**meta, "kind": "segment",
                                                     "duration": round(seconds, 3)})
              for path, seconds in track.segments]
    if keep_playlist:
        files.insert(0, OutputFile(track.playlist, role="sidecar",
                                   meta={**meta, "kind": "playlist"}))
    return files


def _track_summary(track: TrackFiles) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "name": track.label, "codecs": track.codec, "segments": len(track.segments),
        "duration": round(track.duration, 3), "peak_bitrate": track.peak_bps,
        "average_bitrate": track.average_bps,
    }
    if track.rung is not None:
        summary.update(width=track.rung.width, height=track.rung.height,
                       max_bitrate=track.rung.max_bitrate)
    return summary


def _segment_ladder(ctx: ActionContext, kind: str) -> tuple[SourceClip, list[TrackFiles]]:
    clip = inspect_clip(ctx.source_path)
    rungs = plan_ladder(ctx.params["renditions"], clip)
    prefix = f"{safe_stem(ctx.source_path)}_{kind}_"
    return clip, LadderSegmenter(ctx, clip, rungs, prefix).run()


# --------------------------------------------------------------------------- HLS


@action("package_hls", PACKAGE_SCHEMA)
def package_hls(ctx: ActionContext) -> ActionResult:
    """Package the source as HLS: an fMP4 rendition ladder and a master playlist."""
    clip, tracks = _segment_ladder(ctx, "hls")
    master = ctx.output_path(f"{safe_stem(ctx.source_path)}.m3u8")
    with writing(master):
        master.write_text(hls_master(tracks, clip.rate))
    outputs = [OutputFile(master, role="rendition", meta={
        "format": "hls", "renditions": sum(1 for t in tracks if t.rung is not None),
        "duration": round(tracks[0].duration, 3)})]
    for track in tracks:
        outputs.extend(_track_outputs(track, keep_playlist=True))
    return ActionResult(outputs=outputs, data={
        "master": master.name, "segment_seconds": ctx.params["segment_seconds"],
        "duration": round(tracks[0].duration, 3), "fps": float(clip.rate),
        "renditions": [_track_summary(t) for t in tracks if t.rung is not None],
        "audio": next((_track_summary(t) for t in tracks if t.rung is None), None),
    })


def hls_master(tracks: list[TrackFiles], rate: Fraction) -> str:
    """A master playlist: one variant per rung, the audio as one rendition group.
    BANDWIDTH is the peak segment bit rate (RFC 8216), video plus audio."""
    audio = next((t for t in tracks if t.rung is None), None)
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS"]
    if audio is not None:
        lines.append(f'#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",NAME="audio",DEFAULT=YES,'
                     f'AUTOSELECT=YES,CHANNELS="{audio.channels}",URI="{audio.playlist.name}"')
    for track in tracks:
        if track.rung is None:
            continue
        codecs = track.codec + (f",{audio.codec}" if audio else "")
        peak = track.peak_bps + (audio.peak_bps if audio else 0)
        average = track.average_bps + (audio.average_bps if audio else 0)
        attributes = (f"BANDWIDTH={peak},AVERAGE-BANDWIDTH={average},"
                      f"RESOLUTION={track.rung.width}x{track.rung.height},"
                      f'FRAME-RATE={float(rate):.3f},CODECS="{codecs}"')
        if audio is not None:
            attributes += ',AUDIO="audio"'
        lines += [f"#EXT-X-STREAM-INF:{attributes}", track.playlist.name]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- DASH


@action("package_dash", PACKAGE_SCHEMA)
def package_dash(ctx: ActionContext) -> ActionResult:
    """Package the source as MPEG-DASH: an fMP4 rendition ladder and an MPD."""
    clip, tracks = _segment_ladder(ctx, "dash")
    mpd = ctx.output_path(f"{safe_stem(ctx.source_path)}.mpd")
    with writing(mpd):
        mpd.write_text(dash_manifest(tracks, clip, ctx.params["segment_seconds"]))
    remove_quietly([t.playlist for t in tracks])  # only the segmenter's bookkeeping
    outputs = [OutputFile(mpd, role="rendition", meta={
        "format": "dash", "renditions": sum(1 for t in tracks if t.rung is not None),
        "duration": round(tracks[0].duration, 3)})]
    for track in tracks:
        outputs.extend(_track_outputs(track, keep_playlist=False))
    return ActionResult(outputs=outputs, data={
        "manifest": mpd.name, "segment_seconds": ctx.params["segment_seconds"],
        "duration": round(tracks[0].duration, 3), "fps": float(clip.rate),
        "renditions": [_track_summary(t) for t in tracks if t.rung is not None],
        "audio": next((_track_summary(t) for t in tracks if t.rung is None), None),
    })


def dash_manifest(tracks: list[TrackFiles], clip: SourceClip, seconds: int) -> str:
    """A static MPD: the video rungs in one adaptation set, the audio in another, each
    representation a SegmentTemplate with an explicit SegmentTimeline."""
    duration = max(t.duration for t in tracks)
    mpd = ET.Element("MPD", {
        "xmlns": "urn:mpeg:dash:schema:mpd:2011", "type": "static",
        "profiles": "urn:mpeg:dash:profile:isoff-live:2011",
        "mediaPresentationDuration": _iso_duration(duration),
        "minBufferTime": _iso_duration(seconds),
    })
    period = ET.SubElement(mpd, "Period", {"id": "0", "start": "PT0S"})
    videos = [t for t in tracks if t.rung is not None]
    video_set = ET.SubElement(period, "AdaptationSet", {
        "id": "0", "contentType": "video", "mimeType": "video/mp4",
        "segmentAlignment": "true", "startWithSAP": "1",
        "par": f"{clip.aspect.numerator}:{clip.aspect.denominator}",
        "maxWidth": str(max(t.rung.width for t in videos if t.rung)),
        "maxHeight": str(max(t.rung.height for t in videos if t.rung)),
        "frameRate": _rate_text(clip.rate),
    })
    for track in videos:
        assert track.rung is not None
        rep = ET.SubElement(video_set, "Representation", {
            "id": track.label, "codecs": track.codec, "bandwidth": str(track.peak_bps),
            "width": str(track.rung.width), "height": str(track.rung.height),
            "sar": f"{track.rung.sar.numerator}:{track.rung.sar.denominator}",
        })
        _segment_template(rep, track, timescale=90_000)
    for track in tracks:
        if track.rung is not None:
            continue
        audio_set = ET.SubElement(period, "AdaptationSet", {
            "id": "1", "contentType": "audio", "mimeType": "audio/mp4",
            "segmentAlignment": "true", "startWithSAP": "1",
        })
        rep = ET.SubElement(audio_set, "Representation", {
            "id": "audio", "codecs": track.codec, "bandwidth": str(track.peak_bps),
            "audioSamplingRate": str(track.sample_rate),
        })
        ET.SubElement(rep, "AudioChannelConfiguration", {
            "schemeIdUri": "urn:mpeg:dash:23003:3:audio_channel_configuration:2011",
            "value": str(track.channels)})
        _segment_template(rep, track, timescale=track.sample_rate)
    ET.indent(mpd)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(mpd, "unicode") + "\n"


def _segment_template(rep: ET.Element, track: TrackFiles, *, timescale: int) -> None:
    stem = track.init.name.removesuffix("_init.mp4")
    template = ET.SubElement(rep, "SegmentTemplate", {
        "timescale": str(timescale), "initialization": track.init.name,
        "media": f"{stem}_$Number%05d$.m4s", "startNumber": "1",
    })
    timeline = ET.SubElement(template, "SegmentTimeline")
    for start, length, repeat in _timeline_runs([s for _, s in track.segments], timescale):
        attributes = {"d": str(length)}
        if start is not None:
            attributes = {"t": str(start), **attributes}
        if repeat:
            attributes["r"] = str(repeat)
        ET.SubElement(timeline, "S", attributes)


def _timeline_runs(durations: list[float], timescale: int) -> list[tuple[int | None, int, int]]:
    """(start or None, duration, repeats) runs; ends are rounded from the running total so
    the timeline never drifts from the media."""
    runs: list[tuple[int | None, int, int]] = []
    elapsed = 0.0
    previous_end = 0
    for seconds in durations:
        elapsed += seconds
        end = round(elapsed * timescale)
        length = end - previous_end
        if runs and runs[-1][1] == length:
            start, _, repeat = runs[-1]
            runs[-1] = (start, length, repeat + 1)
        else:
            runs.append((0 if not runs else None, length, 0))
        previous_end = end
    return runs


def _iso_duration(seconds: float) -> str:
    return f"PT{seconds:.3f}S"


def _rate_text(rate: Fraction) -> str:
    return str(rate.numerator) if rate.denominator == 1 else f"{rate.numerator}/{rate.denominator}"
