"""How good a rendition is: SSIM and PSNR against its source, by the bundled FFmpeg's
``ssim`` and ``psnr`` filters (the same numbers Debian's ffmpeg prints for them).

The source is decoded again, turned upright and tone-mapped exactly as for the encode,
then scaled to each rendition's size (bicubic, as ``scale`` does by default), so a
720p rendition is judged against the source at 720p. Frames are paired by time, so a
rendition at another frame rate is judged against the source frame shown at its time.
Scores are what the filters' summaries print: SSIM "All" averaged over the frames,
PSNR from the mean of the frames' average MSE.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import av.filter
from av.video.format import VideoFormat
from av.video.frame import VideoFrame

from mediaq.actions.avio import ProgressClock, configure_chain, open_media, reading
from mediaq.actions.base import ActionContext
from mediaq.actions.color import ColorPlan, ToneMapper
from mediaq.actions.frames import Upright, decode_tolerantly
from mediaq.errors import PermanentError

METRICS = ("ssim", "psnr")
PSNR_CAP_DB = 100.0  # identical pictures: FFmpeg says "inf", which JSON cannot hold

QUALITY_SCHEMA: dict[str, Any] = {
    "measure_quality": {"enum": ["none", *METRICS], "default": "none"},
    "min_ssim": {"type": "number", "minimum": 0, "maximum": 1},
    "min_psnr": {"type": "number", "minimum": 0, "maximum": PSNR_CAP_DB},
}


def metrics_asked(params: dict[str, Any]) -> list[str]:
    """The metrics a step wants: the one it names, and any it sets a floor for."""
    asked = {params.get("measure_quality", "none")}
    asked |= {m for m in METRICS if params.get(f"min_{m}") is not None}
    if params.get("ladder") == "auto":
        asked.add("ssim")  # the per-title target is an SSIM: show that it was met
    return [m for m in METRICS if m in asked]


class Meter:
    """One metric between a reference and a distorted picture stream of one size."""

    def __init__(self, metric: str, width: int, height: int, pix_fmt: str) -> None:
        self.metric = metric
        graph = av.filter.Graph()
        self._main = graph.add_buffer(width=width, height=height, format=VideoFormat(pix_fmt),
                                      time_base=Fraction(1, 1000))
        self._ref = graph.add_buffer(width=width, height=height, format=VideoFormat(pix_fmt),
                                     time_base=Fraction(1, 1000))
        node = graph.add(metric)
        self._main.link_to(node, 0, 0)
        self._ref.link_to(node, 0, 1)
        self._sink = graph.add("buffersink")
        node.link_to(self._sink)
        graph.configure()
        self._graph = graph
        self._peak = float((1 << (10 if "10" in pix_fmt else 8)) - 1)
        self._count = 0
        self._total = 0.0

    def add(self, distorted: VideoFrame, reference: VideoFrame) -> None:
        distorted.pts = reference.pts = self._count
        self._main.push(distorted)
        self._ref.push(reference)
        self._count += 1
        while True:
            try:
                scored = self._sink.pull()
            except (av.error.BlockingIOError, av.error.EOFError):
                return
            meta = scored.metadata
            key = "lavfi.ssim.All" if self.metric == "ssim" else "lavfi.psnr.mse_avg"
            self._total += float(meta[key])

    @property
    def frames(self) -> int:
        return self._count

    def score(self) -> float | None:
        if not self._count:
            return None
        mean = self._total / self._count
        if self.metric == "ssim":
            return round(mean, 5)
        if mean <= 0:
            return PSNR_CAP_DB
        return round(min(PSNR_CAP_DB, 10 * math.log10(self._peak ** 2 / mean)), 3)


class ReferenceScaler:
    """Scales source pictures with the ``scale`` filter, flags=bicubic: bit-identical to
    what Debian's ffmpeg's ``scale`` gives (PyAV's reformatter is not: 47.9 dB apart on
    a 360p-to-240p test, enough to move a 42 dB PSNR by 0.9 dB)."""

    def __init__(self, width: int, height: int, pix_fmt: str) -> None:
        self.steps = [("scale", f"{width}:{height}:flags=bicubic"), ("format", pix_fmt)]
        self._graph: av.filter.Graph | None = None

    def __call__(self, frame: VideoFrame) -> VideoFrame:
        if self._graph is None:
            graph = av.filter.Graph()
            source = graph.add_buffer(width=frame.width, height=frame.height,
                                      format=frame.format, time_base=Fraction(1, 1000))
            self._graph = configure_chain(graph, source, self.steps, "buffersink")
        frame.pts = None
        self._graph.push(frame)
        return self._graph.vpull()


@dataclass
class Judged:
    """A rendition being judged: its file, its size, how its pictures were made."""

    path: Path
    width: int
    height: int
    color: ColorPlan
    metrics: list[str]
    meters: list[Meter] = field(default_factory=list)
    scale: ReferenceScaler | None = None
    frames: Iterator[VideoFrame] | None = None
    pending: VideoFrame | None = None
    start: float | None = None

    def scores(self) -> dict[str, Any]:
        data: dict[str, Any] = {m.metric: m.score() for m in self.meters}
        data["frames_compared"] = self.meters[0].frames if self.meters else 0
        return data


def measure(ctx: ActionContext, source: Path, duration: float,
            judged: list[Judged]) -> list[dict[str, Any]]:
    """Score every ``judged`` rendition against ``source``; one dict per rendition."""
    wanted = [j for j in judged if j.metrics]
    if not wanted:
        return [{} for _ in judged]
    clock = ProgressClock(ctx, duration, "measuring quality", count_frames=True)
    plan = next((j.color for j in wanted if j.color.mode == "tonemap"), None)
    tone = ToneMapper(plan) if plan is not None else None
    with ExitStack() as stack:
        for j in wanted:
            j.scale = ReferenceScaler(j.width, j.height, j.color.pix_fmt)
            j.meters = [Meter(m, j.width, j.height, j.color.pix_fmt) for m in j.metrics]
            container = stack.enter_context(open_media(j.path))
            stack.enter_context(reading(j.path))
            stream: Any = container.streams.video[0]
            stream.codec_context.thread_type = "AUTO"
            j.frames = iter(decode_tolerantly(container, [stream]))
            j.pending = next(j.frames, None)
            j.start = j.pending.time if j.pending is not None else None
        container = stack.enter_context(open_media(source))
        stack.enter_context(reading(source))
        vstream: Any = container.streams.video[0]
        vstream.codec_context.thread_type = "AUTO"
        rate = float(vstream.average_rate or 25)
        # An output frame is paired with the last source frame shown at its time.
        slack = 0.25 / rate
        upright: Upright | None = None
        previous: VideoFrame | None = None
        first: float | None = None
        for frame in decode_tolerantly(container, [vstream]):
            if upright is None:
                upright = Upright(vstream, frame)
            for shaped in upright.apply(frame):
                if first is None:
                    first = float(shaped.time or 0.0)
                at = float(shaped.time or 0.0) - first
                if previous is not None:
                    for j in wanted:
                        _pair_until(j, previous, at - slack, tone)
                previous = shaped
                clock.tick(at)
        if previous is not None:
            for j in wanted:
                _pair_until(j, previous, math.inf, tone)
    return [j.scores() if j.metrics else {} for j in judged]


def _pair_until(j: Judged, reference: VideoFrame, before: float,
                tone: ToneMapper | None) -> None:
    """Compare ``j``'s output frames that start before ``before`` with ``reference``."""
    assert j.scale is not None and j.frames is not None
    scaled: VideoFrame | None = None
    while j.pending is not None and float(j.pending.time or 0.0) - (j.start or 0.0) < before:
        if scaled is None:
            picture = tone(reference) if tone is not None and j.color.mode == "tonemap" \
                else reference
            scaled = j.scale(picture)
        distorted = j.pending
        if distorted.format.name != j.color.pix_fmt:
            distorted = distorted.reformat(format=j.color.pix_fmt)
        for meter in j.meters:
            meter.add(distorted, scaled)
        j.pending = next(j.frames, None)


def enforce_floors(name: str, label: str, params: dict[str, Any],
                   scores: dict[str, Any]) -> None:
    """A PermanentError naming the file when a score is below the step's floor."""
    for metric in METRICS:
        floor = params.get(f"min_{metric}")
        score = scores.get(metric)
        if floor is None or score is None:
            continue
        if score < floor:
            unit = "" if metric == "ssim" else " dB"
            raise PermanentError(f"{name}: rendition {label} has {metric.upper()} "
                                 f"{score}{unit}, below min_{metric} {floor}{unit}")


@dataclass(frozen=True)
class Rendered:
    """What :func:`judge` needs of one finished rendition."""

    params: dict[str, Any]
    label: str
    width: int
    height: int
    color: ColorPlan
    path: Path


def judge(ctx: ActionContext, duration: float, rendered: list[Rendered]) -> list[dict[str, Any]]:
    """Scores for each rendition whose step asks for them (``{}`` for the others),
    then the steps' floors: the first rendition below one fails the step."""
    judged = [Judged(r.path, r.width, r.height, r.color, metrics_asked(r.params))
              for r in rendered]
    scores = measure(ctx, ctx.source_path, duration, judged)
    for r, score in zip(rendered, scores, strict=True):
        if score:
            ctx.log(f"{r.label}: " + ", ".join(f"{m} {score[m]}" for m in METRICS if m in score))
        enforce_floors(ctx.source_path.name, r.label, r.params, score)
    return scores
