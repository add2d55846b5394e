"""Video actions on PyAV: validate, describe, transcode (fused ladders too), thumbnails.

Decoding is streamed packet by packet, so memory stays flat however long the
input is. Transcoding decodes once and feeds any number of renditions
(:func:`transcode_many`); the engine fuses consecutive ``transcode_video`` steps
into one such pass. Rotated inputs are turned upright and interlaced ones
deinterlaced before scaling, so every output plays the right way up everywhere.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from av.container import InputContainer, OutputContainer
from av.video.frame import VideoFrame
from PIL import Image

from mediaq.actions import action, fused
from mediaq.actions.avio import (
    BITRATE_SCHEMA,
    AudioEncoderFeed,
    MediaInfo,
    ProgressClock,
    VideoInfo,
    add_audio_stream,
    common_origin,
    open_media,
    output_layout,
    parse_bitrate,
    probe,
    reading,
    writing,
)
from mediaq.actions.base import ActionContext, ActionResult, OutputFile
from mediaq.actions.color import (
    COLOR_SCHEMA,
    SDR,
    ColorPlan,
    ToneMapper,
    plan_color,
    tag_stream,
    tone_mapper_for,
    with_hdr10,
)
from mediaq.actions.encoder_options import (
    ENCODING_PROPERTIES,
    PRESET_SCHEMA,
    Encoding,
    VideoSettings,
    codec_rules,
    encoding_from,
    encoding_prepare,
    video_settings,
)
from mediaq.actions.frames import Scaler, Upright, decode_tolerantly, seek_to, turn_image
from mediaq.actions.hardware import EncoderChoice, decide_video_encoder
from mediaq.actions.media_output import MediaOutput, media_outputs
from mediaq.actions.pertitle import LADDER_SCHEMA, SettingsFor, choose_crf
from mediaq.actions.quality import QUALITY_SCHEMA, Rendered, judge
from mediaq.actions.thumbnail_times import THUMBNAIL_TIME_PARAMS, chosen_stills, wants_chosen_times
from mediaq.errors import PermanentError

NAMED_RESOLUTIONS = {"2160p": 2160, "1440p": 1440, "1080p": 1080, "720p": 720, "540p": 540,
                     "480p": 480, "360p": 360, "240p": 240, "144p": 144}
CONTAINER_OF = {"h264": "mp4", "hevc": "mp4", "av1": "mp4", "vp9": "webm"}
AUDIO_CODEC_OF = {"mp4": "aac", "webm": "libopus"}
# A truncated file stops well short of the duration its header promises.
TRUNCATION_TOLERANCE = 0.9
_THUMB_FORMATS = {"jpeg": ("JPEG", "jpg"), "png": ("PNG", "png"), "webp": ("WEBP", "webp")}


# --------------------------------------------------------------------------- validate


@action("validate_video", {
    "properties": {
        "check_codec": {"type": "boolean", "default": True},
        "check_duration": {"type": "boolean", "default": True},
        "max_duration_seconds": {"type": "number", "exclusiveMinimum": 0, "default": 86_400},
        "allowed_codecs": {"type": "array", "items": {"type": "string"}},
    },
})
def validate_video(ctx: ActionContext) -> ActionResult:
    """Check that the source is a complete, decodable video."""
    path = ctx.source_path
    info = probe(path)
    name = path.name
    if info.video is None:
        raise PermanentError(f"{name}: has no video stream"
                             + (" (audio only)" if info.audio else ""))
    if ctx.params["check_codec"]:
        allowed = ctx.params.get("allowed_codecs")
        if allowed and info.video.codec not in allowed:
            raise PermanentError(f"{name}: video codec {info.video.codec} is not allowed "
                                 f"(allowed: {', '.join(allowed)})")
        _decode_opening_frames(ctx, path)
    if ctx.params["check_duration"]:
        if info.duration <= 0:
            raise PermanentError(f"{name}: has no duration (empty or unfinished recording)")
        if info.duration > ctx.params["max_duration_seconds"]:
            raise PermanentError(f"{name}: {info.duration:.0f} s is longer than the limit of "
                                 f"{ctx.params['max_duration_seconds']:.0f} s")
        _check_complete(ctx, path, info.duration)
    return ActionResult(data={"valid": True, **_summary(info)})


def _decode_opening_frames(ctx: ActionContext, path: Path, frames: int = 10) -> None:
    with open_media(path) as container, reading(path):
        stream = container.streams.video[0]
        decoded = 0
        for decoded, _frame in enumerate(decode_tolerantly(container, [stream]), start=1):
            ctx.check()
            if decoded >= frames:
                break
    if decoded == 0:
        raise PermanentError(f"{path.name}: the video stream has no decodable frame")


def _check_complete(ctx: ActionContext, path: Path, duration: float) -> None:
    """Demux every video packet (no decoding) and compare with the declared duration."""
    end = 0.0
    clock = ProgressClock(ctx, duration, "checking")
    with open_media(path) as container, reading(path):
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            if packet.pts is not None and packet.time_base is not None:
                end = max(end, float((packet.pts + (packet.duration or 0)) * packet.time_base))
                clock.tick(end)
        start = (float(stream.start_time * stream.time_base)
                 if stream.start_time and stream.time_base else 0.0)
    if end - start < TRUNCATION_TOLERANCE * duration - 0.5:
        raise PermanentError(f"{path.name}: truncated (media ends at {end - start:.1f} s of "
                             f"{duration:.1f} s)")


def _summary(info: MediaInfo) -> dict[str, Any]:
    video = info.video
    return {
        "duration": info.duration, "container": info.container,
        "video_codec": video.codec if video else None,
        "width": video.display_width if video else None,
        "height": video.display_height if video else None,
        "fps": video.fps if video else None,
        "audio_codec": info.audio.codec if info.audio else None,
    }


# --------------------------------------------------------------------------- metadata


@action("extract_video_metadata", {"properties": {}})
def extract_video_metadata(ctx: ActionContext) -> ActionResult:
    """Describe the container, streams, codecs, size, rate, rotation and colour."""
    info = probe(ctx.source_path)
    if info.video is None:
        raise PermanentError(f"{ctx.source_path.name}: has no video stream")
    return ActionResult(data={"metadata": info.as_data(), **_summary(info)})


# --------------------------------------------------------------------------- transcode

TRANSCODE_SCHEMA: dict[str, Any] = {
    "properties": {
        "resolution": {"type": "string", "pattern": r"^(\d{3,4}p|\d{2,5}x\d{2,5}|source)$",
                       "default": "720p"},
        "codec": {"enum": ["h264", "hevc", "vp9", "av1"], "default": "h264"},
        "crf": {"type": "integer", "minimum": 0, "maximum": 63, "default": 23},
        # A named encoding preset (presets/encoding.yaml), or an encoder speed as before.
        "preset": PRESET_SCHEMA,
        **ENCODING_PROPERTIES,
        "max_bitrate": BITRATE_SCHEMA,
        "fps": {"type": "number", "exclusiveMinimum": 0, "maximum": 240},
        "upscale": {"type": "boolean", "default": False},
        "audio_codec": {"enum": ["aac", "opus", "none", "auto"], "default": "auto"},
        "audio_bitrate": {**BITRATE_SCHEMA, "default": "128k"},
        "hardware": {"enum": ["auto", "never", "require", "nvenc", "qsv"], "default": "auto"},
        "name": {"type": "string", "pattern": r"^[A-Za-z0-9_.-]{1,64}$"},
        **COLOR_SCHEMA,  # tone_map, hdr: see actions/color.py
        **QUALITY_SCHEMA,  # measure_quality, min_ssim, min_psnr: actions/quality.py
        **LADDER_SCHEMA,  # ladder: auto, target_ssim: actions/pertitle.py
    },
    "allOf": codec_rules(["h264", "hevc", "vp9", "av1"]),
}


@dataclass(frozen=True)
class Rendition:
    """One output of a transcode: what to encode and where."""

    width: int
    height: int
    codec: str
    encoder: str
    settings: VideoSettings
    first_pass: VideoSettings | None  # two-pass: what the first pass encodes with
    audio_codec: str | None
    audio_bitrate: int | None
    container: str
    filename: str
    label: str
    choice: EncoderChoice
    encoding: Encoding
    color: ColorPlan = SDR


def parse_resolution(text: str, source: VideoInfo, *, upscale: bool) -> tuple[int, int]:
    """Output size keeping the aspect ratio; ``720p`` sets the short side."""
    src_w, src_h = source.display_width, source.display_height
    if text == "source":
        return _even(src_w), _even(src_h)
    if text.endswith("p"):
        short = int(text[:-1])
        if not upscale:
            short = min(short, min(src_w, src_h))
        scale = short / min(src_w, src_h)
    else:
        box_w, box_h = (int(v) for v in text.split("x"))
        scale = min(box_w / src_w, box_h / src_h)
        if not upscale:
            scale = min(scale, 1.0)
    return _even(round(src_w * scale)), _even(round(src_h * scale))


def _even(value: float) -> int:
    return max(2, int(value) // 2 * 2)


def plan_rendition(ctx: ActionContext, params: dict[str, Any], info: MediaInfo,
                   stats: Path | None = None) -> Rendition:
    """What to encode for one step; ``stats``: where a two-pass encode keeps its log."""
    assert info.video is not None
    width, height = parse_resolution(params["resolution"], info.video, upscale=params["upscale"])
    codec = params["codec"]
    color = plan_color(params, info, codec, ctx.source_path)
    # HDR10 metadata is written by libx265 / libsvtav1: keeping HDR encodes in software.
    choice = decide_video_encoder(codec, "never" if color.mode == "keep" else params["hardware"],
                                  ctx)
    encoder = choice.encoder
    encoding = encoding_from(params)
    rate = _output_rate(info.video, params.get("fps"))
    two_pass = encoding.rate_control == "two_pass" and not choice.hardware
    container = CONTAINER_OF[codec]
    audio_codec = _audio_codec_for(params["audio_codec"], container, info)
    # Named after the rung asked for, so a small source still gets one file per step.
    label = params.get("name") or params["resolution"]
    return Rendition(
        width=width, height=height, codec=codec, encoder=encoder,
        settings=_with_color(encoder, color, video_settings(
            encoder, encoding, rate, pass_number=2 if two_pass else 0, stats=stats)),
        first_pass=(video_settings(encoder, encoding, rate, pass_number=1, stats=stats)
                    if two_pass else None),
        audio_codec=audio_codec,
        audio_bitrate=parse_bitrate(params["audio_bitrate"]) if audio_codec else None,
        container=container, filename=f"{ctx.source_path.stem}_{label}.{container}", label=label,
        choice=choice, encoding=encoding, color=color,
    )


def _with_color(encoder: str, color: ColorPlan, settings: VideoSettings) -> VideoSettings:
    """``hdr: keep``: 10-bit, with the encoder's HDR10 parameters (actions/color.py)."""
    if color.mode != "keep":
        return settings
    return dataclasses.replace(settings, options=with_hdr10(encoder, settings.options, color),
                               pix_fmt=color.pix_fmt)


def _audio_codec_for(asked: str, container: str, info: MediaInfo) -> str | None:
    if asked == "none" or info.audio is None:
        return None
    if asked == "auto":
        return AUDIO_CODEC_OF[container]
    return {"aac": "aac", "opus": "libopus"}[asked]


@action("transcode_video", TRANSCODE_SCHEMA,
        prepare=encoding_prepare(TRANSCODE_SCHEMA["properties"]))
def transcode_video(ctx: ActionContext) -> ActionResult:
    """Transcode the source to one rendition (size, codec, quality)."""
    return transcode_many([ctx])[0]


@fused("transcode_video")
def transcode_many(contexts: list[ActionContext]) -> list[ActionResult]:
    """Decode the (shared) source once and encode one rendition per step context."""
    lead = contexts[0]
    info = probe(lead.source_path)
    if info.video is None:
        raise PermanentError(f"{lead.source_path.name}: has no video stream")
    with tempfile.TemporaryDirectory(prefix="mediaq-2pass-") as stats_dir:
        renditions = [plan_rendition(ctx, ctx.params, info, Path(stats_dir) / f"{i}.log")
                      for i, ctx in enumerate(contexts)]
        # ladder: auto: each rung's CRF from a probe of the source, then planned again.
        choices = [choose_crf(ctx, info, r, _settings_at(r, info))
                   for ctx, r in zip(contexts, renditions, strict=True)]
        renditions = [plan_rendition(ctx, {**ctx.params, "crf": c["crf"]}, info,
                                     Path(stats_dir) / f"{i}.log") if c else r
                      for i, (ctx, r, c) in enumerate(zip(contexts, renditions, choices,
                                                          strict=True))]
        for ctx, rendition in zip(contexts, renditions, strict=True):
            if rendition.choice.hardware:
                ctx.log(f"{rendition.label}: encoding with {rendition.encoder}")
        paths = [ctx.output_path(r.filename) for ctx, r in zip(contexts, renditions, strict=True)]
        fps = _output_rate(info.video, contexts[0].params.get("fps"))
        first = [(r, p) for r, p in zip(renditions, paths, strict=True) if r.first_pass]
        if first:
            # Two-pass renditions read the source once more first, to a throwaway file,
            # so the encoder knows where the bits are needed.
            encode_ladder(lead, info, [first_pass(r, p) for r, p in first], fps,
                          stage="analysing")
            for _, path in first:
                path.with_suffix(".pass1" + path.suffix).unlink(missing_ok=True)
        encode_ladder(lead, info, list(zip(renditions, paths, strict=True)), fps)
    scores = judge(lead, info.duration, [
        Rendered(ctx.params, r.label, r.width, r.height, r.color, path)
        for ctx, r, path in zip(contexts, renditions, paths, strict=True)])
    return [
        ActionResult(
            outputs=[OutputFile(path, role="rendition", meta=_describe_rendition(r, path))],
            data={"rendition": r.label, "width": r.width, "height": r.height, "codec": r.codec,
                  "encoder": r.encoder, "fused_with": len(contexts),
                  "hardware_decision": r.choice.as_data(), "encoding": r.encoding.as_data(),
                  **r.color.as_data(), **({"quality": score} if score else {}),
                  **({"per_title": choice} if choice else {})},
        )
        for r, path, score, choice in zip(renditions, paths, scores, choices, strict=True)
    ]


def _settings_at(r: Rendition, info: MediaInfo) -> SettingsFor:
    """The rendition's encoder options and bit rate at another CRF (per-title trials)."""
    assert info.video is not None
    rate = _output_rate(info.video, None)

    def at(crf: int) -> tuple[dict[str, str], int | None]:
        encoding = dataclasses.replace(r.encoding, crf=crf)
        settings = _with_color(r.encoder, r.color, video_settings(r.encoder, encoding, rate))
        return settings.options, settings.bit_rate
    return at


def first_pass(rendition: Rendition, path: Path) -> tuple[Rendition, Path]:
    """The first pass of a two-pass rendition: video only, to a throwaway file."""
    assert rendition.first_pass is not None
    return (dataclasses.replace(rendition, settings=rendition.first_pass, audio_codec=None),
            path.with_suffix(".pass1" + path.suffix))


def _output_rate(video: VideoInfo, asked: float | None) -> Fraction:
    rate = Fraction(asked).limit_denominator(1001) if asked else Fraction(video.fps or 25)
    return rate.limit_denominator(1001)


def _describe_rendition(rendition: Rendition, path: Path) -> dict[str, Any]:
    return {"format": rendition.container, "width": rendition.width, "height": rendition.height,
            "codec": rendition.codec, "rendition": rendition.label}


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


# --------------------------------------------------------------------------- thumbnails


@action("generate_thumbnails", {
    "properties": {
        "count": {"type": "integer", "minimum": 1, "maximum": 100, "default": 5},
        "format": {"enum": sorted(_THUMB_FORMATS), "default": "jpeg"},
        "width": {"type": "integer", "minimum": 16, "maximum": 3840, "default": 320},
        "quality": {"type": "integer", "minimum": 1, "maximum": 100, "default": 85},
        **THUMBNAIL_TIME_PARAMS,
    },
})
def generate_thumbnails(ctx: ActionContext) -> ActionResult:
    """``count`` upright stills evenly spaced through the video, snapped to keyframes,
    or at ``timestamps`` (seconds or "25%"; exact frames with ``exact``)."""
    source = ctx.source_path
    info = probe(source)
    if info.video is None:
        raise PermanentError(f"{source.name}: has no video stream")
    count, width = ctx.params["count"], ctx.params["width"]
    pil_format, ext = _THUMB_FORMATS[ctx.params["format"]]
    outputs: list[OutputFile] = []
    stills = (chosen_stills(ctx, source, info) if wants_chosen_times(ctx.params) else
              ((at, image, {}) for at, image in keyframe_stills(ctx, source, info, count)))
    for index, (at, image, asked) in enumerate(stills, start=1):
        image = _fit_width(image, width)
        path = ctx.output_path(f"{source.stem}_thumb_{index:02d}.{ext}")
        with writing(path):
            image.save(path, pil_format, quality=ctx.params["quality"])
        outputs.append(OutputFile(path, role="thumbnail", meta={
            "time": round(at, 3), "width": image.width, "height": image.height,
            "format": ctx.params["format"], **asked}))
        ctx.progress(index / count, "thumbnails")
    if not outputs:
        raise PermanentError(f"{source.name}: no frame could be decoded for thumbnails")
    return ActionResult(outputs=outputs, data={"count": len(outputs),
                                               "times": [o.meta["time"] for o in outputs]})


def keyframe_stills(ctx: ActionContext, source: Path, info: MediaInfo,
                    count: int) -> Iterator[tuple[float, Image.Image]]:
    """Upright stills near evenly spaced times: the keyframe at or before each time,
    or, when that keyframe was already used, the frame at the time itself."""
    assert info.video is not None
    rotation = info.video.rotation
    spacing = info.duration / count
    last_time = -1.0
    with open_media(source) as container, reading(source):
        stream = container.streams.video[0]
        stream.codec_context.thread_type = "AUTO"
        for index in range(count):
            ctx.check()
            target = spacing * (index + 0.5)
            frame = _frame_near(container, stream, target, after=last_time)
            if frame is None:
                continue
            last_time = float(frame.time or 0.0)
            yield last_time, turn_image(frame.to_image(), rotation)  # type: ignore[no-untyped-call]


def _frame_near(container: InputContainer, stream: Any, target: float,
                after: float) -> VideoFrame | None:
    stream.codec_context.skip_frame = "NONKEY"
    seek_to(container, stream, target)
    keyframe: VideoFrame | None = next(container.decode(stream), None)
    if keyframe is not None and (keyframe.time or 0.0) > after:
        return keyframe
    # The keyframe before ``target`` was used already: decode forward to the time itself.
    stream.codec_context.skip_frame = "DEFAULT"
    seek_to(container, stream, target)
    frame: VideoFrame
    for frame in container.decode(stream):
        if (frame.time or 0.0) >= target - 1e-3:
            return frame
    return None


def _fit_width(image: Image.Image, width: int) -> Image.Image:
    if image.width <= width:
        return image
    height = max(1, round(image.height * width / image.width))
    return image.resize((width, height), Image.Resampling.LANCZOS, reducing_gap=2.0)

