"""Video actions on PyAV: validate, describe, transcode (fused ladders too), thumbnails.

Decoding is streamed packet by packet, so memory stays flat however long the
input is. Transcoding decodes once and feeds any number of renditions
(:func:`transcode_many`); the engine fuses consecutive ``transcode_video`` steps
into one such pass. Rotated inputs are turned upright and interlaced ones
deinterlaced before scaling, so every output plays the right way up everywhere.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from av.container import InputContainer
from av.video.frame import VideoFrame
from PIL import Image

from mediaq.actions import action, fused
from mediaq.actions.avio import MediaInfo, ProgressClock, open_media, probe, reading, writing
from mediaq.actions.base import ActionContext, ActionResult, OutputFile
from mediaq.actions.encoder_options import encoding_prepare
from mediaq.actions.frames import decode_tolerantly, seek_to, turn_image
from mediaq.actions.pertitle import choose_crf
from mediaq.actions.quality import Rendered, judge
from mediaq.actions.thumbnail_times import THUMBNAIL_TIME_PARAMS, chosen_stills, wants_chosen_times
from mediaq.actions.tracks.output import load_subtitles, track_data, write_extracted

# Rendition planning and the encode loop live in their own modules; their names are
# still importable from here.
from mediaq.actions.video_encode import (
    RenditionWriter,
    _muxer_options,
    _pump,
    encode_ladder,
)
from mediaq.actions.video_rendition import (
    AUDIO_CODEC_OF,
    CONTAINER_OF,
    NAMED_RESOLUTIONS,
    TRANSCODE_SCHEMA,
    Rendition,
    _audio_codec_for,
    _describe_rendition,
    _even,
    _output_rate,
    _settings_at,
    _with_color,
    first_pass,
    parse_resolution,
    plan_rendition,
)
from mediaq.errors import PermanentError

__all__ = [
    "AUDIO_CODEC_OF", "CONTAINER_OF", "NAMED_RESOLUTIONS", "TRANSCODE_SCHEMA",
    "TRUNCATION_TOLERANCE", "Rendition", "RenditionWriter", "_audio_codec_for",
    "_describe_rendition", "_even", "_muxer_options", "_output_rate", "_pump",
    "_settings_at", "_with_color", "encode_ladder", "extract_video_metadata", "first_pass",
    "generate_thumbnails", "keyframe_stills", "parse_resolution", "plan_rendition",
    "transcode_many", "transcode_video", "validate_video",
]
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
        subtitles = load_subtitles(lead, info, renditions)
        first = [(r, p) for r, p in zip(renditions, paths, strict=True) if r.first_pass]
        if first:
            # Two-pass renditions read the source once more first, to a throwaway file,
            # so the encoder knows where the bits are needed (burnt subtitles included).
            encode_ladder(lead, info, [first_pass(r, p) for r, p in first], fps,
                          stage="analysing", subtitles=subtitles)
            for _, path in first:
                path.with_suffix(".pass1" + path.suffix).unlink(missing_ok=True)
        origin = encode_ladder(lead, info, list(zip(renditions, paths, strict=True)), fps,
                               subtitles=subtitles)
    extracted = [write_extracted(ctx, r, path, subtitles, origin)
                 for ctx, r, path in zip(contexts, renditions, paths, strict=True)]
    scores = judge(lead, info.duration, [
        Rendered(ctx.params, r.label, r.width, r.height, r.color, path)
        for ctx, r, path in zip(contexts, renditions, paths, strict=True)])
    return [
        ActionResult(
            outputs=[OutputFile(path, role="rendition", meta=_describe_rendition(r, path)),
                     *files],
            data={**track_data(r, subtitles, files),
                  "rendition": r.label, "width": r.width, "height": r.height, "codec": r.codec,
                  "encoder": r.encoder, "fused_with": len(contexts),
                  "hardware_decision": r.choice.as_data(), "encoding": r.encoding.as_data(),
                  **r.color.as_data(), **({"quality": score} if score else {}),
                  **({"per_title": choice} if choice else {})},
        )
        for r, path, score, choice, files in zip(renditions, paths, scores, choices,
                                                 extracted, strict=True)
    ]


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

