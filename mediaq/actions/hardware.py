"""Hardware video encoders (NVENC, then Quick Sync), decided by opening them.

Whether a hardware encoder exists is only known by opening it: NVML reports an H100's
encoder capacity though that GPU has no NVENC unit, and a machine may have an Intel
render node whose driver lacks the codec. So each candidate is tried in turn (only where
its device node exists, so a machine without one never loads a driver), the first that
opens is used, and the software encoder otherwise. The whole decision, each candidate
with why it was or was not used, is returned so the step records it in its output_data.
"""

from __future__ import annotations

import functools
import glob
import os
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
import av.error

from mediaq.actions.base import ActionContext
from mediaq.errors import TransientError

# Software encoder per codec.
SOFTWARE_ENCODERS = {"h264": "libx264", "hevc": "libx265", "vp9": "libvpx-vp9",
                     "av1": "libsvtav1"}
# Hardware encoders per codec, in the order they are tried: NVENC, then Quick Sync.
HARDWARE_CANDIDATES: dict[str, tuple[str, ...]] = {
    "h264": ("h264_nvenc", "h264_qsv"),
    "hevc": ("hevc_nvenc", "hevc_qsv"),
    "av1": ("av1_nvenc", "av1_qsv"),
    "vp9": ("vp9_qsv",),
}


def has_gpu() -> bool:
    """An NVIDIA device node: where NVENC may exist."""
    return os.path.exists("/dev/nvidia0")


def has_render_node() -> bool:
    """A DRM render node: where Quick Sync (through VA-API/oneVPL) may exist."""
    return bool(glob.glob("/dev/dri/renderD*"))


def family(encoder: str) -> str:
    return encoder.rsplit("_", 1)[-1] if encoder.endswith(("_nvenc", "_qsv")) else "software"


def device_present(encoder: str) -> bool:
    kind = family(encoder)
    if kind == "nvenc":
        return has_gpu()
    if kind == "qsv":
        return has_render_node()
    return True


@functools.cache
def hardware_encoder_works(name: str) -> bool:
    """Whether ``name`` opens here (its device node present and the encoder opening)."""
    return _why_not(name) is None


@functools.cache
def _why_not(name: str) -> str | None:
    if name not in av.codecs_available:
        return "not in this FFmpeg build"
    if not device_present(name):
        return ("no NVIDIA device (/dev/nvidia0)" if family(name) == "nvenc"
                else "no render node (/dev/dri/renderD*)")
    try:
        ctx: Any = av.CodecContext.create(name, "w")
        ctx.width, ctx.height = 256, 256
        ctx.pix_fmt = "nv12" if family(name) == "qsv" else "yuv420p"
        ctx.time_base = Fraction(1, 25)
        ctx.open()
        ctx.close()
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        return f"does not open on this device ({str(exc).strip().splitlines()[0][:120]})"
    return None


def clear_cache() -> None:
    """Forget what was tried (tests that change the device checks)."""
    hardware_encoder_works.cache_clear()
    _why_not.cache_clear()


@dataclass(frozen=True)
class EncoderChoice:
    """Which encoder a step uses, and why: ``tried`` maps each hardware candidate to
    "used" or the reason it was passed over."""

    codec: str
    asked: str  # the step's ``hardware`` parameter
    encoder: str
    tried: dict[str, str] = field(default_factory=dict)

    @property
    def hardware(self) -> bool:
        return family(self.encoder) != "software"

    def as_data(self) -> dict[str, Any]:
        return {"asked": self.asked, "encoder": self.encoder, "hardware": self.hardware,
                "tried": dict(self.tried)}


def decide_video_encoder(codec: str, hardware: str, ctx: ActionContext) -> EncoderChoice:
    """The encoder for ``codec``. ``hardware``: ``auto`` (the first hardware encoder that
    opens, else software), ``never``, ``require`` (any hardware encoder, else a transient
    error: another worker may have one), or ``nvenc`` / ``qsv`` (that family required)."""
    software = SOFTWARE_ENCODERS[codec]
    if hardware == "never":
        return EncoderChoice(codec, hardware, software)
    candidates = [c for c in HARDWARE_CANDIDATES.get(codec, ())
                  if hardware in ("auto", "require") or family(c) == hardware]
    tried: dict[str, str] = {}
    for name in candidates:
        reason = _why_not(name)
        if reason is None:
            tried[name] = "used"
            return EncoderChoice(codec, hardware, name, tried)
        tried[name] = reason
    if hardware != "auto":
        reasons = "; ".join(f"{k} is not available ({v})" for k, v in tried.items())
        raise TransientError(f"hardware encoding of {codec} ({hardware}) is not possible on "
                             f"this worker: {reasons or 'no such hardware encoder'}")
    for name, reason in tried.items():
        # Only worth a log line where a device was there and still refused.
        if reason.startswith("does not open"):
            ctx.log(f"{name} is not available on this device; encoding with {software}")
    return EncoderChoice(codec, hardware, software, tried)
