"""The encode loop for ``transcode_video``: one decode of the source feeding a
:class:`RenditionWriter` (scaler, video encoder, maybe audio encoder) per rendition.
"""

from __future__ import annotations

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
from mediaq.actions.frames import Scaler, Upright, decode_tolerantly
from mediaq.actions.media_output import MediaOutput, media_outputs
from mediaq.actions.video_rendition import Rendition


class RenditionWriter:
    """One rendition's output: a scaler, a video encoder and (maybe) an audio encoder."""

    def __init__(self, output: MediaOutput, rendition: Rendition, rate: Fraction,
                 time_base: Fraction, audio_rate: int, audio_channels: int,
                 origin: float = 0.0, tone: ToneMapper | None = None) -> None:
        self.rendition = rendition
        self.output = output
        self.scale = Scaler(rendition.width, rendition.height, rendition.settings.pix_fmt)
        self.tone = tone if rendition.color.mode == "tonemap" else None
        self.video = output.add_stream(
            lambda container: self._video_stream(container, rate, time_base),
            drain=lambda stream: stream.encode(None))
        self.audio = (self._audio_feed(audio_rate, audio_channels, origin)
                      if rendition.audio_codec else None)

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

    def _audio_feed(self, rate: int, channels: int, origin: float) -> AudioEncoderFeed:
        r = self.rendition
        assert r.audio_codec is not None
        codec = r.audio_codec
        if codec == "libopus":
            rate = 48_000
        stream = self.output.add_stream(
            lambda container: add_audio_stream(container, codec, rate=rate,
                                               layout=output_layout(channels),
                                               bit_rate=r.audio_bitrate))
        # Placed on the source's clock from the common origin: audio that starts after
        # the video keeps its delay (a positive first pts, an edit list in MP4).
        feed = AudioEncoderFeed(stream, origin=origin)
        self.output.drain_on_finish(lambda: feed.push(None))
        return feed

    def encode_video(self, frame: VideoFrame) -> None:
        if self.tone is not None:
            frame = self.tone(frame)
        scaled = self.scale.fresh(frame)
        if self.rendition.settings.pix_fmt != "yuv420p":
            scaled = scaled.reformat(format=self.rendition.settings.pix_fmt)
        self.output.mux(self.video.encode(scaled))

    def encode_audio(self, frame: av.AudioFrame) -> None:
        if self.audio is not None:
            self.output.mux(self.audio.push(frame))


def encode_ladder(ctx: ActionContext, info: MediaInfo,
                  targets: list[tuple[Rendition, Path]], rate: Fraction,
                  stage: str = "encoding") -> None:
    """Decode ``ctx.source_path`` once, feeding every target's encoders."""
    source = ctx.source_path
    with open_media(source) as container, reading(source), media_outputs() as outputs:
        vstream: Any = container.streams.video[0]
        vstream.codec_context.thread_type = "AUTO"
        vstream.codec_context.thread_count = decoder_threads(  # memory (issue 22)
            vstream.codec_context.width, vstream.codec_context.height)
        astream = container.streams.audio[0] if container.streams.audio else None
        audio_rate = astream.codec_context.sample_rate if astream else 48_000
        audio_channels = astream.codec_context.channels if astream else 2
        with_audio = any(rendition.audio_codec for rendition, _ in targets)
        # Outputs start at zero, whatever the source's start time (MPEG-TS starts at
        # 1.4 s), and keep the streams' offsets from each other: the earliest start of
        # the streams written is subtracted from all of them, not each stream's own.
        origin = common_origin(vstream, astream if with_audio else None)
        tone = tone_mapper_for([rendition.color for rendition, _ in targets])
        writers = [
            RenditionWriter(outputs.open(path, format=rendition.container,
                                         options=_muxer_options(rendition.container)),
                            rendition, rate, vstream.time_base, audio_rate, audio_channels,
                            origin, tone)
            for rendition, path in targets
        ]
        _pump(ctx, container, vstream, astream, writers, info.duration, origin, stage)


def _muxer_options(container: str) -> dict[str, str]:
    # MP4: index first, so players start before the download ends.
    return {"movflags": "+faststart"} if container == "mp4" else {}


def _pump(ctx: ActionContext, container: InputContainer, vstream: Any, astream: Any,
          writers: list[RenditionWriter], duration: float, origin: float,
          stage: str) -> None:
    clock = ProgressClock(ctx, duration, stage, count_frames=True)
    upright: Upright | None = None
    streams = [s for s in (vstream, astream) if s is not None]
    first_pts: int | None = None
    for frame in decode_tolerantly(container, streams):
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
                for writer in writers:
                    writer.encode_video(shaped)
            clock.tick(frame.time)
        else:
            for writer in writers:
                writer.encode_audio(frame)
    if upright is not None:
        for shaped in upright.apply(None):
            for writer in writers:
                writer.encode_video(shaped)


