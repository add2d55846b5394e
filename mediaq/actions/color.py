"""HDR sources: tone mapping to SDR BT.709, or keeping HDR10 on the way through.

PyAV's bundled FFmpeg has neither ``zscale`` nor ``libplacebo``, so tone mapping is a
generated 3D LUT applied by the bundled ``lut3d`` filter, between two ``scale`` steps:

    Y'CbCr BT.2020 (limited) --scale--> R'G'B' BT.2020 (PQ or HLG, float)
        --lut3d--> R'G'B' BT.709 (SDR) --scale--> Y'CbCr BT.709 (limited, 8-bit)

The LUT is indexed by the *encoded* signal, which PQ and HLG make perceptually even,
so 65 points a side with tetrahedral interpolation follow the curve closely. Each
entry models, in linear light:

1. the transfer's EOTF: PQ (SMPTE ST 2084) to absolute nits; HLG (ARIB STD-B67) by its
   inverse OETF and a system gamma of 1.2 for a 1,000-nit display, per component
   as zimg does;
   luminance is relative to 100 nits (SDR reference white = 1.0);
2. BT.2020 to BT.709 primaries (the BT.2087 matrix);
3. the Hable ("Uncharted 2") curve on the largest of R, G, B, as FFmpeg's ``tonemap``
   filter computes it (``hable(x) / hable(peak)``, colour scaled by the same factor, so
   hues do not shift); the peak is the source's mastering or content-light peak,
   1,000 nits when the source does not say;
4. clipping to [0, 1] and the inverse of the BT.1886 EOTF (gamma 2.4), as display
   light is encoded for an SDR display.

That is, step by step, what ``zscale=t=linear:npl=100, zscale=p=bt709,
tonemap=hable:desat=0:peak=P, zscale=t=bt709:m=bt709:r=tv`` does with Debian's
ffmpeg, which the tests use as the reference.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import av.filter
import numpy as np
from av.sidedata.sidedata import Type as SideDataType
from av.video.frame import VideoFrame

from mediaq.actions.avio import MediaInfo, configure_chain, open_media, reading
from mediaq.errors import PermanentError

LUT_SIZE = 65
REFERENCE_WHITE_NITS = 100.0
DEFAULT_PEAK_NITS = 1000.0  # a typical HDR10 grade; HLG's nominal display peak
HLG_SYSTEM_GAMMA = 1.2
# BT.2087: linear BT.2020 RGB to linear BT.709 RGB.
BT2020_TO_BT709 = np.array([[1.6605, -0.5876, -0.0728],
                            [-0.1246, 1.1329, -0.0083],
                            [-0.0182, -0.1006, 1.1187]])
# HDR10 defaults when the source carries none: a P3-D65 1,000-nit mastering display.
DEFAULT_MASTER_DISPLAY = "G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1)"
DEFAULT_MAX_CLL = "1000,400"
HDR_CODECS = ("hevc", "av1")
_HDR_TRC = {16: "smpte2084", 18: "arib-std-b67"}  # FFmpeg's AVColorTransferCharacteristic

COLOR_SCHEMA: dict[str, Any] = {
    "tone_map": {"enum": ["auto", "hable", "off"], "default": "auto"},
    "hdr": {"enum": ["tonemap", "keep"], "default": "tonemap"},
}


@dataclass(frozen=True)
class ColorPlan:
    """What a transcode does with the source's colour."""

    mode: str  # "sdr" (nothing to do), "tonemap" or "keep"
    transfer: str | None = None  # the source's HDR transfer
    peak_nits: float = DEFAULT_PEAK_NITS
    mastering: str | None = None  # the source's, in x265's master-display notation
    max_cll: str | None = None  # the source's "MaxCLL,MaxFALL"

    @property
    def pix_fmt(self) -> str:
        return "yuv420p10le" if self.mode == "keep" else "yuv420p"

    def as_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"color": self.mode}
        if self.mode == "tonemap":
            data.update({"tone_map": "hable", "tone_map_peak_nits": self.peak_nits,
                         "source_transfer": self.transfer})
        elif self.mode == "keep":
            data.update({"hdr": "hdr10" if self.transfer == "smpte2084" else "hlg",
                         "mastering_display": self.mastering or DEFAULT_MASTER_DISPLAY,
                         "max_cll": self.max_cll or DEFAULT_MAX_CLL})
        return data


SDR = ColorPlan("sdr")


def plan_color(params: dict[str, Any], info: MediaInfo, codec: str, path: Path) -> ColorPlan:
    """Decide from the step's ``tone_map`` / ``hdr`` and the probed source."""
    video = info.video
    if video is None or not video.hdr:
        return SDR
    if params.get("hdr") == "keep":
        if codec not in HDR_CODECS:
            raise PermanentError(f"{path.name}: hdr: keep needs codec hevc or av1 (10-bit), "
                                 f"not {codec}")
        mastering, max_cll, _ = hdr_metadata(path)
        return ColorPlan("keep", video.color_transfer, mastering=mastering, max_cll=max_cll)
    if params.get("tone_map", "auto") == "off":
        return SDR
    _, _, peak = hdr_metadata(path)
    # HLG is relative to its display: its peak is the nominal 1,000 nits whatever it says.
    if video.color_transfer != "smpte2084" or peak is None:
        peak = DEFAULT_PEAK_NITS
    return ColorPlan("tonemap", video.color_transfer, peak)


def hdr_metadata(path: Path) -> tuple[str | None, str | None, float | None]:
    """The source's mastering display (x265 notation), "MaxCLL,MaxFALL" and the peak
    to tone-map from (MaxCLL, else the mastering display's peak, as FFmpeg's tonemap
    takes it), read from the first frame's side data; None where it says nothing."""
    with open_media(path) as container, reading(path):
        frame = next(container.decode(video=0), None)
    if frame is None:
        return None, None, None
    side: Any = frame.side_data  # PyAV's stubs key it by str; it takes the Type enum
    master_raw = side.get(SideDataType.MASTERING_DISPLAY_METADATA)
    light_raw = side.get(SideDataType.CONTENT_LIGHT_LEVEL)
    mastering, master_peak = (mastering_from_side_data(bytes(master_raw))
                              if master_raw is not None else (None, None))
    max_cll, cll_peak = None, None
    if light_raw is not None and len(bytes(light_raw)) >= 8:
        cll, fall = struct.unpack("<2I", bytes(light_raw)[:8])
        if cll:
            max_cll, cll_peak = f"{cll},{fall}", float(cll)
    return mastering, max_cll, cll_peak or master_peak


def tone_map_steps(plan: ColorPlan) -> list[tuple[str, str]]:
    """Filter steps (name, args) that turn decoded HDR frames into 8-bit BT.709."""
    if plan.mode != "tonemap":
        return []
    assert plan.transfer is not None
    lut = lut_file(plan.transfer, plan.peak_nits)
    return [
        ("scale", "in_color_matrix=bt2020:in_range=tv:out_range=pc"),
        ("format", "gbrpf32le"),
        ("lut3d", f"file='{lut}':interp=tetrahedral"),
        ("scale", "in_range=pc:out_color_matrix=bt709:out_range=tv"),
        ("format", "yuv420p"),
        ("setparams", "color_primaries=bt709:color_trc=bt709:colorspace=bt709:range=tv"),
    ]


# --------------------------------------------------------------------------- the curve


def pq_to_nits(signal: np.ndarray) -> np.ndarray:
    m1, m2 = 2610 / 16384, 2523 / 4096 * 128
    c1, c2, c3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
    p = np.power(np.clip(signal, 0.0, 1.0), 1 / m2)
    return np.asarray(10000.0 * np.power(np.maximum(p - c1, 0.0) / (c2 - c3 * p), 1 / m1))


def hlg_to_nits(rgb: np.ndarray, peak_nits: float = DEFAULT_PEAK_NITS) -> np.ndarray:
    """HLG R'G'B' to display light for a ``peak_nits`` display: the inverse OETF, then
    the system gamma of 1.2 applied to each component, as zimg (behind FFmpeg's
    ``zscale``, the reference) does. BT.2100 applies it to luminance instead; per
    component keeps HLG's colours as saturated as zscale shows them (measured: 0.16
    more mean HSV saturation on the test pattern)."""
    a, b = 0.17883277, 0.28466892
    c = 0.5 - a * np.log(4 * a)
    e = np.clip(rgb, 0.0, 1.0)
    scene = np.where(e <= 0.5, e * e / 3.0,
                     (np.exp((np.maximum(e, 0.5) - c) / a) + b) / 12.0)
    return np.asarray(peak_nits * np.power(scene, HLG_SYSTEM_GAMMA))


def hable(x: np.ndarray | float) -> Any:
    a, b, c, d, e, f = 0.15, 0.50, 0.10, 0.20, 0.02, 0.30
    return (x * (x * a + b * c) + d * e) / (x * (x * a + b) + d * f) - e / f


def bt1886_inverse_eotf(linear: np.ndarray) -> np.ndarray:
    """Display light to an SDR signal for a BT.1886 (gamma 2.4) display: the mapping
    is display-referred, so the camera OETF of BT.709 would be the wrong inverse."""
    return np.asarray(np.power(np.clip(linear, 0.0, 1.0), 1 / 2.4))


def tone_map_rgb(signal: np.ndarray, transfer: str, peak_nits: float) -> np.ndarray:
    """HDR R'G'B' BT.2020 (last axis, 0..1) to SDR R'G'B' BT.709 (0..1)."""
    if transfer == "smpte2084":
        nits = pq_to_nits(signal)
    elif transfer == "arib-std-b67":
        nits = hlg_to_nits(signal)
    else:
        raise ValueError(f"not an HDR transfer: {transfer}")
    linear = (nits / REFERENCE_WHITE_NITS) @ BT2020_TO_BT709.T
    peak = peak_nits / REFERENCE_WHITE_NITS
    sig = np.maximum(linear.max(axis=-1, keepdims=True), 1e-6)
    mapped = hable(sig) / hable(peak)
    return bt1886_inverse_eotf(linear * (mapped / sig))


def lut_file(transfer: str, peak_nits: float, size: int = LUT_SIZE) -> Path:
    """A .cube file for (transfer, peak), written once per machine and reused."""
    key = hashlib.sha256(f"v3 {transfer} {peak_nits} {size}".encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"mediaq-tonemap-{key}.cube"
    if path.exists():
        return path
    axis = np.linspace(0.0, 1.0, size)
    # .cube order: red changes fastest, then green, then blue.
    b, g, r = np.meshgrid(axis, axis, axis, indexing="ij")
    grid = np.stack([r, g, b], axis=-1).reshape(-1, 3)
    table = tone_map_rgb(grid, transfer, peak_nits)
    body = "\n".join(f"{x:.6f} {y:.6f} {z:.6f}" for x, y, z in table.tolist())
    partial = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.part")
    partial.write_text(f"LUT_3D_SIZE {size}\n{body}\n")
    partial.replace(path)  # atomic: concurrent workers never read half a file
    return path


# --------------------------------------------------------------------------- keeping HDR


def with_hdr10(encoder: str, options: dict[str, str], plan: ColorPlan) -> dict[str, str]:
    """``options`` plus what makes ``encoder`` write HDR10 (or HLG) signalling and
    metadata: the source's mastering display and light levels, or a 1,000-nit P3
    grade's. Appended to the encoder's own parameter string, never replacing it."""
    master = plan.mastering or DEFAULT_MASTER_DISPLAY
    cll = plan.max_cll or DEFAULT_MAX_CLL
    transfer = plan.transfer or "smpte2084"
    if encoder == "libx265":
        key, extra = "x265-params", [
            "hdr10=1", "hdr10-opt=1", "repeat-headers=1", "colorprim=bt2020",
            f"transfer={transfer}", "colormatrix=bt2020nc", f"master-display={master}",
            f"max-cll={cll}"]
    elif encoder == "libsvtav1":
        key, extra = "svtav1-params", [f"mastering-display={_svt_master(master)}",
                                       f"content-light={cll}"]
    else:
        return dict(options)
    merged = dict(options)
    merged[key] = ":".join([p for p in [options.get(key, "")] if p] + extra)
    return merged


def _svt_master(x265: str) -> str:
    """x265's G(x,y)B(x,y)R(x,y)WP(x,y)L(max,min) in SVT-AV1's own notation."""
    nums = [int(v) for v in re.findall(r"\d+", x265)]
    gx, gy, bx, by, rx, ry, wx, wy, lmax, lmin = nums
    def c(v: int) -> str:
        return f"{v / 50000:.4f}"
    return (f"G({c(gx)},{c(gy)})B({c(bx)},{c(by)})R({c(rx)},{c(ry)})"
            f"WP({c(wx)},{c(wy)})L({lmax / 10000:.4f},{lmin / 10000:.4f})")


def tag_stream(stream: Any, plan: ColorPlan) -> None:
    """Colour tags on an output video stream: BT.709 for SDR, the source's for HDR."""
    ctx = stream.codec_context
    if plan.mode == "keep":
        ctx.color_primaries = 9  # BT.2020
        ctx.color_trc = 16 if plan.transfer == "smpte2084" else 18
        ctx.colorspace = 9  # BT.2020 non-constant luminance
        ctx.color_range = 1  # limited
    elif plan.mode == "tonemap":
        ctx.color_primaries = ctx.color_trc = ctx.colorspace = 1  # BT.709
        ctx.color_range = 1


def mastering_from_side_data(raw: bytes) -> tuple[str | None, float | None]:
    """x265's master-display string and the peak in nits, from FFmpeg's
    AVMasteringDisplayMetadata: 10 AVRationals (primaries R, G, B as x, y; white
    point x, y; min and max luminance), then has_primaries and has_luminance."""
    if len(raw) < 88:
        return None, None
    vals = struct.unpack("<22i", raw[:88])

    def q(i: int) -> float:
        return vals[i] / vals[i + 1] if vals[i + 1] else 0.0

    def c(v: float) -> int:
        return round(v * 50000)

    (rx, ry), (gx, gy), (bx, by) = (q(0), q(2)), (q(4), q(6)), (q(8), q(10))
    wx, wy, lmin, lmax = q(12), q(14), q(16), q(18)
    has_primaries, has_luminance = vals[20], vals[21]
    if not (has_primaries and has_luminance):
        return None, (lmax if has_luminance and lmax > 0 else None)
    return (f"G({c(gx)},{c(gy)})B({c(bx)},{c(by)})R({c(rx)},{c(ry)})"
            f"WP({c(wx)},{c(wy)})L({round(lmax * 10000)},{round(lmin * 10000)})",
            lmax if lmax > 0 else None)


class ToneMapper:
    """Tone-maps frames through the LUT chain; one per source, shared by every rendition
    that wants SDR, so a fused ladder maps each frame once (at the source's size)."""

    def __init__(self, plan: ColorPlan) -> None:
        self.steps = tone_map_steps(plan)
        self._graph: av.filter.Graph | None = None
        self._last: tuple[VideoFrame, VideoFrame] | None = None

    def __call__(self, frame: VideoFrame) -> VideoFrame:
        if self._last is not None and self._last[0] is frame:
            return self._last[1]
        if self._graph is None:
            # Built from the first (already upright) frame: a quarter turn swapped its sides.
            graph = av.filter.Graph()
            source = graph.add_buffer(width=frame.width, height=frame.height,
                                      format=frame.format, time_base=frame.time_base)
            self._graph = configure_chain(graph, source, self.steps, "buffersink")
        self._graph.push(frame)
        mapped = self._graph.vpull()  # every step is one frame in, one frame out
        mapped.pts, mapped.time_base = frame.pts, frame.time_base
        self._last = (frame, mapped)
        return mapped


def tone_mapper_for(plans: list[ColorPlan]) -> ToneMapper | None:
    """The shared tone mapper when any rendition tone-maps, else None."""
    plan = next((p for p in plans if p.mode == "tonemap"), None)
    return ToneMapper(plan) if plan is not None else None


def sdr_frames(stream: Any, frames: Iterator[tuple[float, VideoFrame]]
               ) -> Iterator[tuple[float, VideoFrame]]:
    """(time, frame) pairs tone-mapped to SDR BT.709 when ``stream`` is PQ or HLG, for
    outputs that are always 8-bit SDR (the H.264 HLS and DASH ladders)."""
    transfer = _HDR_TRC.get(int(stream.codec_context.color_trc or 0))
    if transfer is None:
        yield from frames
        return
    tone = ToneMapper(ColorPlan("tonemap", transfer, DEFAULT_PEAK_NITS))
    for at, frame in frames:
        yield at, tone(frame)
