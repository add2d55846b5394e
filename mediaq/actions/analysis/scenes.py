"""``detect_scenes``: shot boundaries, found by comparing each decoded frame, shrunk to
a thumbnail, with the one before it (one frame kept in memory).

Every frame is compared (a cut is exact to the frame), so the cost is the decoder's
plus a small per-frame one (issue 22). The decoder skips H.264/HEVC deblocking
(``skip_loop_filter``), which smooths block edges that a 160-pixel-wide thumbnail
averages away anyway (10-13 % of 1080p H.264 decoding time, measured); scores move by
at most ~0.03 with it (measured on 1080p clips with 1 s GOPs, where the drift resets at
each keyframe), and cuts land on the same frames as with full decoding
(tests/test_analysis_actions.py checks this on a hard clip). What is left is mostly the
decoder (benchmarks/media.py ``scenes`` compares the scan with decoding alone): a large
4:2:0 frame's thumbnail is made from a sixth of its rows (``RowSampler``), which cut
the work done per 1080p frame besides decoding by about a quarter (0.94-1.07 ms to
0.70-0.76 ms, measured on a loaded 2-core machine). No frame is skipped: a one-frame
flash on a non-reference B-frame is a scene of its own, as with full decoding.
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from av.video.frame import VideoFrame
from av.video.reformatter import Interpolation, VideoReformatter

from mediaq.actions import action
from mediaq.actions.avio import ProgressClock, media_duration, open_media, reading, writing
from mediaq.actions.base import ActionContext, ActionResult, OutputFile
from mediaq.actions.frames import decode_tolerantly
from mediaq.errors import PermanentError

FloatArray = npt.NDArray[np.float32]


# The score of a frame pair is the mean of two distances, each 0..1:
# - luma: mean absolute difference of the grey levels, scaled so that ~10 % of
#   full scale (a clear change of picture) already counts fully;
# - colour: half the L1 distance of 8x8x8-bin RGB histograms (1 = no colour in common).
# Motion moves pixels but keeps the palette, so it scores low on colour; a cut
# between similar-coloured shots still scores high on luma.
LUMA_SCALE = 3.0
HISTOGRAM_LEVEL_BITS = 3  # 8 levels per channel
# Decoder options for the scan (ignored by decoders without them).
DECODER_OPTIONS = {"skip_loop_filter": "all"}
# Large frames are point-sampled to this many times the analysis size before the area
# average (see Thumbnailer).
PRESHRINK = 3
# 4:2:0 8-bit frames that large are reduced to this many luma rows per thumbnail row
# (see RowSampler; 2 keeps the copied picture a whole 4:2:0 one).
ROWS_PER_BAND = 2
ROW_SAMPLED_FORMATS = frozenset({"yuv420p", "yuvj420p"})
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_BIN_WEIGHTS = np.array([1 << (2 * HISTOGRAM_LEVEL_BITS), 1 << HISTOGRAM_LEVEL_BITS, 1],
                        dtype=np.float32)


@dataclass(frozen=True)
class Thumb:
    """One analysed frame: its grey levels and colour histogram."""

    luma: FloatArray
    histogram: FloatArray


@dataclass(frozen=True)
class Cut:
    frame: int  # index of the first frame of the new scene
    time: float
    score: float


@dataclass(frozen=True)
class SceneScan:
    cuts: list[Cut]
    frames: int
    end: float  # seconds, end of the last frame
    fps: float
    seconds_spent: float


def thumb_of(rgb: npt.NDArray[np.uint8]) -> Thumb:
    """Grey levels and a normalised colour histogram of a small RGB frame."""
    pixels = rgb.reshape(-1, 3)
    luma = (pixels.astype(np.float32) @ _LUMA_WEIGHTS).reshape(rgb.shape[:2])
    return Thumb(luma=luma, histogram=histogram_of(pixels))


def histogram_of(rgb: npt.NDArray[np.uint8]) -> FloatArray:
    """The normalised 8x8x8-bin colour histogram of an RGB frame."""
    levels = (rgb.reshape(-1, 3) >> (8 - HISTOGRAM_LEVEL_BITS)).astype(np.float32)
    # The bin number as one small matrix product (exact: at most 511 in float32), in
    # fewer numpy calls than shifting and or-ing 16-bit levels channel by channel
    # (75-113 against 117-125 us for a 160x90 frame on the loaded 2-core machine, issue 22).
    bins = (levels @ _BIN_WEIGHTS).astype(np.intp)
    counts = np.bincount(bins, minlength=1 << (3 * HISTOGRAM_LEVEL_BITS))
    return (counts * (1.0 / bins.size)).astype(np.float32)


def plane_rows(plane: Any) -> npt.NDArray[np.uint8]:
    """A frame plane's bytes as rows of ``line_size`` (padding included), not copied."""
    data: npt.NDArray[np.uint8] = np.frombuffer(memoryview(plane), dtype=np.uint8)
    return data.reshape(-1, plane.line_size)


class RowSampler:
    """The rows of a large 4:2:0 frame that its thumbnail is made from, copied into a
    small 4:2:0 picture of the frame's full width (issue 22).

    Each thumbnail row stands for a band of source rows; ``ROWS_PER_BAND`` luma rows
    spread over the band and one chroma row at its middle are copied (np.take, a sixth
    of a 1080p frame's luma), and swscale's area average then shrinks that picture to
    the thumbnail: each thumbnail pixel is the mean of 2 x 12 source pixels at 1080p
    (whole runs of a row, which keeps moving noise and film grain from scoring as
    change), its colour converted as before. Against point-sampling the whole frame to
    3x the thumbnail and averaging that (the previous scan), this reads a third less of
    the frame just out of the decoder and does one swscale pass instead of two.

    Rows are sampled, not averaged, so fine horizontal detail moving vertically can
    alias: a pan of 3 rows a frame over random 8-pixel colour blocks (the worst case
    tried) scores up to 0.19 between frames, against 0.15 with the previous sampling
    and 0.10 with the whole frame averaged; 20- and 40-pixel blocks and the test pattern
    score as with the whole frame (within 0.015). Four rows per band came closer (0.11)
    but cost 0.2 ms more a frame, about what the rows saved."""

    def __init__(self, rows: int, source_width: int, source_height: int) -> None:
        self.source_size = (source_width, source_height)
        width = source_width - source_width % 2  # a 4:2:0 picture has an even width
        luma_rows = ROWS_PER_BAND * rows
        band = source_height / rows
        self._luma_rows = np.array([int((row + (k + 0.5) / ROWS_PER_BAND) * band)
                                    for row in range(rows) for k in range(ROWS_PER_BAND)],
                                   dtype=np.intp)
        chroma_band, per_band = ((source_height + 1) // 2) / rows, ROWS_PER_BAND // 2
        self._chroma_rows = np.array([int((row + (k + 0.5) / per_band) * chroma_band)
                                      for row in range(rows) for k in range(per_band)],
                                     dtype=np.intp)
        # One buffer laid out as a packed 4:2:0 picture (Y, then U and V at half size),
        # which PyAV wraps as a frame without copying; rewritten for every frame.
        self._buffer = np.empty((luma_rows * 3 // 2, width), dtype=np.uint8)
        quarter = luma_rows // 4
        chroma_shape = (luma_rows // 2, width // 2)
        self._planes = (self._buffer[:luma_rows],
                        self._buffer[luma_rows:luma_rows + quarter].reshape(chroma_shape),
                        self._buffer[luma_rows + quarter:].reshape(chroma_shape))
        self._pictures: dict[str, VideoFrame] = {}

    def __call__(self, frame: VideoFrame) -> VideoFrame:
        format_name = frame.format.name
        picture = self._pictures.get(format_name)
        if picture is None:
            picture = VideoFrame.from_numpy_buffer(self._buffer, format=format_name)
            self._pictures[format_name] = picture
        for index, (plane, out) in enumerate(zip(frame.planes, self._planes, strict=True)):
            source = plane_rows(plane)
            rows = self._chroma_rows if index else self._luma_rows
            np.take(source[:, :out.shape[1]], rows, axis=0, out=out, mode="clip")
        picture.colorspace = frame.colorspace
        picture.color_range = frame.color_range
        return picture


class Thumbnailer:
    """Shrinks decoded frames to one analysis size and scores them as ``thumb_of``.

    Straight to RGB with an area average, as before issue 22: shrinking in YUV first
    and taking the grey levels from the luma plane saved only ~0.1 ms per 1080p frame
    (0.58 against 0.67 ms, measured) and moved scores by up to 0.07 on sharp-edged
    colour blocks (chroma at half the thumbnail's resolution). One swscale context, one
    thread: PyAV's default is a thread per core, and a thumbnail is too small to share.

    A large frame (at least ``2 * PRESHRINK`` times the analysis size) is not read
    whole: a 4:2:0 8-bit one (what H.264, HEVC, VP9 and AV1 decoders give for nearly
    all video) is reduced to some of its rows (``RowSampler``) before the area average;
    any other is first point-sampled to ``PRESHRINK`` times the analysis size, in its
    own pixel format, and that is area-averaged, so each thumbnail pixel is still the
    mean of 9 source pixels. Reading a whole 1080p frame that has just left the decoder
    (mostly out of cache) cost ~0.6 ms of ~4.6 ms a frame in the scan, measured. On the
    benchmark clip, no frame pair outside the cuts scores above 0.23 with either
    sampling, and cut scores move by at most 0.04 (issue 22)."""

    def __init__(self, width: int, height: int, source_width: int = 0,
                 source_height: int = 0) -> None:
        self.width, self.height = width, height
        self._scaler = VideoReformatter()
        self._presize: tuple[int, int] | None = None
        self._rows: RowSampler | None = None
        if source_width >= 2 * PRESHRINK * width and source_height >= 2 * PRESHRINK * height:
            self._presize = (PRESHRINK * width, PRESHRINK * height)
            self._prescaler = VideoReformatter()
            self._rows = RowSampler(height, source_width, source_height)

    def __call__(self, frame: Any) -> Thumb:
        return thumb_of(self.rgb(frame))

    def rgb(self, frame: Any) -> npt.NDArray[np.uint8]:
        """The frame's thumbnail, RGB, ``(height, width, 3)``: a view of a new frame's
        pixels (to_ndarray would copy them), to be read before the next call."""
        if (self._rows is not None and frame.format.name in ROW_SAMPLED_FORMATS
                and (frame.width, frame.height) == self._rows.source_size):
            frame = self._rows(frame)
        elif self._presize is not None:
            frame = self._prescaler.reformat(frame, width=self._presize[0],
                                             height=self._presize[1],
                                             interpolation=Interpolation.POINT, threads=1)
        small = self._scaler.reformat(frame, width=self.width, height=self.height,
                                      format="rgb24", interpolation=Interpolation.AREA,
                                      threads=1)
        rgb = plane_rows(small.planes[0])
        return rgb[:self.height, :3 * self.width].reshape(self.height, self.width, 3)


def change_score(before: Thumb, after: Thumb) -> float:
    """How different two frames look, 0 (identical) to 1 (nothing in common)."""
    luma = float(np.abs(after.luma - before.luma).sum()) / (255.0 * after.luma.size)
    colour = float(np.abs(after.histogram - before.histogram).sum()) / 2.0
    return (min(1.0, LUMA_SCALE * luma) + min(1.0, colour)) / 2.0


def analysis_size(width: int, height: int, max_width: int) -> tuple[int, int]:
    """A small, even-sized frame with the source's shape (what the score is computed on)."""
    w = min(max_width, width)
    h = round(w * height / max(width, 1))
    return max(2, w - w % 2), max(2, h - h % 2)


@action("detect_scenes", {
    "properties": {
        "threshold": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.3},
        "min_scene_seconds": {"type": "number", "minimum": 0, "default": 1.0},
        "max_width": {"type": "integer", "minimum": 16, "maximum": 1920, "default": 160},
        "csv": {"type": "boolean", "default": True},
    },
})
def detect_scenes(ctx: ActionContext) -> ActionResult:
    """Find shot boundaries (cuts) by comparing consecutive frames."""
    path = ctx.source_path
    params = ctx.params
    scan = scan_for_cuts(ctx, path, threshold=params["threshold"],
                         min_scene_seconds=params["min_scene_seconds"],
                         max_width=params["max_width"])
    scenes = scenes_from(scan)
    data: dict[str, Any] = {
        "scenes": scenes, "scene_count": len(scenes),
        "cuts": [round(cut.time, 3) for cut in scan.cuts],
        "duration": round(scan.end, 3), "frames_analysed": scan.frames,
        "analysis_fps": round(scan.frames / max(scan.seconds_spent, 1e-6), 1),
    }
    report = ctx.output_path(f"{path.stem}_scenes.json")
    summary = {"source": path.name, "threshold": params["threshold"],
               "min_scene_seconds": params["min_scene_seconds"], "fps": round(scan.fps, 3),
               **data}
    with writing(report):
        report.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    outputs = [OutputFile(report, role="report", meta={"format": "json"})]
    if params["csv"]:
        table = ctx.output_path(f"{path.stem}_scenes.csv")
        with writing(table):
            table.write_text(scenes_csv(scenes), encoding="utf-8")
        outputs.append(OutputFile(table, role="report", meta={"format": "csv"}))
    ctx.log(f"{path.name}: {len(scenes)} scene(s), {scan.frames} frames analysed at "
            f"{data['analysis_fps']} fps")
    return ActionResult(outputs=outputs, data=data)


def scan_for_cuts(ctx: ActionContext, path: Path, *, threshold: float,
                  min_scene_seconds: float, max_width: int) -> SceneScan:
    """Decode every frame once, keeping only the previous thumbnail (flat memory)."""
    started = time.monotonic()
    cuts: list[Cut] = []
    with open_media(path) as container, reading(path):
        if not container.streams.video:
            raise PermanentError(f"{path.name}: has no video stream")
        stream = container.streams.video[0]
        stream.codec_context.thread_type = "AUTO"  # several cores decode, as in transcoding
        # Deblocking only smooths block edges, which the thumbnail averages away.
        stream.codec_context.options = {**stream.codec_context.options,
                                        **DECODER_OPTIONS}
        thumbnailer: Thumbnailer | None = None
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        clock = ProgressClock(ctx, media_duration(container), "detecting scenes")
        previous: Thumb | None = None
        first_time: float | None = None
        last_time, last_cut_time, index = 0.0, 0.0, -1
        for index, frame in enumerate(decode_tolerantly(container, [stream])):
            # Frames without a timestamp are placed one frame after the previous one.
            stamp = frame.time if frame.time is not None else last_time + 1 / fps
            first_time = stamp if first_time is None else first_time
            now = max(stamp - first_time, 0.0)
            # Sized from the first frame: some streams only declare their size once decoded.
            thumbnailer = thumbnailer or Thumbnailer(
                *analysis_size(frame.width, frame.height, max_width), frame.width,
                frame.height)
            thumb = thumbnailer(frame)
            if previous is not None:
                score = change_score(previous, thumb)
                if score >= threshold and now - last_cut_time >= min_scene_seconds:
                    cuts.append(Cut(frame=index, time=now, score=round(score, 3)))
                    last_cut_time = now
            previous, last_time = thumb, now
            clock.tick(stamp)
    if index < 0:
        raise PermanentError(f"{path.name}: the video stream has no decodable frame")
    return SceneScan(cuts=cuts, frames=index + 1, end=last_time + 1 / fps, fps=fps,
                     seconds_spent=time.monotonic() - started)


def scenes_from(scan: SceneScan) -> list[dict[str, Any]]:
    """Scenes between the cuts; ``end_frame`` is the scene's last frame (inclusive)."""
    starts = [Cut(frame=0, time=0.0, score=0.0), *scan.cuts]
    ends = [(cut.frame - 1, cut.time) for cut in scan.cuts] + [(scan.frames - 1, scan.end)]
    return [
        {"index": number, "start": round(start.time, 3), "end": round(end_time, 3),
         "start_frame": start.frame, "end_frame": end_frame,
         "cut_score": start.score if number else None}
        for number, (start, (end_frame, end_time)) in enumerate(zip(starts, ends, strict=True))
    ]


def scenes_csv(scenes: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    columns = ["index", "start", "end", "start_frame", "end_frame", "cut_score"]
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(scenes)
    return buffer.getvalue()

