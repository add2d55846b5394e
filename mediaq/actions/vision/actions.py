"""``detect_faces`` and ``tag_media``: faces and ImageNet-1k tags for a picture or for
frames sampled from a video, with models that ship inside wheels (see models.py).

Both run on the CPU everywhere; ``device: auto`` uses CUDA for the ONNX models when the
installed ONNX Runtime has it (onnxruntime-gpu), with the same results within the
model's float tolerance. The face detector is CPU-only code (libfacedetection).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from mediaq.actions import action
from mediaq.actions.avio import media_duration, open_media, reading, writing
from mediaq.actions.base import ActionContext, ActionResult, OutputFile
from mediaq.actions.clip import safe_stem
from mediaq.actions.vision import models
from mediaq.actions.vision.sampling import (
    every,
    frames_at,
    is_still,
    load_picture,
    scene_middles,
)

DEVICE_SCHEMA: dict[str, Any] = {"enum": ["auto", "cpu", "gpu"], "default": "auto"}
# Tags are read from a 224-pixel crop: frames are decoded at this longest side.
TAG_SIDE = 448


@action("detect_faces", {
    "properties": {
        "interval": {"type": "number", "minimum": 0.04, "maximum": 3600, "default": 1.0},
        "max_frames": {"type": "integer", "minimum": 1, "maximum": 10_000, "default": 600},
        "min_score": {"type": "number", "minimum": 0.1, "maximum": 1, "default": 0.6},
        "report": {"type": "boolean", "default": True},
    },
})
def detect_faces(ctx: ActionContext) -> ActionResult:
    """Face boxes in a picture, or in video frames sampled every ``interval`` seconds:
    per frame the boxes (x, y, width, height in source pixels) and scores; overall the
    most faces in one frame, the largest face and the times with faces."""
    path = ctx.source_path
    params = ctx.params
    started = time.monotonic()
    frames: list[dict[str, Any]] = []
    size = (0, 0)
    for seconds, rgb in _pictures(ctx, path, params["interval"], params["max_frames"],
                                  models.FACE_MAX_SIDE):
        size = (rgb.shape[1], rgb.shape[0])
        faces = models.detect_faces(rgb, params["min_score"])
        frames.append({"time": seconds, "count": len(faces),
                       "faces": [f.as_data() for f in faces]})
    spent = time.monotonic() - started
    largest = max(((f, face) for f in frames for face in f["faces"]),
                  key=lambda pair: pair[1]["box"][2] * pair[1]["box"][3], default=None)
    data: dict[str, Any] = {
        "model": "libfacedetection (yuface)",
        "frames_analysed": len(frames),
        "faces_count": max((f["count"] for f in frames), default=0),
        "frames_with_faces": sum(1 for f in frames if f["count"]),
        "face_times": [f["time"] for f in frames if f["count"]][:1000],
        "largest_face": None if largest is None else {
            "time": largest[0]["time"], **largest[1],
            "area_fraction": round(largest[1]["box"][2] * largest[1]["box"][3]
                                   / max(size[0] * size[1], 1), 4)},
        "analysed_size": list(size),
        "frames_per_second": round(len(frames) / max(spent, 1e-6), 2),
    }
    outputs = []
    if params["report"]:
        report = ctx.output_path(f"{safe_stem(path)}_faces.json")
        with writing(report):
            report.write_text(json.dumps({**data, "frames": frames}, indent=1) + "\n",
                              encoding="utf-8")
        # The samples travel with the report, so a later step of the job (a digest's
        # faces signal) reads them instead of detecting again.
        outputs.append(OutputFile(report, role="report", meta={
            "format": "json", "face_samples": [[f["time"], f["count"]]
                                               for f in frames][:3600]}))
    ctx.log(f"{path.name}: {data['frames_with_faces']} of {len(frames)} frame(s) with faces, "
            f"{data['frames_per_second']} frames/s")
    return ActionResult(outputs=outputs, data={**data, "frames": frames[:200]})


@action("tag_media", {
    "properties": {
        "top": {"type": "integer", "minimum": 1, "maximum": 20, "default": 5},
        "min_score": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.1},
        "max_scenes": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
        "moderation": {"type": "boolean", "default": False},
        "nsfw_threshold": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.8},
        "device": DEVICE_SCHEMA,
    },
})
def tag_media(ctx: ActionContext) -> ActionResult:
    """ImageNet-1k tags with scores for a picture, or for a video's scenes (one frame
    from the middle of each, a tag keeping its best score over the scenes); with
    ``moderation`` also an NSFW score (open_nsfw) and the tag ``nsfw`` above the threshold."""
    path = ctx.source_path
    params = ctx.params
    tagger = models.tagger(params["device"])
    moderator = models.moderator(params["device"]) if params["moderation"] else None
    started = time.monotonic()
    best: dict[str, float] = {}
    scenes: list[dict[str, Any]] = []
    nsfw = 0.0
    for seconds, rgb, scene in _tag_pictures(ctx, path, params["max_scenes"]):
        found = [(label, score) for label, score in tagger.classify(rgb, params["top"])
                 if score >= params["min_score"]]
        for label, score in found:
            best[label] = max(best.get(label, 0.0), score)
        entry: dict[str, Any] = {"time": seconds, **scene,
                                 "tags": [{"label": k, "score": round(v, 4)} for k, v in found]}
        if moderator is not None:
            entry["nsfw"] = round(moderator.nsfw(rgb), 4)
            nsfw = max(nsfw, entry["nsfw"])
        scenes.append(entry)
    spent = time.monotonic() - started
    tags: list[dict[str, Any]] = [{"label": label, "score": round(score, 4), "model": tagger.model}
            for label, score in sorted(best.items(), key=lambda kv: -kv[1])]
    data: dict[str, Any] = {"tags": tags, "frames_analysed": len(scenes),
                            "frames_per_second": round(len(scenes) / max(spent, 1e-6), 2)}
    if moderator is not None:
        data["nsfw_score"] = nsfw
        if nsfw >= params["nsfw_threshold"]:
            tags.append({"label": "nsfw", "score": round(nsfw, 4), "model": moderator.model})
    if not is_still(path):
        data["scenes"] = scenes[:params["max_scenes"]]
    ctx.log(f"{path.name}: {', '.join(t['label'] for t in tags[:5]) or 'no tag'}")
    return ActionResult(data=data)


def _pictures(ctx: ActionContext, path: Path, interval: float, limit: int,
              max_side: int) -> Any:
    if is_still(path):
        yield 0.0, load_picture(path, max_side)
        return
    with open_media(path) as container, reading(path):
        duration = media_duration(container)
    yield from frames_at(ctx, path, every(duration, interval, limit), max_side)


def _tag_pictures(ctx: ActionContext, path: Path, max_scenes: int) -> Any:
    if is_still(path):
        yield 0.0, load_picture(path, TAG_SIDE), {}
        return
    scenes = scene_middles(ctx, path, max_scenes)
    by_time = {s["time"]: s for s in scenes}
    times = sorted(by_time)
    for index, (seconds, rgb) in enumerate(frames_at(ctx, path, times, TAG_SIDE)):
        scene = by_time[times[min(index, len(times) - 1)]]
        yield seconds, rgb, {"scene": scene["index"], "start": scene["start"],
                             "end": scene["end"]}
