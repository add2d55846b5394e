"""Output codecs for audio: containers, bit-rate ranges, what each encoder takes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import av
import av.error

from mediaq.actions.avio import AudioInfo, parse_bitrate
from mediaq.errors import PermanentError


@dataclass(frozen=True)
class Codec:
    """How one output codec is encoded and stored."""

    encoder: str
    muxer: str
    extension: str
    default_bitrate: int | None  # None: lossless, a bit rate does not apply
    bitrate_range: tuple[int, int] = (0, 0)
    max_per_channel: int | None = None


CODECS: dict[str, Codec] = {
    "mp3": Codec("libmp3lame", "mp3", "mp3", 192_000, (8_000, 320_000)),
    "aac": Codec("aac", "mp4", "m4a", 160_000, (16_000, 512_000)),
    "opus": Codec("libopus", "ogg", "opus", 128_000, (6_000, 510_000), 256_000),
    "flac": Codec("flac", "flac", "flac", None),
    "wav": Codec("pcm_s16le", "wav", "wav", None),
}
TRANSCODE_CODECS = ("mp3", "aac", "opus", "flac")
# Containers that take a source codec as it is (stream copy); anything else goes to .mka.
COPY_CONTAINERS: dict[str, tuple[str, str]] = {
    "aac": ("mp4", "m4a"), "alac": ("mp4", "m4a"), "mp3": ("mp3", "mp3"),
    "mp2": ("mp2", "mp2"), "opus": ("ogg", "opus"), "vorbis": ("ogg", "ogg"),
    "flac": ("flac", "flac"), "ac3": ("ac3", "ac3"), "eac3": ("eac3", "eac3"),
    "pcm_u8": ("wav", "wav"), "pcm_s16le": ("wav", "wav"), "pcm_s24le": ("wav", "wav"),
    "pcm_s32le": ("wav", "wav"), "pcm_f32le": ("wav", "wav"), "pcm_f64le": ("wav", "wav"),
}
FALLBACK_CONTAINER = ("matroska", "mka")
# Container tags that describe the file, not the recording: never copied to outputs.
TECHNICAL_TAGS = frozenset({"encoder", "major_brand", "minor_version", "compatible_brands",
                            "handler_name", "vendor_id", "encoded_by"})
MAX_TAG_CHARS = 1_000  # cover art and lyrics can hide in tags; keep the summary small

SAMPLE_RATE_SCHEMA: dict[str, Any] = {"type": "integer", "minimum": 8_000, "maximum": 192_000}
CHANNELS_SCHEMA: dict[str, Any] = {"enum": [1, 2]}


def is_lossless(codec: str) -> bool:
    try:
        return av.Codec(codec, "r").lossless
    except (av.error.FFmpegError, ValueError):
        return False


def is_deep(audio: AudioInfo) -> bool:
    """Whether the source holds more than 16 bits a lossless output should keep."""
    shallow = {"u8", "u8p", "s16", "s16p"}
    return is_lossless(audio.codec) and (audio.sample_format or "s16") not in shallow



def supported_rate(encoder: str, wanted: int) -> int:
    """``wanted`` if the encoder takes it, else the nearest rate it does (ties go up)."""
    rates = av.Codec(encoder, "w").audio_rates
    if not rates or wanted in rates:
        return wanted
    return min(rates, key=lambda rate: (abs(rate - wanted), -rate))


def encoder_sample_format(encoder: str, *, deep: bool) -> str:
    """Float for lossy encoders; 16 or 32-bit integers for lossless ones by source depth."""
    formats = [f.name for f in av.Codec(encoder, "w").audio_formats or []]
    preferred = ("s32", "s32p", "s16", "s16p") if deep else ("fltp", "flt", "s16", "s16p")
    return next((name for name in preferred if name in formats), formats[0])


def checked_bit_rate(name: str, codec: str, asked: str | int | None,
                     channels: int) -> int | None:
    spec = CODECS[codec]
    if spec.default_bitrate is None:
        return None  # lossless: a bit rate does not apply
    low, high = spec.bitrate_range
    if spec.max_per_channel:
        high = min(high, spec.max_per_channel * channels)
    rate = parse_bitrate(asked) or min(spec.default_bitrate, high)
    if not low <= rate <= high:
        raise PermanentError(f"{name}: bit rate {rate // 1000}k is outside "
                             f"{low // 1000}k-{high // 1000}k for {codec}")
    return rate


def muxer_options(muxer: str) -> dict[str, str]:
    """MP4: index first, so players start before the download ends. WAV: switch to RF64
    past 4 GiB instead of failing."""
    return {"mp4": {"movflags": "+faststart"}, "wav": {"rf64": "auto"}}.get(muxer, {})

