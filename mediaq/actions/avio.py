"""Opening, probing and encoding audio/video with PyAV, safely and with progress.

Every audio/video action opens its input through :func:`open_media`, which only
lets FFmpeg read local files with the demuxers in :data:`ALLOWED_DEMUXERS`: no
network, no playlists, no concat lists (a playlist renamed to ``.mp4`` is refused).
Whatever FFmpeg raises is turned into a one-line PermanentError by :func:`reading`.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import av.filter
from av.audio.fifo import AudioFifo
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler
from av.container import InputContainer, OutputContainer

from mediaq.actions.base import ActionContext, check_source_file
from mediaq.actions.hardware import (  # noqa: F401  (re-exported)
    SOFTWARE_ENCODERS,
    decide_video_encoder,
    hardware_encoder_works,
    has_gpu,
)
from mediaq.errors import InputRefused, PermanentError, TransientError

# Demuxers that read one self-contained local file. Everything that follows
# references (hls, dash, concat, image2, …) is left out on purpose. Raw AC-3, E-AC-3
# and DTS are how broadcast and disc deliveries often arrive; AMR is what phones
# record voice memos in. DSD (dsf, iff), TAK and TTA stay out: niche, and each
# demuxer admitted is more parser surface for hostile files.
ALLOWED_DEMUXERS = (
    "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "mpegts", "avi", "flv", "mpeg", "asf",
    "wav", "w64", "mp3", "flac", "ogg", "aac", "aiff", "caf", "ivf", "h264", "hevc", "m4v",
    "mpegvideo", "wv", "ape", "ac3", "eac3", "dts", "amr",
)
_OPEN_OPTIONS = {
    "protocol_whitelist": "file",
    "format_whitelist": ",".join(ALLOWED_DEMUXERS),
}

PROGRESS_EVERY_S = 0.25


# --------------------------------------------------------------------------- errors


def one_line(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(text).strip().splitlines()[0]


def media_kind(path: Path) -> str:
    """What a file says it is, for a message: its extension ("MKV"), else "media"."""
    suffix = path.suffix.lstrip(".")
    return suffix.upper() if suffix.isalnum() and len(suffix) <= 5 else "media"


@contextmanager
def reading(path: Path) -> Iterator[None]:
    """Turn what FFmpeg raises while reading ``path`` into one clear error line."""
    name = path.name
    try:
        yield
    except av.error.FileNotFoundError:
        raise InputRefused(f"{name}: input file {path} does not exist") from None
    except av.error.PermissionError:
        if os.access(path, os.R_OK):  # a decoder's EPERM on damaged data, not the file's mode
            raise PermanentError(f"{name}: corrupt or unsupported media (FFmpeg refused "
                                 "to read or decode its data)") from None
        raise InputRefused(f"{name}: cannot be read (permission denied)") from None
    except av.error.MemoryError:
        raise TransientError(f"{name}: out of memory while decoding") from None
    except av.error.EOFError:
        # The demuxer wanted more bytes than the file has (FFmpeg says "End of file").
        raise PermanentError(f"{name}: truncated: the file ends early") from None
    except av.error.InvalidDataError:
        # FFmpeg's "Invalid data found when processing input": the bytes are not what
        # the container (or codec) says they are.
        raise PermanentError(f"{name}: not a valid {media_kind(path)} file") from None
    except (av.error.DecoderNotFoundError, av.error.PatchWelcomeError) as exc:
        raise PermanentError(f"{name}: corrupt or unsupported media ({one_line(exc)})") from None
    except av.error.FFmpegError as exc:
        raise PermanentError(f"{name}: cannot be decoded ({one_line(exc)})") from None


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Storage failures while writing are transient (a full disk may be freed)."""
    try:
        yield
    except av.error.OSError as exc:
        raise TransientError(f"{path.name}: write failed ({one_line(exc)})") from None
    except OSError as exc:
        raise TransientError(f"{path.name}: write failed ({one_line(exc)})") from None


# --------------------------------------------------------------------------- opening


@contextmanager
def open_media(path: Path) -> Iterator[InputContainer]:
    """Open a local audio/video file for reading, refusing anything unsafe."""
    check_source_file(path)
    with reading(path):
        try:
            # Tags are text from the file: undecodable bytes are replaced, not raised.
            container = av.open(str(path), mode="r", options=dict(_OPEN_OPTIONS),
                                metadata_errors="replace")
        except (av.error.InvalidDataError, av.error.ArgumentError,
                av.error.DemuxerNotFoundError, UnicodeDecodeError):
            raise PermanentError(
                f"{path.name}: not a supported audio or video file") from None
    try:
        yield container
    finally:
        container.close()


# --------------------------------------------------------------------------- probing


@dataclass(frozen=True)
class VideoInfo:
    codec: str
    profile: str | None
    width: int  # as stored
    height: int
    display_width: int  # after rotation
    display_height: int
    rotation: int  # degrees clockwise a player turns the picture
    fps: float
    frames: int
    pix_fmt: str | None
    bit_depth: int
    bit_rate: int | None
    color_primaries: str | None
    color_transfer: str | None
    color_space: str | None
    color_range: str | None
    hdr: bool
    interlaced: bool


@dataclass(frozen=True)
class AudioInfo:
    codec: str
    sample_rate: int
    channels: int
    layout: str
    sample_format: str | None
    bit_rate: int | None


@dataclass(frozen=True)
class MediaInfo:
    container: str
    duration: float
    bit_rate: int | None
    size_bytes: int
    video: VideoInfo | None
    audio: AudioInfo | None
    streams: list[dict[str, Any]]

    def as_data(self) -> dict[str, Any]:
        return asdict(self)


# FFmpeg's numeric colour enums, named as ffprobe names them.
_PRIMARIES = {1: "bt709", 5: "bt470bg", 6: "smpte170m", 9: "bt2020"}
_TRANSFERS = {1: "bt709", 6: "smpte170m", 14: "bt2020-10", 16: "smpte2084", 18: "arib-std-b67"}
_SPACES = {0: "gbr", 1: "bt709", 5: "bt470bg", 6: "smpte170m", 9: "bt2020nc"}
_RANGES = {1: "tv", 2: "pc"}
_HDR_TRANSFERS = frozenset({"smpte2084", "arib-std-b67"})


def probe(path: Path) -> MediaInfo:
    """Describe ``path`` from its headers and first video frame (no full decode)."""
    with open_media(path) as container, reading(path):
        duration = media_duration(container)
        video = _video_info(container) if container.streams.video else None
        audio = _audio_info(container) if container.streams.audio else None
        streams = [_stream_summary(s) for s in container.streams]
        return MediaInfo(
            container=container.format.name, duration=round(duration, 3),
            bit_rate=container.bit_rate or None, size_bytes=path.stat().st_size,
            video=video, audio=audio, streams=streams,
        )


def media_duration(container: InputContainer) -> float:
    """Seconds, from the container or else the longest stream."""
    if container.duration:
        return float(container.duration) / av.time_base
    best = 0.0
    for stream in container.streams:
        if stream.duration and stream.time_base:
            best = max(best, float(stream.duration * stream.time_base))
    return best


def stream_start(stream: Any) -> float | None:
    """Seconds at which ``stream`` starts (its demuxer's start time), or None if unknown."""
    if stream is None or stream.start_time is None or not stream.time_base:
        return None
    return float(stream.start_time * stream.time_base)


def common_origin(*streams: Any) -> float:
    """The earliest start of ``streams``: subtracted from every stream, it makes an output
    start at zero while each stream keeps its offset from the others (lip sync)."""
    starts = [s for s in (stream_start(stream) for stream in streams) if s is not None]
    return min(starts, default=0.0)


def _video_info(container: InputContainer) -> VideoInfo:
    stream = container.streams.video[0]
    ctx = stream.codec_context
    if ctx is None:
        raise PermanentError(f"{Path(container.name).name}: corrupt or unsupported media "
                             "(the video stream has no decoder)")
    rotation, interlaced = _first_frame_facts(container, stream)
    fmt = ctx.format
    depth = max((c.bits for c in fmt.components), default=8) if fmt is not None else 8
    transfer = _TRANSFERS.get(int(ctx.color_trc or 0))
    quarter = rotation % 180 == 90
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return VideoInfo(
        codec=ctx.codec.canonical_name, profile=ctx.profile, width=ctx.width, height=ctx.height,
        display_width=ctx.height if quarter else ctx.width,
        display_height=ctx.width if quarter else ctx.height,
        rotation=rotation, fps=round(float(rate), 3) if rate else 0.0,
        frames=int(stream.frames or 0), pix_fmt=fmt.name if fmt is not None else None,
        bit_depth=depth, bit_rate=ctx.bit_rate or None,
        color_primaries=_PRIMARIES.get(int(ctx.color_primaries or 0)),
        color_transfer=transfer, color_space=_SPACES.get(int(ctx.colorspace or 0)),
        color_range=_RANGES.get(int(ctx.color_range or 0)),
        hdr=transfer in _HDR_TRANSFERS, interlaced=interlaced,
    )


def _first_frame_facts(container: InputContainer, stream: av.VideoStream) -> tuple[int, bool]:
    """Rotation and interlacing are only known from a decoded frame."""
    for frame in container.decode(stream):
        # Nothing is read after this, so a rewind that fails (the partial index of
        # mutagen's nero-chapters.m4b: EPERM) is no reason to refuse the file (issue 22).
        with contextlib.suppress(av.error.FFmpegError):
            container.seek(0)
        # PyAV reports the counter-clockwise angle of the display matrix.
        return (-int(frame.rotation)) % 360, bool(frame.interlaced_frame)
    raise PermanentError(f"{Path(container.name).name}: the video stream has no decodable frame")


def _audio_info(container: InputContainer) -> AudioInfo:
    ctx = container.streams.audio[0].codec_context
    if ctx is None:
        raise PermanentError(f"{Path(container.name).name}: corrupt or unsupported media "
                             "(the audio stream has no decoder)")
    return AudioInfo(
        codec=ctx.codec.canonical_name, sample_rate=ctx.sample_rate, channels=ctx.channels,
        layout=ctx.layout.name, sample_format=ctx.format.name if ctx.format else None,
        bit_rate=ctx.bit_rate or None,
    )


def _stream_summary(stream: Any) -> dict[str, Any]:
    ctx = stream.codec_context
    summary: dict[str, Any] = {"index": stream.index, "type": stream.type,
                               "codec": ctx.codec.canonical_name if ctx is not None else None,
                               "language": stream.metadata.get("language")}
    if stream.duration and stream.time_base:
        summary["duration"] = round(float(stream.duration * stream.time_base), 3)
    return summary


# --------------------------------------------------------------------------- progress


class ProgressClock:
    """Reports progress from media timestamps, checking for cancellation each call.

    The stage reads e.g. ``encoding 48 fps 1.6x`` (frames per second when the caller
    ticks once per video frame, and speed against real time). An action that reads
    the media several times gives each pass its ``span`` of the step's progress."""

    def __init__(self, ctx: ActionContext, total_seconds: float, stage: str,
                 *, count_frames: bool = False, span: tuple[float, float] = (0.0, 1.0)) -> None:
        self.ctx = ctx
        self.span = span
        self.total = max(total_seconds, 1e-6)
        self.stage = stage
        self.count_frames = count_frames
        self.frames = 0
        self.started = time.monotonic()
        self._last = 0.0

    def tick(self, seconds: float | None) -> None:
        self.frames += 1
        now = time.monotonic()
        if now - self._last < PROGRESS_EVERY_S:
            self.ctx.check()
            return
        self._last = now
        done = min(max(seconds or 0.0, 0.0) / self.total, 1.0)
        low, high = self.span
        self.ctx.progress(low + (high - low) * done,
                          self._describe(seconds or 0.0, now - self.started))

    def _describe(self, seconds: float, elapsed: float) -> str:
        if elapsed <= 0:
            return self.stage
        parts = [self.stage]
        if self.count_frames:
            parts.append(f"{self.frames / elapsed:.0f} fps")
        parts.append(f"{seconds / elapsed:.1f}x")
        return " ".join(parts)


# --------------------------------------------------------------------------- encoders


def choose_video_encoder(codec: str, hardware: str, ctx: ActionContext) -> str:
    """The encoder for ``codec``: hardware when asked/allowed and present, else software
    (:func:`mediaq.actions.hardware.decide_video_encoder` says why)."""
    return decide_video_encoder(codec, hardware, ctx).encoder


def encoder_options(encoder: str, *, crf: int, preset: str,
                    max_bitrate: int | None) -> dict[str, str]:
    """Rate-control options in each encoder's own vocabulary."""
    options: dict[str, str]
    if encoder.endswith("_nvenc"):
        options = {"preset": "p4", "rc": "vbr", "cq": str(crf)}
    elif encoder.endswith("_qsv"):
        options = {"preset": "medium", "global_quality": str(crf)}
    elif encoder == "libvpx-vp9":
        options = {"crf": str(crf), "b": "0", "deadline": "good", "cpu-used": "4",
                   "row-mt": "1"}
    elif encoder == "libsvtav1":
        options = {"crf": str(crf), "preset": "8"}
    elif encoder == "libx265":
        options = {"crf": str(crf), "preset": preset, "x265-params": "log-level=error"}
    else:
        options = {"crf": str(crf), "preset": preset}
    if max_bitrate:
        options.update({"maxrate": str(max_bitrate), "bufsize": str(2 * max_bitrate)})
        if encoder == "libvpx-vp9":
            options["b"] = str(max_bitrate)
    return options


def parse_bitrate(value: str | int | None) -> int | None:
    """``"4M"``, ``"128k"`` or a number of bits per second."""
    if value is None or value == "":
        return None
    if isinstance(value, int):
        return value
    text = value.strip().lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    number = text[:-1] if scale != 1 else text
    try:
        return int(float(number) * scale)
    except ValueError:
        raise PermanentError(f"invalid bit rate {value!r} (use e.g. 128k or 4M)") from None


BITRATE_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "integer", "minimum": 1000},
              {"type": "string", "pattern": r"^\d+(\.\d+)?[kKmM]?$"}],
}


# --------------------------------------------------------------------------- filters


def configure_chain(graph: av.filter.Graph, source: Any, steps: list[tuple[str, str]],
                    sink: str) -> av.filter.Graph:
    """Link ``source`` -> each (filter, args) of ``steps`` -> ``sink`` and configure."""
    node = source
    for name, args in steps:
        nxt = graph.add(name, args)
        node.link_to(nxt)
        node = nxt
    node.link_to(graph.add(sink))
    graph.configure()
    return graph


# --------------------------------------------------------------------------- audio


class AudioEncoderFeed:
    """Resamples decoded audio to what an encoder takes and feeds it whole frames.

    The audio is laid end to end from one start. With no ``origin`` it starts at zero.
    With an ``origin`` (seconds on the source's clock) the first frame is placed at its
    own time minus ``origin``, so audio that starts after the video still does: the
    first pts is positive, and MP4 muxers write it as an edit list that ffprobe and
    players honour. A first frame before ``origin`` loses its leading samples."""

    def __init__(self, stream: Any, *, origin: float | None = None) -> None:
        ctx = stream.codec_context
        self.stream = stream
        self.resampler = AudioResampler(format=ctx.format.name, layout=ctx.layout.name,
                                        rate=ctx.sample_rate)
        self.fifo = AudioFifo()
        self.frame_size = ctx.frame_size or 1024
        self.origin = origin
        self.samples_out = 0
        self._placed = origin is None
        self._skip = 0  # leading samples still to drop

    def _place(self, frame: AudioFrame) -> None:
        """Start the output where ``frame`` starts, counted from ``origin``."""
        self._placed = True
        if self.origin is None or frame.pts is None or frame.time_base is None:
            return
        start = round((float(frame.pts * frame.time_base) - self.origin)
                      * self.stream.codec_context.sample_rate)
        if start >= 0:
            self.samples_out = start
        else:
            self._skip = -start

    def push(self, frame: AudioFrame | None) -> list[Any]:
        """Encoded packets for ``frame``; ``None`` flushes everything."""
        packets: list[Any] = []
        if frame is not None and not self._placed:
            self._place(frame)
        for resampled in self.resampler.resample(frame):
            # The fifo checks that pts run on; a resampler with nothing to do hands back
            # the caller's frame itself, which other feeds (a fused ladder) still place.
            pts, resampled.pts = resampled.pts, None
            self.fifo.write(resampled)
            resampled.pts = pts
        if self._skip and self.fifo.samples:
            dropped = self.fifo.read(min(self._skip, self.fifo.samples))
            self._skip -= dropped.samples if dropped is not None else 0
        final = frame is None
        while self.fifo.samples >= self.frame_size or (final and self.fifo.samples):
            chunk = self.fifo.read(min(self.frame_size, self.fifo.samples))
            assert chunk is not None
            chunk.pts = self.samples_out
            chunk.time_base = Fraction(1, self.stream.codec_context.sample_rate)
            self.samples_out += chunk.samples
            packets.extend(self.stream.encode(chunk))
        if final:
            packets.extend(self.stream.encode(None))
        return packets


def add_audio_stream(output: OutputContainer, codec: str, *, rate: int, layout: str,
                     bit_rate: int | None) -> Any:
    stream: Any = output.add_stream(codec, rate=rate)
    stream.codec_context.layout = layout
    if bit_rate:
        stream.codec_context.bit_rate = bit_rate
    stream.time_base = Fraction(1, rate)
    return stream


def output_layout(channels: int) -> str:
    return "mono" if channels == 1 else "stereo"
