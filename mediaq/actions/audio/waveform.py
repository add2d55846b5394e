"""``generate_waveform``: a waveform image and an audiowaveform/peaks.js peaks file."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import numpy.typing as npt
from av.audio.resampler import AudioResampler
from PIL import Image

from mediaq.actions import action
from mediaq.actions.audio.source import decode_audio, first_audio_stream, probe_audio
from mediaq.actions.avio import MediaInfo, ProgressClock, open_media, reading, writing
from mediaq.actions.base import ActionContext, ActionResult, OutputFile
from mediaq.errors import PermanentError

FloatArray = npt.NDArray[np.float32]


HEX_COLOR_SCHEMA: dict[str, Any] = {"type": "string",
                                    "pattern": r"^#([0-9a-fA-F]{6}|[0-9a-fA-F]{8})$"}



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
