"""Per-title ladders (``ladder: auto``): each rung's CRF from a quick complexity probe.

A few short windows of the source (three of one second, or the whole clip when it is
short) are decoded once, shaped exactly as the real encode shapes them (upright,
tone-mapped, scaled to the rung), encoded in memory with the rung's own encoder and
preset at trial CRFs, decoded back and scored with SSIM against the source at the
rung's size. A binary search finds the highest CRF whose SSIM still meets
``target_ssim`` (plus a small margin for the windows not being the whole film): a
static slide reaches the target at a high CRF and gets few bits, a noisy shot needs a
low one. The choice and what the probe saw are recorded in the step's output_data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Protocol

import av
from av.video.frame import VideoFrame

from mediaq.actions.avio import MediaInfo, encoder_options, open_media, probe, reading
from mediaq.actions.base import ActionContext
from mediaq.actions.color import DEFAULT_PEAK_NITS, SDR, ColorPlan, ToneMapper
from mediaq.actions.frames import Scaler, Upright, decode_tolerantly, seek_to
from mediaq.actions.quality import Meter, ReferenceScaler

SAMPLE_SECONDS = 1.0
SAMPLES = 3
# The windows are not the whole film: aim a little above the target.
MARGIN = 0.003
CRF_RANGE = {"libx264": (12, 45), "libx265": (12, 45), "libvpx-vp9": (15, 58),
             "libsvtav1": (15, 58)}
DEFAULT_CRF_RANGE = (12, 45)

LADDER_SCHEMA: dict[str, Any] = {
    "ladder": {"enum": ["fixed", "auto"], "default": "fixed"},
    "target_ssim": {"type": "number", "minimum": 0.8, "maximum": 0.999, "default": 0.97},
}


class Rung(Protocol):
    """What the probe needs of a planned rendition (video.Rendition)."""

    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def codec(self) -> str: ...
    @property
    def encoder(self) -> str: ...
    @property
    def color(self) -> ColorPlan: ...


# The encoder options and bit rate of a rung at a given CRF: the real encode's own, so
# the trials see the same speed, profile and rate cap (under a cap a busy picture may
# not reach the target at any CRF).
SettingsFor = Callable[[int], tuple[dict[str, str], int | None]]


def crf_settings(encoder: str, preset: str, max_bitrate: int | None) -> SettingsFor:
    """:data:`SettingsFor` from :func:`~mediaq.actions.avio.encoder_options`."""
    return lambda crf: (encoder_options(encoder, crf=crf, preset=preset,
                                        max_bitrate=max_bitrate), max_bitrate)


@dataclass
class Window:
    """One sampled stretch of the source: what the encoder gets and what SSIM compares."""

    encode: list[VideoFrame] = field(default_factory=list)
    reference: list[VideoFrame] = field(default_factory=list)


@dataclass(frozen=True)
class Trial:
    crf: int
    ssim: float
    kbps: float


def choose_crf(ctx: ActionContext, info: MediaInfo, rung: Rung,
               settings_for: SettingsFor) -> dict[str, Any] | None:
    """The CRF for ``rung`` when the step asks for ``ladder: auto``, with what the probe
    measured (recorded in output_data); None for a fixed ladder."""
    params = ctx.params
    if params.get("ladder") != "auto":
        return None
    target = float(params["target_ssim"])
    rate = Fraction(info.video.fps if info.video and info.video.fps else 25).limit_denominator(
        1001)
    windows = _sample(ctx, info, rung, rate)
    low, high = CRF_RANGE.get(rung.encoder, DEFAULT_CRF_RANGE)
    trials: dict[int, Trial] = {}

    def trial(crf: int) -> Trial:
        if crf not in trials:
            ctx.check()
            trials[crf] = _trial(rung, crf, settings_for(crf), windows, rate)
        return trials[crf]

    # SSIM falls as CRF rises: the highest CRF that still meets the target.
    best = low
    while low <= high:
        mid = (low + high) // 2
        if trial(mid).ssim >= target + MARGIN:
            best, low = mid, mid + 1
        else:
            high = mid - 1
    chosen = trial(best)
    ctx.log(f"per-title: {rung.width}x{rung.height} CRF {best} (probe SSIM {chosen.ssim}, "
            f"{chosen.kbps:.0f} kb/s; target {target})")
    return {
        "ladder": "auto", "crf": best, "target_ssim": target,
        "probe": {"windows": len(windows), "frames": sum(len(w.encode) for w in windows),
                  "ssim": chosen.ssim, "kbps": round(chosen.kbps, 1),
                  "reached": chosen.ssim >= target,
                  "tried": {str(t.crf): t.ssim for t in sorted(trials.values(),
                                                                key=lambda t: t.crf)}},
    }


def _sample(ctx: ActionContext, info: MediaInfo, rung: Rung, rate: Fraction) -> list[Window]:
    duration = info.duration
    if duration <= SAMPLES * SAMPLE_SECONDS * 1.5:
        spans = [(0.0, duration + 1.0)]
    else:
        spans = [((i + 0.5) * duration / SAMPLES - SAMPLE_SECONDS / 2, SAMPLE_SECONDS)
                 for i in range(SAMPLES)]
    tone = ToneMapper(rung.color) if rung.color.mode == "tonemap" else None
    scale = Scaler(rung.width, rung.height, rung.color.pix_fmt)
    reference = ReferenceScaler(rung.width, rung.height, rung.color.pix_fmt)
    windows: list[Window] = []
    source = ctx.source_path
    with open_media(source) as container, reading(source):
        stream: Any = container.streams.video[0]
        stream.codec_context.thread_type = "AUTO"
        start_time = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
        for start, length in spans:
            ctx.check()
            seek_to(container, stream, max(start, 0.0))
            window = Window()
            upright: Upright | None = None
            for frame in decode_tolerantly(container, [stream]):
                at = float(frame.time or 0.0) - start_time
                if at < start - 1e-3:
                    continue
                if at >= start + length or len(window.encode) >= rate * length + 1:
                    break
                if upright is None:
                    upright = Upright(stream, frame)
                for shaped in upright.apply(frame):
                    picture = tone(shaped) if tone is not None else shaped
                    window.encode.append(scale.fresh(picture))
                    window.reference.append(reference(picture))
            if window.encode:
                windows.append(window)
    return windows


def _trial(rung: Rung, crf: int, settings: tuple[dict[str, str], int | None],
           windows: list[Window], rate: Fraction) -> Trial:
    """Encode every window with ``settings`` in memory, decode it back, score it."""
    options, bit_rate = settings
    meter = Meter("ssim", rung.width, rung.height, rung.color.pix_fmt)
    bits = 0
    frames = 0
    for window in windows:
        encoder: Any = av.CodecContext.create(rung.encoder, "w")
        encoder.width, encoder.height = rung.width, rung.height
        encoder.pix_fmt = rung.color.pix_fmt
        encoder.time_base = 1 / rate
        encoder.framerate = rate
        encoder.thread_type = "FRAME"
        encoder.options = dict(options)
        if bit_rate:
            encoder.bit_rate = bit_rate
        packets = []
        for index, frame in enumerate(window.encode):
            frame.pts, frame.time_base = index, 1 / rate
            packets.extend(encoder.encode(frame))
        packets.extend(encoder.encode(None))
        decoder: Any = av.CodecContext.create(rung.codec, "r")
        if encoder.extradata:
            decoder.extradata = encoder.extradata
        decoded: list[VideoFrame] = []
        for packet in packets:
            bits += packet.size * 8
            decoded.extend(decoder.decode(packet))
        decoded.extend(decoder.decode(None))
        for picture, reference in zip(decoded, window.reference, strict=False):
            if picture.format.name != rung.color.pix_fmt:
                picture = picture.reformat(format=rung.color.pix_fmt)
            meter.add(picture, reference)
        frames += len(window.encode)
    ssim = meter.score() or 0.0
    seconds = max(frames / float(rate), 1e-3)
    return Trial(crf=crf, ssim=ssim, kbps=bits / seconds / 1000)


@dataclass(frozen=True)
class LadderRung:
    """A packaging ladder's rung as the probe sees it."""

    width: int
    height: int
    codec: str
    encoder: str
    color: ColorPlan


def ladder_choices(ctx: ActionContext, sizes: list[tuple[int, int, SettingsFor]], codec: str,
                   encoder: str) -> list[dict[str, Any] | None]:
    """For the HLS/DASH packagers: each rung's per-title choice (None for a fixed
    ladder). Their rungs are 8-bit SDR, tone-mapped from PQ/HLG as they encode."""
    if ctx.params.get("ladder") != "auto":
        return [None] * len(sizes)
    info = probe(ctx.source_path)
    video = info.video
    color = (ColorPlan("tonemap", video.color_transfer, DEFAULT_PEAK_NITS)
             if video is not None and video.hdr else SDR)
    return [choose_crf(ctx, info, LadderRung(width, height, codec, encoder, color), settings)
            for width, height, settings in sizes]
