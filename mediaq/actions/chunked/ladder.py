"""``encode_chunk_ladder``: one chunk of a split_video plan encoded at every rung of a
rendition ladder, from one decoding pass.

Every rung gets its keyframes on the same frames: the chunk's first frame (an IDR
frame, as ``encode_chunk``) and then one every ``gop_seconds`` counted from it (a GOP
shorter than half of that at the chunk's end joins the one before). The encoder adds
none of its own (no scene cuts, a GOP ceiling past the grid's longest GOP). Chunk
boundaries are keyframes too, so once ``package_chunked`` stitches each rung, every
rung has its keyframes at the very same times, and the segments cut at them line up
across rungs: a player switches rung at any segment.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

from mediaq.actions import action
from mediaq.actions.avio import open_media, reading
from mediaq.actions.base import ActionContext, ActionResult, OutputFile
from mediaq.actions.chunked.encode import (
    ENCODE_CHUNK_SCHEMA,
    MP4,
    ChunkEncoder,
    chunk_frames,
    chunk_rate,
)
from mediaq.actions.clip import inspect_clip
from mediaq.actions.hardware import decide_video_encoder
from mediaq.actions.media_output import media_outputs
from mediaq.actions.streaming.ladder import RENDITION_SCHEMA, Rung, plan_ladder
from mediaq.errors import PermanentError, TransientError

# The chunk's own size and ceiling come from each rung instead.
_PER_RUNG = {"width", "height", "maxrate", "bufsize"}
ENCODE_CHUNK_LADDER_SCHEMA: dict[str, Any] = {
    "properties": {
        **{k: v for k, v in ENCODE_CHUNK_SCHEMA["properties"].items() if k not in _PER_RUNG},
        # H.264 only, as package_hls: the codec the players of every device decode.
        "codec": {"enum": ["h264"], "default": "h264"},
        "renditions": {"type": "array", "items": RENDITION_SCHEMA, "minItems": 1,
                       "maxItems": 8, "default": ["720p", "480p", "360p"]},
        # The segment length: a keyframe (and so a segment) every gop_seconds.
        "gop_seconds": {"type": "number", "minimum": 0.5, "maximum": 20, "default": 2},
    },
    "required": ENCODE_CHUNK_SCHEMA["required"],
}


def keyframe_grid(count: int, rate: Fraction, seconds: float) -> set[int]:
    """The chunk's frames that open a GOP: its first, then the first at or after each
    multiple of ``seconds``; a last GOP shorter than half of that joins the one before
    (no sliver of a segment at every seam)."""
    per_gop = Fraction(seconds).limit_denominator(1000) * rate
    starts = {0}
    j = 1
    while (index := math.ceil(j * per_gop)) < count:
        if count - index >= per_gop / 2:
            starts.add(index)
        j += 1
    return starts


@action("encode_chunk_ladder", ENCODE_CHUNK_LADDER_SCHEMA)
def encode_chunk_ladder(ctx: ActionContext) -> ActionResult:
    """Encode one chunk at every rung of a ladder (one decoding pass), keyframes on one
    grid for every rung."""
    params = ctx.params
    index = params["chunk_index"]
    if index in params.get("fail_first_attempt", []) and ctx.attempt == 0:
        raise TransientError(f"chunk {index}: injected failure (fail_first_attempt)")
    source = ctx.source_path
    clip = inspect_clip(source)
    if clip.rotation:
        raise PermanentError(f"{source.name}: is rotated {clip.rotation} degrees; chunked "
                             "ladders do not turn frames upright yet (use package_hls)")
    rungs = plan_ladder(params["renditions"], clip)
    choice = decide_video_encoder(params["codec"], params["hardware"], ctx)
    start = params["start_pts"]
    count = params["frame_count"]
    paths = [ctx.output_path(f"{source.stem}_chunk{index:05d}_{r.label}.mp4") for r in rungs]
    with open_media(source) as container, reading(source):
        stream: Any = container.streams.video[0]
        stream.codec_context.thread_type = "AUTO"
        tb = Fraction(stream.time_base)
        keys = keyframe_grid(count, chunk_rate(stream), params["gop_seconds"])
        preroll = round(Fraction(params["preroll_seconds"]) / tb) if index else 0
        with media_outputs() as outputs:
            # The grid forces every keyframe; the encoder's own GOP is only a ceiling
            # past the grid's longest (one and a half GOPs).
            encoders = [ChunkEncoder(outputs.open(path, format="mp4", options=MP4),
                                     choice.encoder, {**params, "maxrate": rung.max_bitrate},
                                     stream, size=(rung.width, rung.height), sar=rung.sar,
                                     gop_seconds=2 * params["gop_seconds"])
                        for rung, path in zip(rungs, paths, strict=True)]
            encoded = 0
            for frame in chunk_frames(ctx, container, stream, start - preroll):
                assert frame.pts is not None
                frame.pts -= start
                inside = frame.pts >= 0
                key = inside and encoded in keys
                for encoder in encoders:
                    encoder.encode(frame, first=key)
                if inside:
                    encoded += 1
                    if encoded % 25 == 0:
                        ctx.progress(encoded / count, f"chunk {index}")
            for encoder in encoders:
                encoder.flush()
            if encoded != count:
                raise PermanentError(f"{source.name}: chunk {index} has {encoded} frames, "
                                     f"the plan says {count} (source changed?)")
    return ActionResult(
        outputs=[OutputFile(path, role="sidecar", meta={
            "kind": "chunk", "chunk_index": index, "rendition": rung.label})
            for rung, path in zip(rungs, paths, strict=True)],
        data={"chunk_index": index, "start_pts": start, "frame_count": encoded,
              "time_base": str(tb), "encoder": choice.encoder,
              "preroll_frames": encoders[0].dropped, "keyframes": sorted(keys),
              "gop_seconds": params["gop_seconds"],
              "renditions": [rung_data(rung, path.name)
                             for rung, path in zip(rungs, paths, strict=True)]})


def rung_data(rung: Rung, file: str) -> dict[str, Any]:
    return {"name": rung.label, "width": rung.width, "height": rung.height,
            "sar": str(rung.sar), "max_bitrate": rung.max_bitrate, "file": file}


def rung_of(data: dict[str, Any]) -> Rung:
    """The rung a chunk's output_data describes (see :func:`rung_data`)."""
    return Rung(label=data["name"], width=data["width"], height=data["height"],
                max_bitrate=data["max_bitrate"], sar=Fraction(data["sar"]))
