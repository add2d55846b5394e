"""``transcode_audio`` (fusable: one decoding pass for consecutive steps) and
``extract_audio`` (the audio track copied as it is, or re-encoded)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from av.container import InputContainer

from mediaq.actions import action, fused
from mediaq.actions.audio.codecs import (
    CHANNELS_SCHEMA,
    COPY_CONTAINERS,
    FALLBACK_CONTAINER,
    SAMPLE_RATE_SCHEMA,
    TRANSCODE_CODECS,
    muxer_options,
)
from mediaq.actions.audio.encode import describe_output, encode_source, plan_encode
from mediaq.actions.audio.source import (
    check_whole,
    declared_seconds,
    first_audio_stream,
    probe_audio,
    read_tags,
)
from mediaq.actions.avio import BITRATE_SCHEMA, MediaInfo, ProgressClock, open_media, reading
from mediaq.actions.base import ActionContext, ActionResult, OutputFile
from mediaq.actions.media_output import MediaOutput, media_output

TRANSCODE_SCHEMA: dict[str, Any] = {
    "properties": {
        "codec": {"enum": list(TRANSCODE_CODECS), "default": "aac"},
        "bitrate": BITRATE_SCHEMA,  # default per codec: mp3 192k, aac 160k, opus 128k
        "sample_rate": SAMPLE_RATE_SCHEMA,
        "channels": CHANNELS_SCHEMA,
    },
}


@action("transcode_audio", TRANSCODE_SCHEMA)
def transcode_audio(ctx: ActionContext) -> ActionResult:
    """Encode the source's audio as mp3, aac (.m4a), opus or flac."""
    return transcode_audio_many([ctx])[0]


@fused("transcode_audio")
def transcode_audio_many(contexts: list[ActionContext]) -> list[ActionResult]:
    """Decode the (shared) source once and encode one output per step context."""
    lead = contexts[0]
    info, audio = probe_audio(lead.source_path)
    plans = [plan_encode(ctx, audio, ctx.params["codec"],
                         sample_rate=ctx.params.get("sample_rate"),
                         channels=ctx.params.get("channels"),
                         bitrate=ctx.params.get("bitrate"))
             for ctx in contexts]
    seconds = encode_source(lead, info, plans)
    return [
        ActionResult(
            outputs=[OutputFile(plan.path, role="rendition",
                                meta=describe_output(plan, written))],
            data={**describe_output(plan, written), "source_codec": audio.codec,
                  "fused_with": len(contexts)},
        )
        for plan, written in zip(plans, seconds, strict=True)
    ]


# --------------------------------------------------------------------------- extract


@action("extract_audio", {
    "properties": {
        "codec": {"enum": ["copy", "aac", "mp3", "opus", "flac", "wav"], "default": "copy"},
        "bitrate": BITRATE_SCHEMA,  # for aac, mp3 and opus
    },
})
def extract_audio(ctx: ActionContext) -> ActionResult:
    """The audio track of a video (or audio) file, copied as it is or re-encoded."""
    info, audio = probe_audio(ctx.source_path)
    codec = ctx.params["codec"]
    if codec == "copy":
        muxer, extension = COPY_CONTAINERS.get(audio.codec, FALLBACK_CONTAINER)
        path = ctx.output_path(f"{ctx.source_path.stem}.{extension}")
        seconds = copy_audio_stream(ctx, info, path, muxer)
        meta = {"format": extension, "codec": audio.codec, "duration": round(seconds, 3),
                "sample_rate": audio.sample_rate, "channels": audio.channels,
                "bit_rate": audio.bit_rate}
    else:
        plan = plan_encode(ctx, audio, codec, bitrate=ctx.params.get("bitrate"))
        [seconds] = encode_source(ctx, info, [plan])
        path, meta = plan.path, describe_output(plan, seconds)
    return ActionResult(outputs=[OutputFile(path, role="rendition", meta=meta)],
                        data={**meta, "copied": codec == "copy", "source_codec": audio.codec})


def copy_audio_stream(ctx: ActionContext, info: MediaInfo, path: Path, muxer: str) -> float:
    """Remux the first audio stream's packets into ``path``, starting at zero."""
    source = ctx.source_path
    with open_media(source) as container, reading(source):
        stream = first_audio_stream(container)
        tags = read_tags(container, stream)
        with media_output(path, format=muxer, options=muxer_options(muxer)) as output:
            output.set_metadata(tags)
            target = output.add_stream(lambda out: out.add_stream_from_template(stream))
            seconds = _remux(ctx, container, stream, output, target, info.duration)
    return seconds


def _remux(ctx: ActionContext, container: InputContainer, stream: Any, output: MediaOutput,
           target: Any, duration: float) -> float:
    # MPEG-TS audio starts at e.g. 1.4 s; negative starts (encoder priming) stay as they are.
    offset = max(stream.start_time or 0, 0)
    clock = ProgressClock(ctx, duration, "copying")
    first: int | None = None
    end = 0
    for packet in container.demux(stream):
        if packet.dts is None:  # the demuxer's empty flush packet
            continue
        if packet.pts is not None:
            packet.pts -= offset
            first = packet.pts if first is None else min(first, packet.pts)
            end = max(end, packet.pts + (packet.duration or 0))
        packet.dts -= offset
        seconds = float(end * stream.time_base)
        packet.stream = target
        output.mux(packet)
        clock.tick(seconds)
    copied = float((end - max(first or 0, 0)) * stream.time_base)
    check_whole(Path(container.name).name, copied, declared_seconds(container, stream))
    return copied


