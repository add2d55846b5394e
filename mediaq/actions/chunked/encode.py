"""``encode_chunk`` (one chunk of a split_video plan) and ``encode_audio_track``.

A chunk is decoded from the keyframe it starts at and exactly its frames (by
presentation time) are encoded, with their source timestamps made relative to the
chunk's first frame: the stitch puts them back. Every chunk uses the same encoder and
settings, closed GOPs and an IDR first frame, so the chunks' bitstreams share one set of
parameter sets and concatenate as they are. Rate control is constant quality (CRF,
optionally capped): it carries no state from frame to frame that a seam would reset,
so quality does not pulse at chunk boundaries the way a bit-rate target (ABR, CBR, two
passes per chunk) would.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

from av.video.frame import VideoFrame

from mediaq.actions import action
from mediaq.actions.avio import (
    BITRATE_SCHEMA,
    AudioEncoderFeed,
    add_audio_stream,
    common_origin,
    open_media,
    output_layout,
    parse_bitrate,
    reading,
)
from mediaq.actions.base import ActionContext, ActionResult, OutputFile
from mediaq.actions.encoder_options import SPEEDS, Encoding, video_settings
from mediaq.actions.frames import Scaler
from mediaq.actions.hardware import decide_video_encoder
from mediaq.actions.media_output import media_output
from mediaq.errors import PermanentError, TransientError

CHUNK_CODECS = ["h264", "hevc", "av1"]
# Fields of one split_video item (merged into the step's parameters by for_each).
CHUNK_FIELDS: dict[str, Any] = {
    "chunk_index": {"type": "integer", "minimum": 0},
    "start": {"type": "number", "minimum": 0},
    "end": {"type": "number", "minimum": 0},
    "start_frame": {"type": "integer", "minimum": 0},
    "frame_count": {"type": "integer", "minimum": 1},
    "start_pts": {"type": "integer"},
    "end_pts": {"type": ["integer", "null"]},
}
ENCODE_CHUNK_SCHEMA: dict[str, Any] = {
    "properties": {
        **CHUNK_FIELDS,
        "codec": {"enum": CHUNK_CODECS, "default": "h264"},
        "crf": {"type": "integer", "minimum": 0, "maximum": 63, "default": 23},
        "speed": {"enum": SPEEDS, "default": "veryfast"},
        # A ceiling makes it capped CRF (VBV); still constant quality below it.
        "maxrate": BITRATE_SCHEMA,
        "bufsize": BITRATE_SCHEMA,
        "gop_seconds": {"type": "number", "minimum": 0.1, "maximum": 20, "default": 2},
        "width": {"type": "integer", "minimum": 16, "maximum": 8192},
        "height": {"type": "integer", "minimum": 16, "maximum": 8192},
        # Chunks encoded on different hosts must use one encoder: software by default.
        "hardware": {"enum": ["never", "nvenc", "qsv"], "default": "never"},
        # For tests and drills: these chunks fail (transiently) on their first attempt.
        "fail_first_attempt": {"type": "array", "items": {"type": "integer", "minimum": 0}},
    },
    "required": ["chunk_index", "frame_count", "start_pts"],
}
MP4 = {"movflags": "+faststart"}


def chunk_rate(stream: Any) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate or 25
    return Fraction(rate).limit_denominator(1001)


@action("encode_chunk", ENCODE_CHUNK_SCHEMA)
def encode_chunk(ctx: ActionContext) -> ActionResult:
    """Encode one chunk of a split_video plan: exactly its frames, closed GOPs, IDR first."""
    params = ctx.params
    index = params["chunk_index"]
    if index in params.get("fail_first_attempt", []) and ctx.attempt == 0:
        raise TransientError(f"chunk {index}: injected failure (fail_first_attempt)")
    source = ctx.source_path
    choice = decide_video_encoder(params["codec"], params["hardware"], ctx)
    path = ctx.output_path(f"{source.stem}_chunk{index:05d}.mp4")
    with open_media(source) as container, reading(source):
        stream: Any = container.streams.video[0]
        stream.codec_context.thread_type = "AUTO"
        rate = chunk_rate(stream)
        encoding = Encoding(rate_control="capped_crf" if params.get("maxrate") else "crf",
                            crf=params["crf"], speed=params["speed"],
                            maxrate=parse_bitrate(params.get("maxrate")),
                            bufsize=parse_bitrate(params.get("bufsize")),
                            gop_seconds=params["gop_seconds"], closed_gop=True)
        settings = video_settings(choice.encoder, encoding, rate)
        width = params.get("width") or stream.codec_context.width
        height = params.get("height") or stream.codec_context.height
        with media_output(path, format="mp4", options=MP4) as out:
            def make(c: Any) -> Any:
                video: Any = c.add_stream(choice.encoder, rate=rate)
                video.width, video.height = width, height
                video.pix_fmt = settings.pix_fmt
                video.codec_context.time_base = stream.time_base
                video.time_base = stream.time_base
                video.codec_context.thread_type = "FRAME"
                video.options = dict(settings.options)
                if settings.bit_rate:
                    video.codec_context.bit_rate = settings.bit_rate
                if settings.gop:
                    video.codec_context.gop_size = settings.gop
                if params["codec"] == "hevc":
                    video.codec_tag = "hvc1"
                return video

            video = out.add_stream(make, drain=lambda s: s.encode(None))
            scale = Scaler(width, height)
            encoded = 0
            for frame in chunk_frames(ctx, container, stream):
                assert frame.pts is not None
                frame.pts -= params["start_pts"]
                shaped = scale.fresh(frame)
                if settings.pix_fmt != "yuv420p":
                    shaped = shaped.reformat(format=settings.pix_fmt)
                out.mux(video.encode(shaped))
                encoded += 1
                if encoded % 25 == 0:
                    ctx.progress(encoded / params["frame_count"], f"chunk {index}")
            if encoded != params["frame_count"]:
                raise PermanentError(f"{source.name}: chunk {index} has {encoded} frames, "
                                     f"the plan says {params['frame_count']} (source changed?)")
    return ActionResult(
        outputs=[OutputFile(path, role="sidecar", meta={"kind": "chunk", "chunk_index": index})],
        data={"chunk_index": index, "start_pts": params["start_pts"], "frame_count": encoded,
              "time_base": str(Fraction(stream.time_base)), "encoder": choice.encoder,
              "file": path.name})


def chunk_frames(ctx: ActionContext, container: Any, stream: Any) -> Iterator[VideoFrame]:
    """The decoded frames whose pts lie in [start_pts, end_pts), in presentation order."""
    start, end = ctx.params["start_pts"], ctx.params.get("end_pts")
    floor = (stream.start_time or 0) - 1
    back = 0
    while True:
        # Backward to the keyframe at or before the chunk's first frame; should the
        # demuxer land after it (an index by decode time), seek further back.
        container.seek(start - back, stream=stream, backward=True, any_frame=False)
        frames = decoded(container, stream)
        first = next(frames, None)
        if first is None:
            return
        if first.pts is not None and first.pts > start and start - back > floor:
            back = back * 2 or max(1, int(2 / stream.time_base))
            continue
        for frame in itertools.chain([first], frames):
            if frame.pts is None or frame.pts < start:
                continue  # before the chunk (or an open GOP's leading frames)
            if end is not None and frame.pts >= end:
                return  # frames come in presentation order: the chunk is complete
            ctx.check()
            yield frame
        return


def decoded(container: Any, stream: Any) -> Iterator[VideoFrame]:
    for packet in container.demux(stream):
        yield from packet.decode()


@action("encode_audio_track", {
    "properties": {
        "audio_codec": {"enum": ["aac", "opus"], "default": "aac"},
        "audio_bitrate": {**BITRATE_SCHEMA, "default": "128k"},
    },
})
def encode_audio_track(ctx: ActionContext) -> ActionResult:
    """Encode the source's audio once, on the clock the chunks' video is placed on."""
    source = ctx.source_path
    codec = {"aac": "aac", "opus": "libopus"}[ctx.params["audio_codec"]]
    path = ctx.output_path(f"{source.stem}_audio.mp4")
    with open_media(source) as container, reading(source):
        if not container.streams.audio:
            raise PermanentError(f"{source.name}: has no audio stream")
        astream: Any = container.streams.audio[0]
        vstream = container.streams.video[0] if container.streams.video else None
        origin = common_origin(vstream, astream)
        rate = 48_000 if codec == "libopus" else astream.codec_context.sample_rate
        with media_output(path, format="mp4", options=MP4) as out:
            stream = out.add_stream(lambda c: add_audio_stream(
                c, codec, rate=rate, layout=output_layout(astream.codec_context.channels),
                bit_rate=parse_bitrate(ctx.params["audio_bitrate"])))
            feed = AudioEncoderFeed(stream, origin=origin)
            out.drain_on_finish(lambda: feed.push(None))
            for packet in container.demux(astream):
                for frame in packet.decode():
                    out.mux(feed.push(frame))
                ctx.check()
    return ActionResult(outputs=[OutputFile(path, role="sidecar", meta={"kind": "audio"})],
                        data={"audio_codec": codec, "origin": origin, "file": path.name})


def output_path_of(item: dict[str, Any] | None, what: str) -> Path:
    """The one file a chunk or audio task recorded in its output_data."""
    if not item or not item.get("outputs"):
        raise PermanentError(f"{what} has no recorded output")
    return Path(item["outputs"][0]["path"])


