"""What the streaming and editing actions share: a source clip, sizes and rates,
a letterbox canvas, H.264 encoder streams, frame encoding and an audio timeline."""


from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler
from av.container import InputContainer, OutputContainer
from av.video.frame import PictureType, VideoFrame

from mediaq.actions.avio import (
    AudioEncoderFeed,
    add_audio_stream,
    open_media,
    output_layout,
    probe,
    reading,
    stream_start,
)
from mediaq.actions.frames import Scaler, Upright, decode_by_stream
from mediaq.errors import PermanentError

# Highest output frame rate; faster sources are halved (or more) to get under it.
MAX_RATE = 60
# Default video cap for a rung: 0.1 bit per pixel at 30 fps (1280x720 -> 2.8 Mb/s).
DEFAULT_BITS_PER_PIXEL_SECOND = 3
AAC_CODEC_STRING = "mp4a.40.2"  # FFmpeg's aac encoder writes AAC-LC
NAMED_RUNGS = ("2160p", "1440p", "1080p", "720p", "540p", "480p", "360p", "240p", "144p")
PRESETS = ["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
           "slower", "veryslow"]
HARDWARE_SCHEMA: dict[str, Any] = {"enum": ["auto", "never", "require"], "default": "auto"}

_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
# Largest side each still/animation encoder takes.
MAX_IMAGE_SIDE = {"JPEG": 65_500, "WEBP": 16_383, "GIF": 65_535}
_BLACK_YUV = (16, 128, 128)  # limited-range black



# =========================================================================== shared helpers


def safe_stem(path: Path) -> str:
    """The source's stem, reduced to characters that are safe in muxer filename patterns
    (no ``%`` for the hls muxer, no ``$`` for DASH templates, no spaces in URIs)."""
    return _SAFE_NAME.sub("_", path.stem).strip("._")[:80] or "media"


def even(value: float | Fraction) -> int:
    return max(2, round(value) // 2 * 2)


@dataclass(frozen=True)
class SourceClip:
    """What the actions here need to know about one input video."""

    path: Path
    duration: float
    width: int  # upright, in stored pixels
    height: int
    aspect: Fraction  # display aspect ratio of the upright picture
    rate: Fraction  # output frame rate (the source's, capped at MAX_RATE)
    rotation: int
    audio_rate: int | None  # None: no audio stream
    audio_channels: int
    # Where each stream starts on the source's clock (seconds; None: not known). Streams
    # often start at different times (camera files, edit lists, MPEG-TS).
    video_start: float | None = None
    audio_start: float | None = None


def inspect_clip(path: Path) -> SourceClip:
    """Probe ``path`` and refuse what has no video or no duration."""
    info = probe(path)
    if info.video is None:
        raise PermanentError(f"{path.name}: has no video stream"
                             + (" (audio only)" if info.audio else ""))
    if info.duration <= 0:
        raise PermanentError(f"{path.name}: has no duration (empty or unfinished recording)")
    video = info.video
    with open_media(path) as container, reading(path):
        stream: Any = container.streams.video[0]
        sar = Fraction(stream.sample_aspect_ratio or 1) or Fraction(1)
        rate = _base_rate(stream) or Fraction(video.fps or 25)
        video_start = stream_start(stream)
        audio_start = stream_start(container.streams.audio[0]) if info.audio else None
    stored = Fraction(video.width * sar.numerator, video.height * sar.denominator)
    aspect = 1 / stored if video.rotation % 180 == 90 else stored
    return SourceClip(
        path=path, duration=info.duration, width=video.display_width,
        height=video.display_height, aspect=aspect, rate=capped_rate(Fraction(rate)),
        rotation=video.rotation,
        audio_rate=info.audio.sample_rate if info.audio else None,
        audio_channels=info.audio.channels if info.audio else 0,
        video_start=video_start, audio_start=audio_start,
    )


def _base_rate(stream: Any) -> Fraction | None:
    """The rate the timestamps are built on (r_frame_rate), which keeps every frame of a
    variable-rate phone video; the average when that base is implausibly high (1/1000
    timestamps)."""
    guessed = stream.guessed_rate
    if guessed and 0 < guessed <= 2 * MAX_RATE:
        return Fraction(guessed)
    return Fraction(stream.average_rate) if stream.average_rate else None


def capped_rate(rate: Fraction) -> Fraction:
    if rate <= 0 or rate > 1000:  # nonsense from a broken header
        return Fraction(25)
    rate = rate.limit_denominator(1001)
    return rate / math.ceil(rate / MAX_RATE) if rate > MAX_RATE else rate


def fit_inside(aspect: Fraction, box_w: int, box_h: int) -> tuple[int, int]:
    """The largest even size of display aspect ``aspect`` inside ``box_w`` x ``box_h``."""
    if Fraction(box_w, box_h) > aspect:
        return min(even(box_h * aspect), box_w // 2 * 2), box_h // 2 * 2
    return box_w // 2 * 2, min(even(box_w / aspect), box_h // 2 * 2)


def frame_count(seconds: float, rate: Fraction) -> int:
    return max(1, round(seconds * rate))


AudioSink = Callable[[AudioFrame], None]


def upright_frames(container: InputContainer, vstream: Any, astream: Any = None,
                   on_audio: AudioSink | None = None) -> Iterator[tuple[float, VideoFrame]]:
    """(seconds since the stream's start, upright frame) in presentation order, from the
    current position; audio frames of ``astream`` go to ``on_audio`` as they come."""
    sinks = {astream.index: on_audio} if astream is not None and on_audio else {}
    return upright_frames_with_audio(container, vstream, sinks)


def upright_frames_with_audio(container: InputContainer, vstream: Any,
                              sinks: Mapping[int, AudioSink]
                              ) -> Iterator[tuple[float, VideoFrame]]:
    """:func:`upright_frames`, with the frames of each audio stream whose index ``sinks``
    names going to its own sink (several languages decoded in the same pass)."""
    origin = float(vstream.start_time * vstream.time_base) if vstream.start_time else 0.0
    time_base = vstream.time_base
    upright: Upright | None = None
    streams = [vstream] + [s for s in container.streams.audio if s.index in sinks]
    for index, frame in decode_by_stream(container, streams):
        if isinstance(frame, AudioFrame):
            sinks[index](frame)
            continue
        if upright is None:
            upright = Upright(vstream, frame)
        for shaped in upright.apply(frame):
            yield frame_seconds(shaped, time_base) - origin, shaped
    if upright is not None:
        for shaped in upright.apply(None):
            yield frame_seconds(shaped, time_base) - origin, shaped


def frame_seconds(frame: VideoFrame, time_base: Fraction) -> float:
    return float(frame.pts * time_base) if frame.pts is not None else 0.0


def constant_rate(frames: Iterator[tuple[float, VideoFrame]], *, start: float, rate: Fraction,
                  count: int) -> Iterator[VideoFrame]:
    """``count`` frames at ``start + k / rate``: each the source frame nearest before the
    tick (within half an output frame); frames repeat or drop to keep the rate, and the
    last one holds if the source ends early."""
    tolerance = 0.5 / float(rate)
    k = 0
    held: VideoFrame | None = None
    for t, frame in frames:
        while k < count and held is not None and t > start + k / rate + tolerance:
            yield held
            k += 1
        if k >= count:
            return
        held = frame
    while k < count and held is not None:
        yield held
        k += 1


class Canvas:
    """A black yuv420p picture that scaled frames are pasted into (letterbox, mosaic)."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.planes = [np.full((h, w), value, np.uint8) for (w, h), value in
                       zip(_plane_sizes(width, height), _BLACK_YUV, strict=True)]

    def paste(self, frame: VideoFrame, x: int, y: int) -> None:
        """Paste a yuv420p ``frame`` with its top left corner at even ``x``, ``y``."""
        for index, plane in enumerate(_split_planes(frame)):
            sx, sy = (x, y) if index == 0 else (x // 2, y // 2)
            h, w = plane.shape
            self.planes[index][sy:sy + h, sx:sx + w] = plane

    def frame(self) -> VideoFrame:
        flat = np.concatenate([p.reshape(-1) for p in self.planes])
        return VideoFrame.from_ndarray(flat.reshape(self.height * 3 // 2, self.width),
                                       format="yuv420p")


def _plane_sizes(width: int, height: int) -> list[tuple[int, int]]:
    return [(width, height), (width // 2, height // 2), (width // 2, height // 2)]


def _split_planes(frame: VideoFrame) -> list[np.ndarray[Any, Any]]:
    # PyAV hands yuv420p back as one (h * 3/2, w) array: Y, then U, then V, packed.
    flat = frame.to_ndarray().reshape(-1)
    planes: list[np.ndarray[Any, Any]] = []
    offset = 0
    for w, h in _plane_sizes(frame.width, frame.height):
        planes.append(flat[offset:offset + w * h].reshape(h, w))
        offset += w * h
    return planes


class Letterbox:
    """Frames of display aspect ``aspect`` scaled to fit ``width`` x ``height`` and
    centred on black: yuv420p frames of exactly that size."""

    def __init__(self, aspect: Fraction, width: int, height: int) -> None:
        fit_w, fit_h = fit_inside(aspect, width, height)
        self.scale = Scaler(fit_w, fit_h)
        self.offset = ((width - fit_w) // 4 * 2, (height - fit_h) // 4 * 2)
        # The bars never change: one canvas, the picture pasted over the same spot.
        self.canvas = Canvas(width, height) if (fit_w, fit_h) != (width, height) else None

    def __call__(self, frame: VideoFrame) -> VideoFrame:
        scaled = self.scale(frame)
        if self.canvas is None:
            return scaled
        self.canvas.paste(scaled, *self.offset)
        return self.canvas.frame()


def add_h264_stream(output: OutputContainer, encoder: str, *, width: int, height: int,
                    rate: Fraction, options: dict[str, str], gop: int | None = None,
                    sar: Fraction | None = None) -> Any:
    """A video encoder stream on ``output`` taking frames with pts counted in frames."""
    stream: Any = output.add_stream(encoder, rate=rate)
    stream.width, stream.height = width, height
    # Quick Sync takes NV12 (the same 4:2:0 samples, chroma interleaved).
    stream.pix_fmt = "nv12" if encoder.endswith("_qsv") else "yuv420p"
    ctx = stream.codec_context
    ctx.time_base = 1 / rate
    ctx.thread_type = "FRAME"
    if gop:
        ctx.gop_size = gop
    if sar is not None and sar != 1:
        ctx.sample_aspect_ratio = sar  # written into the SPS, so players show it right
    stream.options = dict(options)
    return stream


def encode_frame(stream: Any, frame: VideoFrame, index: int, *, key: bool = False) -> list[Any]:
    """Encode ``frame`` as output frame ``index``. A decoded frame carries its source
    picture type, which libx264 obeys: it is reset so the encoder picks its own GOP."""
    if stream.codec_context.pix_fmt == "nv12" and frame.format.name != "nv12":
        frame = frame.reformat(format="nv12")
    frame.pts = index
    frame.time_base = stream.codec_context.time_base
    frame.pict_type = PictureType.I if key else PictureType.NONE
    return list(stream.encode(frame))


class AudioTimeline:
    """AAC audio laid end to end at fixed sample positions: input that overruns a clip's
    end is dropped, gaps (inputs without audio, short audio) are filled with silence."""

    def __init__(self, output: OutputContainer, *, rate: int, channels: int,
                 bit_rate: int | None) -> None:
        self.rate = rate
        self.layout = output_layout(channels)
        stream = add_audio_stream(output, "aac", rate=rate, layout=self.layout,
                                  bit_rate=bit_rate)
        self.feed = AudioEncoderFeed(stream)
        self.written = 0
        self.resampler: AudioResampler | None = None

    def samples_at(self, seconds: float) -> int:
        return round(seconds * self.rate)

    def begin_clip(self) -> None:
        self.resampler = AudioResampler(format="fltp", layout=self.layout, rate=self.rate)

    def add(self, frame: AudioFrame | None, until: int) -> list[Any]:
        """Encode ``frame`` (None: the clip's tail in the resampler) up to sample ``until``."""
        assert self.resampler is not None
        packets: list[Any] = []
        for chunk in self.resampler.resample(frame):
            room = until - self.written
            if room <= 0:
                break
            data = chunk.to_ndarray()[:, :room]
            packets.extend(self._push(data))
        return packets

    def fill(self, until: int) -> list[Any]:
        """Silence up to sample ``until``."""
        packets: list[Any] = []
        channels = 1 if self.layout == "mono" else 2
        while self.written < until:
            n = min(until - self.written, 4096)
            packets.extend(self._push(np.zeros((channels, n), np.float32)))
        return packets

    def finish(self) -> list[Any]:
        return self.feed.push(None)

    def _push(self, data: np.ndarray[Any, Any]) -> list[Any]:
        frame = AudioFrame.from_ndarray(np.ascontiguousarray(data), format="fltp",
                                        layout=self.layout)
        frame.sample_rate = self.rate
        self.written += data.shape[1]
        return self.feed.push(frame)


def remove_quietly(paths: list[Path]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
