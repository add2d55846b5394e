"""``split_video``: plan chunks of a long video at its keyframes, from the packet index.

Only packets are read (no decoding), so planning a two-hour film costs seconds. A chunk
starts at a keyframe, so an encoder of that chunk can start decoding there; frames are
assigned to chunks by presentation time, so an open GOP's leading B-frames (shown before
their keyframe) belong to the chunk before, which decodes them.
"""

from __future__ import annotations

import itertools
import statistics
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from mediaq.actions import action
from mediaq.actions.avio import common_origin, open_media, reading
from mediaq.actions.base import ActionContext, ActionResult
from mediaq.errors import PermanentError

# A keyframe this much closer to the one before than the source's usual GOP was placed
# by the source's encoder at a scene cut: a seam there hides in a cut.
SCENE_CUT_GOP_FRACTION = 0.8
# How far from the target (as a fraction of chunk_seconds) a seam may move to land on a
# scene-cut keyframe; otherwise the keyframe nearest the target is taken.
SCENE_WINDOW = 0.25
# A last chunk shorter than this fraction of chunk_seconds is merged into the one before.
SHORT_TAIL = 0.5


@dataclass(frozen=True)
class SourceFrames:
    """The video's frames in presentation order: their pts and which are keyframes."""

    pts: list[int]
    keyframe: list[bool]
    time_base: Fraction
    end_pts: int  # where the last frame ends


def read_frames(ctx: ActionContext) -> tuple[SourceFrames, bool, float]:
    """The source's video frames (from packets), whether it has audio, and the common
    origin of its streams (seconds)."""
    source = ctx.source_path
    with open_media(source) as container, reading(source):
        if not container.streams.video:
            raise PermanentError(f"{source.name}: has no video stream")
        stream: Any = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        origin = common_origin(stream, audio)
        frames: list[tuple[int, bool, int]] = []
        for count, packet in enumerate(container.demux(stream), start=1):
            if packet.pts is None or packet.size == 0:
                continue  # the demuxer's flush packet, or an empty one
            frames.append((packet.pts, bool(packet.is_keyframe), packet.duration or 0))
            if count % 2000 == 0:
                ctx.check()
        time_base = stream.time_base
    if not frames:
        raise PermanentError(f"{source.name}: the video stream has no frames")
    frames.sort()
    pts = [f[0] for f in frames]
    if len(set(pts)) != len(pts):
        raise PermanentError(f"{source.name}: two video frames share a timestamp "
                             "(cannot be cut exactly)")
    last_duration = frames[-1][2] or (pts[-1] - pts[-2] if len(pts) > 1 else 1)
    return (SourceFrames(pts, [f[1] for f in frames], Fraction(time_base),
                         pts[-1] + last_duration), audio is not None, origin)


def scene_cut_keyframes(frames: SourceFrames) -> set[int]:
    """Indexes of keyframes that came sooner than the source's usual GOP (scene cuts)."""
    keys = [i for i, key in enumerate(frames.keyframe) if key]
    gaps = [frames.pts[b] - frames.pts[a] for a, b in itertools.pairwise(keys)]
    if len(gaps) < 3:
        return set()
    usual = statistics.median(gaps)
    return {b for a, b in itertools.pairwise(keys)
            if frames.pts[b] - frames.pts[a] < SCENE_CUT_GOP_FRACTION * usual}


def plan_cuts(frames: SourceFrames, chunk_seconds: float) -> list[int]:
    """The frame indexes where chunks start (the first is 0): keyframes about
    ``chunk_seconds`` apart, a scene-cut keyframe preferred within the window."""
    seconds = [float((p - frames.pts[0]) * frames.time_base) for p in frames.pts]
    total = float((frames.end_pts - frames.pts[0]) * frames.time_base)
    keys = [i for i, key in enumerate(frames.keyframe) if key and i > 0]
    cuts_at_scenes = scene_cut_keyframes(frames)
    window = SCENE_WINDOW * chunk_seconds
    cuts = [0]
    while True:
        target = seconds[cuts[-1]] + chunk_seconds
        if total - target < SHORT_TAIL * chunk_seconds:
            break
        later = [i for i in keys if i > cuts[-1] and total - seconds[i] >= SHORT_TAIL
                 * chunk_seconds and seconds[i] - seconds[cuts[-1]] >= SHORT_TAIL
                 * chunk_seconds]
        if not later:
            break
        scenes = [i for i in later if i in cuts_at_scenes and abs(seconds[i] - target) <= window]
        pool = scenes or later
        cuts.append(min(pool, key=lambda i: (abs(seconds[i] - target), i)))
    return cuts


def chunk_items(frames: SourceFrames, cuts: list[int]) -> list[dict[str, Any]]:
    """The plan as ``for_each`` items: each a mapping of encode_chunk parameters."""
    first = frames.pts[0]
    items = []
    for index, start in enumerate(cuts):
        end = cuts[index + 1] if index + 1 < len(cuts) else len(frames.pts)
        end_pts = frames.pts[end] if end < len(frames.pts) else frames.end_pts
        items.append({
            "chunk_index": index,
            "start": round(float((frames.pts[start] - first) * frames.time_base), 6),
            "end": round(float((end_pts - first) * frames.time_base), 6),
            "start_frame": start, "frame_count": end - start,
            # Exact, on the source stream's clock; the last chunk runs to the end.
            "start_pts": frames.pts[start],
            "end_pts": frames.pts[end] if end < len(frames.pts) else None,
        })
    return items


@action("split_video", {
    "properties": {
        "chunk_seconds": {"type": "number", "minimum": 1, "maximum": 3600, "default": 45},
    },
})
def split_video(ctx: ActionContext) -> ActionResult:
    """Plan chunks of about ``chunk_seconds`` cut at source keyframes (no re-encode)."""
    frames, has_audio, origin = read_frames(ctx)
    cuts = plan_cuts(frames, ctx.params["chunk_seconds"])
    chunks = chunk_items(frames, cuts)
    scenes = scene_cut_keyframes(frames)
    ctx.log(f"split into {len(chunks)} chunks at keyframes "
            f"({sum(1 for c in cuts[1:] if c in scenes)} at scene cuts)")
    return ActionResult(data={
        "chunks": chunks, "chunk_count": len(chunks), "frame_count": len(frames.pts),
        "keyframes": sum(frames.keyframe),
        "duration": round(float((frames.end_pts - frames.pts[0]) * frames.time_base), 6),
        "time_base": str(frames.time_base), "has_audio": has_audio,
        "origin": origin, "seams_at_scene_cuts": sum(1 for c in cuts[1:] if c in scenes),
    })
