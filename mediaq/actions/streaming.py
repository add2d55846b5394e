"""Streaming and derived-video actions: HLS/DASH ladders, sprite sheets, previews, compilations.

``package_hls`` and ``package_dash`` decode the source once and encode every rung of a
rendition ladder from that one pass. Each track (every video rung, and the audio once)
goes through FFmpeg's hls muxer as a CMAF segmenter: fMP4 init + numbered ``.m4s``
segments cut at keyframes that are forced on the segment grid. The master playlist and
the MPD are written here, from the segments actually produced (measured bit rates, the
exact codec strings from each init segment). The dash muxer is not used because it
cannot see the sample aspect ratio PyAV gives each rung, so it refuses a ladder whose
even-rounded sizes differ in shape by a pixel (e.g. 426x240 beside 640x360).

Everything lands flat in the step's staging folder, named ``{stem}_{hls|dash}_{rung}…``,
and every file is listed as an output (the engine publishes only listed files).

Frames to encode are turned upright (rotation), deinterlaced and resampled to a constant
frame rate before scaling, so outputs play the right way up at a steady rate everywhere;
sprite tiles are turned upright too. Scaling keeps one swscale context per output size
(:class:`~mediaq.actions.frames.Scaler`), four times cheaper than ``frame.reformat()``.
"""

from __future__ import annotations

import contextlib
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import av.filter
import numpy as np
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler
from av.container import InputContainer, OutputContainer
from av.video.frame import PictureType, VideoFrame
from PIL import Image

from mediaq.actions import action
from mediaq.actions.avio import (
    BITRATE_SCHEMA,
    AudioEncoderFeed,
    ProgressClock,
    add_audio_stream,
    choose_video_encoder,
    encoder_options,
    open_media,
    open_output,
    output_layout,
    parse_bitrate,
    probe,
    reading,
    writing,
)
from mediaq.actions.base import ActionContext, ActionResult, OutputFile
from mediaq.actions.frames import Scaler, Upright, decode_tolerantly, seek_to, turn_image
from mediaq.errors import InputRefused, PermanentError

# Highest output frame rate; faster sources are halved (or more) to get under it.
MAX_RATE = 60
# A few corrupt packets are skipped, as players do; more means the file is broken.
# Default video cap for a rung: 0.1 bit per pixel at 30 fps (1280x720 -> 2.8 Mb/s).
DEFAULT_BITS_PER_PIXEL_SECOND = 3
AAC_CODEC_STRING = "mp4a.40.2"  # FFmpeg's aac encoder writes AAC-LC
NAMED_RUNGS = ("2160p", "1440p", "1080p", "720p", "540p", "480p", "360p", "240p", "144p")
PRESETS = ["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
           "slower", "veryslow"]
HARDWARE_SCHEMA: dict[str, Any] = {"enum": ["auto", "never", "require"], "default": "auto"}

_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
# Largest side each still/animation encoder takes.
_MAX_IMAGE_SIDE = {"JPEG": 65_500, "WEBP": 16_383, "GIF": 65_535}
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
    stored = Fraction(video.width * sar.numerator, video.height * sar.denominator)
    aspect = 1 / stored if video.rotation % 180 == 90 else stored
    return SourceClip(
        path=path, duration=info.duration, width=video.display_width,
        height=video.display_height, aspect=aspect, rate=capped_rate(Fraction(rate)),
        rotation=video.rotation,
        audio_rate=info.audio.sample_rate if info.audio else None,
        audio_channels=info.audio.channels if info.audio else 0,
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
    origin = float(vstream.start_time * vstream.time_base) if vstream.start_time else 0.0
    time_base = vstream.time_base
    upright: Upright | None = None
    streams = [vstream] + ([astream] if astream is not None and on_audio else [])
    for frame in decode_tolerantly(container, streams):
        if isinstance(frame, AudioFrame):
            assert on_audio is not None
            on_audio(frame)
            continue
        if upright is None:
            upright = Upright(vstream, frame)
        for shaped in upright.apply(frame):
            yield _seconds(shaped, time_base) - origin, shaped
    if upright is not None:
        for shaped in upright.apply(None):
            yield _seconds(shaped, time_base) - origin, shaped


def _seconds(frame: VideoFrame, time_base: Fraction) -> float:
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
    stream.pix_fmt = "yuv420p"
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


def _remove_quietly(paths: list[Path]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def _close_quietly(output: OutputContainer) -> None:
    with contextlib.suppress(av.error.FFmpegError, OSError):
        output.close()


# =========================================================================== ladders

RENDITION_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"enum": list(NAMED_RUNGS)},
        {"type": "object", "additionalProperties": False, "required": ["width", "height"],
         "properties": {
             "width": {"type": "integer", "minimum": 16, "maximum": 7680},
             "height": {"type": "integer", "minimum": 16, "maximum": 4320},
             "bitrate": BITRATE_SCHEMA,
             "name": {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,32}$"},
         }},
    ],
}

PACKAGE_SCHEMA: dict[str, Any] = {
    "properties": {
        "renditions": {"type": "array", "items": RENDITION_SCHEMA, "minItems": 1,
                       "maxItems": 8, "default": ["720p", "480p", "360p"]},
        "segment_seconds": {"type": "integer", "minimum": 1, "maximum": 30, "default": 4},
        "codec": {"enum": ["h264"], "default": "h264"},
        "crf": {"type": "integer", "minimum": 0, "maximum": 51, "default": 23},
        "preset": {"enum": PRESETS, "default": "veryfast"},
        "audio": {"type": "boolean", "default": True},
        "audio_bitrate": {**BITRATE_SCHEMA, "default": "128k"},
        "hardware": HARDWARE_SCHEMA,
    },
}


@dataclass(frozen=True)
class Rung:
    """One rendition of a ladder."""

    label: str
    width: int
    height: int
    max_bitrate: int
    sar: Fraction  # makes width x height show at the source's display aspect


def plan_ladder(specs: list[str | dict[str, Any]], clip: SourceClip) -> list[Rung]:
    """The rungs asked for, never larger than the source (at least one is kept), each
    size once."""
    # The source's size in square pixels: the most any rung may be.
    src_w, src_h = even(clip.height * clip.aspect), even(clip.height)
    rungs: list[Rung] = []
    for spec in specs:
        rung = _rung(spec, clip.aspect)
        too_big = rung.width > src_w or rung.height > src_h
        if not too_big and all((r.width, r.height) != (rung.width, rung.height) for r in rungs):
            rungs.append(rung)
    if not rungs:
        rungs.append(_sized_rung(f"{src_h}p", src_w, src_h, None, clip.aspect))
    return rungs


def _rung(spec: str | dict[str, Any], aspect: Fraction) -> Rung:
    if isinstance(spec, str):
        short = int(spec[:-1])  # "720p": the short side, portrait or landscape
        if aspect >= 1:
            return _sized_rung(spec, even(short * aspect), short, None, aspect)
        return _sized_rung(spec, short, even(short / aspect), None, aspect)
    width, height = fit_inside(aspect, spec["width"], spec["height"])
    label = spec.get("name") or f"{width}x{height}"
    return _sized_rung(label, width, height, parse_bitrate(spec.get("bitrate")), aspect)


def _sized_rung(label: str, width: int, height: int, bitrate: int | None,
                aspect: Fraction) -> Rung:
    cap = bitrate or round(width * height * DEFAULT_BITS_PER_PIXEL_SECOND, -3)
    sar = (aspect * height / width).limit_denominator(4096)
    return Rung(label=label, width=width, height=height, max_bitrate=int(cap), sar=sar)


def segment_starts(count: int, rate: Fraction, seconds: int) -> set[int]:
    """Frames that open a segment: the first at or after each multiple of ``seconds``.
    A last segment shorter than half a segment is merged into the one before it, so no
    tiny tail inflates the peak bit rate."""
    starts = {0}
    per_segment = seconds * rate
    j = 1
    while (index := math.ceil(j * per_segment)) < count:
        if count - index >= per_segment / 2:
            starts.add(index)
        j += 1
    return starts


@dataclass
class SegmentedTrack:
    """One track cut into fMP4 segments by an hls muxer."""

    label: str
    playlist: Path
    output: OutputContainer
    stream: Any
    rung: Rung | None = None  # None: the audio track
    audio: AudioEncoderFeed | None = None
    scale: Scaler | None = None  # video tracks


@dataclass(frozen=True)
class TrackFiles:
    """What a segmented track produced, read back from its media playlist."""

    label: str
    rung: Rung | None
    playlist: Path
    init: Path
    segments: list[tuple[Path, float]]  # file, seconds
    codec: str
    sample_rate: int = 0  # audio only
    channels: int = 0

    @property
    def duration(self) -> float:
        return sum(seconds for _, seconds in self.segments)

    @property
    def peak_bps(self) -> int:
        return max(round(p.stat().st_size * 8 / max(s, 1e-3)) for p, s in self.segments)

    @property
    def average_bps(self) -> int:
        size = sum(p.stat().st_size for p, _ in self.segments)
        return round(size * 8 / max(self.duration, 1e-3))


class LadderSegmenter:
    """Decodes the source once and writes every rung (and the audio once) as CMAF tracks."""

    def __init__(self, ctx: ActionContext, clip: SourceClip, rungs: list[Rung],
                 prefix: str) -> None:
        self.ctx = ctx
        self.clip = clip
        self.rungs = rungs
        self.prefix = prefix
        self.params = ctx.params
        self.seconds: int = ctx.params["segment_seconds"]
        self.encoder = choose_video_encoder(ctx.params["codec"], ctx.params["hardware"], ctx)
        self.with_audio = bool(ctx.params["audio"]) and clip.audio_rate is not None

    def run(self) -> list[TrackFiles]:
        """Encode, segment and read back every track (video rungs first, then audio)."""
        tracks: list[SegmentedTrack] = []
        try:
            tracks.extend(self._video_track(rung) for rung in self.rungs)
            if self.with_audio:
                tracks.append(self._audio_track())
            self._pump(tracks)
            for track in tracks:
                with writing(track.playlist):
                    track.output.close()
            return [self._read_back(track) for track in tracks]
        except BaseException:
            for track in tracks:
                _close_quietly(track.output)
            _remove_quietly(sorted(self.ctx.staging_dir.glob(f"{self.prefix}*")))
            raise

    def _open(self, label: str) -> tuple[Path, OutputContainer]:
        name = f"{self.prefix}{label}"
        playlist = self.ctx.output_path(f"{name}.m3u8")
        # The segment name is a printf pattern: a literal % in the folder must be doubled.
        pattern = str(playlist.parent).replace("%", "%%") + f"/{name}_%05d.m4s"
        options = {
            "hls_time": str(self.seconds), "hls_segment_type": "fmp4",
            "hls_playlist_type": "vod", "hls_list_size": "0", "start_number": "1",
            "hls_flags": "independent_segments", "hls_segment_filename": pattern,
            "hls_fmp4_init_filename": f"{name}_init.mp4",
            # Each track has its own muxer: shifting each one's negative timestamps (the
            # B-frame delay, the AAC priming) to zero would shift them by different amounts
            # and put audio and video out of sync. An edit list in each init hides them.
            "avoid_negative_ts": "disabled",
        }
        return playlist, open_output(playlist, format="hls", options=options)

    def _video_track(self, rung: Rung) -> SegmentedTrack:
        playlist, output = self._open(rung.label)
        per_segment = math.ceil(self.seconds * self.clip.rate)
        options = encoder_options(self.encoder, crf=self.params["crf"],
                                  preset=self.params["preset"], max_bitrate=rung.max_bitrate)
        # Keyframes come from segment_starts(); the encoder must add none of its own
        # (no scene cuts, and a GOP ceiling past the longest segment).
        options.update({"sc_threshold": "0", "forced-idr": "1"})
        with writing(playlist):
            stream = add_h264_stream(output, self.encoder, width=rung.width,
                                     height=rung.height, rate=self.clip.rate, options=options,
                                     gop=2 * per_segment, sar=rung.sar)
        return SegmentedTrack(rung.label, playlist, output, stream, rung=rung,
                              scale=Scaler(rung.width, rung.height))

    def _audio_track(self) -> SegmentedTrack:
        playlist, output = self._open("audio")
        assert self.clip.audio_rate is not None
        rate = self.clip.audio_rate if self.clip.audio_rate in (44_100, 48_000) else 48_000
        with writing(playlist):
            stream = add_audio_stream(output, "aac", rate=rate,
                                      layout=output_layout(self.clip.audio_channels),
                                      bit_rate=parse_bitrate(self.params["audio_bitrate"]))
        return SegmentedTrack("audio", playlist, output, stream, audio=AudioEncoderFeed(stream))

    def _pump(self, tracks: list[SegmentedTrack]) -> None:
        clip, source = self.clip, self.clip.path
        videos = [t for t in tracks if t.rung is not None]
        audio = next((t for t in tracks if t.audio is not None), None)
        count = frame_count(clip.duration, clip.rate)
        starts = segment_starts(count, clip.rate, self.seconds)
        clock = ProgressClock(self.ctx, clip.duration, "packaging", count_frames=True)

        def on_audio(frame: AudioFrame) -> None:
            assert audio is not None and audio.audio is not None
            with writing(audio.playlist):
                audio.output.mux(audio.audio.push(frame))

        with open_media(source) as container, reading(source):
            vstream: Any = container.streams.video[0]
            vstream.codec_context.thread_type = "AUTO"
            astream = container.streams.audio[0] if audio is not None else None
            frames = upright_frames(container, vstream, astream, on_audio if audio else None)
            index = -1
            for index, frame in enumerate(constant_rate(frames, start=0.0, rate=clip.rate,
                                                        count=count)):
                for track in videos:
                    assert track.scale is not None
                    with writing(track.playlist):
                        track.output.mux(encode_frame(track.stream, track.scale(frame), index,
                                                      key=index in starts))
                clock.tick(index / float(clip.rate))
            if index < 0:
                raise PermanentError(f"{source.name}: the video stream has no decodable "
                                     f"frame")
            for _ in frames:  # the audio after the last video frame
                pass
        for track in tracks:
            with writing(track.playlist):
                if track.audio is not None:
                    track.output.mux(track.audio.push(None))
                else:
                    track.output.mux(track.stream.encode(None))

    def _read_back(self, track: SegmentedTrack) -> TrackFiles:
        init, segments = read_media_playlist(track.playlist)
        if track.rung is not None:
            return TrackFiles(label=track.label, rung=track.rung, playlist=track.playlist,
                              init=init, segments=segments, codec=avc_codec_string(init))
        audio = track.stream.codec_context
        return TrackFiles(label=track.label, rung=None, playlist=track.playlist, init=init,
                          segments=segments, codec=AAC_CODEC_STRING,
                          sample_rate=int(audio.sample_rate), channels=int(audio.channels))


def read_media_playlist(playlist: Path) -> tuple[Path, list[tuple[Path, float]]]:
    """The init segment and (segment, seconds) list an hls muxer wrote."""
    folder = playlist.parent
    init: Path | None = None
    segments: list[tuple[Path, float]] = []
    seconds = 0.0
    for line in playlist.read_text().splitlines():
        if line.startswith("#EXT-X-MAP:"):
            match = re.search(r'URI="([^"]+)"', line)
            init = folder / match.group(1) if match else None
        elif line.startswith("#EXTINF:"):
            seconds = float(line[len("#EXTINF:"):].split(",")[0])
        elif line and not line.startswith("#"):
            segments.append((folder / line, seconds))
    if init is None or not init.exists() or not segments:
        raise PermanentError(f"{playlist.name}: the segmenter wrote no media (is the "
                             f"source empty?)")
    return init, segments


def avc_codec_string(init: Path) -> str:
    """``avc1.PPCCLL`` (profile, constraints, level) from the avcC box of an init segment."""
    data = init.read_bytes()
    at = data.find(b"avcC")
    if at < 0 or len(data) < at + 8:
        return "avc1.640028"  # High@4.0: what players assume when told nothing better
    profile, constraints, level = data[at + 5], data[at + 6], data[at + 7]
    return f"avc1.{profile:02x}{constraints:02x}{level:02x}"


def _track_outputs(track: TrackFiles, *, keep_playlist: bool) -> list[OutputFile]:
    meta = {"rendition": track.label}
    files = [OutputFile(track.init, role="sidecar", meta={**meta, "kind": "init"})]
    files += [OutputFile(path, role="sidecar", meta={**meta, "kind": "segment",
                                                     "duration": round(seconds, 3)})
              for path, seconds in track.segments]
    if keep_playlist:
        files.insert(0, OutputFile(track.playlist, role="sidecar",
                                   meta={**meta, "kind": "playlist"}))
    return files


def _track_summary(track: TrackFiles) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "name": track.label, "codecs": track.codec, "segments": len(track.segments),
        "duration": round(track.duration, 3), "peak_bitrate": track.peak_bps,
        "average_bitrate": track.average_bps,
    }
    if track.rung is not None:
        summary.update(width=track.rung.width, height=track.rung.height,
                       max_bitrate=track.rung.max_bitrate)
    return summary


def _segment_ladder(ctx: ActionContext, kind: str) -> tuple[SourceClip, list[TrackFiles]]:
    clip = inspect_clip(ctx.source_path)
    rungs = plan_ladder(ctx.params["renditions"], clip)
    prefix = f"{safe_stem(ctx.source_path)}_{kind}_"
    return clip, LadderSegmenter(ctx, clip, rungs, prefix).run()


# --------------------------------------------------------------------------- HLS


@action("package_hls", PACKAGE_SCHEMA)
def package_hls(ctx: ActionContext) -> ActionResult:
    """Package the source as HLS: an fMP4 rendition ladder and a master playlist."""
    clip, tracks = _segment_ladder(ctx, "hls")
    master = ctx.output_path(f"{safe_stem(ctx.source_path)}.m3u8")
    with writing(master):
        master.write_text(hls_master(tracks, clip.rate))
    outputs = [OutputFile(master, role="rendition", meta={
        "format": "hls", "renditions": sum(1 for t in tracks if t.rung is not None),
        "duration": round(tracks[0].duration, 3)})]
    for track in tracks:
        outputs.extend(_track_outputs(track, keep_playlist=True))
    return ActionResult(outputs=outputs, data={
        "master": master.name, "segment_seconds": ctx.params["segment_seconds"],
        "duration": round(tracks[0].duration, 3), "fps": float(clip.rate),
        "renditions": [_track_summary(t) for t in tracks if t.rung is not None],
        "audio": next((_track_summary(t) for t in tracks if t.rung is None), None),
    })


def hls_master(tracks: list[TrackFiles], rate: Fraction) -> str:
    """A master playlist: one variant per rung, the audio as one rendition group.
    BANDWIDTH is the peak segment bit rate (RFC 8216), video plus audio."""
    audio = next((t for t in tracks if t.rung is None), None)
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS"]
    if audio is not None:
        lines.append(f'#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",NAME="audio",DEFAULT=YES,'
                     f'AUTOSELECT=YES,CHANNELS="{audio.channels}",URI="{audio.playlist.name}"')
    for track in tracks:
        if track.rung is None:
            continue
        codecs = track.codec + (f",{audio.codec}" if audio else "")
        peak = track.peak_bps + (audio.peak_bps if audio else 0)
        average = track.average_bps + (audio.average_bps if audio else 0)
        attributes = (f"BANDWIDTH={peak},AVERAGE-BANDWIDTH={average},"
                      f"RESOLUTION={track.rung.width}x{track.rung.height},"
                      f'FRAME-RATE={float(rate):.3f},CODECS="{codecs}"')
        if audio is not None:
            attributes += ',AUDIO="audio"'
        lines += [f"#EXT-X-STREAM-INF:{attributes}", track.playlist.name]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- DASH


@action("package_dash", PACKAGE_SCHEMA)
def package_dash(ctx: ActionContext) -> ActionResult:
    """Package the source as MPEG-DASH: an fMP4 rendition ladder and an MPD."""
    clip, tracks = _segment_ladder(ctx, "dash")
    mpd = ctx.output_path(f"{safe_stem(ctx.source_path)}.mpd")
    with writing(mpd):
        mpd.write_text(dash_manifest(tracks, clip, ctx.params["segment_seconds"]))
    _remove_quietly([t.playlist for t in tracks])  # only the segmenter's bookkeeping
    outputs = [OutputFile(mpd, role="rendition", meta={
        "format": "dash", "renditions": sum(1 for t in tracks if t.rung is not None),
        "duration": round(tracks[0].duration, 3)})]
    for track in tracks:
        outputs.extend(_track_outputs(track, keep_playlist=False))
    return ActionResult(outputs=outputs, data={
        "manifest": mpd.name, "segment_seconds": ctx.params["segment_seconds"],
        "duration": round(tracks[0].duration, 3), "fps": float(clip.rate),
        "renditions": [_track_summary(t) for t in tracks if t.rung is not None],
        "audio": next((_track_summary(t) for t in tracks if t.rung is None), None),
    })


def dash_manifest(tracks: list[TrackFiles], clip: SourceClip, seconds: int) -> str:
    """A static MPD: the video rungs in one adaptation set, the audio in another, each
    representation a SegmentTemplate with an explicit SegmentTimeline."""
    duration = max(t.duration for t in tracks)
    mpd = ET.Element("MPD", {
        "xmlns": "urn:mpeg:dash:schema:mpd:2011", "type": "static",
        "profiles": "urn:mpeg:dash:profile:isoff-live:2011",
        "mediaPresentationDuration": _iso_duration(duration),
        "minBufferTime": _iso_duration(seconds),
    })
    period = ET.SubElement(mpd, "Period", {"id": "0", "start": "PT0S"})
    videos = [t for t in tracks if t.rung is not None]
    video_set = ET.SubElement(period, "AdaptationSet", {
        "id": "0", "contentType": "video", "mimeType": "video/mp4",
        "segmentAlignment": "true", "startWithSAP": "1",
        "par": f"{clip.aspect.numerator}:{clip.aspect.denominator}",
        "maxWidth": str(max(t.rung.width for t in videos if t.rung)),
        "maxHeight": str(max(t.rung.height for t in videos if t.rung)),
        "frameRate": _rate_text(clip.rate),
    })
    for track in videos:
        assert track.rung is not None
        rep = ET.SubElement(video_set, "Representation", {
            "id": track.label, "codecs": track.codec, "bandwidth": str(track.peak_bps),
            "width": str(track.rung.width), "height": str(track.rung.height),
            "sar": f"{track.rung.sar.numerator}:{track.rung.sar.denominator}",
        })
        _segment_template(rep, track, timescale=90_000)
    for track in tracks:
        if track.rung is not None:
            continue
        audio_set = ET.SubElement(period, "AdaptationSet", {
            "id": "1", "contentType": "audio", "mimeType": "audio/mp4",
            "segmentAlignment": "true", "startWithSAP": "1",
        })
        rep = ET.SubElement(audio_set, "Representation", {
            "id": "audio", "codecs": track.codec, "bandwidth": str(track.peak_bps),
            "audioSamplingRate": str(track.sample_rate),
        })
        ET.SubElement(rep, "AudioChannelConfiguration", {
            "schemeIdUri": "urn:mpeg:dash:23003:3:audio_channel_configuration:2011",
            "value": str(track.channels)})
        _segment_template(rep, track, timescale=track.sample_rate)
    ET.indent(mpd)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(mpd, "unicode") + "\n"


def _segment_template(rep: ET.Element, track: TrackFiles, *, timescale: int) -> None:
    stem = track.init.name.removesuffix("_init.mp4")
    template = ET.SubElement(rep, "SegmentTemplate", {
        "timescale": str(timescale), "initialization": track.init.name,
        "media": f"{stem}_$Number%05d$.m4s", "startNumber": "1",
    })
    timeline = ET.SubElement(template, "SegmentTimeline")
    for start, length, repeat in _timeline_runs([s for _, s in track.segments], timescale):
        attributes = {"d": str(length)}
        if start is not None:
            attributes = {"t": str(start), **attributes}
        if repeat:
            attributes["r"] = str(repeat)
        ET.SubElement(timeline, "S", attributes)


def _timeline_runs(durations: list[float], timescale: int) -> list[tuple[int | None, int, int]]:
    """(start or None, duration, repeats) runs; ends are rounded from the running total so
    the timeline never drifts from the media."""
    runs: list[tuple[int | None, int, int]] = []
    elapsed = 0.0
    previous_end = 0
    for seconds in durations:
        elapsed += seconds
        end = round(elapsed * timescale)
        length = end - previous_end
        if runs and runs[-1][1] == length:
            start, _, repeat = runs[-1]
            runs[-1] = (start, length, repeat + 1)
        else:
            runs.append((0 if not runs else None, length, 0))
        previous_end = end
    return runs


def _iso_duration(seconds: float) -> str:
    return f"PT{seconds:.3f}S"


def _rate_text(rate: Fraction) -> str:
    return str(rate.numerator) if rate.denominator == 1 else f"{rate.numerator}/{rate.denominator}"


# =========================================================================== sprite sheets

_SHEET_FORMATS = {"jpeg": ("JPEG", "jpg"), "webp": ("WEBP", "webp")}
MAX_TILES = 2000


@action("generate_sprite_sheet", {
    "properties": {
        "interval": {"type": "number", "minimum": 0.1, "maximum": 3600, "default": 10},
        "count": {"type": "integer", "minimum": 1, "maximum": MAX_TILES},
        "width": {"type": "integer", "minimum": 16, "maximum": 640, "default": 160},
        "columns": {"type": "integer", "minimum": 1, "maximum": 50, "default": 10},
        "rows": {"type": "integer", "minimum": 1, "maximum": 50, "default": 10},
        "format": {"enum": sorted(_SHEET_FORMATS), "default": "jpeg"},
        "quality": {"type": "integer", "minimum": 1, "maximum": 100, "default": 80},
    },
})
def generate_sprite_sheet(ctx: ActionContext) -> ActionResult:
    """Tiled stills in sprite sheets, with a WebVTT thumbnail track for players.

    Stills every ``interval`` seconds (or ``count`` stills, which wins when given) go
    into sheets of ``columns`` x ``rows``; the track's cues point at
    ``sheet#xywh=x,y,w,h`` (as video.js, JW Player and Plyr read them)."""
    source = ctx.source_path
    clip = inspect_clip(source)
    layout = plan_sprites(ctx.params, clip)
    sheets, cues, shown = _write_sheets(ctx, clip, layout)
    vtt = ctx.output_path(f"{safe_stem(source)}_sprites.vtt")
    with writing(vtt):
        vtt.write_text("WEBVTT\n\n" + "\n\n".join(cues) + "\n")
    return ActionResult(
        outputs=[OutputFile(vtt, role="sidecar", meta={"kind": "thumbnail_track",
                                                       "cues": len(cues)}), *sheets],
        data={"track": vtt.name, "sheets": [s.staging_path.name for s in sheets],
              "tiles": len(layout.times), "interval": round(layout.interval, 3),
              "tile_width": layout.tile_w, "tile_height": layout.tile_h,
              "columns": layout.columns, "rows": layout.rows, "frame_times": shown})


@dataclass(frozen=True)
class SpriteLayout:
    times: list[float]  # the start of each tile's cue
    interval: float
    tile_w: int
    tile_h: int
    columns: int
    rows: int  # at most, per sheet
    pil_format: str
    ext: str

    def cue_end(self, index: int, duration: float) -> float:
        return self.times[index + 1] if index + 1 < len(self.times) else duration


def plan_sprites(params: dict[str, Any], clip: SourceClip) -> SpriteLayout:
    pil_format, ext = _SHEET_FORMATS[params["format"]]
    interval = duration_per_tile(params, clip.duration)
    times = [i * interval for i in range(math.ceil(clip.duration / interval - 1e-6))] or [0.0]
    tile_w = params["width"]
    tile_h = even(tile_w / clip.aspect)
    columns = min(params["columns"], len(times))
    if columns * tile_w > _MAX_IMAGE_SIDE[pil_format]:
        raise PermanentError(f"{clip.path.name}: {columns} columns of {tile_w} px are wider "
                             f"than a {pil_format} image may be")
    # Fewer rows than asked when a sheet would be taller than the format allows.
    rows = max(1, min(params["rows"], _MAX_IMAGE_SIDE[pil_format] // tile_h))
    return SpriteLayout(times=times, interval=interval, tile_w=tile_w, tile_h=tile_h,
                        columns=columns, rows=rows, pil_format=pil_format, ext=ext)


def duration_per_tile(params: dict[str, Any], duration: float) -> float:
    interval = duration / params["count"] if params.get("count") else params["interval"]
    # Never more than MAX_TILES tiles, however long the source.
    return float(max(interval, duration / MAX_TILES))


def _write_sheets(ctx: ActionContext, clip: SourceClip,
                  layout: SpriteLayout) -> tuple[list[OutputFile], list[str], list[float]]:
    """The sheet images, the VTT cues, and the time of the frame each tile shows."""
    size = (layout.tile_w, layout.tile_h)
    tiles = keyframe_tiles(ctx, clip, layout.times, layout.interval, size)
    per_sheet = layout.columns * layout.rows
    sheets: list[OutputFile] = []
    cues: list[str] = []
    shown: list[float] = []
    for first in range(0, len(layout.times), per_sheet):
        chunk: list[Image.Image] = []
        for _ in layout.times[first:first + per_sheet]:
            at, tile = next(tiles)
            shown.append(round(at, 3))
            chunk.append(tile)
        path = ctx.output_path(f"{safe_stem(clip.path)}_sprites_{len(sheets) + 1:03d}."
                               f"{layout.ext}")
        sheet = _tile_sheet(chunk, layout.columns, size)
        with writing(path):
            sheet.save(path, layout.pil_format, quality=ctx.params["quality"])
        sheets.append(OutputFile(path, role="thumbnail", meta={
            "kind": "sprite_sheet", "width": sheet.width, "height": sheet.height,
            "tiles": len(chunk)}))
        for offset in range(len(chunk)):
            index = first + offset
            x, y = offset % layout.columns * layout.tile_w, offset // layout.columns * layout.tile_h
            cues.append(f"{_vtt_time(layout.times[index])} --> "
                        f"{_vtt_time(layout.cue_end(index, clip.duration))}\n"
                        f"{path.name}#xywh={x},{y},{layout.tile_w},{layout.tile_h}")
    return sheets, cues, shown


def keyframe_tiles(ctx: ActionContext, clip: SourceClip, times: list[float], interval: float,
                   size: tuple[int, int]) -> Iterator[tuple[float, Image.Image]]:
    """One upright tile per time: the keyframe at or before it when that lies within half
    an interval and was not used yet (cheap: one GOP's first frame), else the frame at the
    time itself. A time past the last decodable frame repeats the last tile. Yields
    (time of the frame shown, tile)."""
    last_time = 0.0
    last_tile = Image.new("RGB", size)
    clock = ProgressClock(ctx, clip.duration, "sprites")
    with open_media(clip.path) as container, reading(clip.path):
        stream: Any = container.streams.video[0]
        stream.codec_context.thread_type = "AUTO"
        finder = StillFinder(container, stream, interval / 2)
        for target in times:
            found = finder.near(target, after=last_time if target > 0 else -1.0)
            if found is not None:
                last_time, frame = found
                image = turn_image(frame.to_image(), clip.rotation)  # type: ignore[no-untyped-call]
                last_tile = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
            clock.tick(target)
            yield last_time, last_tile


class StillFinder:
    """Finds a frame near each of a rising series of times, seeking while keyframes are
    close enough to use. When most times need an exact decode anyway (keyframes further
    apart than the interval), seeking back to a keyframe for each would decode a GOP per
    tile: it then decodes straight through instead."""

    SWITCH_AFTER = 4  # tiles looked at before judging

    def __init__(self, container: InputContainer, stream: Any, slack: float) -> None:
        self.container, self.stream, self.slack = container, stream, slack
        self.origin = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
        self.asked = 0
        self.exact = 0
        self.forward: Iterator[VideoFrame] | None = None

    def near(self, target: float, *, after: float) -> tuple[float, VideoFrame] | None:
        self.asked += 1
        if self.forward is None and self.asked > self.SWITCH_AFTER \
                and self.exact * 2 > self.asked:
            seek_to(self.container, self.stream, target)
            self.forward = self.container.decode(self.stream)
        if self.forward is not None:
            return self._first_from(self.forward, target)
        key = self._keyframe_before(target)
        if key is not None and after < key[0] and key[0] >= target - self.slack:
            return key
        self.exact += 1
        seek_to(self.container, self.stream, target)
        return self._first_from(self.container.decode(self.stream), target)

    def _keyframe_before(self, target: float) -> tuple[float, VideoFrame] | None:
        self.stream.codec_context.skip_frame = "NONKEY"
        seek_to(self.container, self.stream, target)
        key: VideoFrame | None = next(self.container.decode(self.stream), None)
        self.stream.codec_context.skip_frame = "DEFAULT"
        return (self._time(key), key) if key is not None else None

    def _first_from(self, frames: Iterator[VideoFrame],
                    target: float) -> tuple[float, VideoFrame] | None:
        for frame in frames:
            at = self._time(frame)
            if at >= target - 1e-3:
                return at, frame
        return None

    def _time(self, frame: VideoFrame) -> float:
        return _seconds(frame, self.stream.time_base) - self.origin


def _tile_sheet(tiles: list[Image.Image], columns: int, size: tuple[int, int]) -> Image.Image:
    rows = math.ceil(len(tiles) / columns)
    sheet = Image.new("RGB", (columns * size[0], rows * size[1]))
    for index, tile in enumerate(tiles):
        sheet.paste(tile, (index % columns * size[0], index // columns * size[1]))
    return sheet


def _vtt_time(seconds: float) -> str:
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}.{rest % 1000:03d}"


# =========================================================================== previews

_PREVIEW_EXT = {"mp4": "mp4", "webp": "webp", "gif": "gif"}
ANIMATION_RATE = 12
PREVIEW_CRF = 26
# Pillow holds every frame of an animation (RGB) before it writes the file.
MAX_ANIMATION_BYTES = 512 * 1024 * 1024


@action("make_preview", {
    "properties": {
        "format": {"enum": sorted(_PREVIEW_EXT), "default": "mp4"},
        "duration": {"type": "number", "minimum": 0.5, "maximum": 60, "default": 6},
        "segments": {"type": "integer", "minimum": 1, "maximum": 20, "default": 3},
        "width": {"type": "integer", "minimum": 16, "maximum": 1920, "default": 480},
        "fps": {"type": "number", "minimum": 1, "maximum": 60},
        "quality": {"type": "integer", "minimum": 1, "maximum": 100, "default": 75},
    },
})
def make_preview(ctx: ActionContext) -> ActionResult:
    """A short silent preview made of excerpts spread through the source (mp4, webp, gif).

    ``segments`` excerpts of ``duration / segments`` seconds each, centred at evenly spaced
    points; the whole source when it is not longer than ``duration``. ``fps`` defaults to
    12 for animations and to the source's rate (at most 30) for MP4; ``quality`` is WebP's.
    """
    source = ctx.source_path
    clip = inspect_clip(source)
    fmt = ctx.params["format"]
    rate = _preview_rate(ctx.params.get("fps"), fmt, clip.rate)
    excerpts = plan_excerpts(clip.duration, ctx.params["duration"], ctx.params["segments"])
    width, height = fit_inside(clip.aspect, min(ctx.params["width"], even(clip.width)),
                               4 * ctx.params["width"])
    if fmt != "mp4":
        _check_animation_fits(source, fmt, (width, height), excerpts, rate)
    path = ctx.output_path(f"{safe_stem(source)}_preview.{_PREVIEW_EXT[fmt]}")
    frames = excerpt_frames(ctx, clip, excerpts, rate, (width, height))
    try:
        if fmt == "mp4":
            count = _write_preview_mp4(path, frames, rate, (width, height))
        else:
            count = _write_animation(path, frames, rate, fmt, ctx.params["quality"])
    except BaseException:
        _remove_quietly([path])
        raise
    duration = round(count / float(rate), 3)
    return ActionResult(
        outputs=[OutputFile(path, role="rendition", meta={
            "kind": "preview", "format": fmt, "width": width, "height": height,
            "duration": duration})],
        data={"format": fmt, "width": width, "height": height, "fps": float(rate),
              "frames": count, "duration": duration,
              "excerpts": [[round(s, 3), round(s + n / float(rate), 3)] for s, n in
                           _excerpt_frames(excerpts, rate)]})


def _check_animation_fits(source: Path, fmt: str, size: tuple[int, int],
                          excerpts: list[tuple[float, float]], rate: Fraction) -> None:
    frames = sum(count for _, count in _excerpt_frames(excerpts, rate))
    if frames * size[0] * size[1] * 3 > MAX_ANIMATION_BYTES:
        raise PermanentError(f"{source.name}: a {size[0]}x{size[1]} {fmt} of {frames} frames "
                             f"is too large to build; lower width, fps or duration")


def _preview_rate(asked: float | None, fmt: str, source_rate: Fraction) -> Fraction:
    if asked:
        return Fraction(asked).limit_denominator(1001)
    return Fraction(ANIMATION_RATE) if fmt != "mp4" else min(source_rate, Fraction(30))


def plan_excerpts(source_seconds: float, seconds: float, segments: int) -> list[tuple[float,
                                                                                      float]]:
    """(start, length) of ``segments`` excerpts of equal length, their centres evenly
    spread; the whole source when it is no longer than the preview."""
    if source_seconds <= seconds:
        return [(0.0, source_seconds)]
    length = seconds / segments
    spacing = source_seconds / segments
    return [(min(max((i + 0.5) * spacing - length / 2, 0.0), source_seconds - length), length)
            for i in range(segments)]


def _excerpt_frames(excerpts: list[tuple[float, float]],
                    rate: Fraction) -> list[tuple[float, int]]:
    """(start, frames) per excerpt, rounded from the running total so the sum is exact."""
    out: list[tuple[float, int]] = []
    total = 0.0
    done = 0
    for start, length in excerpts:
        total += length
        count = max(1, round(total * rate) - done)
        out.append((start, count))
        done += count
    return out


def excerpt_frames(ctx: ActionContext, clip: SourceClip, excerpts: list[tuple[float, float]],
                   rate: Fraction, size: tuple[int, int]) -> Iterator[VideoFrame]:
    """Upright yuv420p frames of ``size`` at ``rate`` through every excerpt in turn."""
    clock = ProgressClock(ctx, sum(length for _, length in excerpts), "preview")
    done = 0.0
    scale = Scaler(*size)
    with open_media(clip.path) as container, reading(clip.path):
        stream: Any = container.streams.video[0]
        stream.codec_context.thread_type = "AUTO"
        for start, count in _excerpt_frames(excerpts, rate):
            seek_to(container, stream, start)
            source = upright_frames(container, stream)
            for frame in constant_rate(source, start=start, rate=rate, count=count):
                yield scale(frame)
                done += 1 / float(rate)
                clock.tick(done)


def _write_preview_mp4(path: Path, frames: Iterator[VideoFrame], rate: Fraction,
                       size: tuple[int, int]) -> int:
    output = open_output(path, format="mp4", options={"movflags": "+faststart"})
    try:
        with writing(path):
            stream = add_h264_stream(output, "libx264", width=size[0], height=size[1],
                                     rate=rate, options={"crf": str(PREVIEW_CRF),
                                                         "preset": "veryfast"})
        count = 0
        for count, frame in enumerate(frames, start=1):
            with writing(path):
                output.mux(encode_frame(stream, frame, count - 1))
        if count == 0:
            raise PermanentError(f"{path.name}: no frame could be decoded for the preview")
        with writing(path):
            output.mux(stream.encode(None))
            output.close()
    except BaseException:
        _close_quietly(output)
        raise
    return count


def _write_animation(path: Path, frames: Iterator[VideoFrame], rate: Fraction, fmt: str,
                     quality: int) -> int:
    images = [frame.to_image() for frame in frames]  # type: ignore[no-untyped-call]
    if not images:
        raise PermanentError(f"{path.name}: no frame could be decoded for the preview")
    # GIF counts time in centiseconds: round each frame's end, not its length, so the
    # total stays right (12 fps alternates 80 and 90 ms).
    unit = 10 if fmt == "gif" else 1
    ends = [round((k + 1) * 1000 / float(rate) / unit) * unit for k in range(len(images))]
    durations = [end - start for start, end in zip([0, *ends[:-1]], ends, strict=True)]
    options: dict[str, Any] = ({"quality": quality, "method": 4} if fmt == "webp"
                               else {"optimize": False})
    with writing(path):
        images[0].save(path, "WEBP" if fmt == "webp" else "GIF", save_all=True,
                       append_images=images[1:], duration=durations, loop=0, **options)
    return len(images)


# =========================================================================== compile


@action("compile_videos", {
    "properties": {
        "inputs": {"type": "array", "maxItems": 64,
                   "items": {"type": "string", "minLength": 1, "maxLength": 4096}},
        "layout": {"enum": ["concat", "grid"], "default": "concat"},
        "width": {"type": "integer", "minimum": 64, "maximum": 3840, "multipleOf": 2},
        "height": {"type": "integer", "minimum": 64, "maximum": 2160, "multipleOf": 2},
        "until": {"enum": ["shortest", "longest"], "default": "shortest"},
        "fps": {"type": "number", "minimum": 1, "maximum": MAX_RATE},
        "audio": {"type": "boolean", "default": True},
        "audio_bitrate": {**BITRATE_SCHEMA, "default": "128k"},
        "crf": {"type": "integer", "minimum": 0, "maximum": 51, "default": 23},
        "preset": {"enum": PRESETS, "default": "veryfast"},
        "hardware": HARDWARE_SCHEMA,
    },
})
def compile_videos(ctx: ActionContext) -> ActionResult:
    """Join several videos into one MP4: one after another, or as a 2x2 mosaic.

    ``inputs`` are paths, relative to the source's folder or absolute, inside that folder
    or below it. The job's source comes first unless ``inputs`` names it (then the list
    order is kept); with no ``inputs`` it is compiled alone. concat: each clip scaled and
    padded to ``width`` x ``height`` (default: the first clip's size), audio joined with
    silence where a clip has none. grid: up to four clips in quadrants of ``width`` x
    ``height`` (default 1280x720), lasting until the shortest or longest ends (a clip
    that ended holds its last frame); the audio is the first clip's.
    """
    paths = compile_inputs(ctx.source_path, ctx.params.get("inputs") or [])
    layout = ctx.params["layout"]
    if layout == "grid" and len(paths) > 4:
        raise PermanentError(f"{ctx.source_path.name}: a grid takes at most 4 videos, "
                             f"got {len(paths)}")
    clips = [inspect_clip(path) for path in paths]
    first = clips[0]
    if layout == "grid":
        size = (ctx.params.get("width", 1280), ctx.params.get("height", 720))
    else:  # the first clip's picture in square pixels
        size = (ctx.params.get("width", even(first.height * first.aspect)),
                ctx.params.get("height", even(first.height)))
    rate = Fraction(ctx.params["fps"]).limit_denominator(1001) if ctx.params.get("fps") \
        else first.rate
    path = ctx.output_path(f"{safe_stem(ctx.source_path)}_compilation.mp4")
    writer = CompilationWriter(ctx, path, clips, size, rate)
    try:
        if layout == "grid":
            frames = writer.write_grid(ctx.params["until"])
        else:
            frames = writer.write_concat()
        writer.close()
    except BaseException:
        writer.abandon()
        raise
    duration = round(frames / float(rate), 3)
    return ActionResult(
        outputs=[OutputFile(path, role="rendition", meta={
            "format": "mp4", "layout": layout, "width": size[0], "height": size[1],
            "duration": duration, "inputs": len(clips)})],
        data={"layout": layout, "inputs": [str(c.path) for c in clips], "width": size[0],
              "height": size[1], "fps": float(rate), "frames": frames, "duration": duration,
              "audio": writer.audio is not None, "encoder": writer.encoder})


def compile_inputs(source: Path, listed: list[str]) -> list[Path]:
    """The clips to compile, each checked to lie in the source's folder or below it."""
    folder = source.parent.resolve()
    paths: list[Path] = []
    for text in listed:
        candidate = Path(text) if Path(text).is_absolute() else source.parent / text
        resolved = candidate.resolve()  # follows symlinks and ".." before the check
        if not resolved.is_relative_to(folder):
            raise InputRefused(f"{candidate.name}: {text} is outside the source's folder "
                               f"{folder}; only files in it or below it can be compiled")
        paths.append(resolved)
    own = source.resolve()
    return paths if own in paths else [own, *paths]


class CompilationWriter:
    """One H.264/AAC MP4 fed clip by clip (concat) or by quadrants (grid)."""

    def __init__(self, ctx: ActionContext, path: Path, clips: list[SourceClip],
                 size: tuple[int, int], rate: Fraction) -> None:
        self.ctx, self.path, self.clips, self.size, self.rate = ctx, path, clips, size, rate
        params = ctx.params
        self.encoder = choose_video_encoder("h264", params["hardware"], ctx)
        self.output = open_output(path, format="mp4", options={"movflags": "+faststart"})
        try:
            with writing(path):
                self.video = add_h264_stream(
                    self.output, self.encoder, width=size[0], height=size[1], rate=rate,
                    options=encoder_options(self.encoder, crf=params["crf"],
                                            preset=params["preset"], max_bitrate=None))
                self.audio = self._audio_track(params)
        except BaseException:
            self.abandon()
            raise
        self.frames = 0
        self.clock = ProgressClock(ctx, self._planned_seconds(params), "compiling",
                                   count_frames=True)

    def _audio_track(self, params: dict[str, Any]) -> AudioTimeline | None:
        # A grid plays the first clip's sound; a concatenation joins every clip's.
        heard = self.clips[:1] if params["layout"] == "grid" else self.clips
        voiced = [c for c in heard if c.audio_rate is not None]
        if not params["audio"] or not voiced:
            return None
        channels = max(c.audio_channels for c in voiced)
        return AudioTimeline(self.output, rate=48_000, channels=min(channels, 2),
                             bit_rate=parse_bitrate(params["audio_bitrate"]))

    def _planned_seconds(self, params: dict[str, Any]) -> float:
        lengths = [c.duration for c in self.clips]
        if params["layout"] == "concat":
            return sum(lengths)
        return min(lengths) if params["until"] == "shortest" else max(lengths)

    # ---- concat

    def write_concat(self) -> int:
        """Every clip in turn, letterboxed to the output size; returns the frame count."""
        for clip in self.clips:
            count = frame_count(clip.duration, self.rate)
            end_sample = self._audio_end(self.frames + count)
            fit = Letterbox(clip.aspect, *self.size)
            for frame in self._clip_frames(clip, count, end_sample):
                self._encode(fit(frame))
            if self.audio is not None:
                self._mux(self.audio.fill(end_sample))
        return self.frames

    # ---- grid

    def write_grid(self, until: str) -> int:
        """Up to four clips side by side in quadrants; returns the frame count."""
        counts = [frame_count(c.duration, self.rate) for c in self.clips]
        total = min(counts) if until == "shortest" else max(counts)
        quad_w, quad_h = self.size[0] // 4 * 2, self.size[1] // 4 * 2
        end_sample = self._audio_end(total)
        with contextlib.ExitStack() as stack:
            streams: list[Iterator[VideoFrame]] = []
            for index, (clip, count) in enumerate(zip(self.clips, counts, strict=True)):
                frames = self._clip_frames(clip, min(count, total),
                                           end_sample if index == 0 else None)
                streams.append(stack.enter_context(contextlib.closing(frames)))
            fits = [Letterbox(clip.aspect, quad_w, quad_h) for clip in self.clips]
            canvas = Canvas(*self.size)  # quadrants are overwritten in place, frame by frame
            for _ in range(total):
                for index, stream in enumerate(streams):
                    frame = next(stream, None)
                    if frame is not None:  # an ended clip holds its last frame
                        canvas.paste(fits[index](frame), index % 2 * quad_w,
                                     index // 2 * quad_h)
                self._encode(canvas.frame())
            if self.audio is not None:
                for _ in streams[0]:  # the first clip's audio up to the end
                    pass
                self._mux(self.audio.fill(end_sample))
        return self.frames

    # ---- shared

    def _clip_frames(self, clip: SourceClip, count: int,
                     audio_until: int | None) -> Generator[VideoFrame, None, None]:
        """``count`` upright frames of ``clip`` at the output rate; its audio (when
        ``audio_until`` is given) goes onto the timeline as it is demuxed."""
        with open_media(clip.path) as container, reading(clip.path):
            yield from self._decode_clip(container, clip, count, audio_until)

    def _decode_clip(self, container: InputContainer, clip: SourceClip, count: int,
                     audio_until: int | None) -> Iterator[VideoFrame]:
        vstream: Any = container.streams.video[0]
        vstream.codec_context.thread_type = "AUTO"
        astream = container.streams.audio[0] if container.streams.audio else None
        on_audio: AudioSink | None = None
        if self.audio is not None and astream is not None and audio_until is not None:
            on_audio = self._audio_sink(self.audio, audio_until)
        frames = upright_frames(container, vstream, astream, on_audio)
        produced = 0
        for frame in constant_rate(frames, start=0.0, rate=self.rate, count=count):
            produced += 1
            yield frame
        if produced == 0:
            raise PermanentError(f"{clip.path.name}: the video stream has no decodable frame")
        if self.audio is not None and on_audio is not None and audio_until is not None:
            for _ in frames:  # the clip's audio that comes after its last video frame
                pass
            self._mux(self.audio.add(None, audio_until))

    def _audio_sink(self, timeline: AudioTimeline, until: int) -> AudioSink:
        """Where a clip's decoded audio goes: onto the timeline, up to sample ``until``."""
        timeline.begin_clip()

        def sink(frame: AudioFrame) -> None:
            self._mux(timeline.add(frame, until))

        return sink

    def _audio_end(self, frames: int) -> int:
        return self.audio.samples_at(frames / float(self.rate)) if self.audio else 0

    def _encode(self, frame: VideoFrame) -> None:
        self._mux(encode_frame(self.video, frame, self.frames))
        self.frames += 1
        self.clock.tick(self.frames / float(self.rate))

    def _mux(self, packets: list[Any]) -> None:
        with writing(self.path):
            self.output.mux(packets)

    def close(self) -> None:
        self._mux(list(self.video.encode(None)))
        if self.audio is not None:
            self._mux(self.audio.finish())
        with writing(self.path):
            self.output.close()

    def abandon(self) -> None:
        _close_quietly(self.output)
        _remove_quietly([self.path])
