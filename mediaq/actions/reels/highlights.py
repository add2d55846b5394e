"""``generate_highlights``, ``generate_digest`` and ``extract_clips``.

A video is cut into segments of about ``segment_seconds`` that never cross a scene cut;
each is scored from motion energy, loudness peaks, scene changes and (optionally) faces
(signals.py). A digest keeps the best segments until they fill ``target_length``; a
highlight reel keeps the best ``count``. The kept segments play in time order, joined
by ``crossfade``-second crossfades, as one MP4; ``extract_clips`` exports each chosen
segment as its own clip.
"""

from __future__ import annotations

from typing import Any

from mediaq.actions import action
from mediaq.actions.base import ActionContext, ActionResult, OutputFile
from mediaq.actions.clip import HARDWARE_SCHEMA, PRESETS, inspect_clip, safe_stem
from mediaq.actions.reels.reel import Piece, ReelWriter
from mediaq.actions.reels.scenes_extract import CUT_SCHEMA, cut_ranges
from mediaq.actions.reels.signals import Segment, measure, score, segments_of
from mediaq.errors import PermanentError

WEIGHTS_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "properties": {k: {"type": "number", "minimum": 0, "maximum": 10}
                   for k in ("motion", "loudness", "scene_change", "faces")},
    "default": {"motion": 1.0, "loudness": 1.0, "scene_change": 0.3, "faces": 0.5},
}
SCORING_SCHEMA: dict[str, Any] = {
    "segment_seconds": {"type": "number", "minimum": 1, "maximum": 60, "default": 4},
    "weights": WEIGHTS_SCHEMA,
    "faces": {"type": "boolean", "default": False},
    "face_interval": {"type": "number", "minimum": 0.2, "maximum": 60, "default": 2.0},
}
REEL_SCHEMA: dict[str, Any] = {
    **SCORING_SCHEMA,
    "crossfade": {"type": "number", "minimum": 0, "maximum": 2, "default": 0.5},
    "crf": {"type": "integer", "minimum": 0, "maximum": 51, "default": 23},
    "preset": {"enum": PRESETS, "default": "veryfast"},
    "hardware": HARDWARE_SCHEMA,
}


@action("generate_digest", {
    "properties": {"target_length": {"type": "number", "minimum": 2, "maximum": 3600,
                                     "default": 60}, **REEL_SCHEMA},
})
def generate_digest(ctx: ActionContext) -> ActionResult:
    """The best segments, in time order with crossfades, lasting ``target_length``
    seconds (the whole video, joined the same way, when it is shorter)."""
    segments = scored_segments(ctx)
    chosen = fill_length(segments, ctx.params["target_length"], ctx.params["crossfade"])
    return write_reel(ctx, segments, chosen, "digest")


@action("generate_highlights", {
    "properties": {"count": {"type": "integer", "minimum": 1, "maximum": 100, "default": 5},
                   **REEL_SCHEMA},
})
def generate_highlights(ctx: ActionContext) -> ActionResult:
    """The ``count`` best segments, in time order with crossfades."""
    segments = scored_segments(ctx)
    return write_reel(ctx, segments, top(segments, ctx.params["count"]), "highlights")


@action("extract_clips", {
    "properties": {
        "segments": {"type": "array", "maxItems": 500, "items": {
            "type": "object", "required": ["start", "end"],
            "properties": {"start": {"type": "number", "minimum": 0},
                           "end": {"type": "number", "exclusiveMinimum": 0}}}},
        "count": {"type": "integer", "minimum": 1, "maximum": 100, "default": 5},
        **SCORING_SCHEMA, **CUT_SCHEMA,
    },
})
def extract_clips(ctx: ActionContext) -> ActionResult:
    """Each chosen segment as its own MP4 with a thumbnail: the ``segments`` given, else
    those a digest or highlights step of this job chose, else the ``count`` best."""
    ranges = chosen_ranges(ctx)
    outputs, described = cut_ranges(ctx, ranges, "clip")
    return ActionResult(outputs=outputs, data={"clips": described, "clip_count": len(ranges)})


def scored_segments(ctx: ActionContext) -> list[Segment]:
    params = ctx.params
    known = None
    if params["faces"]:
        known = next(([(float(t), int(c)) for t, c in out["face_samples"]]
                      for out in reversed(ctx.previous_outputs)
                      if isinstance(out.get("face_samples"), list)), None)
    signals = measure(ctx, ctx.source_path,
                      face_interval=params["face_interval"] if params["faces"] else None,
                      known_faces=known)
    segments = segments_of(signals, params["segment_seconds"])
    score(segments, signals, {**WEIGHTS_SCHEMA["default"], **params["weights"]})
    ctx.log(f"{ctx.source_path.name}: {len(segments)} segment(s) scored from {signals.frames} "
            f"frames in {signals.seconds_spent:.1f} s")
    return segments


def top(segments: list[Segment], count: int) -> list[Segment]:
    best = sorted(segments, key=lambda s: (-s.score, s.start))[:count]
    return sorted(best, key=lambda s: s.start)


def fill_length(segments: list[Segment], target: float, crossfade: float) -> list[Segment]:
    """Best first until the joined length (each crossfade overlaps two segments) reaches
    ``target``; the last one taken is shortened so that the total is ``target``."""
    chosen: list[Segment] = []
    total = 0.0
    for seg in sorted(segments, key=lambda s: (-s.score, s.start)):
        if total >= target - 1e-6:
            break
        if seg.duration <= 2 * crossfade + 0.2:
            continue  # too short to fade in and out
        chosen.append(seg)
        total += seg.duration - (crossfade if len(chosen) > 1 else 0.0)
    if chosen and total > target:
        last = chosen[-1]
        shorter = last.duration - (total - target)
        if shorter > 2 * crossfade + 0.2:
            chosen[-1] = Segment(last.start, last.start + shorter, last.starts_scene,
                                 last.score, last.parts)
        elif len(chosen) > 1:
            chosen.pop()
    return sorted(chosen, key=lambda s: s.start)


def write_reel(ctx: ActionContext, segments: list[Segment], chosen: list[Segment],
               label: str) -> ActionResult:
    if not chosen:
        raise PermanentError(f"{ctx.source_path.name}: no segment long enough to keep")
    params = ctx.params
    clip = inspect_clip(ctx.source_path)
    target = ctx.output_path(f"{safe_stem(ctx.source_path)}_{label}.mp4")
    writer = ReelWriter(ctx, target, crossfade=params["crossfade"], crf=params["crf"],
                        preset=params["preset"], hardware=params["hardware"], first=clip,
                        audio=clip.audio_rate is not None)
    planned = sum(s.duration for s in chosen) - params["crossfade"] * (len(chosen) - 1)
    result = writer.write([Piece(clip, s.start, s.end) for s in chosen],
                          planned_seconds=planned)
    kept = [s.as_data() for s in chosen]
    return ActionResult(
        outputs=[OutputFile(target, role="rendition", meta={
            "format": "mp4", "duration": result.duration, "segments": kept})],
        data={"segments": kept, "segment_count": len(kept), "duration": result.duration,
              "source_duration": clip.duration, "crossfade": params["crossfade"],
              "candidates": [s.as_data() for s in segments][:500],
              "encoder": result.encoder, "audio": result.audio})


def chosen_ranges(ctx: ActionContext) -> list[tuple[float, float]]:
    given = ctx.params.get("segments")
    if given:
        return [(float(s["start"]), float(s["end"])) for s in given if s["end"] > s["start"]]
    for output in reversed(ctx.previous_outputs):
        if isinstance(output.get("segments"), list) and output["segments"]:
            return [(float(s["start"]), float(s["end"])) for s in output["segments"]]
    return [(s.start, s.end) for s in top(scored_segments(ctx), ctx.params["count"])]
