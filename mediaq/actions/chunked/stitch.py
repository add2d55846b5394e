"""``stitch_video``: the chunks' bitstreams concatenated by remuxing, with the audio.

No frame is decoded or encoded. Each chunk's packets are put back at the chunk's place
on the source's clock (its first frame's source pts, less the common origin of the
source's streams, the same origin the audio track was placed from), so a variable frame
rate source keeps every frame's time and the audio keeps its offset. The output is
checked as it is written: one set of parameter sets across chunks (same encoder and
settings), every chunk present, frame counts as planned, decode timestamps strictly
increasing across seams.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from mediaq.actions import action
from mediaq.actions.avio import common_origin, open_media, reading
from mediaq.actions.base import ActionContext, ActionResult, OutputFile
from mediaq.actions.chunked.encode import MP4, output_path_of
from mediaq.actions.media_output import MediaOutput, media_output
from mediaq.errors import PermanentError

SLUG = {"type": "string", "pattern": r"^[a-z0-9_]{1,64}$"}


@action("stitch_video", {
    "properties": {
        # The slugs of the steps this one needs: the chunk encodes and the audio track.
        "chunks_step": {**SLUG, "default": "encode_chunks"},
        "audio_step": {**SLUG, "default": "encode_audio"},
        "name": {"type": "string", "pattern": r"^[A-Za-z0-9_.-]{1,64}$", "default": "chunked"},
    },
})
def stitch_video(ctx: ActionContext) -> ActionResult:
    """Concatenate the encoded chunks (no re-encode), mux the audio, write one MP4."""
    source = ctx.source_path
    chunks = ordered_chunks(ctx)
    audio_item = ctx.needs_outputs.get(ctx.params["audio_step"])
    audio_path = output_path_of(ctx, audio_item, "the audio track") if audio_item else None
    with open_media(source) as container, reading(source):
        vstream: Any = container.streams.video[0]
        astream = container.streams.audio[0] if container.streams.audio else None
        origin = common_origin(vstream, astream if audio_path else None)
        source_tb = Fraction(vstream.time_base)
    origin_pts = round(Fraction(origin) / source_tb)
    path = ctx.output_path(f"{source.stem}_{ctx.params['name']}.mp4")
    total = sum(c["frame_count"] for c in chunks)
    with media_output(path, format="mp4", options=MP4) as out:
        inputs = [av.open(str(chunk_path(ctx, c)), options={"protocol_whitelist": "file"})
                  for c in chunks]
        audio_in = av.open(str(audio_path)) if audio_path else None
        try:
            check_same_settings(inputs, chunks)
            video_out = out.add_stream(
                lambda c: c.add_stream_from_template(inputs[0].streams.video[0], opaque=True))
            video_out.time_base = source_tb
            # The chunks' sample entry (hvc1: parameter sets out of band, what Apple
            # players want), which a stream made from a template does not carry over.
            template = inputs[0].streams.video[0]
            if template.codec_tag:
                video_out.codec_tag = template.codec_tag
            streams: list[Iterator[tuple[float, int, Any]]] = [
                video_packets(ctx, inputs, chunks, video_out, source_tb, origin_pts, total)]
            if audio_in is not None:
                audio_out = out.add_stream(
                    lambda c: c.add_stream_from_template(audio_in.streams.audio[0], opaque=True))
                streams.append(audio_packets(audio_in, audio_out))
            write_interleaved(out, streams)
        finally:
            for opened in inputs + ([audio_in] if audio_in else []):
                opened.close()
    return ActionResult(
        outputs=[OutputFile(path, role="rendition", meta={
            "format": "mp4", "rendition": ctx.params["name"], "chunks": len(chunks)})],
        data={"chunks": len(chunks), "frame_count": total, "with_audio": audio_path is not None,
              "origin": origin})


def ordered_chunks(ctx: ActionContext) -> list[dict[str, Any]]:
    """The chunk tasks' outputs by chunk index, refusing a missing or repeated chunk."""
    step = ctx.params["chunks_step"]
    items = ctx.needs_outputs.get(step)
    if not isinstance(items, list) or not items:
        raise PermanentError(f"stitch_video: no chunks from step '{step}' (does this step "
                             f"need it?)")
    missing = [i for i, item in enumerate(items) if not item]
    if missing:
        raise PermanentError(f"stitch_video: chunks {missing} of step '{step}' did not "
                             "complete")
    chunks = sorted(items, key=lambda item: item["chunk_index"])
    if [c["chunk_index"] for c in chunks] != list(range(len(chunks))):
        raise PermanentError(f"stitch_video: the chunks of step '{step}' are not numbered "
                             f"0 to {len(chunks) - 1}")
    return chunks


def chunk_path(ctx: ActionContext, chunk: dict[str, Any]) -> Path:
    return output_path_of(ctx, chunk, f"chunk {chunk['chunk_index']}")


def check_same_settings(inputs: list[Any], chunks: list[dict[str, Any]]) -> None:
    """One set of parameter sets for the whole stream: chunks encoded with other settings
    (another encoder, size or profile) would not decode with the first chunk's."""
    first = inputs[0].streams.video[0].codec_context
    for chunk, opened in zip(chunks, inputs, strict=True):
        ctx = opened.streams.video[0].codec_context
        if (ctx.name, ctx.width, ctx.height, bytes(ctx.extradata or b"")) != (
                first.name, first.width, first.height, bytes(first.extradata or b"")):
            raise PermanentError(
                f"stitch_video: chunk {chunk['chunk_index']} was encoded with other settings "
                f"than chunk 0 ({ctx.name} {ctx.width}x{ctx.height} against {first.name} "
                f"{first.width}x{first.height}): re-encode it with the same step parameters")


def video_packets(ctx: ActionContext, inputs: list[Any], chunks: list[dict[str, Any]],
                  out_stream: Any, tb: Fraction, origin_pts: int,
                  total: int) -> Iterator[tuple[float, int, Any]]:
    """The chunks' packets on the source's clock, as (dts seconds, order, packet)."""
    last_dts: int | None = None
    written = 0
    for chunk, opened in zip(chunks, inputs, strict=True):
        stream = opened.streams.video[0]
        offset = int(chunk["start_pts"]) - origin_pts
        zero: int | None = None  # the chunk's first frame, as the chunk file stores it
        count = 0
        for packet in opened.demux(stream):
            if packet.size == 0 or packet.pts is None:
                continue
            ptb = Fraction(packet.time_base)
            pts = round(packet.pts * ptb / tb)
            dts = round((packet.dts if packet.dts is not None else packet.pts) * ptb / tb)
            if zero is None:
                # Closed GOPs: the first packet is the IDR frame, the chunk's first shown.
                zero = pts
            pts, dts = pts - zero + offset, dts - zero + offset
            if last_dts is not None and dts <= last_dts:
                raise PermanentError(f"stitch_video: chunk {chunk['chunk_index']} overlaps "
                                     f"the chunk before (decode time {dts} after {last_dts})")
            last_dts = dts
            duration = round(packet.duration * ptb / tb) if packet.duration else 0
            packet.stream = out_stream
            packet.time_base = tb
            packet.pts, packet.dts, packet.duration = pts, dts, duration
            count += 1
            written += 1
            if written % 250 == 0:
                ctx.progress(written / total, "stitching")
            yield float(dts * tb), 0, packet
        if count != chunk["frame_count"]:
            raise PermanentError(f"stitch_video: chunk {chunk['chunk_index']} holds {count} "
                                 f"frames, {chunk['frame_count']} were encoded")


def audio_packets(opened: Any, out_stream: Any) -> Iterator[tuple[float, int, Any]]:
    stream = opened.streams.audio[0]
    for packet in opened.demux(stream):
        if packet.size == 0 or packet.dts is None:
            continue
        when = float(packet.dts * packet.time_base)
        packet.stream = out_stream
        yield when, 1, packet


def write_interleaved(out: MediaOutput, streams: list[Iterator[tuple[float, int, Any]]]) -> None:
    """Write the streams' packets in decode-time order (what players read ahead by)."""
    for _when, _order, packet in heapq.merge(*streams, key=lambda item: (item[0], item[1])):
        out.mux(packet)
