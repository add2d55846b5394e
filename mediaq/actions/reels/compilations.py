"""``compile_random`` and ``compile_mega``: compilations of many videos, streaming.

Where the inputs come from: the ``candidates``/``inputs`` parameter, or else the videos in
the job's source folder. Actions never read the database, so a draw from the media
library happens before the step: ``mediaq assets random --submit WORKFLOW`` draws from
the catalog with a seed and hands the paths to the step as ``candidates``. Every path
must lie inside the worker's input roots (or, with none configured, the source's folder).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Generator
from fractions import Fraction
from pathlib import Path
from typing import Any

from av.video.frame import VideoFrame

from mediaq.actions import action
from mediaq.actions.avio import (
    ProgressClock,
    choose_video_encoder,
    encoder_options,
    open_media,
    reading,
)
from mediaq.actions.base import ActionContext, ActionResult, OutputFile
from mediaq.actions.clip import (
    HARDWARE_SCHEMA,
    MAX_RATE,
    PRESETS,
    Canvas,
    Letterbox,
    SourceClip,
    add_h264_stream,
    constant_rate,
    encode_frame,
    even,
    frame_count,
    inspect_clip,
    safe_stem,
    upright_frames,
)
from mediaq.actions.media_output import media_output
from mediaq.actions.reels.reel import Piece, ReelWriter
from mediaq.errors import InputRefused, PermanentError

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".ts", ".mts",
                            ".mpg", ".mpeg"})
PATHS_SCHEMA: dict[str, Any] = {"type": "array", "maxItems": 5000,
                                "items": {"type": "string", "minLength": 1, "maxLength": 4096}}
OUTPUT_SCHEMA: dict[str, Any] = {
    "width": {"type": "integer", "minimum": 64, "maximum": 3840, "multipleOf": 2},
    "height": {"type": "integer", "minimum": 64, "maximum": 2160, "multipleOf": 2},
    "fps": {"type": "number", "minimum": 1, "maximum": MAX_RATE},
    "crossfade": {"type": "number", "minimum": 0, "maximum": 2, "default": 0.5},
    "audio": {"type": "boolean", "default": True},
    "crf": {"type": "integer", "minimum": 0, "maximum": 51, "default": 23},
    "preset": {"enum": PRESETS, "default": "veryfast"},
    "hardware": HARDWARE_SCHEMA,
}


@action("compile_random", {
    "properties": {
        "candidates": PATHS_SCHEMA,
        "count": {"type": "integer", "minimum": 1, "maximum": 500, "default": 5},
        "seed": {"type": "integer", "default": 0},
        "orientation": {"enum": ["landscape", "portrait", "square"]},
        "min_duration": {"type": "number", "minimum": 0},
        "max_duration": {"type": "number", "minimum": 0},
        **OUTPUT_SCHEMA,
    },
})
def compile_random(ctx: ActionContext) -> ActionResult:
    """``count`` videos drawn with ``seed`` from the candidates (or the source's folder)
    that match ``orientation`` and the duration range, joined with crossfades. The same
    seed over the same candidates draws the same videos in the same order."""
    params = ctx.params
    order = sorted(set(input_pool(ctx, params.get("candidates") or [])))
    random.Random(params["seed"]).shuffle(order)
    chosen: list[SourceClip] = []
    refused: list[str] = []
    for path in order:
        if len(chosen) >= params["count"]:
            break
        try:
            clip = inspect_clip(path)
        except PermanentError as exc:
            refused.append(str(exc))
            continue
        if matches(clip, params):
            chosen.append(clip)
    if not chosen:
        raise PermanentError(f"{ctx.source_path.name}: no candidate video matches the "
                             f"filters ({len(order)} looked at)")
    result = join(ctx, chosen, "random")
    result.data.update(seed=params["seed"], candidates=len(order), unreadable=refused[:20])
    return result


@action("compile_mega", {
    "properties": {
        "inputs": PATHS_SCHEMA,
        "order": {"enum": ["name", "random"], "default": "name"},
        "seed": {"type": "integer", "default": 0},
        "clip_seconds": {"type": "number", "minimum": 0.5, "maximum": 3600},
        "layout": {"enum": ["concat", "grid"], "default": "concat"},
        "columns": {"type": "integer", "minimum": 1, "maximum": 8, "default": 3},
        "rows": {"type": "integer", "minimum": 1, "maximum": 8, "default": 3},
        **OUTPUT_SCHEMA,
    },
})
def compile_mega(ctx: ActionContext) -> ActionResult:
    """Dozens or hundreds of videos as one: one after another with crossfades (each
    trimmed to ``clip_seconds`` if given), or ``columns`` x ``rows`` grids, page after
    page. One input is decoded at a time (a grid page's cells together): memory does not
    grow with the number of inputs."""
    params = ctx.params
    paths = sorted(set(input_pool(ctx, params.get("inputs") or [])), key=str)
    if params["order"] == "random":
        random.Random(params["seed"]).shuffle(paths)
    clips = [inspect_clip(path) for path in paths]  # headers only: small, and refuses early
    if params["layout"] == "grid":
        return grid_pages(ctx, clips)
    return join(ctx, clips, "mega")


def input_pool(ctx: ActionContext, listed: list[str]) -> list[Path]:
    """The listed paths, or the videos in the source's folder; each checked to lie in
    the input roots (or the source's folder when the worker names no roots)."""
    source = ctx.source_path
    folder = source if source.is_dir() else source.parent
    roots = ctx.input_roots or (folder,)
    if listed:
        paths = [Path(text) if Path(text).is_absolute() else folder / text for text in listed]
    else:
        paths = [p for p in folder.iterdir()
                 if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()
                 and not p.name.startswith(".")]
    checked = []
    for path in paths:
        resolved = path.resolve()  # follows symlinks and ".." before the check
        if not any(resolved.is_relative_to(root.resolve()) for root in roots):
            raise InputRefused(f"{path.name}: {path} is outside the input roots; only "
                               f"files inside them can be compiled")
        checked.append(resolved)
    if not checked:
        raise PermanentError(f"{source.name}: no video to compile in {folder}")
    return checked


def matches(clip: SourceClip, params: dict[str, Any]) -> bool:
    orientation = ("landscape" if clip.width > clip.height else
                   "portrait" if clip.width < clip.height else "square")
    return ((params.get("orientation") in (None, orientation))
            and clip.duration >= params.get("min_duration", 0)
            and clip.duration <= params.get("max_duration", float("inf")))


def output_shape(params: dict[str, Any], first: SourceClip) -> tuple[tuple[int, int], Fraction]:
    size = (params.get("width", even(first.height * first.aspect)),
            params.get("height", even(first.height)))
    rate = Fraction(params["fps"]).limit_denominator(1001) if params.get("fps") \
        else first.rate
    return size, rate


def join(ctx: ActionContext, clips: list[SourceClip], label: str) -> ActionResult:
    """The clips one after another with crossfades, letterboxed to one size."""
    params = ctx.params
    size, rate = output_shape(params, clips[0])
    seconds = params.get("clip_seconds")
    pieces = [Piece(c, 0.0, min(c.duration, seconds) if seconds else c.duration)
              for c in clips]
    target = ctx.output_path(f"{safe_stem(ctx.source_path)}_{label}.mp4")
    writer = ReelWriter(ctx, target, crossfade=params["crossfade"], crf=params["crf"],
                        preset=params["preset"], hardware=params["hardware"],
                        first=clips[0], size=size, rate=rate, audio=params["audio"])
    planned = sum(p.end - p.start for p in pieces) - params["crossfade"] * (len(pieces) - 1)
    result = writer.write(pieces, planned_seconds=planned)
    inputs = [{"path": str(p.clip.path), "seconds": round(p.end - p.start, 3)} for p in pieces]
    return ActionResult(
        outputs=[OutputFile(target, role="rendition", meta={
            "format": "mp4", "width": size[0], "height": size[1],
            "duration": result.duration, "inputs": len(pieces)})],
        data={"inputs": inputs, "width": size[0], "height": size[1], "fps": float(rate),
              "frames": result.frames, "duration": result.duration,
              "crossfade": params["crossfade"], "encoder": result.encoder,
              "audio": result.audio})


def grid_pages(ctx: ActionContext, clips: list[SourceClip]) -> ActionResult:
    """``columns`` x ``rows`` clips at a time in a mosaic (video only), each page as long
    as its longest clip (``clip_seconds`` at most); a clip that ended holds its last frame."""
    params = ctx.params
    size = (params.get("width", 1920), params.get("height", 1080))
    rate = Fraction(params["fps"]).limit_denominator(1001) if params.get("fps") \
        else min(c.rate for c in clips)
    cells = params["columns"] * params["rows"]
    cell_w, cell_h = size[0] // params["columns"] // 2 * 2, size[1] // params["rows"] // 2 * 2
    pages = [clips[i:i + cells] for i in range(0, len(clips), cells)]
    limit = params.get("clip_seconds") or float("inf")
    lengths = [min(max(c.duration for c in page), limit) for page in pages]
    target = ctx.output_path(f"{safe_stem(ctx.source_path)}_mega_grid.mp4")
    encoder = choose_video_encoder("h264", params["hardware"], ctx)
    clock = ProgressClock(ctx, sum(lengths), "compiling grid", count_frames=True)
    written = 0
    with media_output(target, format="mp4", options={"movflags": "+faststart"}) as out:
        video = out.add_stream(
            lambda c: add_h264_stream(c, encoder, width=size[0], height=size[1], rate=rate,
                                      options=encoder_options(encoder, crf=params["crf"],
                                                              preset=params["preset"],
                                                              max_bitrate=None)),
            drain=lambda s: s.encode(None))
        for page, seconds in zip(pages, lengths, strict=True):
            count = frame_count(seconds, rate)
            canvas = Canvas(*size)  # a fresh black page: unused cells stay black
            with contextlib.ExitStack() as stack:
                streams = [stack.enter_context(contextlib.closing(
                    _cell_frames(clip, rate, count))) for clip in page]
                fits = [Letterbox(clip.aspect, cell_w, cell_h) for clip in page]
                for _ in range(count):
                    for index, stream in enumerate(streams):
                        frame = next(stream, None)
                        if frame is not None:  # an ended clip holds its last frame
                            canvas.paste(fits[index](frame),
                                         index % params["columns"] * cell_w,
                                         index // params["columns"] * cell_h)
                    out.mux(encode_frame(video, canvas.frame(), written))
                    written += 1
                    clock.tick(written / float(rate))
    duration = round(written / float(rate), 3)
    return ActionResult(
        outputs=[OutputFile(target, role="rendition", meta={
            "format": "mp4", "width": size[0], "height": size[1], "duration": duration,
            "inputs": len(clips)})],
        data={"inputs": [{"path": str(c.path)} for c in clips], "pages": len(pages),
              "columns": params["columns"], "rows": params["rows"], "width": size[0],
              "height": size[1], "fps": float(rate), "frames": written,
              "duration": duration, "encoder": encoder, "audio": False})


def _cell_frames(clip: SourceClip, rate: Fraction, count: int
                 ) -> Generator[VideoFrame, None, None]:
    with open_media(clip.path) as container, reading(clip.path):
        stream: Any = container.streams.video[0]
        stream.codec_context.thread_type = "AUTO"
        yield from constant_rate(upright_frames(container, stream), start=0.0, rate=rate,
                                 count=min(count, frame_count(clip.duration, rate)))
