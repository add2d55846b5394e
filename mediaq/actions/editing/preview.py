"""``make_preview``: a short silent preview made of excerpts (mp4, webp, gif)."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

from av.video.frame import VideoFrame

from mediaq.actions import action
from mediaq.actions.avio import ProgressClock, open_media, reading, writing
from mediaq.actions.base import ActionContext, ActionResult, OutputFile
from mediaq.actions.clip import (
    SourceClip,
    add_h264_stream,
    constant_rate,
    encode_frame,
    even,
    fit_inside,
    inspect_clip,
    remove_quietly,
    safe_stem,
    upright_frames,
)
from mediaq.actions.frames import Scaler, seek_to
from mediaq.actions.media_output import media_output
from mediaq.errors import PermanentError

_PREVIEW_EXT = {"mp4": "mp4", "webp": "webp", "gif": "gif"}
ANIMATION_RATE = 12
PREVIEW_CRF = 26
# Pillow holds every frame of an animation (RGB) before it writes the file.
MAX_ANIMATION_BYTES = 512 * 1024 * 1024


@action("make_preview", {
    "properties": {
        "format": {"enum": sorted(_PREVIEW_EXT), "default": "mp4"},
        "duration": {"type": "number", "minimum": 0.5, "maximum": 60, "default": 6},
        "segments": {"type": "integer", "minimum": 1, "maximum": 20, "default": 3},
        "width": {"type": "integer", "minimum": 16, "maximum": 1920, "default": 480},
        "fps": {"type": "number", "minimum": 1, "maximum": 60},
        "quality": {"type": "integer", "minimum": 1, "maximum": 100, "default": 75},
    },
})
def make_preview(ctx: ActionContext) -> ActionResult:
    """A short silent preview made of excerpts spread through the source (mp4, webp, gif).

    ``segments`` excerpts of ``duration / segments`` seconds each, centred at evenly spaced
    points; the whole source when it is not longer than ``duration``. ``fps`` defaults to
    12 for animations and to the source's rate (at most 30) for MP4; ``quality`` is WebP's.
    """
    source = ctx.source_path
    clip = inspect_clip(source)
    fmt = ctx.params["format"]
    rate = _preview_rate(ctx.params.get("fps"), fmt, clip.rate)
    excerpts = plan_excerpts(clip.duration, ctx.params["duration"], ctx.params["segments"])
    width, height = fit_inside(clip.aspect, min(ctx.params["width"], even(clip.width)),
                               4 * ctx.params["width"])
    if fmt != "mp4":
        _check_animation_fits(source, fmt, (width, height), excerpts, rate)
    path = ctx.output_path(f"{safe_stem(source)}_preview.{_PREVIEW_EXT[fmt]}")
    frames = excerpt_frames(ctx, clip, excerpts, rate, (width, height))
    if fmt == "mp4":
        count = _write_preview_mp4(path, frames, rate, (width, height))
    else:
        count = _write_animation(path, frames, rate, fmt, ctx.params["quality"])
    duration = round(count / float(rate), 3)
    return ActionResult(
        outputs=[OutputFile(path, role="rendition", meta={
            "kind": "preview", "format": fmt, "width": width, "height": height,
            "duration": duration})],
        data={"format": fmt, "width": width, "height": height, "fps": float(rate),
              "frames": count, "duration": duration,
              "excerpts": [[round(s, 3), round(s + n / float(rate), 3)] for s, n in
                           _excerpt_frames(excerpts, rate)]})


def _check_animation_fits(source: Path, fmt: str, size: tuple[int, int],
                          excerpts: list[tuple[float, float]], rate: Fraction) -> None:
    frames = sum(count for _, count in _excerpt_frames(excerpts, rate))
    if frames * size[0] * size[1] * 3 > MAX_ANIMATION_BYTES:
        raise PermanentError(f"{source.name}: a {size[0]}x{size[1]} {fmt} of {frames} frames "
                             f"is too large to build; lower width, fps or duration")


def _preview_rate(asked: float | None, fmt: str, source_rate: Fraction) -> Fraction:
    if asked:
        return Fraction(asked).limit_denominator(1001)
    return Fraction(ANIMATION_RATE) if fmt != "mp4" else min(source_rate, Fraction(30))


def plan_excerpts(source_seconds: float, seconds: float, segments: int) -> list[tuple[float,
                                                                                      float]]:
    """(start, length) of ``segments`` excerpts of equal length, their centres evenly
    spread; the whole source when it is no longer than the preview."""
    if source_seconds <= seconds:
        return [(0.0, source_seconds)]
    length = seconds / segments
    spacing = source_seconds / segments
    return [(min(max((i + 0.5) * spacing - length / 2, 0.0), source_seconds - length), length)
            for i in range(segments)]


def _excerpt_frames(excerpts: list[tuple[float, float]],
                    rate: Fraction) -> list[tuple[float, int]]:
    """(start, frames) per excerpt, rounded from the running total so the sum is exact."""
    out: list[tuple[float, int]] = []
    total = 0.0
    done = 0
    for start, length in excerpts:
        total += length
        count = max(1, round(total * rate) - done)
        out.append((start, count))
        done += count
    return out


def excerpt_frames(ctx: ActionContext, clip: SourceClip, excerpts: list[tuple[float, float]],
                   rate: Fraction, size: tuple[int, int]) -> Iterator[VideoFrame]:
    """Upright yuv420p frames of ``size`` at ``rate`` through every excerpt in turn."""
    clock = ProgressClock(ctx, sum(length for _, length in excerpts), "preview")
    done = 0.0
    scale = Scaler(*size)
    with open_media(clip.path) as container, reading(clip.path):
        stream: Any = container.streams.video[0]
        stream.codec_context.thread_type = "AUTO"
        for start, count in _excerpt_frames(excerpts, rate):
            seek_to(container, stream, start)
            source = upright_frames(container, stream)
            for frame in constant_rate(source, start=start, rate=rate, count=count):
                yield scale(frame)
                done += 1 / float(rate)
                clock.tick(done)


def _write_preview_mp4(path: Path, frames: Iterator[VideoFrame], rate: Fraction,
                       size: tuple[int, int]) -> int:
    with media_output(path, format="mp4", options={"movflags": "+faststart"}) as output:
        stream = output.add_stream(
            lambda container: add_h264_stream(container, "libx264", width=size[0],
                                              height=size[1], rate=rate,
                                              options={"crf": str(PREVIEW_CRF),
                                                       "preset": "veryfast"}),
            drain=lambda stream: stream.encode(None))
        count = 0
        for count, frame in enumerate(frames, start=1):
            output.mux(encode_frame(stream, frame, count - 1))
        if count == 0:
            raise PermanentError(f"{path.name}: no frame could be decoded for the preview")
    return count


def _write_animation(path: Path, frames: Iterator[VideoFrame], rate: Fraction, fmt: str,
                     quality: int) -> int:
    images = [frame.to_image() for frame in frames]  # type: ignore[no-untyped-call]
    if not images:
        raise PermanentError(f"{path.name}: no frame could be decoded for the preview")
    # GIF counts time in centiseconds: round each frame's end, not its length, so the
    # total stays right (12 fps alternates 80 and 90 ms).
    unit = 10 if fmt == "gif" else 1
    ends = [round((k + 1) * 1000 / float(rate) / unit) * unit for k in range(len(images))]
    durations = [end - start for start, end in zip([0, *ends[:-1]], ends, strict=True)]
    options: dict[str, Any] = ({"quality": quality, "method": 4} if fmt == "webp"
                               else {"optimize": False})
    try:
        with writing(path):
            images[0].save(path, "WEBP" if fmt == "webp" else "GIF", save_all=True,
                           append_images=images[1:], duration=durations, loop=0, **options)
    except BaseException:
        remove_quietly([path])  # Pillow leaves what it wrote before failing
        raise
    return len(images)


