"""One decoding pass cut into CMAF tracks: every rung, and each audio track kept once
(the first, or every language of ``audio_languages``, in that order).

Each track goes through FFmpeg's hls muxer as a CMAF segmenter: fMP4 init + numbered
``.m4s`` segments cut at keyframes that are forced on the segment grid.
"""

from __future__ import annotations

import dataclasses
import math
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from av.audio.frame import AudioFrame

from mediaq.actions.avio import (
    AudioEncoderFeed,
    ProgressClock,
    add_audio_stream,
    open_media,
    output_layout,
    parse_bitrate,
    reading,
    stream_start,
)
from mediaq.actions.base import ActionContext, OutputFile
from mediaq.actions.clip import (
    AAC_CODEC_STRING,
    SourceClip,
    add_h264_stream,
    constant_rate,
    encode_frame,
    frame_count,
    inspect_clip,
    remove_quietly,
    safe_stem,
    upright_frames_with_audio,
)
from mediaq.actions.color import sdr_frames
from mediaq.actions.encoder_options import encoding_from, video_settings
from mediaq.actions.frames import Scaler
from mediaq.actions.hardware import decide_video_encoder
from mediaq.actions.media_output import MediaOutput, OutputGroup, media_outputs
from mediaq.actions.pertitle import SettingsFor, ladder_choices
from mediaq.actions.streaming.ladder import Rung, plan_ladder, segment_starts
from mediaq.actions.tracks.languages import ChosenTrack, choose_tracks, tracks_of
from mediaq.errors import PermanentError

AAC_PRIMING = 1024  # samples FFmpeg's AAC encoder puts before the first one


@dataclass
class SegmentedTrack:
    """One track cut into fMP4 segments by an hls muxer."""

    label: str
    playlist: Path
    output: MediaOutput
    stream: Any
    rung: Rung | None = None  # None: the audio track
    audio: AudioEncoderFeed | None = None
    scale: Scaler | None = None  # video tracks
    source: ChosenTrack | None = None  # audio tracks: the source stream it encodes


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
    start: float = 0.0  # seconds: the first segment's decode time (its tfdt)
    language: str | None = None  # audio tracks

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


def open_fmp4_track(outputs: OutputGroup, ctx: ActionContext, name: str, seconds: float,
                    *, late: bool = False) -> MediaOutput:
    """An hls muxer for one track writing ``name.m3u8``, ``name_init.mp4`` and
    ``name_00001.m4s``…; ``late``: the track's first packet has a positive timestamp (it
    starts after the other track), which the segments' tfdt must carry."""
    playlist = ctx.output_path(f"{name}.m3u8")
    # The segment name is a printf pattern: a literal % in the folder must be doubled.
    pattern = str(playlist.parent).replace("%", "%%") + f"/{name}_%05d.m4s"
    options = {
        "hls_time": str(seconds), "hls_segment_type": "fmp4",
        "hls_playlist_type": "vod", "hls_list_size": "0", "start_number": "1",
        "hls_flags": "independent_segments", "hls_segment_filename": pattern,
        "hls_fmp4_init_filename": f"{name}_init.mp4",
        # Each track has its own muxer: shifting each one's negative timestamps (the
        # B-frame delay, the AAC priming) to zero would shift them by different amounts
        # and put audio and video out of sync. An edit list in each init hides them.
        "avoid_negative_ts": "disabled",
    }
    if late:
        # Left alone, the fragmenting MP4 muxer starts tfdt at zero and says where the
        # track starts only with an empty edit in the init, which MSE players (hls.js,
        # dash.js) ignore. frag_discont makes the first tfdt the first timestamp.
        options["hls_segment_options"] = "movflags=+frag_discont"
    return outputs.open(playlist, format="hls", options=options)


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
        self.choice = decide_video_encoder(ctx.params["codec"], ctx.params["hardware"], ctx)
        self.encoder = self.choice.encoder
        self.audio_tracks = chosen_audio(ctx, clip) if ctx.params["audio"] else []
        self.with_audio = bool(self.audio_tracks)
        starts = [t.start for t in self.audio_tracks if t.start is not None]
        # The earliest audio track sets the common origin with the video (lip sync).
        placed = dataclasses.replace(clip, audio_start=min(starts, default=None))
        self.video_offset, self.audio_origin = track_placement(placed, self.with_audio)

    def run(self) -> list[TrackFiles]:
        """Encode, segment and read back every track (video rungs first, then audio)."""
        try:
            with media_outputs() as outputs:
                tracks = [self._video_track(outputs, rung) for rung in self.rungs]
                tracks += [self._audio_track(outputs, t) for t in self.audio_tracks]
                self._pump(tracks)
            return [self._read_back(track) for track in tracks]
        except BaseException:
            # The group deleted the playlists; the init and media segments the hls
            # muxer wrote beside them go here.
            remove_quietly(sorted(self.ctx.staging_dir.glob(f"{self.prefix}*")))
            raise

    def _open(self, outputs: OutputGroup, label: str, *, late: bool = False) -> MediaOutput:
        return open_fmp4_track(outputs, self.ctx, f"{self.prefix}{label}", self.seconds,
                               late=late)

    def _video_track(self, outputs: OutputGroup, rung: Rung) -> SegmentedTrack:
        output = self._open(outputs, rung.label, late=self.video_offset > 0)
        per_segment = math.ceil(self.seconds * self.clip.rate)
        # Keyframes come from segment_starts(); the encoder must add none of its own
        # (no scene cuts, and a GOP ceiling past the longest segment). The rung's cap is
        # its ceiling (capped_crf) or its target (cbr).
        params = {**self.params, "gop_seconds": float(2 * per_segment / self.clip.rate),
                  "closed_gop": True}
        if rung.crf is not None:
            params["crf"] = rung.crf  # ladder: auto
        settings = video_settings(self.encoder,
                                  encoding_from(params, bitrate=rung.max_bitrate),
                                  self.clip.rate)
        options = {**settings.options, "forced-idr": "1"}

        def create(container: Any) -> Any:
            stream = add_h264_stream(container, self.encoder, width=rung.width,
                                     height=rung.height, rate=self.clip.rate,
                                     options=options, gop=settings.gop, sar=rung.sar)
            if settings.bit_rate:
                stream.codec_context.bit_rate = settings.bit_rate
            return stream

        stream = output.add_stream(create, drain=lambda stream: stream.encode(None))
        return SegmentedTrack(rung.label, output.path, output, stream, rung=rung,
                              scale=Scaler(rung.width, rung.height))

    def _audio_track(self, outputs: OutputGroup, source: AudioSource) -> SegmentedTrack:
        rate = source.rate if source.rate in (44_100, 48_000) else 48_000
        output = self._open(outputs, source.label, late=self._audio_starts_late(source, rate))
        layout = output_layout(source.channels)
        bit_rate = parse_bitrate(self.params["audio_bitrate"])
        stream = output.add_stream(lambda container: add_audio_stream(
            container, "aac", rate=rate, layout=layout, bit_rate=bit_rate))
        feed = AudioEncoderFeed(stream, origin=self.audio_origin)
        output.drain_on_finish(lambda: feed.push(None))
        return SegmentedTrack(source.label, output.path, output, stream, audio=feed,
                              source=source.track)

    def _audio_starts_late(self, source: AudioSource, rate: int) -> bool:
        """Whether the audio's first packet, the encoder's priming (1024 samples before
        the first sample), still has a positive timestamp; a frame to spare, as the first
        decoded frame may start a little off the stream's start time."""
        if self.audio_origin is None or source.start is None:
            return False
        return (source.start - self.audio_origin) * rate >= 2 * AAC_PRIMING

    def _pump(self, tracks: list[SegmentedTrack]) -> None:
        clip, source = self.clip, self.clip.path
        videos = [t for t in tracks if t.rung is not None]
        sinks = {t.source.index: _sink(t) for t in tracks
                 if t.audio is not None and t.source is not None}
        offset = self.video_offset
        count = frame_count(clip.duration - offset / clip.rate, clip.rate)
        starts = segment_starts(count, clip.rate, self.seconds)
        clock = ProgressClock(self.ctx, clip.duration, "packaging", count_frames=True)

        with open_media(source) as container, reading(source):
            vstream: Any = container.streams.video[0]
            vstream.codec_context.thread_type = "AUTO"
            frames = upright_frames_with_audio(container, vstream, sinks)
            frames = sdr_frames(vstream, frames)  # PQ/HLG sources: tone-mapped (color.py)
            index = -1
            for index, frame in enumerate(constant_rate(frames, start=0.0, rate=clip.rate,
                                                        count=count)):
                for track in videos:
                    assert track.scale is not None
                    track.output.mux(encode_frame(track.stream, track.scale(frame),
                                                  offset + index, key=index in starts))
                clock.tick(index / float(clip.rate))
            if index < 0:
                raise PermanentError(f"{source.name}: the video stream has no decodable "
                                     f"frame")
            for _ in frames:  # the audio after the last video frame
                pass

    def _read_back(self, track: SegmentedTrack) -> TrackFiles:
        init, segments = read_media_playlist(track.playlist)
        start = first_decode_time(init, segments[0][0])
        if track.rung is not None:
            return TrackFiles(label=track.label, rung=track.rung, playlist=track.playlist,
                              init=init, segments=segments, codec=avc_codec_string(init),
                              start=start)
        audio = track.stream.codec_context
        return TrackFiles(label=track.label, rung=None, playlist=track.playlist, init=init,
                          segments=segments, codec=AAC_CODEC_STRING,
                          sample_rate=int(audio.sample_rate), channels=int(audio.channels),
                          start=start, language=track.source.language if track.source else None)


@dataclass(frozen=True)
class AudioSource:
    """A source audio track to package: where it starts, its rate and its track name."""

    track: ChosenTrack
    label: str  # "audio" (the first track, no languages asked) or "audio_{language}"
    rate: int
    channels: int
    start: float | None

    @property
    def language(self) -> str:
        return self.track.language


def chosen_audio(ctx: ActionContext, clip: SourceClip) -> list[AudioSource]:
    """The audio tracks to package: ``audio_languages`` in that order (every track of
    each), else the source's first; none when the source has no audio."""
    if clip.audio_rate is None:
        return []
    with open_media(clip.path) as container, reading(clip.path):
        streams = list(container.streams.audio)
        asked = ctx.params.get("audio_languages")
        chosen, missing = choose_tracks(clip.path, "audio", tracks_of(streams), asked)
        if missing:
            ctx.log(f"{clip.path.name}: no audio in {', '.join(missing)}; packaged "
                    f"{', '.join(t.language for t in chosen)}")
        if not asked:
            chosen = chosen[:1]
        labels: dict[str, int] = {}
        sources = []
        for track in chosen:
            stream: Any = container.streams[track.index]
            labels[track.language] = labels.get(track.language, 0) + 1
            label = "audio" if not asked else f"audio_{track.language}" + (
                f"_{labels[track.language]}" if labels[track.language] > 1 else "")
            sources.append(AudioSource(track, label, int(stream.codec_context.sample_rate),
                                       int(stream.codec_context.channels),
                                       stream_start(stream)))
    return sources


def _sink(track: SegmentedTrack) -> Callable[[AudioFrame], None]:
    def push(frame: AudioFrame) -> None:
        assert track.audio is not None
        track.output.mux(track.audio.push(frame))
    return push


def track_placement(clip: SourceClip, with_audio: bool) -> tuple[int, float | None]:
    """Where the tracks start, keeping the source's offset between its streams (lip
    sync): (the video's first frame number, the source time the audio is counted from).

    The earliest stream starts at zero. The video starts on its own frame grid, at the
    whole frame at or before its offset; the audio is placed from the same origin so
    the offset between them stays exact to the sample (the audio loses the fraction of
    a frame it has before that, when it starts first)."""
    if not with_audio or clip.video_start is None or clip.audio_start is None:
        return 0, None
    origin = min(clip.video_start, clip.audio_start)
    frames = math.floor((clip.video_start - origin) * clip.rate + 1e-6)
    return frames, clip.video_start - float(frames / clip.rate)


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


def mp4_boxes(data: bytes, path: tuple[bytes, ...]) -> bytes | None:
    """The body of the first box at ``path`` (e.g. moov, trak, mdia, mdhd) in ``data``."""
    at, end = 0, len(data)
    for index, kind in enumerate(path):
        while at + 8 <= end:
            size, name = struct.unpack(">I4s", data[at:at + 8])
            header = 8
            if size == 1 and at + 16 <= end:
                size, header = struct.unpack(">Q", data[at + 8:at + 16])[0], 16
            elif size == 0:
                size = end - at
            if size < header:
                return None
            if name == kind:
                if index == len(path) - 1:
                    return data[at + header:at + size]
                at, end = at + header, at + size
                break
            at += size
        else:
            return None
    return None


def first_decode_time(init: Path, segment: Path) -> float:
    """Seconds of a track's first sample: its first segment's tfdt (baseMediaDecodeTime)
    over the init's media timescale; 0.0 when either box is missing."""
    mdhd = mp4_boxes(init.read_bytes(), (b"moov", b"trak", b"mdia", b"mdhd"))
    tfdt = mp4_boxes(segment.read_bytes(), (b"moof", b"traf", b"tfdt"))
    if not mdhd or not tfdt:
        return 0.0
    scale = struct.unpack(">I", mdhd[20:24] if mdhd[0] == 1 else mdhd[12:16])[0]
    base = struct.unpack(">Q", tfdt[4:12])[0] if tfdt[0] == 1 else struct.unpack(
        ">I", tfdt[4:8])[0]
    return base / scale if scale else 0.0


def avc_codec_string(init: Path) -> str:
    """``avc1.PPCCLL`` (profile, constraints, level) from the avcC box of an init segment."""
    data = init.read_bytes()
    at = data.find(b"avcC")
    if at < 0 or len(data) < at + 8:
        return "avc1.640028"  # High@4.0: what players assume when told nothing better
    profile, constraints, level = data[at + 5], data[at + 6], data[at + 7]
    return f"avc1.{profile:02x}{constraints:02x}{level:02x}"


def package_start(clip: SourceClip, tracks: list[TrackFiles]) -> float:
    """The source time a package's clock starts at: where its first video frame was on
    the source's clock, less where that frame sits in the package (its tfdt)."""
    video = next(t for t in tracks if t.rung is not None)
    return (clip.video_start or 0.0) - video.start


def track_outputs(track: TrackFiles, *, keep_playlist: bool) -> list[OutputFile]:
    meta = {"rendition": track.label}
    files = [OutputFile(track.init, role="sidecar", meta={**meta, "kind": "init"})]
    files += [OutputFile(path, role="sidecar", meta={**meta, "kind": "segment",
                                                     "duration": round(seconds, 3)})
              for path, seconds in track.segments]
    if keep_playlist:
        files.insert(0, OutputFile(track.playlist, role="sidecar",
                                   meta={**meta, "kind": "playlist"}))
    return files


def track_summary(track: TrackFiles) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "name": track.label, "codecs": track.codec, "segments": len(track.segments),
        "duration": round(track.duration, 3), "peak_bitrate": track.peak_bps,
        "average_bitrate": track.average_bps,
    }
    if track.rung is not None:
        summary.update(width=track.rung.width, height=track.rung.height,
                       max_bitrate=track.rung.max_bitrate)
        if track.rung.per_title is not None:
            summary["per_title"] = track.rung.per_title
    return summary


def segment_ladder(ctx: ActionContext,
                   kind: str) -> tuple[SourceClip, list[TrackFiles], dict[str, Any]]:
    """The clip, its tracks, and the hardware decision (for the step's output_data)."""
    clip = inspect_clip(ctx.source_path)
    rungs = plan_ladder(ctx.params["renditions"], clip)
    rungs = per_title_rungs(ctx, clip, rungs)
    prefix = f"{safe_stem(ctx.source_path)}_{kind}_"
    segmenter = LadderSegmenter(ctx, clip, rungs, prefix)
    return clip, segmenter.run(), segmenter.choice.as_data()


def per_title_rungs(ctx: ActionContext, clip: SourceClip, rungs: list[Rung]) -> list[Rung]:
    """``ladder: auto``: each rung with the CRF a probe chose for it (pertitle.py)."""
    if ctx.params.get("ladder") != "auto":
        return rungs
    encoder = decide_video_encoder(ctx.params["codec"], ctx.params["hardware"], ctx).encoder

    def settings_for(cap: int) -> SettingsFor:
        def at(crf: int) -> tuple[dict[str, str], int | None]:
            encoding = encoding_from({**ctx.params, "crf": crf}, bitrate=cap)
            settings = video_settings(encoder, encoding, clip.rate)
            return settings.options, settings.bit_rate
        return at

    sizes = [(r.width, r.height, settings_for(r.max_bitrate)) for r in rungs]
    choices = ladder_choices(ctx, sizes, ctx.params["codec"], encoder)
    return [dataclasses.replace(r, crf=c["crf"], per_title=c) if c else r
            for r, c in zip(rungs, choices, strict=True)]
