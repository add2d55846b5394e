"""Pictures for the models: a still image as it is shown (EXIF orientation applied), or
frames of a video at chosen times, decoded in one forward pass (one frame in memory)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mediaq.actions.analysis.scenes import scan_for_cuts, scenes_from
from mediaq.actions.avio import ProgressClock, media_duration, open_media, reading
from mediaq.actions.base import ActionContext, check_source_file
from mediaq.actions.clip import upright_frames
from mediaq.actions.vision.models import RGB
from mediaq.errors import PermanentError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif",
                            ".tiff", ".heic", ".heif", ".avif"})


def is_still(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def load_picture(path: Path, max_side: int) -> RGB:
    """An RGB array of the image, upright, its longest side at most ``max_side``."""
    check_source_file(path)
    try:
        with Image.open(path) as opened:
            opened.draft("RGB", (max_side, max_side))  # JPEG shrink-on-load
            image = ImageOps.exif_transpose(opened).convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise PermanentError(f"{path.name}: not a readable image ({exc})") from None
    image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return np.asarray(image)


def frames_at(ctx: ActionContext, path: Path, times: list[float],
              max_side: int) -> Iterator[tuple[float, RGB]]:
    """(time, RGB frame) for the first frame at or after each of ``times`` (sorted)."""
    wanted = sorted(times)
    if not wanted:
        return
    with open_media(path) as container, reading(path):
        if not container.streams.video:
            raise PermanentError(f"{path.name}: has no video stream")
        stream: Any = container.streams.video[0]
        stream.codec_context.thread_type = "AUTO"
        clock = ProgressClock(ctx, media_duration(container), "analysing frames")
        index = 0
        for seconds, frame in upright_frames(container, stream):
            clock.tick(seconds)
            if seconds + 1e-3 < wanted[index]:
                continue
            scale = min(1.0, max_side / max(frame.width, frame.height))
            width = max(2, round(frame.width * scale) // 2 * 2)
            height = max(2, round(frame.height * scale) // 2 * 2)
            rgb: RGB = frame.to_ndarray(  # type: ignore[assignment]
                format="rgb24", width=width, height=height)
            while index < len(wanted) and seconds + 1e-3 >= wanted[index]:
                index += 1
            yield seconds, rgb
            if index >= len(wanted):
                return


def every(duration: float, interval: float, limit: int) -> list[float]:
    """Times from 0 every ``interval`` seconds, at most ``limit`` of them (spread over
    the whole duration when the interval would give more)."""
    count = max(1, min(limit, int(duration / interval) + 1))
    step = max(interval, duration / count) if count == limit else interval
    return [round(i * step, 3) for i in range(count) if i * step < max(duration, 1e-3)]


def scene_middles(ctx: ActionContext, path: Path, limit: int) -> list[dict[str, Any]]:
    """The scenes of the video, each with the time of its middle frame (at most ``limit``
    scenes: the longest ones when there are more)."""
    scan = scan_for_cuts(ctx, path, threshold=0.3, min_scene_seconds=1.0, max_width=160)
    scenes = scenes_from(scan)
    if len(scenes) > limit:
        longest = sorted(scenes, key=lambda s: s["start"] - s["end"])[:limit]
        scenes = sorted(longest, key=lambda s: s["start"])
    return [{"index": s["index"], "start": s["start"], "end": s["end"],
             "time": round((s["start"] + s["end"]) / 2, 3)} for s in scenes]
