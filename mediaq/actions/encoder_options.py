"""Encoder settings a media team asks for, in each encoder's own vocabulary.

A step says what it wants in one vocabulary (``profile``, ``level``, ``tune``,
``gop_seconds`` / ``closed_gop``, ``rate_control`` with ``crf`` / ``bitrate`` /
``maxrate`` / ``bufsize``, ``speed``); :func:`video_settings` turns that into the options
libx264, libx265, SVT-AV1, libvpx-vp9, NVENC or Quick Sync understand. The parameter
schema refuses what an encoder cannot do (a profile of another codec, two-pass AV1)
before a job ever runs, and :func:`check_rate_control` says which number is missing.

Rate control:
- ``crf``: constant quality (the default).
- ``capped_crf``: constant quality under a ``maxrate`` ceiling (VBV), what streaming
  wants: a player's bandwidth estimate holds.
- ``cbr``: constant bit rate ``bitrate`` (x264 writes NAL HRD CBR), what broadcast
  contribution and some ingest points want.
- ``two_pass``: average ``bitrate`` hit precisely; the source is read twice.

``gop_seconds`` fixes the keyframe interval (no extra keyframes at scene cuts, so every
GOP has the same length); ``closed_gop`` (the default) keeps B-frames from referring
across it, so each GOP decodes on its own (edits, segmenting).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from mediaq.actions.avio import BITRATE_SCHEMA, parse_bitrate
from mediaq.actions.hardware import family
from mediaq.actions.presets import expand_preset
from mediaq.errors import InvalidParameters

SPEEDS = ["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
          "slower", "veryslow"]
RATE_CONTROLS = ["crf", "cbr", "capped_crf", "two_pass"]
# 8-bit 4:2:0 profiles: what the pipeline's frames are.
PROFILES = {"h264": ["baseline", "main", "high"], "hevc": ["main"], "av1": ["main"],
            "vp9": ["0"]}
TUNES = {"h264": ["film", "animation", "grain", "stillimage", "fastdecode", "zerolatency",
                  "psnr", "ssim"],
         "hevc": ["psnr", "ssim", "grain", "fastdecode", "zerolatency", "animation"],
         "av1": ["vq", "psnr", "ssim"], "vp9": []}
TWO_PASS_CODECS = ("h264", "hevc")
# SVT-AV1's presets run 0 (slowest) to 13; the x264 names mapped onto that range.
_SVT_SPEED = dict(zip(SPEEDS, ["12", "11", "10", "9", "8", "7", "6", "5", "4"], strict=True))
_SVT_TUNE = {"vq": "0", "psnr": "1", "ssim": "2"}
_LEVEL = r"^[1-6](\.[0-3])?$"
# libx264 threads on slices of one frame rather than on several frames at once (issue 22).
# Frame threads (x264's default: 1.5 per core, each with its frames, their half-pel
# planes and a deeper lookahead queue) held ~75 MB more at 1080p than sliced threads on
# 2 cores, and grow with the core count; in a worker that also holds Python (~100 MB),
# they put a 1080p transcode above the ffmpeg CLI's peak memory for the same encode
# (benchmarks/transcode_memory.py). Slices cost ~0.2 % of size at the same CRF
# (measured); on a host with many cores, frame threads would be faster, but a worker
# there runs several jobs at once. Every x264 encode (files, ladders, chunks) uses it.
X264_THREADING = ["sliced-threads=1"]
# Sources up to this many pixels (1080p) are decoded on one thread when transcoding:
# decoding them is a small part of libx264's work, and each decoder frame thread keeps
# frames of its own (~17 MB more at 1080p with FFmpeg's automatic count, measured).
# Larger sources (4K HEVC decodes at tens of frames a second a core) keep the count.
SINGLE_THREAD_DECODE_PIXELS = 1920 * 1088


def decoder_threads(width: int, height: int) -> int:
    """Decoder threads for a transcode's source: 1, or 0 (FFmpeg chooses) above 1080p."""
    return 1 if width * height <= SINGLE_THREAD_DECODE_PIXELS else 0

ENCODING_PROPERTIES: dict[str, Any] = {
    "speed": {"enum": SPEEDS, "default": "veryfast"},
    "rate_control": {"enum": RATE_CONTROLS, "default": "crf"},
    "bitrate": BITRATE_SCHEMA,
    "maxrate": BITRATE_SCHEMA,
    "bufsize": BITRATE_SCHEMA,
    "profile": {"enum": sorted({p for ps in PROFILES.values() for p in ps})},
    "level": {"anyOf": [{"type": "string", "pattern": _LEVEL},
                        {"type": "number", "minimum": 1, "maximum": 6.3}]},
    "tune": {"enum": sorted({t for ts in TUNES.values() for t in ts})},
    "gop_seconds": {"type": "number", "minimum": 0.1, "maximum": 20},
    "closed_gop": {"type": "boolean", "default": True},
}


def codec_rules(codecs: list[str]) -> list[dict[str, Any]]:
    """Schema rules (``allOf``) tying profile, tune and two-pass to the codec, so a
    workflow asking for ``profile: high`` with ``codec: av1`` is refused when applied."""
    rules: list[dict[str, Any]] = []
    for codec in codecs:
        then: dict[str, Any] = {"properties": {
            "profile": {"enum": PROFILES[codec]},
            "tune": {"enum": TUNES[codec]} if TUNES[codec] else {"not": {}},
        }}
        if codec not in TWO_PASS_CODECS:
            then["properties"]["rate_control"] = {"enum": [r for r in RATE_CONTROLS
                                                           if r != "two_pass"]}
        if codec in ("vp9", "av1"):
            # Their encoders pick the level from size and rate; asking is refused rather
            # than ignored.
            then["properties"]["level"] = {"not": {}}
        rules.append({"if": {"properties": {"codec": {"const": codec}},
                             "required": ["codec"]}, "then": then})
    return rules


def check_rate_control(params: dict[str, Any], *, bitrate_from_rung: bool = False) -> None:
    """Refuse a rate control without the number it needs, in words."""
    mode = params.get("rate_control", "crf")
    if bitrate_from_rung:
        return  # each rung's bitrate is the target
    if mode in ("cbr", "two_pass") and params.get("bitrate") is None:
        raise InvalidParameters(f"rate_control {mode} needs bitrate (e.g. bitrate: 5M)")
    if mode == "capped_crf" and params.get("maxrate") is None \
            and params.get("max_bitrate") is None:
        raise InvalidParameters("rate_control capped_crf needs maxrate (e.g. maxrate: 4M)")


@dataclass(frozen=True)
class Encoding:
    """What a step asked of its video encoder, encoder-independent."""

    rate_control: str = "crf"
    crf: int = 23
    speed: str = "veryfast"
    bitrate: int | None = None
    maxrate: int | None = None
    bufsize: int | None = None
    profile: str | None = None
    level: str | None = None
    tune: str | None = None
    gop_seconds: float | None = None
    closed_gop: bool = True

    def as_data(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def encoding_from(params: dict[str, Any], *, bitrate: int | None = None) -> Encoding:
    """The :class:`Encoding` of validated step parameters; ``bitrate``: a rung's own
    target, used where the step gives none (streaming ladders)."""
    maxrate = parse_bitrate(params.get("maxrate")) or parse_bitrate(params.get("max_bitrate"))
    level = params.get("level")
    mode = params.get("rate_control", "crf")
    target = parse_bitrate(params.get("bitrate")) or bitrate
    if mode == "capped_crf" and maxrate is None:
        maxrate = target
    return Encoding(
        rate_control=mode, crf=int(params.get("crf", 23)),
        speed=params.get("speed") or "veryfast", bitrate=target, maxrate=maxrate,
        bufsize=parse_bitrate(params.get("bufsize")), profile=params.get("profile"),
        level=(f"{float(level):.1f}" if isinstance(level, int | float) else level),
        tune=params.get("tune"), gop_seconds=params.get("gop_seconds"),
        closed_gop=bool(params.get("closed_gop", True)),
    )


@dataclass(frozen=True)
class VideoSettings:
    """Everything set on an encoder stream: AVOptions, the target bit rate, GOP size."""

    options: dict[str, str]
    bit_rate: int | None
    gop: int | None
    pix_fmt: str = "yuv420p"


def video_settings(encoder: str, encoding: Encoding, rate: Fraction, *,
                   pass_number: int = 0, stats: Path | None = None) -> VideoSettings:
    """The settings for ``encoder``; ``pass_number`` 1 or 2 with ``stats`` (a file the
    first pass writes and the second reads) for two-pass encoding."""
    gop = max(1, round(encoding.gop_seconds * rate)) if encoding.gop_seconds else None
    kind = family(encoder)
    if kind == "nvenc":
        return _nvenc(encoding, gop)
    if kind == "qsv":
        return _qsv(encoding, gop)
    builder = {"libx264": _x264, "libx265": _x265, "libsvtav1": _svtav1,
               "libvpx-vp9": _vp9}[encoder]
    return builder(encoding, gop, pass_number, stats)


def _vbv(encoding: Encoding, options: dict[str, str]) -> None:
    """The VBV ceiling: maxrate with a buffer (default twice the ceiling, one for CBR)."""
    mode = encoding.rate_control
    ceiling = encoding.bitrate if mode == "cbr" else encoding.maxrate
    if ceiling:
        options["maxrate"] = str(ceiling)
        default_buffer = ceiling if mode == "cbr" else 2 * ceiling
        options["bufsize"] = str(encoding.bufsize or default_buffer)
    if mode == "cbr" and encoding.bitrate:
        options["minrate"] = str(encoding.bitrate)


def _fixed_gop(options: dict[str, str], gop: int | None) -> None:
    if gop:
        # Keyframes only every ``gop`` frames: none extra at scene cuts.
        options.update({"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"})


def _x264(encoding: Encoding, gop: int | None, pass_number: int,
          stats: Path | None) -> VideoSettings:
    options = {"preset": encoding.speed}
    params: list[str] = list(X264_THREADING)
    mode = encoding.rate_control
    if mode in ("crf", "capped_crf"):
        options["crf"] = str(encoding.crf)
    if mode == "cbr":
        options["nal-hrd"] = "cbr"
    _vbv(encoding, options)
    if encoding.profile:
        options["profile"] = encoding.profile
    if encoding.level:
        options["level"] = encoding.level
    if encoding.tune:
        options["tune"] = encoding.tune
    _fixed_gop(options, gop)
    if not encoding.closed_gop:
        params.append("open-gop=1")
    if pass_number:
        assert stats is not None
        options["stats"] = str(stats)
        params.append(f"pass={pass_number}")
    options["x264-params"] = ":".join(params)
    bit_rate = encoding.bitrate if mode in ("cbr", "two_pass") else encoding.maxrate
    return VideoSettings(options, bit_rate, gop)


def _x265(encoding: Encoding, gop: int | None, pass_number: int,
          stats: Path | None) -> VideoSettings:
    options = {"preset": encoding.speed}
    params = ["log-level=error"]
    mode = encoding.rate_control
    if mode in ("crf", "capped_crf"):
        options["crf"] = str(encoding.crf)
    if mode == "cbr":
        params.append("strict-cbr=1")
    _vbv(encoding, options)
    if encoding.profile:
        options["profile"] = encoding.profile
    if encoding.level:
        params.append(f"level-idc={encoding.level}")
    if encoding.tune:
        options["tune"] = encoding.tune
    if gop:
        params += [f"keyint={gop}", f"min-keyint={gop}", "scenecut=0"]
    params.append("open-gop=0" if encoding.closed_gop else "open-gop=1")
    if pass_number:
        assert stats is not None
        params += [f"pass={pass_number}", f"stats={stats}"]
    options["x265-params"] = ":".join(params)
    bit_rate = encoding.bitrate if mode in ("cbr", "two_pass") else encoding.maxrate
    return VideoSettings(options, bit_rate, gop)


def _svtav1(encoding: Encoding, gop: int | None, pass_number: int,
            stats: Path | None) -> VideoSettings:
    options = {"preset": _SVT_SPEED[encoding.speed]}
    params: list[str] = []
    mode = encoding.rate_control
    bit_rate: int | None = None
    if mode in ("crf", "capped_crf"):
        options["crf"] = str(encoding.crf)
        if encoding.maxrate:
            bit_rate = None
            options["maxrate"] = str(encoding.maxrate)  # capped CRF (SVT's mbr)
    else:  # cbr (two_pass is refused by the schema)
        bit_rate = encoding.bitrate
        params += ["rc=2", "pred-struct=1"]  # SVT-AV1 does CBR in its low-delay structure
    if encoding.tune in _SVT_TUNE:  # a packaging ladder's x264 tune means nothing here
        params.append(f"tune={_SVT_TUNE[encoding.tune]}")
    if gop:
        options["g"] = str(gop)
        params.append("scd=0")
    # Closed GOPs start with a key frame (IDR-like), open ones with a forward key frame.
    params.append("irefresh-type=2" if encoding.closed_gop else "irefresh-type=1")
    options["svtav1-params"] = ":".join(params)
    return VideoSettings(options, bit_rate, gop)


def _vp9(encoding: Encoding, gop: int | None, pass_number: int,
         stats: Path | None) -> VideoSettings:
    options = {"deadline": "good", "cpu-used": "4", "row-mt": "1"}
    mode = encoding.rate_control
    bit_rate: int | None = None
    if mode in ("crf", "capped_crf"):
        options["crf"] = str(encoding.crf)
        bit_rate = encoding.maxrate  # with crf, b is the ceiling (constrained quality)
        options["b"] = str(bit_rate or 0)
    else:
        bit_rate = encoding.bitrate
        options.update({"b": str(bit_rate), "minrate": str(bit_rate),
                        "maxrate": str(bit_rate)})
    if encoding.profile:
        options["profile"] = encoding.profile
    if gop:
        options.update({"g": str(gop), "keyint_min": str(gop)})
    return VideoSettings(options, bit_rate, gop)


def _nvenc(encoding: Encoding, gop: int | None) -> VideoSettings:
    mode = encoding.rate_control
    options = {"preset": "p4"}
    bit_rate: int | None = None
    if mode in ("crf", "capped_crf"):
        options.update({"rc": "vbr", "cq": str(encoding.crf)})
        bit_rate = encoding.maxrate
    elif mode == "cbr":
        options["rc"] = "cbr"
        bit_rate = encoding.bitrate
    else:  # NVENC's two passes run inside one encode, per frame
        options.update({"rc": "vbr", "multipass": "fullres"})
        bit_rate = encoding.bitrate
    _vbv(encoding, options)
    if encoding.profile:
        options["profile"] = encoding.profile
    if encoding.level:
        options["level"] = encoding.level
    if gop:
        options.update({"g": str(gop), "no-scenecut": "1", "strict_gop": "1"})
    if encoding.closed_gop:
        options["forced-idr"] = "1"
    return VideoSettings(options, bit_rate, gop)


def _qsv(encoding: Encoding, gop: int | None) -> VideoSettings:
    mode = encoding.rate_control
    options = {"preset": "medium"}
    bit_rate: int | None = None
    if mode in ("crf", "capped_crf"):
        options["global_quality"] = str(encoding.crf)  # ICQ: constant quality
        bit_rate = encoding.maxrate
    else:
        bit_rate = encoding.bitrate
    _vbv(encoding, options)
    if encoding.profile:
        options["profile"] = encoding.profile
    if encoding.level:
        options["level"] = encoding.level.replace(".", "")
    if gop:
        options["g"] = str(gop)
    # Quick Sync takes NV12 (the same 4:2:0 samples, chroma interleaved).
    return VideoSettings(options, bit_rate, gop, pix_fmt="nv12")


def encoding_prepare(properties: dict[str, Any], *,
                     bitrate_from_rung: bool = False) -> Callable[[dict[str, Any], bool],
                                                                  dict[str, Any]]:
    """The ``prepare`` hook of an action taking these settings: its named preset expanded
    (the keys the action takes), then the rate control checked once a job's parameters
    are all there."""
    accepted = set(properties) - {"preset"}

    def prepare(params: dict[str, Any], partial: bool) -> dict[str, Any]:
        params = expand_preset(params, accepted)
        if not partial:
            check_rate_control(params, bitrate_from_rung=bitrate_from_rung)
        return params

    return prepare


PRESET_SCHEMA: dict[str, Any] = {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,64}$"}
