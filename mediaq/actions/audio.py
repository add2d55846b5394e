"""Audio actions on PyAV: validate, describe, transcode, normalise loudness, waveform, extract.

Every action opens its input through :func:`avio.open_media` (local files, safe demuxers,
one-line errors) and streams it frame by frame, so memory stays flat however long the
recording is. Video files work too: only their first audio stream is read.

Encoded outputs start at zero and are gapless: decoded frames go through a FIFO to each
encoder in whole frames (:class:`avio.AudioEncoderFeed`), so the output lasts as long as
the source. Consecutive ``transcode_audio`` steps can be fused into one decoding pass.

Loudness is measured by FFmpeg's own ``ebur128`` filter (ITU-R BS.1770 K-weighting,
gating, oversampled true peak) run in process through ``av.filter.Graph``, so the
numbers agree with ``ffmpeg -af ebur128=peak=true``. Normalisation applies one linear
gain; only when that gain would push the true peak over the limit does a look-ahead
limiter (``alimiter``) hold the peaks down. Every output is measured again and, when
limiting (or a downmix, or a lossy encoder) moved it off target, rendered again with a
corrected gain: at most four passes, and the one closest to the target is kept.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import av.filter
import numpy as np
import numpy.typing as npt
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler
from av.container import InputContainer
from PIL import Image

from mediaq.actions import action, fused
from mediaq.actions.avio import (
    BITRATE_SCHEMA,
    AudioEncoderFeed,
    AudioInfo,
    MediaInfo,
    ProgressClock,
    add_audio_stream,
    configure_chain,
    one_line,
    open_media,
    open_output,
    output_layout,
    parse_bitrate,
    probe,
    reading,
    writing,
)
from mediaq.actions.base import ActionContext, ActionResult, OutputFile
from mediaq.actions.frames import decode_tolerantly
from mediaq.errors import PermanentError

FloatArray = npt.NDArray[np.float32]

# A truncated file stops well short of the duration its header promises.
TRUNCATION_TOLERANCE = 0.9
# Frames decoded by validate_audio to prove the stream decodes (about a second).
OPENING_FRAMES = 50


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
HEX_COLOR_SCHEMA: dict[str, Any] = {"type": "string",
                                    "pattern": r"^#([0-9a-fA-F]{6}|[0-9a-fA-F]{8})$"}


# --------------------------------------------------------------------------- reading


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


def is_lossless(codec: str) -> bool:
    try:
        return av.Codec(codec, "r").lossless
    except (av.error.FFmpegError, ValueError):
        return False


def is_deep(audio: AudioInfo) -> bool:
    """Whether the source holds more than 16 bits a lossless output should keep."""
    shallow = {"u8", "u8p", "s16", "s16p"}
    return is_lossless(audio.codec) and (audio.sample_format or "s16") not in shallow


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


# --------------------------------------------------------------------------- validate


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
        raise PermanentError(f"{path.name}: truncated (audio ends at {length:.1f} s of "
                             f"{declared:.1f} s)")


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


# --------------------------------------------------------------------------- encoding


@dataclass(frozen=True)
class EncodePlan:
    """One encoded output: codec, format and where it goes."""

    codec: str  # a key of CODECS
    encoder: str
    muxer: str
    sample_rate: int
    channels: int
    sample_format: str
    bit_rate: int | None
    path: Path

    @property
    def format(self) -> str:
        return self.path.suffix.lstrip(".")


def plan_encode(ctx: ActionContext, audio: AudioInfo, codec: str, *, suffix: str = "",
                sample_rate: int | None = None, channels: int | None = None,
                bitrate: str | int | None = None) -> EncodePlan:
    """Settings for encoding ``audio`` as ``codec``: the asked rate (or the source's)
    snapped to one the encoder supports; mono stays mono, anything else becomes stereo."""
    spec = CODECS[codec]
    deep = is_deep(audio)
    encoder = "pcm_s24le" if codec == "wav" and deep else spec.encoder
    out_channels = channels or (1 if audio.channels == 1 else 2)
    return EncodePlan(
        codec=codec, encoder=encoder, muxer=spec.muxer,
        sample_rate=supported_rate(encoder, sample_rate or audio.sample_rate),
        channels=out_channels,
        sample_format=encoder_sample_format(encoder, deep=deep),
        bit_rate=checked_bit_rate(ctx.source_path.name, codec, bitrate, out_channels),
        path=ctx.output_path(f"{ctx.source_path.stem}{suffix}.{spec.extension}"),
    )


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


class EncodedOutput:
    """One output file with one audio encoder, fed decoded frames of any format."""

    def __init__(self, plan: EncodePlan, tags: dict[str, str], source_name: str) -> None:
        self.plan = plan
        self.output = open_output(plan.path, format=plan.muxer,
                                  options=muxer_options(plan.muxer))
        try:
            with writing(plan.path):
                self.output.metadata.update(tags)
                stream = add_audio_stream(self.output, plan.encoder, rate=plan.sample_rate,
                                          layout=output_layout(plan.channels),
                                          bit_rate=plan.bit_rate)
                stream.codec_context.format = plan.sample_format
                self._open_encoder(stream, source_name)
                self.feed = AudioEncoderFeed(stream)
        except BaseException:
            self.abandon()
            raise

    def _open_encoder(self, stream: Any, source_name: str) -> None:
        """Open now, so impossible settings fail as such rather than as a decoding error."""
        try:
            stream.codec_context.open()
        except (av.error.FFmpegError, ValueError) as exc:
            plan = self.plan
            raise PermanentError(
                f"{source_name}: cannot encode {plan.codec} at {plan.sample_rate} Hz, "
                f"{plan.channels} channel(s) ({one_line(exc)})") from None

    @property
    def seconds_written(self) -> float:
        return self.feed.samples_out / self.plan.sample_rate

    def write(self, frame: AudioFrame | None) -> None:
        """Encode ``frame``; ``None`` flushes the encoder."""
        with writing(self.plan.path):
            self.output.mux(self.feed.push(frame))

    def close(self) -> None:
        self.write(None)
        with writing(self.plan.path):
            self.output.close()

    def abandon(self) -> None:
        with contextlib.suppress(av.error.FFmpegError, OSError):
            self.output.close()
        self.plan.path.unlink(missing_ok=True)


def describe_output(plan: EncodePlan, seconds: float) -> dict[str, Any]:
    size = plan.path.stat().st_size
    return {"format": plan.format, "codec": plan.codec, "duration": round(seconds, 3),
            "sample_rate": plan.sample_rate, "channels": plan.channels,
            "bit_rate": round(size * 8 / seconds) if seconds > 0 else None}


@contextlib.contextmanager
def encoded_outputs(plans: list[EncodePlan], tags: dict[str, str],
                    source_name: str) -> Iterator[list[EncodedOutput]]:
    """Open one output per plan; on any failure (cancellation too) delete them all."""
    outputs: list[EncodedOutput] = []
    try:
        for plan in plans:
            outputs.append(EncodedOutput(plan, tags, source_name))
        yield outputs
        for output in outputs:
            output.close()
    except BaseException:
        for output in outputs:
            output.abandon()
        raise


def encode_source(ctx: ActionContext, info: MediaInfo, plans: list[EncodePlan]) -> list[float]:
    """Decode the source's audio once, feeding every plan's encoder; seconds written each."""
    source = ctx.source_path
    with open_media(source) as container, reading(source):
        stream = first_audio_stream(container)
        tags = read_tags(container, stream)
        clock = ProgressClock(ctx, info.duration, "encoding")
        with encoded_outputs(plans, tags, source.name) as outputs:
            for frame in decode_audio(container, stream, clock):
                for output in outputs:
                    output.write(frame)
        return [output.seconds_written for output in outputs]


# --------------------------------------------------------------------------- transcode


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
        output = open_output(path, format=muxer, options=muxer_options(muxer))
        try:
            with writing(path):
                output.metadata.update(tags)
                target = output.add_stream_from_template(stream)
            seconds = _remux(ctx, container, stream, output, target, info.duration)
            with writing(path):
                output.close()
        except BaseException:
            with contextlib.suppress(av.error.FFmpegError, OSError):
                output.close()
            path.unlink(missing_ok=True)
            raise
    return seconds


def _remux(ctx: ActionContext, container: InputContainer, stream: Any, output: Any,
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
        with writing(Path(output.name)):
            output.mux(packet)
        clock.tick(seconds)
    copied = float((end - max(first or 0, 0)) * stream.time_base)
    check_whole(Path(container.name).name, copied, declared_seconds(container, stream))
    return copied


# --------------------------------------------------------------------------- loudness


@dataclass(frozen=True)
class Loudness:
    """BS.1770 integrated loudness (LUFS), loudness range (LU) and true peak (dBTP)."""

    integrated: float
    loudness_range: float
    true_peak: float


SILENCE_LUFS = -70.0  # BS.1770's absolute gate: nothing quieter is counted
PEAK_FLOOR_DB = -144.0  # reported for digital silence instead of -inf


class LoudnessMeter:
    """FFmpeg's ebur128 filter, fed decoded frames; reads its running result from the
    metadata it attaches to every frame it passes on."""

    def __init__(self) -> None:
        self.graph: av.filter.Graph | None = None
        self.integrated = SILENCE_LUFS
        self.loudness_range = 0.0
        self.peak = 0.0

    def push(self, frame: AudioFrame | None) -> None:
        if frame is not None and self.graph is None:
            self.graph = audio_graph(frame, [("ebur128", "metadata=1:peak=true:framelog=verbose")])
        if self.graph is None:
            return
        for measured in push_and_pull(self.graph, frame):
            meta = measured.metadata
            self.integrated = float(meta.get("lavfi.r128.I", self.integrated))
            self.loudness_range = float(meta.get("lavfi.r128.LRA", self.loudness_range))
            self.peak = max(self.peak, float(meta.get("lavfi.r128.true_peak", 0.0)))

    def result(self) -> Loudness:
        peak_db = 20 * math.log10(self.peak) if self.peak > 0 else PEAK_FLOOR_DB
        return Loudness(integrated=round(self.integrated, 2),
                        loudness_range=round(self.loudness_range, 2),
                        true_peak=round(max(peak_db, PEAK_FLOOR_DB), 2))


def audio_graph(first: AudioFrame, steps: list[tuple[str, str]]) -> av.filter.Graph:
    """abuffer -> steps -> abuffersink, shaped after the first decoded frame."""
    graph = av.filter.Graph()
    source = graph.add_abuffer(sample_rate=first.sample_rate, format=first.format.name,
                               layout=first.layout.name,
                               time_base=Fraction(1, first.sample_rate))
    return configure_chain(graph, source, steps, "abuffersink")


def push_and_pull(graph: av.filter.Graph, frame: AudioFrame | None) -> list[AudioFrame]:
    """Push ``frame`` (``None`` at the end) and take whatever the graph has ready."""
    graph.push(frame)
    ready: list[AudioFrame] = []
    while True:
        try:
            out = graph.pull()
        except (av.error.BlockingIOError, av.error.EOFError):
            return ready
        assert isinstance(out, AudioFrame)
        ready.append(out)


class Retimer:
    """Numbers frames by their sample count, as a filter graph wants: gapless, from zero."""

    def __init__(self) -> None:
        self.samples = 0

    def __call__(self, frame: AudioFrame) -> AudioFrame:
        frame.pts = self.samples
        frame.time_base = Fraction(1, frame.sample_rate)
        self.samples += frame.samples
        return frame


def measure_loudness(path: Path, clock: ProgressClock) -> Loudness:
    """Decode ``path``'s audio through the loudness meter."""
    meter = LoudnessMeter()
    retime = Retimer()
    with open_media(path) as container, reading(path):
        stream = first_audio_stream(container)
        for frame in decode_audio(container, stream, clock):
            meter.push(retime(frame))
        meter.push(None)
    return meter.result()


class GainStage:
    """A linear gain and, when asked, a look-ahead limiter with its ceiling in dBFS."""

    def __init__(self, gain_db: float, ceiling_db: float | None) -> None:
        self.steps = [("volume", f"volume={gain_db:.4f}dB:precision=double")]
        if ceiling_db is not None:
            # level=0: no auto make-up gain; latency=1: no delay, nothing lost at the end.
            limit = min(max(10 ** (ceiling_db / 20), 0.0625), 1.0)
            self.steps.append(("alimiter", f"limit={limit:.6f}:attack=5:release=50:"
                                           "level=0:latency=1"))
        self.graph: av.filter.Graph | None = None
        self.retime = Retimer()

    def process(self, frame: AudioFrame | None) -> list[AudioFrame]:
        if frame is not None:
            frame = self.retime(frame)
            if self.graph is None:
                self.graph = audio_graph(frame, self.steps)
        if self.graph is None:
            return []
        return push_and_pull(self.graph, frame)


def render_with_gain(ctx: ActionContext, plan: EncodePlan, gain_db: float,
                     ceiling_db: float | None, clock: ProgressClock) -> float:
    """Write ``plan`` from the source with the gain (and limiter) applied."""
    source = ctx.source_path
    stage = GainStage(gain_db, ceiling_db)
    with open_media(source) as container, reading(source):
        stream = first_audio_stream(container)
        tags = read_tags(container, stream)
        with encoded_outputs([plan], tags, source.name) as [output]:
            for frame in decode_audio(container, stream, clock):
                for shaped in stage.process(frame):
                    output.write(shaped)
            for shaped in stage.process(None):
                output.write(shaped)
        return output.seconds_written


LOUDNESS_TOLERANCE_LU = 0.5
PEAK_TOLERANCE_DB = 0.1
MAX_PASSES = 4
MIN_SLOPE = 0.1  # dB of loudness per dB of gain, deep into the limiter
MAX_GAIN_STEP_DB = 20.0
LIMITER_MARGIN_DB = 0.5  # inter-sample peaks rise above a sample-peak limiter's ceiling
LOSSY_AUTO_CODECS = {"mp3": "mp3", "aac": "aac", "opus": "opus", "vorbis": "opus"}


@action("normalize_loudness", {
    "properties": {
        "target_lufs": {"type": "number", "minimum": -70, "maximum": -5, "default": -23},
        "true_peak_db": {"type": "number", "minimum": -9, "maximum": 0, "default": -1.0},
        # auto: PCM stays WAV, other lossless becomes FLAC, mp3/aac/opus keep their codec
        # (vorbis becomes opus), any other lossy codec becomes AAC.
        "codec": {"enum": ["auto", *CODECS], "default": "auto"},
        "bitrate": BITRATE_SCHEMA,  # lossy outputs; default: the source's, at least 192k/160k/128k
    },
}, produces_primary=True)
def normalize_loudness(ctx: ActionContext) -> ActionResult:
    """Bring the integrated loudness (EBU R128) to a target, true peak under a limit."""
    source = ctx.source_path
    info, audio = probe_audio(source)
    target, limit = ctx.params["target_lufs"], ctx.params["true_peak_db"]
    before = measure_loudness(source, ProgressClock(ctx, info.duration, "measuring",
                                                    span=(0.0, 0.3)))
    if before.integrated <= SILENCE_LUFS:
        raise PermanentError(f"{source.name}: silent or shorter than 0.4 s (no loudness above "
                             f"{SILENCE_LUFS:.0f} LUFS); cannot normalise")
    plan = plan_normalised_output(ctx, audio)
    passes = normalisation_passes(ctx, info.duration, plan, before, target, limit)
    best = min(passes, key=lambda p: p.miss(target, limit))
    for other in passes:
        if other is not best:
            other.path.unlink(missing_ok=True)
    with writing(plan.path):
        best.path.replace(plan.path)
    after = best.loudness
    if best.miss(target, limit) > (0.0, LOUDNESS_TOLERANCE_LU):
        ctx.log(f"loudness {after.integrated:.1f} LUFS, true peak {after.true_peak:.1f} dBTP "
                f"after {len(passes)} passes (asked {target:.1f} LUFS, {limit:.1f} dBTP)")
    meta = {**describe_output(plan, best.seconds), "loudness_lufs": after.integrated,
            "true_peak_db": after.true_peak}
    return ActionResult(
        outputs=[OutputFile(plan.path, role="primary", meta=meta)],
        data={
            "target_lufs": target, "true_peak_limit_db": limit,
            "input_lufs": before.integrated, "output_lufs": after.integrated,
            "input_true_peak_db": before.true_peak, "output_true_peak_db": after.true_peak,
            "input_lra": before.loudness_range, "output_lra": after.loudness_range,
            "gain_db": round(best.gain, 2), "limited": best.ceiling is not None,
            "passes": len(passes), "codec": plan.codec, "format": plan.format,
        },
    )


@dataclass(frozen=True)
class GainPass:
    """One rendering of the source with a gain (and maybe a limiter), as measured."""

    gain: float
    ceiling: float | None
    path: Path
    seconds: float
    loudness: Loudness

    def miss(self, target: float, limit: float) -> tuple[float, float]:
        """How far off this pass is: true peak over the limit first, then loudness."""
        over = max(self.loudness.true_peak - limit - PEAK_TOLERANCE_DB, 0.0)
        return over, abs(self.loudness.integrated - target)


def normalisation_passes(ctx: ActionContext, duration: float, plan: EncodePlan,
                         before: Loudness, target: float, limit: float) -> list[GainPass]:
    """Render and measure until a pass is within tolerance (at most MAX_PASSES).

    The first pass applies the gain that BS.1770 says is needed, limited only if that
    gain would push the true peak over the limit. Later passes correct what limiting,
    a downmix or a lossy encoder changed. Every pass stays on disk until the caller
    keeps the best; on failure or cancellation all are deleted."""
    gain = target - before.integrated
    ceiling = limit - LIMITER_MARGIN_DB if before.true_peak + gain > limit else None
    passes: list[GainPass] = []
    try:
        for attempt in range(1, MAX_PASSES + 1):
            path = plan.path.with_name(f"{plan.path.stem}.pass{attempt}{plan.path.suffix}")
            seconds = render_with_gain(
                ctx, dataclasses.replace(plan, path=path), gain, ceiling,
                ProgressClock(ctx, duration, "normalising", span=(0.3, 0.75)))
            after = measure_loudness(path, ProgressClock(ctx, duration, "verifying",
                                                         span=(0.75, 1.0)))
            done = GainPass(gain, ceiling, path, seconds, after)
            passes.append(done)
            if done.miss(target, limit) <= (0.0, LOUDNESS_TOLERANCE_LU):
                break
            if after.true_peak > limit + PEAK_TOLERANCE_DB:
                # Hold the peaks lower: lower the limiter's ceiling, or start limiting.
                current = ceiling if ceiling is not None else min(limit, before.true_peak + gain)
                ceiling = current - (after.true_peak - limit) - PEAK_TOLERANCE_DB
            gain = next_gain(passes, target)
    except BaseException:
        for done in passes:
            done.path.unlink(missing_ok=True)
        raise
    return passes


def next_gain(passes: list[GainPass], target: float) -> float:
    """The gain for the next pass: a secant step, kept inside the bracket.

    Under a limiter the loudness grows more slowly than the gain, so the slope is
    learned from the last two passes (1 after the first). Once one pass was too quiet
    and another too loud, a step that leaves the gains between them is replaced by
    interpolating between those two (regula falsi)."""
    last = passes[-1]
    slope = 1.0
    if len(passes) >= 2:
        previous = passes[-2]
        if abs(last.gain - previous.gain) > 1e-3:
            slope = ((last.loudness.integrated - previous.loudness.integrated)
                     / (last.gain - previous.gain))
            slope = min(max(slope, MIN_SLOPE), 1.0)
    step = (target - last.loudness.integrated) / slope
    candidate = last.gain + min(max(step, -MAX_GAIN_STEP_DB), MAX_GAIN_STEP_DB)
    quiet = [p for p in passes if p.loudness.integrated < target]
    loud = [p for p in passes if p.loudness.integrated > target]
    if quiet and loud:
        low = max(quiet, key=lambda p: p.gain)
        high = min(loud, key=lambda p: p.gain)
        if low.gain < high.gain and not low.gain < candidate < high.gain:
            share = ((target - low.loudness.integrated)
                     / (high.loudness.integrated - low.loudness.integrated))
            # Stay off the ends, where a flat stretch of the curve would stall the search.
            candidate = low.gain + (high.gain - low.gain) * min(max(share, 0.1), 0.9)
    return candidate


def plan_normalised_output(ctx: ActionContext, audio: AudioInfo) -> EncodePlan:
    codec = ctx.params["codec"]
    if codec == "auto":
        if audio.codec.startswith("pcm_"):
            codec = "wav"
        elif is_lossless(audio.codec):
            codec = "flac"
        else:
            codec = LOSSY_AUTO_CODECS.get(audio.codec, "aac")
    bitrate = ctx.params.get("bitrate")
    spec = CODECS[codec]
    if bitrate is None and spec.default_bitrate is not None and audio.bit_rate \
            and not is_lossless(audio.codec):
        # Re-encoding lossy audio: never below the source's rate, within the codec's range.
        per_channel = spec.max_per_channel or spec.bitrate_range[1]
        high = min(spec.bitrate_range[1], per_channel * min(audio.channels, 2))
        bitrate = min(max(spec.default_bitrate, audio.bit_rate), high)
    return plan_encode(ctx, audio, codec, suffix="_normalized", bitrate=bitrate)


# --------------------------------------------------------------------------- waveform


DEFAULT_WAVEFORM_COLOR = "#1f6fb2"
DEFAULT_BACKGROUND_COLOR = "#ffffff"
DEFAULT_SAMPLES_PER_PIXEL = 256  # when the duration is unknown
_IMAGE_FORMATS = {"png": "PNG", "webp": "WEBP"}
# Flat colours and hard edges: lossless compresses best (and never smears the bars).
_IMAGE_OPTIONS: dict[str, dict[str, Any]] = {"png": {"optimize": True},
                                             "webp": {"lossless": True}}


@action("generate_waveform", {
    "properties": {
        "width": {"type": "integer", "minimum": 16, "maximum": 16_383, "default": 1800},
        "height": {"type": "integer", "minimum": 16, "maximum": 4_096, "default": 280},
        "format": {"enum": sorted(_IMAGE_FORMATS), "default": "png"},
        "colors": {
            "type": "object", "additionalProperties": False,
            "properties": {"waveform_color": HEX_COLOR_SCHEMA,
                           "background_color": HEX_COLOR_SCHEMA},
        },
        # Resolution of the peaks file; default: one peak pair per image column.
        "pixels_per_second": {"type": "integer", "minimum": 1, "maximum": 10_000},
        "bits": {"enum": [8, 16], "default": 8},
    },
})
def generate_waveform(ctx: ActionContext) -> ActionResult:
    """A waveform image and a peaks file (audiowaveform/peaks.js JSON) of the audio."""
    source = ctx.source_path
    info, audio = probe_audio(source)
    width, height, bits = ctx.params["width"], ctx.params["height"], ctx.params["bits"]
    per_pixel = samples_per_pixel(audio.sample_rate, info.duration, width,
                                  ctx.params.get("pixels_per_second"))
    peaks, rate = accumulate_peaks(ctx, info, per_pixel)
    colors = ctx.params.get("colors") or {}
    image = draw_waveform(peaks, width, height,
                          parse_color(colors.get("waveform_color", DEFAULT_WAVEFORM_COLOR)),
                          parse_color(colors.get("background_color",
                                                 DEFAULT_BACKGROUND_COLOR)))
    fmt = ctx.params["format"]
    image_path = ctx.output_path(f"{source.stem}_waveform.{fmt}")
    peaks_path = ctx.output_path(f"{source.stem}_waveform.json")
    document = peaks_document(peaks, rate, per_pixel, bits)
    try:
        with writing(image_path):
            image.save(image_path, _IMAGE_FORMATS[fmt], **_IMAGE_OPTIONS[fmt])
        with writing(peaks_path):
            peaks_path.write_text(json.dumps(document, separators=(",", ":")))
    except BaseException:
        image_path.unlink(missing_ok=True)
        peaks_path.unlink(missing_ok=True)
        raise
    return ActionResult(
        outputs=[
            OutputFile(image_path, role="thumbnail",
                       meta={"width": width, "height": height, "format": fmt}),
            OutputFile(peaks_path, role="sidecar",
                       meta={"format": "audiowaveform-json", "version": 2, "bits": bits,
                             "samples_per_pixel": per_pixel, "length": document["length"]}),
        ],
        data={"width": width, "height": height, "format": fmt, "sample_rate": rate,
              "samples_per_pixel": per_pixel, "length": document["length"], "bits": bits,
              "duration": info.duration,
              "peak": round(float(np.abs(peaks).max(initial=0.0)), 4)},
    )


def samples_per_pixel(rate: int, duration: float, width: int,
                      pixels_per_second: int | None) -> int:
    if pixels_per_second:
        return max(1, round(rate / pixels_per_second))
    if duration <= 0:
        return DEFAULT_SAMPLES_PER_PIXEL
    return max(1, math.ceil(duration * rate / width))


class PeakAccumulator:
    """Min and max of every ``per_pixel`` samples, fed one decoded frame at a time.

    Only the running min/max of the unfinished bucket is kept between frames, so a
    bucket of a million samples costs no more than a bucket of ten."""

    def __init__(self, per_pixel: int) -> None:
        self.per_pixel = per_pixel
        self.mins: list[float] = []
        self.maxs: list[float] = []
        self.filled = 0
        self.low = 0.0
        self.high = 0.0

    def add(self, samples: FloatArray) -> None:
        start = 0
        if self.filled:
            start = min(self.per_pixel - self.filled, samples.size)
            self._extend_bucket(samples[:start])
        rest = samples[start:]
        whole = rest.size - rest.size % self.per_pixel
        if whole:
            buckets = rest[:whole].reshape(-1, self.per_pixel)
            self.mins.extend(buckets.min(axis=1).tolist())
            self.maxs.extend(buckets.max(axis=1).tolist())
        if whole < rest.size:
            self._extend_bucket(rest[whole:])

    def _extend_bucket(self, part: FloatArray) -> None:
        if not part.size:
            return
        low, high = float(part.min()), float(part.max())
        self.low, self.high = (min(self.low, low), max(self.high, high)) if self.filled \
            else (low, high)
        self.filled += part.size
        if self.filled == self.per_pixel:
            self._close_bucket()

    def _close_bucket(self) -> None:
        self.mins.append(self.low)
        self.maxs.append(self.high)
        self.filled = 0

    def finish(self) -> FloatArray:
        """Peaks as an array of shape (length, 2): min and max of each bucket."""
        if self.filled:
            self._close_bucket()
        return np.column_stack([np.asarray(self.mins, np.float32),
                                np.asarray(self.maxs, np.float32)]).reshape(-1, 2)


def accumulate_peaks(ctx: ActionContext, info: MediaInfo,
                     per_pixel: int) -> tuple[FloatArray, int]:
    """Stream the source, mixing channels to mono by their mean (as audiowaveform does)."""
    source = ctx.source_path
    peaks = PeakAccumulator(per_pixel)
    to_float = AudioResampler(format="fltp")  # keeps the layout and rate
    rate = 0
    clock = ProgressClock(ctx, info.duration, "waveform")
    with open_media(source) as container, reading(source):
        stream = first_audio_stream(container)
        for frame in decode_audio(container, stream, clock):
            rate = rate or frame.sample_rate
            for planar in to_float.resample(frame):
                peaks.add(planar.to_ndarray().astype(np.float32, copy=False).mean(axis=0))
    if rate == 0:
        raise PermanentError(f"{source.name}: the audio stream has no decodable frame")
    return peaks.finish(), rate


def quantise(values: FloatArray, bits: int) -> npt.NDArray[np.int32]:
    """Float samples as audiowaveform stores them: 16-bit, or 16-bit shifted down 8."""
    full = np.clip(np.round(values * 32768.0), -32768, 32767).astype(np.int32)
    return full if bits == 16 else np.floor_divide(full, 256)


def peaks_document(peaks: FloatArray, rate: int, per_pixel: int, bits: int) -> dict[str, Any]:
    """The audiowaveform JSON format (version 2) that peaks.js reads."""
    return {"version": 2, "channels": 1, "sample_rate": rate, "samples_per_pixel": per_pixel,
            "bits": bits, "length": int(peaks.shape[0]),
            "data": quantise(peaks, bits).ravel().tolist()}


def parse_color(text: str) -> tuple[int, int, int, int]:
    digits = text.lstrip("#")
    red, green, blue = (int(digits[i:i + 2], 16) for i in (0, 2, 4))
    alpha = int(digits[6:8], 16) if len(digits) == 8 else 255
    return red, green, blue, alpha


def draw_waveform(peaks: FloatArray, width: int, height: int,
                  color: tuple[int, int, int, int],
                  background: tuple[int, int, int, int]) -> Image.Image:
    """One vertical bar per column from its min to its max (a line at the centre for
    silence); the peaks are grouped, or stretched, to the image width."""
    if peaks.shape[0] == 0:
        peaks = np.zeros((1, 2), np.float32)
    starts = (np.arange(width) * peaks.shape[0]) // width
    low = np.minimum.reduceat(peaks[:, 0], starts)
    high = np.maximum.reduceat(peaks[:, 1], starts)
    centre = (height - 1) / 2
    top = np.floor(centre - np.clip(high, -1, 1) * centre)
    bottom = np.ceil(centre - np.clip(low, -1, 1) * centre)
    rows = np.arange(height)[:, None]
    mask = (rows >= top[None, :]) & (rows <= bottom[None, :])
    channels = 4 if color[3] < 255 or background[3] < 255 else 3  # RGBA only if asked
    pixels = np.where(mask[:, :, None], np.array(color[:channels], np.uint8),
                      np.array(background[:channels], np.uint8))
    return Image.fromarray(pixels.astype(np.uint8))
