"""Derived-video actions: sprite sheets with a WebVTT track, short previews, and
compilations (concat or a 2x2 grid), built on the shared pieces of
:mod:`mediaq.actions.clip`."""


from __future__ import annotations

import contextlib
import math
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from av.audio.frame import AudioFrame
from av.container import InputContainer
from av.video.frame import VideoFrame
from PIL import Image

from mediaq.actions import action
from mediaq.actions.avio import (
    BITRATE_SCHEMA,
    ProgressClock,
    choose_video_encoder,
    encoder_options,
    open_media,
    open_output,
    parse_bitrate,
    reading,
    writing,
)
from mediaq.actions.base import ActionContext, ActionResult, OutputFile
from mediaq.actions.clip import (
    HARDWARE_SCHEMA,
    MAX_IMAGE_SIDE,
    MAX_RATE,
    PRESETS,
    AudioSink,
    AudioTimeline,
    Canvas,
    Letterbox,
    SourceClip,
    add_h264_stream,
    close_quietly,
    constant_rate,
    encode_frame,
    even,
    fit_inside,
    frame_count,
    frame_seconds,
    inspect_clip,
    remove_quietly,
    safe_stem,
    upright_frames,
)
from mediaq.actions.frames import Scaler, seek_to, turn_image
from mediaq.errors import InputRefused, PermanentError

# =========================================================================== sprite sheets

_SHEET_FORMATS = {"jpeg": ("JPEG", "jpg"), "webp": ("WEBP", "webp")}
MAX_TILES = 2000


@action("generate_sprite_sheet", {
    "properties": {
        "interval": {"type": "number", "minimum": 0.1, "maximum": 3600, "default": 10},
        "count": {"type": "integer", "minimum": 1, "maximum": MAX_TILES},
        "width": {"type": "integer", "minimum": 16, "maximum": 640, "default": 160},
        "columns": {"type": "integer", "minimum": 1, "maximum": 50, "default": 10},
        "rows": {"type": "integer", "minimum": 1, "maximum": 50, "default": 10},
        "format": {"enum": sorted(_SHEET_FORMATS), "default": "jpeg"},
        "quality": {"type": "integer", "minimum": 1, "maximum": 100, "default": 80},
    },
})
def generate_sprite_sheet(ctx: ActionContext) -> ActionResult:
    """Tiled stills in sprite sheets, with a WebVTT thumbnail track for players.

    Stills every ``interval`` seconds (or ``count`` stills, which wins when given) go
    into sheets of ``columns`` x ``rows``; the track's cues point at
    ``sheet#xywh=x,y,w,h`` (as video.js, JW Player and Plyr read them)."""
    source = ctx.source_path
    clip = inspect_clip(source)
    layout = plan_sprites(ctx.params, clip)
    sheets, cues, shown = _write_sheets(ctx, clip, layout)
    vtt = ctx.output_path(f"{safe_stem(source)}_sprites.vtt")
    with writing(vtt):
        vtt.write_text("WEBVTT\n\n" + "\n\n".join(cues) + "\n")
    return ActionResult(
        outputs=[OutputFile(vtt, role="sidecar", meta={"kind": "thumbnail_track",
                                                       "cues": len(cues)}), *sheets],
        data={"track": vtt.name, "sheets": [s.staging_path.name for s in sheets],
              "tiles": len(layout.times), "interval": round(layout.interval, 3),
              "tile_width": layout.tile_w, "tile_height": layout.tile_h,
              "columns": layout.columns, "rows": layout.rows, "frame_times": shown})


@dataclass(frozen=True)
class SpriteLayout:
    times: list[float]  # the start of each tile's cue
    interval: float
    tile_w: int
    tile_h: int
    columns: int
    rows: int  # at most, per sheet
    pil_format: str
    ext: str

    def cue_end(self, index: int, duration: float) -> float:
        return self.times[index + 1] if index + 1 < len(self.times) else duration


def plan_sprites(params: dict[str, Any], clip: SourceClip) -> SpriteLayout:
    pil_format, ext = _SHEET_FORMATS[params["format"]]
    interval = duration_per_tile(params, clip.duration)
    times = [i * interval for i in range(math.ceil(clip.duration / interval - 1e-6))] or [0.0]
    tile_w = params["width"]
    tile_h = even(tile_w / clip.aspect)
    columns = min(params["columns"], len(times))
    if columns * tile_w > MAX_IMAGE_SIDE[pil_format]:
        raise PermanentError(f"{clip.path.name}: {columns} columns of {tile_w} px are wider "
                             f"than a {pil_format} image may be")
    # Fewer rows than asked when a sheet would be taller than the format allows.
    rows = max(1, min(params["rows"], MAX_IMAGE_SIDE[pil_format] // tile_h))
    return SpriteLayout(times=times, interval=interval, tile_w=tile_w, tile_h=tile_h,
                        columns=columns, rows=rows, pil_format=pil_format, ext=ext)


def duration_per_tile(params: dict[str, Any], duration: float) -> float:
    interval = duration / params["count"] if params.get("count") else params["interval"]
    # Never more than MAX_TILES tiles, however long the source.
    return float(max(interval, duration / MAX_TILES))


def _write_sheets(ctx: ActionContext, clip: SourceClip,
                  layout: SpriteLayout) -> tuple[list[OutputFile], list[str], list[float]]:
    """The sheet images, the VTT cues, and the time of the frame each tile shows."""
    size = (layout.tile_w, layout.tile_h)
    tiles = keyframe_tiles(ctx, clip, layout.times, layout.interval, size)
    per_sheet = layout.columns * layout.rows
    sheets: list[OutputFile] = []
    cues: list[str] = []
    shown: list[float] = []
    for first in range(0, len(layout.times), per_sheet):
        chunk: list[Image.Image] = []
        for _ in layout.times[first:first + per_sheet]:
            at, tile = next(tiles)
            shown.append(round(at, 3))
            chunk.append(tile)
        path = ctx.output_path(f"{safe_stem(clip.path)}_sprites_{len(sheets) + 1:03d}."
                               f"{layout.ext}")
        sheet = _tile_sheet(chunk, layout.columns, size)
        with writing(path):
            sheet.save(path, layout.pil_format, quality=ctx.params["quality"])
        sheets.append(OutputFile(path, role="thumbnail", meta={
            "kind": "sprite_sheet", "width": sheet.width, "height": sheet.height,
            "tiles": len(chunk)}))
        for offset in range(len(chunk)):
            index = first + offset
            x, y = offset % layout.columns * layout.tile_w, offset // layout.columns * layout.tile_h
            cues.append(f"{_vtt_time(layout.times[index])} --> "
                        f"{_vtt_time(layout.cue_end(index, clip.duration))}\n"
                        f"{path.name}#xywh={x},{y},{layout.tile_w},{layout.tile_h}")
    return sheets, cues, shown


def keyframe_tiles(ctx: ActionContext, clip: SourceClip, times: list[float], interval: float,
                   size: tuple[int, int]) -> Iterator[tuple[float, Image.Image]]:
    """One upright tile per time: the keyframe at or before it when that lies within half
    an interval and was not used yet (cheap: one GOP's first frame), else the frame at the
    time itself. A time past the last decodable frame repeats the last tile. Yields
    (time of the frame shown, tile)."""
    last_time = 0.0
    last_tile = Image.new("RGB", size)
    clock = ProgressClock(ctx, clip.duration, "sprites")
    with open_media(clip.path) as container, reading(clip.path):
        stream: Any = container.streams.video[0]
        stream.codec_context.thread_type = "AUTO"
        finder = StillFinder(container, stream, interval / 2)
        for target in times:
            found = finder.near(target, after=last_time if target > 0 else -1.0)
            if found is not None:
                last_time, frame = found
                image = turn_image(frame.to_image(), clip.rotation)  # type: ignore[no-untyped-call]
                last_tile = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
            clock.tick(target)
            yield last_time, last_tile


class StillFinder:
    """Finds a frame near each of a rising series of times, seeking while keyframes are
    close enough to use. When most times need an exact decode anyway (keyframes further
    apart than the interval), seeking back to a keyframe for each would decode a GOP per
    tile: it then decodes straight through instead."""

    SWITCH_AFTER = 4  # tiles looked at before judging

    def __init__(self, container: InputContainer, stream: Any, slack: float) -> None:
        self.container, self.stream, self.slack = container, stream, slack
        self.origin = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
        self.asked = 0
        self.exact = 0
        self.forward: Iterator[VideoFrame] | None = None

    def near(self, target: float, *, after: float) -> tuple[float, VideoFrame] | None:
        self.asked += 1
        if self.forward is None and self.asked > self.SWITCH_AFTER \
                and self.exact * 2 > self.asked:
            seek_to(self.container, self.stream, target)
            self.forward = self.container.decode(self.stream)
        if self.forward is not None:
            return self._first_from(self.forward, target)
        key = self._keyframe_before(target)
        if key is not None and after < key[0] and key[0] >= target - self.slack:
            return key
        self.exact += 1
        seek_to(self.container, self.stream, target)
        return self._first_from(self.container.decode(self.stream), target)

    def _keyframe_before(self, target: float) -> tuple[float, VideoFrame] | None:
        self.stream.codec_context.skip_frame = "NONKEY"
        seek_to(self.container, self.stream, target)
        key: VideoFrame | None = next(self.container.decode(self.stream), None)
        self.stream.codec_context.skip_frame = "DEFAULT"
        return (self._time(key), key) if key is not None else None

    def _first_from(self, frames: Iterator[VideoFrame],
                    target: float) -> tuple[float, VideoFrame] | None:
        for frame in frames:
            at = self._time(frame)
            if at >= target - 1e-3:
                return at, frame
        return None

    def _time(self, frame: VideoFrame) -> float:
        return frame_seconds(frame, self.stream.time_base) - self.origin


def _tile_sheet(tiles: list[Image.Image], columns: int, size: tuple[int, int]) -> Image.Image:
    rows = math.ceil(len(tiles) / columns)
    sheet = Image.new("RGB", (columns * size[0], rows * size[1]))
    for index, tile in enumerate(tiles):
        sheet.paste(tile, (index % columns * size[0], index // columns * size[1]))
    return sheet


def _vtt_time(seconds: float) -> str:
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}.{rest % 1000:03d}"


# =========================================================================== previews

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
    try:
        if fmt == "mp4":
            count = _write_preview_mp4(path, frames, rate, (width, height))
        else:
            count = _write_animation(path, frames, rate, fmt, ctx.params["quality"])
    except BaseException:
        remove_quietly([path])
        raise
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
    output = open_output(path, format="mp4", options={"movflags": "+faststart"})
    try:
        with writing(path):
            stream = add_h264_stream(output, "libx264", width=size[0], height=size[1],
                                     rate=rate, options={"crf": str(PREVIEW_CRF),
                                                         "preset": "veryfast"})
        count = 0
        for count, frame in enumerate(frames, start=1):
            with writing(path):
                output.mux(encode_frame(stream, frame, count - 1))
        if count == 0:
            raise PermanentError(f"{path.name}: no frame could be decoded for the preview")
        with writing(path):
            output.mux(stream.encode(None))
            output.close()
    except BaseException:
        close_quietly(output)
        raise
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
    with writing(path):
        images[0].save(path, "WEBP" if fmt == "webp" else "GIF", save_all=True,
                       append_images=images[1:], duration=durations, loop=0, **options)
    return len(images)


# =========================================================================== compile


@action("compile_videos", {
    "properties": {
        "inputs": {"type": "array", "maxItems": 64,
                   "items": {"type": "string", "minLength": 1, "maxLength": 4096}},
        "layout": {"enum": ["concat", "grid"], "default": "concat"},
        "width": {"type": "integer", "minimum": 64, "maximum": 3840, "multipleOf": 2},
        "height": {"type": "integer", "minimum": 64, "maximum": 2160, "multipleOf": 2},
        "until": {"enum": ["shortest", "longest"], "default": "shortest"},
        "fps": {"type": "number", "minimum": 1, "maximum": MAX_RATE},
        "audio": {"type": "boolean", "default": True},
        "audio_bitrate": {**BITRATE_SCHEMA, "default": "128k"},
        "crf": {"type": "integer", "minimum": 0, "maximum": 51, "default": 23},
        "preset": {"enum": PRESETS, "default": "veryfast"},
        "hardware": HARDWARE_SCHEMA,
    },
})
def compile_videos(ctx: ActionContext) -> ActionResult:
    """Join several videos into one MP4: one after another, or as a 2x2 mosaic.

    ``inputs`` are paths, relative to the source's folder or absolute, inside that folder
    or below it. The job's source comes first unless ``inputs`` names it (then the list
    order is kept); with no ``inputs`` it is compiled alone. concat: each clip scaled and
    padded to ``width`` x ``height`` (default: the first clip's size), audio joined with
    silence where a clip has none. grid: up to four clips in quadrants of ``width`` x
    ``height`` (default 1280x720), lasting until the shortest or longest ends (a clip
    that ended holds its last frame); the audio is the first clip's.
    """
    paths = compile_inputs(ctx.source_path, ctx.params.get("inputs") or [])
    layout = ctx.params["layout"]
    if layout == "grid" and len(paths) > 4:
        raise PermanentError(f"{ctx.source_path.name}: a grid takes at most 4 videos, "
                             f"got {len(paths)}")
    clips = [inspect_clip(path) for path in paths]
    first = clips[0]
    if layout == "grid":
        size = (ctx.params.get("width", 1280), ctx.params.get("height", 720))
    else:  # the first clip's picture in square pixels
        size = (ctx.params.get("width", even(first.height * first.aspect)),
                ctx.params.get("height", even(first.height)))
    rate = Fraction(ctx.params["fps"]).limit_denominator(1001) if ctx.params.get("fps") \
        else first.rate
    path = ctx.output_path(f"{safe_stem(ctx.source_path)}_compilation.mp4")
    writer = CompilationWriter(ctx, path, clips, size, rate)
    try:
        if layout == "grid":
            frames = writer.write_grid(ctx.params["until"])
        else:
            frames = writer.write_concat()
        writer.close()
    except BaseException:
        writer.abandon()
        raise
    duration = round(frames / float(rate), 3)
    return ActionResult(
        outputs=[OutputFile(path, role="rendition", meta={
            "format": "mp4", "layout": layout, "width": size[0], "height": size[1],
            "duration": duration, "inputs": len(clips)})],
        data={"layout": layout, "inputs": [str(c.path) for c in clips], "width": size[0],
              "height": size[1], "fps": float(rate), "frames": frames, "duration": duration,
              "audio": writer.audio is not None, "encoder": writer.encoder})


def compile_inputs(source: Path, listed: list[str]) -> list[Path]:
    """The clips to compile, each checked to lie in the source's folder or below it."""
    folder = source.parent.resolve()
    paths: list[Path] = []
    for text in listed:
        candidate = Path(text) if Path(text).is_absolute() else source.parent / text
        resolved = candidate.resolve()  # follows symlinks and ".." before the check
        if not resolved.is_relative_to(folder):
            raise InputRefused(f"{candidate.name}: {text} is outside the source's folder "
                               f"{folder}; only files in it or below it can be compiled")
        paths.append(resolved)
    own = source.resolve()
    return paths if own in paths else [own, *paths]


class CompilationWriter:
    """One H.264/AAC MP4 fed clip by clip (concat) or by quadrants (grid)."""

    def __init__(self, ctx: ActionContext, path: Path, clips: list[SourceClip],
                 size: tuple[int, int], rate: Fraction) -> None:
        self.ctx, self.path, self.clips, self.size, self.rate = ctx, path, clips, size, rate
        params = ctx.params
        self.encoder = choose_video_encoder("h264", params["hardware"], ctx)
        self.output = open_output(path, format="mp4", options={"movflags": "+faststart"})
        try:
            with writing(path):
                self.video = add_h264_stream(
                    self.output, self.encoder, width=size[0], height=size[1], rate=rate,
                    options=encoder_options(self.encoder, crf=params["crf"],
                                            preset=params["preset"], max_bitrate=None))
                self.audio = self._audio_track(params)
        except BaseException:
            self.abandon()
            raise
        self.frames = 0
        self.clock = ProgressClock(ctx, self._planned_seconds(params), "compiling",
                                   count_frames=True)

    def _audio_track(self, params: dict[str, Any]) -> AudioTimeline | None:
        # A grid plays the first clip's sound; a concatenation joins every clip's.
        heard = self.clips[:1] if params["layout"] == "grid" else self.clips
        voiced = [c for c in heard if c.audio_rate is not None]
        if not params["audio"] or not voiced:
            return None
        channels = max(c.audio_channels for c in voiced)
        return AudioTimeline(self.output, rate=48_000, channels=min(channels, 2),
                             bit_rate=parse_bitrate(params["audio_bitrate"]))

    def _planned_seconds(self, params: dict[str, Any]) -> float:
        lengths = [c.duration for c in self.clips]
        if params["layout"] == "concat":
            return sum(lengths)
        return min(lengths) if params["until"] == "shortest" else max(lengths)

    # ---- concat

    def write_concat(self) -> int:
        """Every clip in turn, letterboxed to the output size; returns the frame count."""
        for clip in self.clips:
            count = frame_count(clip.duration, self.rate)
            end_sample = self._audio_end(self.frames + count)
            fit = Letterbox(clip.aspect, *self.size)
            for frame in self._clip_frames(clip, count, end_sample):
                self._encode(fit(frame))
            if self.audio is not None:
                self._mux(self.audio.fill(end_sample))
        return self.frames

    # ---- grid

    def write_grid(self, until: str) -> int:
        """Up to four clips side by side in quadrants; returns the frame count."""
        counts = [frame_count(c.duration, self.rate) for c in self.clips]
        total = min(counts) if until == "shortest" else max(counts)
        quad_w, quad_h = self.size[0] // 4 * 2, self.size[1] // 4 * 2
        end_sample = self._audio_end(total)
        with contextlib.ExitStack() as stack:
            streams: list[Iterator[VideoFrame]] = []
            for index, (clip, count) in enumerate(zip(self.clips, counts, strict=True)):
                frames = self._clip_frames(clip, min(count, total),
                                           end_sample if index == 0 else None)
                streams.append(stack.enter_context(contextlib.closing(frames)))
            fits = [Letterbox(clip.aspect, quad_w, quad_h) for clip in self.clips]
            canvas = Canvas(*self.size)  # quadrants are overwritten in place, frame by frame
            for _ in range(total):
                for index, stream in enumerate(streams):
                    frame = next(stream, None)
                    if frame is not None:  # an ended clip holds its last frame
                        canvas.paste(fits[index](frame), index % 2 * quad_w,
                                     index // 2 * quad_h)
                self._encode(canvas.frame())
            if self.audio is not None:
                for _ in streams[0]:  # the first clip's audio up to the end
                    pass
                self._mux(self.audio.fill(end_sample))
        return self.frames

    # ---- shared

    def _clip_frames(self, clip: SourceClip, count: int,
                     audio_until: int | None) -> Generator[VideoFrame, None, None]:
        """``count`` upright frames of ``clip`` at the output rate; its audio (when
        ``audio_until`` is given) goes onto the timeline as it is demuxed."""
        with open_media(clip.path) as container, reading(clip.path):
            yield from self._decode_clip(container, clip, count, audio_until)

    def _decode_clip(self, container: InputContainer, clip: SourceClip, count: int,
                     audio_until: int | None) -> Iterator[VideoFrame]:
        vstream: Any = container.streams.video[0]
        vstream.codec_context.thread_type = "AUTO"
        astream = container.streams.audio[0] if container.streams.audio else None
        on_audio: AudioSink | None = None
        if self.audio is not None and astream is not None and audio_until is not None:
            on_audio = self._audio_sink(self.audio, audio_until)
        frames = upright_frames(container, vstream, astream, on_audio)
        produced = 0
        for frame in constant_rate(frames, start=0.0, rate=self.rate, count=count):
            produced += 1
            yield frame
        if produced == 0:
            raise PermanentError(f"{clip.path.name}: the video stream has no decodable frame")
        if self.audio is not None and on_audio is not None and audio_until is not None:
            for _ in frames:  # the clip's audio that comes after its last video frame
                pass
            self._mux(self.audio.add(None, audio_until))

    def _audio_sink(self, timeline: AudioTimeline, until: int) -> AudioSink:
        """Where a clip's decoded audio goes: onto the timeline, up to sample ``until``."""
        timeline.begin_clip()

        def sink(frame: AudioFrame) -> None:
            self._mux(timeline.add(frame, until))

        return sink

    def _audio_end(self, frames: int) -> int:
        return self.audio.samples_at(frames / float(self.rate)) if self.audio else 0

    def _encode(self, frame: VideoFrame) -> None:
        self._mux(encode_frame(self.video, frame, self.frames))
        self.frames += 1
        self.clock.tick(self.frames / float(self.rate))

    def _mux(self, packets: list[Any]) -> None:
        with writing(self.path):
            self.output.mux(packets)

    def close(self) -> None:
        self._mux(list(self.video.encode(None)))
        if self.audio is not None:
            self._mux(self.audio.finish())
        with writing(self.path):
            self.output.close()

    def abandon(self) -> None:
        close_quietly(self.output)
        remove_quietly([self.path])
