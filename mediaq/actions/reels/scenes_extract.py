"""``extract_scenes``: a video cut at its detected scenes into one clip per scene, each
with a thumbnail. A scene that starts on a keyframe and ends where the next keyframe
starts is copied packet for packet (no quality loss, no encoding time); any other is
re-encoded from the keyframe before it, so every clip starts on its cut."""

from __future__ import annotations

from typing import Any

from mediaq.actions import action
from mediaq.actions.analysis.scenes import scan_for_cuts, scenes_from
from mediaq.actions.base import ActionContext, ActionResult, OutputFile
from mediaq.actions.clip import HARDWARE_SCHEMA, PRESETS, inspect_clip, safe_stem
from mediaq.actions.reels.cutting import (
    copy_range,
    encode_range,
    keyframe_at,
    keyframes,
    still_at,
)
from mediaq.errors import PermanentError

CUT_SCHEMA: dict[str, Any] = {
    "copy": {"enum": ["auto", "never"], "default": "auto"},
    "thumbnails": {"type": "boolean", "default": True},
    "thumbnail_width": {"type": "integer", "minimum": 16, "maximum": 1920, "default": 320},
    "crf": {"type": "integer", "minimum": 0, "maximum": 51, "default": 20},
    "preset": {"enum": PRESETS, "default": "veryfast"},
    "hardware": HARDWARE_SCHEMA,
}


@action("extract_scenes", {
    "properties": {
        "threshold": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.3},
        "min_scene_seconds": {"type": "number", "minimum": 0, "default": 1.0},
        "max_scenes": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 200},
        **CUT_SCHEMA,
    },
})
def extract_scenes(ctx: ActionContext) -> ActionResult:
    """Cut the video at its scenes: one MP4 clip and one JPEG thumbnail per scene."""
    path = ctx.source_path
    params = ctx.params
    scan = scan_for_cuts(ctx, path, threshold=params["threshold"],
                         min_scene_seconds=params["min_scene_seconds"], max_width=160)
    scenes = merge_short_tail(scenes_from(scan), params["min_scene_seconds"])
    scenes = scenes[:params["max_scenes"]]
    ranges = [(s["start"], s["end"]) for s in scenes]
    outputs, described = cut_ranges(ctx, ranges, "scene")
    for scene, info in zip(scenes, described, strict=True):
        info.update(index=scene["index"], cut_score=scene["cut_score"])
    ctx.log(f"{path.name}: {len(scenes)} scene(s), "
            f"{sum(1 for d in described if d['mode'] == 'copy')} copied")
    return ActionResult(outputs=outputs, data={
        "scenes": described, "scene_count": len(scenes),
        "copied": sum(1 for d in described if d["mode"] == "copy"),
        "encoded": sum(1 for d in described if d["mode"] == "encode"),
    })


def merge_short_tail(scenes: list[dict[str, Any]], minimum: float) -> list[dict[str, Any]]:
    """The last scene joined to the one before when it is shorter than ``minimum`` (the
    scan spaces cuts at least that far apart, but the end of the video is no cut)."""
    if len(scenes) > 1 and scenes[-1]["end"] - scenes[-1]["start"] < minimum:
        last = scenes.pop()
        scenes[-1] = {**scenes[-1], "end": last["end"], "end_frame": last["end_frame"]}
    return scenes


def cut_ranges(ctx: ActionContext, ranges: list[tuple[float, float]],
               label: str) -> tuple[list[OutputFile], list[dict[str, Any]]]:
    """Each (start, end) of the source as its own clip (copied when keyframes allow),
    with a thumbnail; the outputs and a description of each clip."""
    path = ctx.source_path
    params = ctx.params
    clip = inspect_clip(path)
    keys, _ = keyframes(path)
    tolerance = 0.5 / float(clip.rate)
    stem = safe_stem(path)
    outputs: list[OutputFile] = []
    described: list[dict[str, Any]] = []
    for number, (start, end) in enumerate(ranges):
        ctx.progress(number / max(len(ranges), 1), f"cutting {label} {number + 1}")
        end = min(end, clip.duration)  # never pad a clip past the source's end
        if end - start < 1 / float(clip.rate):
            raise PermanentError(f"{path.name}: {label} {number} ({start:.3f} s to "
                                 f"{end:.3f} s) lies outside the video ({clip.duration:.3f} s)")
        target = ctx.output_path(f"{stem}_{label}{number:03d}.mp4")
        reaches_end = end >= clip.duration - tolerance
        first = keyframe_at(keys, start, tolerance)
        last = None if reaches_end else keyframe_at(keys, end, tolerance)
        if params["copy"] == "auto" and first is not None and (reaches_end or last):
            copy_range(path, target, first, last)
            mode = "copy"
        else:
            encode_range(ctx, clip, target, start, end)
            mode = "encode"
        info = {"start": round(start, 3), "end": round(end, 3),
                "duration": round(end - start, 3), "mode": mode, "file": target.name}
        outputs.append(OutputFile(target, role="rendition", meta={
            "format": "mp4", "start": info["start"], "end": info["end"],
            "duration": info["duration"], "mode": mode}))
        if params["thumbnails"]:
            still = ctx.output_path(f"{stem}_{label}{number:03d}.jpg")
            still_at(path, (start + end) / 2, still, params["thumbnail_width"])
            outputs.append(OutputFile(still, role="thumbnail", meta={
                "format": "jpeg", "start": info["start"], "end": info["end"]}))
            info["thumbnail"] = still.name
        described.append(info)
    return outputs, described
