"""``validate_audio`` and ``extract_audio_metadata``: is the audio whole, what is it."""

from __future__ import annotations

import struct
from pathlib import Path

import av
import av.error

from mediaq.actions import action
from mediaq.actions.audio.codecs import is_lossless
from mediaq.actions.audio.source import (
    TRUNCATION_TOLERANCE,
    declared_seconds,
    first_audio_stream,
    probe_audio,
    read_tags,
    stream_start,
)
from mediaq.actions.avio import ProgressClock, open_media, reading
from mediaq.actions.base import ActionContext, ActionResult
from mediaq.errors import PermanentError

# Frames decoded by validate_audio to prove the stream decodes (about a second).
OPENING_FRAMES = 50


@action("validate_audio", {
    "properties": {
        "max_duration_seconds": {"type": "number", "exclusiveMinimum": 0, "default": 86_400},
    },
})
def validate_audio(ctx: ActionContext) -> ActionResult:
    """Check that the source has a complete audio stream that decodes."""
    path = ctx.source_path
    info, audio = probe_audio(path)
    limit = ctx.params["max_duration_seconds"]
    if info.duration > limit:
        raise PermanentError(f"{path.name}: {info.duration:.0f} s is longer than the limit of "
                             f"{limit:.0f} s")
    # Completeness first: a cut file is better reported as truncated than as undecodable.
    check_complete(ctx, path, info.duration)
    decode_opening_frames(ctx, path)
    return ActionResult(data={
        "valid": True, "duration": info.duration, "codec": audio.codec,
        "sample_rate": audio.sample_rate, "channels": audio.channels,
        "container": info.container,
    })


def decode_opening_frames(ctx: ActionContext, path: Path) -> None:
    decoded = 0
    with open_media(path) as container, reading(path):
        stream = first_audio_stream(container)
        for decoded, _frame in enumerate(container.decode(stream), start=1):
            ctx.check()
            if decoded >= OPENING_FRAMES:
                break
    if decoded == 0:
        raise PermanentError(f"{path.name}: the audio stream has no decodable frame")


def check_complete(ctx: ActionContext, path: Path, duration: float) -> None:
    """Demux every audio packet (no decoding) and compare with the declared duration."""
    with open_media(path) as container, reading(path):
        stream = first_audio_stream(container)
        declared = declared_seconds(container, stream) or duration
        declared = wav_declared_duration(path, declared) or declared
        start = stream_start(stream)
        clock = ProgressClock(ctx, declared, "checking")
        end = start
        try:
            for packet in container.demux(stream):
                if packet.pts is not None and packet.time_base is not None:
                    end = max(end, float((packet.pts + (packet.duration or 0))
                                         * packet.time_base))
                    clock.tick(end - start)
        except (av.error.InvalidDataError, av.error.EOFError):
            raise PermanentError(f"{path.name}: truncated or corrupt (unreadable after "
                                 f"{end - start:.1f} s of {declared:.1f} s)") from None
    length = end - start
    if length <= 0:
        raise PermanentError(f"{path.name}: the audio stream holds no audio data")
    if length < TRUNCATION_TOLERANCE * declared - 0.5:
        # Packet times can understate the audio (WMA Pro in ASF: packets stamped at half
        # the rate of what they decode to). Before calling the file cut, count what
        # actually decodes, as Debian's ffmpeg would play it.
        length = max(length, decoded_seconds(ctx, path))
    if length < TRUNCATION_TOLERANCE * declared - 0.5:
        raise PermanentError(f"{path.name}: truncated (audio ends at {length:.1f} s of "
                             f"{declared:.1f} s)")


def decoded_seconds(ctx: ActionContext, path: Path) -> float:
    """Seconds of audio the first audio stream decodes to (samples / rate)."""
    seconds = 0.0
    with open_media(path) as container, reading(path):
        stream = first_audio_stream(container)
        try:
            for packet in container.demux(stream):
                ctx.check()
                for frame in packet.decode():
                    if frame.sample_rate:
                        seconds += frame.samples / frame.sample_rate
        except (av.error.InvalidDataError, av.error.EOFError):
            pass  # what decoded before the damage is what counts
    return seconds


def wav_declared_duration(path: Path, present_duration: float) -> float | None:
    """Seconds a RIFF/WAVE header promises. FFmpeg sizes a cut WAV by what is there,
    so the header's data-chunk size is the only witness of a truncation."""
    try:
        size = path.stat().st_size
        with path.open("rb") as file:
            if file.read(12)[8:] != b"WAVE":
                return None
            offset = 12
            while offset + 8 <= size:
                file.seek(offset)
                kind, length = struct.unpack("<4sI", file.read(8))
                length = int(length)
                if kind == b"data":
                    present = size - offset - 8
                    # 0 and 0xFFFFFFFF: written by a recorder that never knew the length.
                    if length in (0, 0xFFFFFFFF) or present <= 0 or present >= length:
                        return None
                    return present_duration * length / present
                offset += 8 + length + (length & 1)
    except (OSError, struct.error):
        return None
    return None


# --------------------------------------------------------------------------- metadata


@action("extract_audio_metadata", {"properties": {}})
def extract_audio_metadata(ctx: ActionContext) -> ActionResult:
    """Describe the audio: codec, duration, rate, channels, bit rate, tags, container."""
    path = ctx.source_path
    info, audio = probe_audio(path)
    with open_media(path) as container, reading(path):
        stream = first_audio_stream(container)
        tags = read_tags(container, stream, technical=True)
        profile = stream.codec_context.profile
        cover_art = any(s.disposition & av.stream.Disposition.attached_pic
                        for s in container.streams.video)
    audio_only = info.video is None or cover_art
    return ActionResult(data={
        "container": info.container, "duration": info.duration, "codec": audio.codec,
        "codec_long_name": av.Codec(audio.codec, "r").long_name, "profile": profile,
        "sample_rate": audio.sample_rate, "channels": audio.channels, "layout": audio.layout,
        "sample_format": audio.sample_format,
        "bit_rate": audio.bit_rate or (info.bit_rate if audio_only else None),
        "lossless": is_lossless(audio.codec), "tags": tags, "cover_art": cover_art,
        "has_video": info.video is not None and not cover_art,
        "size_bytes": info.size_bytes, "streams": info.streams,
    })

