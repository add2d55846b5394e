"""One decoding pass encoded into CMAF tracks for ``package_cmaf``: every rung in every
codec asked for (H.264, HEVC, AV1), and an audio ladder (each bitrate, each language).

Each track goes through FFmpeg's hls muxer as a CMAF segmenter (fMP4 init + numbered
``.m4s`` segments, cut at keyframes forced on one segment grid for every track), so the
same files serve HLS and DASH. Keyframes come only from the grid, in every codec, so the
rungs switch cleanly and the segments of all codecs line up.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from av.audio.frame import AudioFrame

from mediaq.actions.avio import (
    AudioEncoderFeed,
    ProgressClock,
    add_audio_stream,
    open_media,
    output_layout,
    reading,
)
from mediaq.actions.base import ActionContext
from mediaq.actions.clip import (
    AAC_CODEC_STRING,
    SourceClip,
    add_h264_stream,
    constant_rate,
    encode_frame,
    frame_count,
    remove_quietly,
    upright_frames_with_audio,
)
from mediaq.actions.encoder_options import encoding_from, video_settings
from mediaq.actions.frames import Scaler
from mediaq.actions.hardware import EncoderChoice, decide_video_encoder
from mediaq.actions.media_output import MediaOutput, OutputGroup, media_outputs
from mediaq.actions.streaming.codec_strings import video_codec_string
from mediaq.actions.streaming.ladder import Rung, segment_starts
from mediaq.actions.streaming.segmenter import (
    AAC_PRIMING,
    TrackFiles,
    first_decode_time,
    open_fmp4_track,
    read_media_playlist,
    track_placement,
)
from mediaq.errors import PermanentError


@dataclass(frozen=True)
class AudioSpec:
    """One rung of the audio ladder: a source stream (a language) at a bit rate."""

    stream_index: int
    language: str
    bitrate: int

    @property
    def label(self) -> str:
        return f"audio_{self.language}_{self.bitrate // 1000}k"


@dataclass(frozen=True)
class CmafTrack:
    """A finished track: its files, and what the manifests say about it."""

    files: TrackFiles
    kind: str  # "video" | "audio"
    codec: str  # h264 | hevc | av1 | aac
    language: str | None = None
    bitrate: int | None = None  # audio: the bit rate asked for
    encoder: str | None = None


@dataclass
class _Track:
    label: str
    output: MediaOutput
    stream: Any
    kind: str
    codec: str
    rung: Rung | None = None
    scale: Scaler | None = None
    feed: AudioEncoderFeed | None = None
    audio: AudioSpec | None = None
    encoder: str | None = None


class CmafEncoder:
    """Decodes the source once and writes every video and audio track as CMAF."""

    def __init__(self, ctx: ActionContext, clip: SourceClip, rungs: list[Rung],
                 codecs: list[str], audio: list[AudioSpec], prefix: str) -> None:
        self.ctx = ctx
        self.clip = clip
        self.rungs = rungs
        self.codecs = codecs
        self.audio = audio
        self.prefix = prefix
        self.params = ctx.params
        self.seconds: int = ctx.params["segment_seconds"]
        self.choices: dict[str, EncoderChoice] = {
            codec: decide_video_encoder(codec, ctx.params["hardware"], ctx) for codec in codecs}
        self.video_offset, self.audio_origin = track_placement(clip, bool(audio))

    def run(self) -> list[CmafTrack]:
        try:
            with media_outputs() as outputs:
                tracks = [self._video_track(outputs, codec, rung)
                          for codec in self.codecs for rung in self.rungs]
                tracks += [self._audio_track(outputs, spec) for spec in self.audio]
                self._pump(tracks)
            return [self._read_back(track) for track in tracks]
        except BaseException:
            remove_quietly(sorted(self.ctx.staging_dir.glob(f"{self.prefix}*")))
            raise

    def _open(self, outputs: OutputGroup, label: str, *, late: bool) -> MediaOutput:
        return open_fmp4_track(outputs, self.ctx, f"{self.prefix}{label}", self.seconds,
                               late=late)

    def _video_track(self, outputs: OutputGroup, codec: str, rung: Rung) -> _Track:
        label = f"{codec}_{rung.label}"
        output = self._open(outputs, label, late=self.video_offset > 0)
        encoder = self.choices[codec].encoder
        # Keyframes come from the segment grid only: a GOP ceiling past the longest
        # segment, no scene-cut keyframes; the rung's cap is its bit rate.
        params = {**self.params, "gop_seconds": 2 * self.seconds, "closed_gop": True}
        settings = video_settings(encoder, encoding_from(params, bitrate=rung.max_bitrate),
                                  self.clip.rate)
        options = dict(settings.options)
        if encoder in ("libx264", "libx265"):
            options["forced-idr"] = "1"

        def create(container: Any) -> Any:
            stream = add_h264_stream(container, encoder, width=rung.width,
                                     height=rung.height, rate=self.clip.rate,
                                     options=options, gop=settings.gop, sar=rung.sar)
            if settings.bit_rate:
                stream.codec_context.bit_rate = settings.bit_rate
            if codec == "hevc":
                stream.codec_tag = "hvc1"  # what Apple players and MSE expect
            return stream

        stream = output.add_stream(create, drain=lambda s: s.encode(None))
        return _Track(label, output, stream, "video", codec, rung=rung,
                      scale=Scaler(rung.width, rung.height), encoder=encoder)

    def _audio_track(self, outputs: OutputGroup, spec: AudioSpec) -> _Track:
        assert self.clip.audio_rate is not None
        rate = self.clip.audio_rate if self.clip.audio_rate in (44_100, 48_000) else 48_000
        output = self._open(outputs, spec.label, late=self._audio_starts_late(rate))
        layout = output_layout(self.clip.audio_channels)
        stream = output.add_stream(lambda container: add_audio_stream(
            container, "aac", rate=rate, layout=layout, bit_rate=spec.bitrate))
        feed = AudioEncoderFeed(stream, origin=self.audio_origin)
        output.drain_on_finish(lambda: feed.push(None))
        return _Track(spec.label, output, stream, "audio", "aac", feed=feed, audio=spec)

    def _audio_starts_late(self, rate: int) -> bool:
        if self.audio_origin is None or self.clip.audio_start is None:
            return False
        return (self.clip.audio_start - self.audio_origin) * rate >= 2 * AAC_PRIMING

    def _pump(self, tracks: list[_Track]) -> None:
        clip, source = self.clip, self.clip.path
        videos = [t for t in tracks if t.kind == "video"]
        by_stream: dict[int, list[_Track]] = {}
        for track in tracks:
            if track.audio is not None:
                by_stream.setdefault(track.audio.stream_index, []).append(track)
        count = frame_count(clip.duration - self.video_offset / clip.rate, clip.rate)
        starts = segment_starts(count, clip.rate, self.seconds)
        clock = ProgressClock(self.ctx, clip.duration, "packaging", count_frames=True)

        def on_audio(index: int, frame: AudioFrame) -> None:
            for track in by_stream.get(index, []):
                assert track.feed is not None
                track.output.mux(track.feed.push(frame))

        with open_media(source) as container, reading(source):
            vstream: Any = container.streams.video[0]
            vstream.codec_context.thread_type = "AUTO"
            sinks = {index: functools.partial(on_audio, index) for index in by_stream}
            frames = upright_frames_with_audio(container, vstream, sinks)
            index = -1
            for index, frame in enumerate(constant_rate(frames, start=0.0, rate=clip.rate,
                                                        count=count)):
                for track in videos:
                    assert track.scale is not None
                    track.output.mux(encode_frame(track.stream, track.scale(frame),
                                                  self.video_offset + index,
                                                  key=index in starts))
                clock.tick(index / float(clip.rate))
            if index < 0:
                raise PermanentError(f"{source.name}: the video stream has no decodable "
                                     f"frame")
            for _ in frames:  # the audio after the last video frame
                pass

    def _read_back(self, track: _Track) -> CmafTrack:
        init, segments = read_media_playlist(track.output.path)
        start = first_decode_time(init, segments[0][0])
        if track.kind == "video":
            files = TrackFiles(label=track.label, rung=track.rung, playlist=track.output.path,
                               init=init, segments=segments,
                               codec=video_codec_string(track.codec, init), start=start)
            return CmafTrack(files, "video", track.codec, encoder=track.encoder)
        audio = track.stream.codec_context
        assert track.audio is not None
        files = TrackFiles(label=track.label, rung=None, playlist=track.output.path, init=init,
                           segments=segments, codec=AAC_CODEC_STRING,
                           sample_rate=int(audio.sample_rate), channels=int(audio.channels),
                           start=start)
        return CmafTrack(files, "audio", "aac", language=track.audio.language,
                         bitrate=track.audio.bitrate)


def audio_ladder(ctx: ActionContext, container_streams: list[tuple[int, str]],
                 languages: list[str] | None, bitrates: list[int]) -> list[AudioSpec]:
    """The audio tracks to make: each language asked for (default: every language the
    source has, its first stream of each) at each bit rate."""
    first_of: dict[str, int] = {}
    for index, language in container_streams:
        first_of.setdefault(language, index)
    wanted = languages or list(first_of)
    missing = [lang for lang in wanted if lang not in first_of]
    if missing:
        have = ", ".join(first_of) or "no audio"
        raise PermanentError(f"{ctx.source_path.name}: no audio in {', '.join(missing)} "
                             f"(the source has: {have})")
    return [AudioSpec(first_of[lang], lang, rate)
            for lang in wanted for rate in sorted(set(bitrates), reverse=True)]


def source_audio_languages(clip: SourceClip) -> list[tuple[int, str]]:
    """(stream index, language) of each audio stream; untagged streams are ``und``."""
    if clip.audio_rate is None:
        return []
    with open_media(clip.path) as container, reading(clip.path):
        return [(s.index, (s.metadata.get("language") or "und").lower())
                for s in container.streams.audio]
