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

from av.video.frame import PictureType, VideoFrame

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
from mediaq.actions.media_output import MediaOutput, media_output
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
        # Encoded before each chunk (but the first) and dropped: see encode_chunk.
        "preroll_seconds": {"type": "number", "minimum": 0, "maximum": 10, "default": 0.5},
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
FORCED_IDR = {"libx264": {"forced-idr": "1"}, "libx265": {"forced-idr": "1"}}


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
    start = params["start_pts"]
    with open_media(source) as container, reading(source):
        stream: Any = container.streams.video[0]
        stream.codec_context.thread_type = "AUTO"
        tb = Fraction(stream.time_base)
        # The frames before the chunk are encoded and thrown away (not chunk 0's: it
        # starts the film): the encoder's rate control then meets the chunk's first frame
        # with the history a one-pass encode has there, instead of a cold start that codes
        # it worse than any other GOP's first frame.
        preroll = round(Fraction(params["preroll_seconds"]) / tb) if index else 0
        with media_output(path, format="mp4", options=MP4) as out:
            encoder = ChunkEncoder(out, choice.encoder, params, stream)
            encoded = 0
            for frame in chunk_frames(ctx, container, stream, start - preroll):
                assert frame.pts is not None
                frame.pts -= start
                encoded += encoder.encode(frame, first=frame.pts == 0)
                if encoded and encoded % 25 == 0:
                    ctx.progress(encoded / params["frame_count"], f"chunk {index}")
            encoder.flush()
            if encoded != params["frame_count"]:
                raise PermanentError(f"{source.name}: chunk {index} has {encoded} frames, "
                                     f"the plan says {params['frame_count']} (source changed?)")
    return ActionResult(
        outputs=[OutputFile(path, role="sidecar", meta={"kind": "chunk", "chunk_index": index})],
        data={"chunk_index": index, "start_pts": start, "frame_count": encoded,
              "time_base": str(tb), "encoder": choice.encoder, "file": path.name,
              "preroll_frames": encoder.dropped})


class ChunkEncoder:
    """One chunk's video encoder: frames in, the chunk's packets (the preroll's dropped)
    into the chunk file."""

    def __init__(self, out: MediaOutput, encoder: str, params: dict[str, Any],
                 source: Any, *, size: tuple[int, int] | None = None,
                 sar: Fraction | None = None, gop_seconds: float | None = None) -> None:
        """``size``, ``sar`` and ``gop_seconds`` (a ceiling when the caller forces the
        keyframes itself) override the step's parameters: a ladder rung's encoder."""
        rate = chunk_rate(source)
        maxrate = parse_bitrate(params.get("maxrate"))
        encoding = Encoding(rate_control="capped_crf" if maxrate else "crf",
                            crf=params["crf"], speed=params["speed"], maxrate=maxrate,
                            bufsize=parse_bitrate(params.get("bufsize")),
                            gop_seconds=gop_seconds or params["gop_seconds"], closed_gop=True)
        self.settings = settings = video_settings(encoder, encoding, rate)
        width, height = size or (params.get("width") or source.codec_context.width,
                                 params.get("height") or source.codec_context.height)
        self.width: int = width
        self.height: int = height
        self.out = out
        self.dropped = 0
        self.started = False

        def make(container: Any) -> Any:
            video: Any = container.add_stream(encoder, rate=rate)
            video.width, video.height = self.width, self.height
            video.pix_fmt = settings.pix_fmt
            video.codec_context.time_base = source.time_base
            video.time_base = source.time_base
            video.codec_context.thread_type = "FRAME"
            # forced-idr: the chunk's first frame, forced to a keyframe after a preroll,
            # is an IDR frame, which nothing after it may refer across.
            video.options = {**settings.options, **FORCED_IDR.get(encoder, {})}
            if settings.bit_rate:
                video.codec_context.bit_rate = settings.bit_rate
            if settings.gop:
                video.codec_context.gop_size = settings.gop
            if params["codec"] == "hevc":
                video.codec_tag = "hvc1"
            if sar is not None and sar != 1:
                video.codec_context.sample_aspect_ratio = sar  # in the SPS: shown right
            return video

        self.stream = out.add_stream(make)
        self.scale = Scaler(self.width, self.height)

    def encode(self, frame: VideoFrame, *, first: bool) -> int:
        """Encode ``frame`` (pts relative to the chunk's first frame); 1 if it belongs to
        the chunk, 0 for a preroll frame. ``first``: forced to a keyframe (an IDR frame)."""
        shaped = self.scale.fresh(frame)
        if first:
            shaped.pict_type = PictureType.I
        if self.settings.pix_fmt != "yuv420p":
            shaped = shaped.reformat(format=self.settings.pix_fmt)
        self._keep(self.stream.encode(shaped))
        return 0 if shaped.pts is not None and shaped.pts < 0 else 1

    def flush(self) -> None:
        self._keep(self.stream.encode(None))

    def _keep(self, packets: list[Any]) -> None:
        for packet in packets:
            if packet.pts is not None and packet.pts < 0:
                self.dropped += 1
                continue
            if not self.started:
                if not packet.is_keyframe:
                    raise PermanentError(f"{self.out.path.name}: the encoder did not start "
                                         "the chunk with a keyframe")
                self.started = True
            self.out.mux(packet)


def chunk_frames(ctx: ActionContext, container: Any, stream: Any,
                 start: int) -> Iterator[VideoFrame]:
    """The decoded frames whose pts lie in [start, end_pts), in presentation order."""
    end = ctx.params.get("end_pts")
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


def output_path_of(ctx: ActionContext, item: dict[str, Any] | None, what: str) -> Path:
    """The one file a chunk or audio task recorded in its output_data, as a path here
    (the chunk may have been encoded on another host: its object is fetched now)."""
    if not item or not item.get("outputs"):
        raise PermanentError(f"{what} has no recorded output")
    return ctx.local_path(item["outputs"][0])


