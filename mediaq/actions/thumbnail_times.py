"""Video thumbnails at chosen times: ``timestamps`` in seconds or percent of the
duration (``[5, "25%"]``), each the keyframe at or before that time (fast) or, with
``exact: true``, the very frame shown at that time (decoded forward from the keyframe).

``generate_thumbnails`` (in :mod:`video`) asks :func:`wants_chosen_times` and hands
such requests here; evenly spaced keyframe stills by ``count`` stay where they were.
A single thumbnail with no time given is taken a quarter of the way in, as seed 001
says: past intros and fades from black, well before the credits.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from av.video.frame import VideoFrame
from PIL import Image

from mediaq.actions.avio import MediaInfo, open_media, reading
from mediaq.actions.base import ActionContext
from mediaq.actions.frames import seek_to, turn_image

THUMBNAIL_TIME_PARAMS: dict[str, Any] = {
    "timestamps": {
        "type": "array", "minItems": 1, "maxItems": 100,
        "items": {"oneOf": [
            {"type": "number", "minimum": 0},
            {"type": "string", "pattern": r"^(100(\.0+)?|[0-9]{1,2}(\.[0-9]+)?)%$"},
        ]},
    },
    "exact": {"type": "boolean", "default": False},
}
SINGLE_THUMBNAIL_AT = "25%"
# A frame whose time is within this of the target counts as at the target (float pts).
_TOLERANCE = 1e-3


def wants_chosen_times(params: dict[str, Any]) -> bool:
    """Whether the step asks for times (or exact frames) rather than evenly spaced
    keyframes; a single thumbnail always goes by time (25 %)."""
    return bool(params.get("timestamps")) or bool(params.get("exact")) or params["count"] == 1


def requested_times(params: dict[str, Any], duration: float) -> list[tuple[Any, float]]:
    """(as asked, seconds from the start) for each thumbnail, in the order asked."""
    asked: list[Any] = params.get("timestamps") or []
    if not asked:
        count = int(params["count"])
        if count == 1:
            asked = [SINGLE_THUMBNAIL_AT]
        else:  # exact frames at the evenly spaced times
            asked = [round(duration * (index + 0.5) / count, 6) for index in range(count)]
    return [(value, _seconds(value, duration)) for value in asked]


def _seconds(value: Any, duration: float) -> float:
    if isinstance(value, str):
        return duration * float(value.rstrip("%")) / 100
    return float(value)


def chosen_stills(ctx: ActionContext, source: Path,
                  info: MediaInfo) -> Iterator[tuple[float, Image.Image, dict[str, Any]]]:
    """Upright stills at the requested times: (frame time, picture, what to record).
    A time past the end gives the last frame (recorded as ``clamped``)."""
    assert info.video is not None
    exact = bool(ctx.params.get("exact"))
    rotation = info.video.rotation
    with open_media(source) as container, reading(source):
        stream = container.streams.video[0]
        stream.codec_context.thread_type = "AUTO"
        start = float((stream.start_time or 0) * (stream.time_base or 0))
        for asked, seconds in requested_times(ctx.params, info.duration):
            ctx.check()
            frame = _frame_at(container, stream, seconds, start, exact)
            clamped = seconds >= info.duration > 0
            if frame is None:
                continue
            meta: dict[str, Any] = {"requested": asked, "exact": exact}
            if clamped:
                meta["clamped"] = True
                ctx.log(f"{source.name}: thumbnail at {asked} is past the end; "
                        "the last frame is used")
            image = turn_image(frame.to_image(), rotation)  # type: ignore[no-untyped-call]
            yield float(frame.time or 0.0), image, meta


def _frame_at(container: Any, stream: Any, seconds: float, start: float,
              exact: bool) -> VideoFrame | None:
    """The keyframe at or before ``seconds`` or (``exact``) the frame shown then: the
    last whose time is not after it (past the end: the last frame)."""
    stream.codec_context.skip_frame = "DEFAULT" if exact else "NONKEY"
    seek_to(container, stream, seconds)
    shown: VideoFrame | None = None
    frame: VideoFrame
    for frame in container.decode(stream):
        at = float(frame.time or 0.0) - start
        if at > seconds + _TOLERANCE:
            # The first decoded frame is already late (a seek lands on the next
            # keyframe when none precedes the time): it is the nearest there is.
            return shown or frame
        shown = frame
        if not exact:
            return frame
    return shown
