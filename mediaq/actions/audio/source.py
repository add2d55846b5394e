"""Reading a source's audio: its first audio stream, decoded, with its tags.

Video files work too: only their first audio stream is read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
from av.audio.frame import AudioFrame
from av.container import InputContainer

from mediaq.actions.avio import AudioInfo, MediaInfo, ProgressClock, probe
from mediaq.actions.frames import decode_tolerantly
from mediaq.errors import PermanentError

# A truncated file stops well short of the duration its header promises.
TRUNCATION_TOLERANCE = 0.9
# Container tags that describe the file, not the recording: never copied to outputs.
TECHNICAL_TAGS = frozenset({"encoder", "major_brand", "minor_version", "compatible_brands",
                            "handler_name", "vendor_id", "encoded_by"})
MAX_TAG_CHARS = 1_000  # cover art and lyrics can hide in tags; keep the summary small


def probe_audio(path: Path) -> tuple[MediaInfo, AudioInfo]:
    """Describe ``path``, refusing files without a usable audio stream."""
    info = probe(path)
    if info.audio is None:
        raise PermanentError(f"{path.name}: has no audio stream"
                             + (" (video only)" if info.video else ""))
    if info.audio.sample_rate <= 0 or info.audio.channels <= 0:
        raise PermanentError(f"{path.name}: the audio stream declares no sample rate or "
                             "channels")
    return info, info.audio


def first_audio_stream(container: InputContainer) -> Any:
    stream = container.streams.audio[0]
    stream.codec_context.thread_type = "AUTO"
    return stream


def stream_start(stream: Any) -> float:
    if stream.start_time and stream.time_base:
        return float(stream.start_time * stream.time_base)
    return 0.0


def decode_audio(container: InputContainer, stream: Any,
                 clock: ProgressClock) -> Iterator[AudioFrame]:
    """Decoded frames of ``stream``, ticking ``clock`` (which checks for cancellation).

    A few corrupt packets are skipped, as players do; more are an error, and so is
    decoding much less than the stream declares (a cut or mangled file)."""
    start = stream_start(stream)
    decoded = 0.0
    for frame in decode_tolerantly(container, [stream]):
        assert isinstance(frame, AudioFrame)
        decoded += frame.samples / frame.sample_rate
        clock.tick((frame.time or start) - start)
        yield frame
    check_whole(Path(container.name).name, decoded, declared_seconds(container, stream))


def declared_seconds(container: InputContainer, stream: Any) -> float | None:
    """How long the audio should last: the stream's header, or an audio file's."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if not container.streams.video and container.duration:
        return float(container.duration) / av.time_base
    return None  # a video's length says nothing about its audio track's


def check_whole(name: str, seconds: float, declared: float | None) -> None:
    if declared and seconds < TRUNCATION_TOLERANCE * declared - 0.5:
        raise PermanentError(f"{name}: only {seconds:.1f} s of {declared:.1f} s of audio could "
                             "be read (truncated or corrupt)")



def read_tags(container: InputContainer, stream: Any, *,
              technical: bool = False) -> dict[str, str]:
    """The recording's tags (title, artist, album, …), lower-cased; the container's win."""
    tags: dict[str, str] = {}
    for source in (stream, container):
        try:
            metadata = dict(source.metadata)
        except (UnicodeDecodeError, ValueError):  # tags in a broken encoding
            continue
        for key, value in metadata.items():
            name = key.lower()
            if (name in TECHNICAL_TAGS and not technical) or len(value) > MAX_TAG_CHARS:
                continue
            tags[name] = value
    return tags


