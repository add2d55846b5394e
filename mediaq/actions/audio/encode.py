"""Encoding decoded audio into output files, gapless and starting at zero.

Decoded frames go through a FIFO to each encoder in whole frames
(:class:`avio.AudioEncoderFeed`), so an output lasts exactly as long as its source.
One decoding pass can feed several encoders (:func:`encode_source`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import av.error
from av.audio.frame import AudioFrame
from av.container import OutputContainer

from mediaq.actions.audio.codecs import (
    CODECS,
    checked_bit_rate,
    encoder_sample_format,
    is_deep,
    muxer_options,
    supported_rate,
)
from mediaq.actions.audio.source import decode_audio, first_audio_stream, read_tags
from mediaq.actions.avio import (
    AudioEncoderFeed,
    AudioInfo,
    MediaInfo,
    ProgressClock,
    add_audio_stream,
    one_line,
    open_media,
    output_layout,
    reading,
)
from mediaq.actions.base import ActionContext
from mediaq.actions.media_output import MediaOutput, media_outputs
from mediaq.errors import PermanentError


@dataclass(frozen=True)
class EncodePlan:
    """One encoded output: codec, format and where it goes."""

    codec: str  # a key of CODECS
    encoder: str
    muxer: str
    sample_rate: int
    channels: int
    sample_format: str
    bit_rate: int | None
    path: Path

    @property
    def format(self) -> str:
        return self.path.suffix.lstrip(".")


def plan_encode(ctx: ActionContext, audio: AudioInfo, codec: str, *, suffix: str = "",
                sample_rate: int | None = None, channels: int | None = None,
                bitrate: str | int | None = None) -> EncodePlan:
    """Settings for encoding ``audio`` as ``codec``: the asked rate (or the source's)
    snapped to one the encoder supports; mono stays mono, anything else becomes stereo."""
    spec = CODECS[codec]
    deep = is_deep(audio)
    encoder = "pcm_s24le" if codec == "wav" and deep else spec.encoder
    out_channels = channels or (1 if audio.channels == 1 else 2)
    return EncodePlan(
        codec=codec, encoder=encoder, muxer=spec.muxer,
        sample_rate=supported_rate(encoder, sample_rate or audio.sample_rate),
        channels=out_channels,
        sample_format=encoder_sample_format(encoder, deep=deep),
        bit_rate=checked_bit_rate(ctx.source_path.name, codec, bitrate, out_channels),
        path=ctx.output_path(f"{ctx.source_path.stem}{suffix}.{spec.extension}"),
    )




class EncodedOutput:
    """One output file with one audio encoder, fed decoded frames of any format."""

    def __init__(self, output: MediaOutput, plan: EncodePlan, tags: dict[str, str],
                 source_name: str) -> None:
        self.plan = plan
        self.output = output
        output.set_metadata(tags)
        stream = output.add_stream(self._add_encoder_stream)
        self._open_encoder(stream, source_name)
        self.feed = AudioEncoderFeed(stream)
        output.drain_on_finish(lambda: self.feed.push(None))

    def _add_encoder_stream(self, container: OutputContainer) -> Any:
        plan = self.plan
        stream = add_audio_stream(container, plan.encoder, rate=plan.sample_rate,
                                  layout=output_layout(plan.channels), bit_rate=plan.bit_rate)
        stream.codec_context.format = plan.sample_format
        return stream

    def _open_encoder(self, stream: Any, source_name: str) -> None:
        """Open now, so impossible settings fail as such rather than as a decoding error."""
        try:
            stream.codec_context.open()
        except (av.error.FFmpegError, ValueError) as exc:
            plan = self.plan
            raise PermanentError(
                f"{source_name}: cannot encode {plan.codec} at {plan.sample_rate} Hz, "
                f"{plan.channels} channel(s) ({one_line(exc)})") from None

    @property
    def seconds_written(self) -> float:
        return self.feed.samples_out / self.plan.sample_rate

    def write(self, frame: AudioFrame) -> None:
        self.output.mux(self.feed.push(frame))


def describe_output(plan: EncodePlan, seconds: float) -> dict[str, Any]:
    size = plan.path.stat().st_size
    return {"format": plan.format, "codec": plan.codec, "duration": round(seconds, 3),
            "sample_rate": plan.sample_rate, "channels": plan.channels,
            "bit_rate": round(size * 8 / seconds) if seconds > 0 else None}


@contextlib.contextmanager
def encoded_outputs(plans: list[EncodePlan], tags: dict[str, str],
                    source_name: str) -> Iterator[list[EncodedOutput]]:
    """One output per plan, all finished when the block ends, or all deleted on any
    failure (cancellation too)."""
    with media_outputs() as group:
        yield [EncodedOutput(group.open(plan.path, format=plan.muxer,
                                        options=muxer_options(plan.muxer)),
                             plan, tags, source_name)
               for plan in plans]


def encode_source(ctx: ActionContext, info: MediaInfo, plans: list[EncodePlan]) -> list[float]:
    """Decode the source's audio once, feeding every plan's encoder; seconds written each."""
    source = ctx.source_path
    with open_media(source) as container, reading(source):
        stream = first_audio_stream(container)
        tags = read_tags(container, stream)
        clock = ProgressClock(ctx, info.duration, "encoding")
        with encoded_outputs(plans, tags, source.name) as outputs:
            decoded = False
            for frame in decode_audio(container, stream, clock):
                decoded = True
                for output in outputs:
                    output.write(frame)
            if not decoded:
                # Else no output file is ever opened, and describing it fails as a crash.
                raise PermanentError(f"{source.name}: the audio stream holds no audio data")
        return [output.seconds_written for output in outputs]

