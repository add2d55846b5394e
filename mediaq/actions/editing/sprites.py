"""``generate_sprite_sheet``: tiled stills in sheets, with a WebVTT thumbnail track."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from av.container import InputContainer
from av.video.frame import VideoFrame
from PIL import Image

from mediaq.actions import action
from mediaq.actions.avio import ProgressClock, open_media, reading, writing
from mediaq.actions.base import ActionContext, ActionResult, OutputFile
from mediaq.actions.clip import (
    MAX_IMAGE_SIDE,
    SourceClip,
    even,
    frame_seconds,
    inspect_clip,
    safe_stem,
)
from mediaq.actions.frames import decode_tolerantly, seek_to, turn_image
from mediaq.errors import PermanentError

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
            self.forward = decode_tolerantly(self.container, [self.stream])
        if self.forward is not None:
            return self._first_from(self.forward, target)
        key = self._keyframe_before(target)
        if key is not None and after < key[0] and key[0] >= target - self.slack:
            return key
        self.exact += 1
        seek_to(self.container, self.stream, target)
        return self._first_from(decode_tolerantly(self.container, [self.stream]), target)

    def _keyframe_before(self, target: float) -> tuple[float, VideoFrame] | None:
        self.stream.codec_context.skip_frame = "NONKEY"
        seek_to(self.container, self.stream, target)
        key: VideoFrame | None = next(decode_tolerantly(self.container, [self.stream]), None)
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


