"""The encode loop for ``transcode_video``: one decode of the source feeding a
:class:`RenditionWriter` (scaler, video encoder, maybe audio encoder) per rendition.
"""

from __future__ import annotations

import functools
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from av.container import InputContainer, OutputContainer
from av.video.frame import VideoFrame

from mediaq.actions.avio import (
    AudioEncoderFeed,
    MediaInfo,
    ProgressClock,
    add_audio_stream,
    common_origin,
    open_media,
    output_layout,
    reading,
)
from mediaq.actions.base import ActionContext
from mediaq.actions.color import ToneMapper, tag_stream, tone_mapper_for
from mediaq.actions.encoder_options import decoder_threads
from mediaq.actions.frames import Scaler, Upright, decode_by_stream
from mediaq.actions.media_output import MediaOutput, media_outputs
from mediaq.actions.tracks.bitmaps import BitmapMuxer, carries
from mediaq.actions.tracks.burn import Burner
from mediaq.actions.tracks.subtitles import SubtitleMuxer, SubtitleTrack
from mediaq.actions.video_rendition import MUXER_OF, Rendition

# A source audio track's (sample rate, channels), by stream index.
AudioInputs = dict[int, tuple[int, int]]


class RenditionWriter:
    """One rendition's output: a scaler, a video encoder and (maybe) an audio encoder."""

    def __init__(self, output: MediaOutput, rendition: Rendition, rate: Fraction,
                 time_base: Fraction, audio: AudioInputs, origin: float = 0.0,
                 tone: ToneMapper | None = None,
                 subtitles: dict[int, SubtitleTrack] | None = None) -> None:
        self.rendition = rendition
        self.output = output
        self.scale = Scaler(rendition.width, rendition.height, rendition.settings.pix_fmt)
        self.tone = tone if rendition.color.mode == "tonemap" else None
        self.video = output.add_stream(
            lambda container: self._video_stream(container, rate, time_base),
            drain=lambda stream: stream.encode(None))
        # One encoder per source audio track kept (audio_languages), in the order asked.
        self.audio = {t.index: self._audio_feed(*audio[t.index], origin, t.language)
                      for t in rendition.audio_tracks
                      if rendition.audio_codec and t.index in audio}
        chosen = [subtitles[t.index] for t in rendition.subtitle_tracks
                  if subtitles and t.index in subtitles]
        # Cues are on the source's clock; the output's starts at ``origin``.
        self.burn = (Burner(chosen[0], rendition.width, rendition.height, origin)
                     if rendition.subtitles == "burn" and chosen else None)
        # Kept: text as the container's text codec, pictures copied where its muxer
        # takes them (the others are logged and recorded in tracks.output).
        kept = [t for t in chosen if rendition.subtitles == "keep" and (
            t.is_text or carries(MUXER_OF[rendition.container], t.codec))]
        self.subtitles: list[SubtitleMuxer | BitmapMuxer] = [
            output.add_stream(functools.partial(SubtitleMuxer, track=t, shift=origin))
            if t.is_text else
            output.add_stream(functools.partial(BitmapMuxer, track=t, shift=origin))
            for t in kept]
        for muxer in self.subtitles:
            output.drain_on_finish(functools.partial(muxer.due, None))

    def _video_stream(self, container: OutputContainer, rate: Fraction,
                      time_base: Fraction) -> Any:
        r = self.rendition
        stream: Any = container.add_stream(r.encoder, rate=rate)
        stream.width, stream.height = r.width, r.height
        stream.pix_fmt = r.settings.pix_fmt
        tag_stream(stream, r.color)
        stream.codec_context.time_base = time_base
        stream.codec_context.thread_type = "FRAME"
        stream.options = dict(r.settings.options)
        if r.settings.bit_rate:
            stream.codec_context.bit_rate = r.settings.bit_rate
        if r.settings.gop:
            stream.codec_context.gop_size = r.settings.gop
        if r.codec == "hevc":
            stream.codec_tag = "hvc1"  # what Apple players expect in MP4
        return stream

    def _audio_feed(self, rate: int, channels: int, origin: float,
                    language: str) -> AudioEncoderFeed:
        r = self.rendition
        assert r.audio_codec is not None
        codec = r.audio_codec
        if codec == "libopus":
            rate = 48_000
        stream = self.output.add_stream(
            lambda container: add_audio_stream(container, codec, rate=rate,
                                               layout=output_layout(channels),
                                               bit_rate=r.audio_bitrate))
        if language != "und":
            stream.metadata["language"] = language
        # Placed on the source's clock from the common origin: audio that starts after
        # the video keeps its delay (a positive first pts, an edit list in MP4).
        feed = AudioEncoderFeed(stream, origin=origin)
        self.output.drain_on_finish(lambda: feed.push(None))
        return feed

    def encode_video(self, frame: VideoFrame, seconds: float = 0.0) -> None:
        """Encode ``frame``, at ``seconds`` on the output's clock."""
        if self.tone is not None:
            frame = self.tone(frame)
        scaled = self.scale.fresh(frame)
        if self.burn is not None:
            scaled = self.burn.apply(scaled, seconds)
        if self.rendition.settings.pix_fmt != "yuv420p":
            scaled = scaled.reformat(format=self.rendition.settings.pix_fmt)
        for muxer in self.subtitles:
            self.output.mux(muxer.due(seconds))
        self.output.mux(self.video.encode(scaled))

    def encode_audio(self, frame: av.AudioFrame, index: int) -> None:
        """Encode ``frame`` of the source's audio stream ``index`` (if it is kept)."""
        feed = self.audio.get(index)
        if feed is not None:
            self.output.mux(feed.push(frame))


def encode_ladder(ctx: ActionContext, info: MediaInfo,
                  targets: list[tuple[Rendition, Path]], rate: Fraction,
                  stage: str = "encoding",
                  subtitles: dict[int, SubtitleTrack] | None = None) -> float:
    """Decode ``ctx.source_path`` once, feeding every target's encoders; the source time
    the outputs start at (their origin)."""
    source = ctx.source_path
    with open_media(source) as container, reading(source), media_outputs() as outputs:
        vstream: Any = container.streams.video[0]
        vstream.codec_context.thread_type = "AUTO"
        vstream.codec_context.thread_count = decoder_threads(  # memory (issue 22)
            vstream.codec_context.width, vstream.codec_context.height)
        wanted = {t.index for rendition, _ in targets if rendition.audio_codec
                  for t in rendition.audio_tracks}
        astreams = [s for s in container.streams.audio if s.index in wanted]
        audio = {s.index: (s.codec_context.sample_rate, s.codec_context.channels)
                 for s in astreams}
        # Outputs start at zero, whatever the source's start time (MPEG-TS starts at
        # 1.4 s), and keep the streams' offsets from each other: the earliest start of
        # the streams written is subtracted from all of them, not each stream's own.
        origin = common_origin(vstream, *astreams)
        tone = tone_mapper_for([rendition.color for rendition, _ in targets])
        writers = [
            RenditionWriter(outputs.open(path, format=MUXER_OF[rendition.container],
                                         options=_muxer_options(rendition.container)),
                            rendition, rate, vstream.time_base, audio, origin, tone,
                            subtitles)
            for rendition, path in targets
        ]
        _pump(ctx, container, vstream, astreams, writers, info.duration, origin, stage)
    return origin


def _muxer_options(container: str) -> dict[str, str]:
    # MP4: index first, so players start before the download ends.
    return {"movflags": "+faststart"} if container == "mp4" else {}


def _pump(ctx: ActionContext, container: InputContainer, vstream: Any, astreams: list[Any],
          writers: list[RenditionWriter], duration: float, origin: float,
          stage: str) -> None:
    clock = ProgressClock(ctx, duration, stage, count_frames=True)
    upright: Upright | None = None
    streams = [vstream, *astreams]
    first_pts: int | None = None
    time_base = vstream.time_base
    for index, frame in decode_by_stream(container, streams):
        if isinstance(frame, VideoFrame):
            if upright is None:
                upright = Upright(vstream, frame)
            # Shifted by the common origin (the audio is shifted alike in its feed); never
            # before the first frame, which would give the output negative timestamps.
            if first_pts is None:
                first_pts = min(round(origin / vstream.time_base), frame.pts or 0)
            if frame.pts is not None:
                frame.pts -= first_pts
            for shaped in upright.apply(frame):
                seconds = float(shaped.pts * time_base) if shaped.pts is not None else 0.0
                for writer in writers:
                    writer.encode_video(shaped, seconds)
            clock.tick(frame.time)
        else:
            for writer in writers:
                writer.encode_audio(frame, index)
    if upright is not None:
        for shaped in upright.apply(None):
            seconds = float(shaped.pts * time_base) if shaped.pts is not None else 0.0
            for writer in writers:
                writer.encode_video(shaped, seconds)


