"""Rendition ladders: the rungs asked for, fitted to the source, and where segments start."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from mediaq.actions.avio import BITRATE_SCHEMA, parse_bitrate
from mediaq.actions.clip import (
    DEFAULT_BITS_PER_PIXEL_SECOND,
    HARDWARE_SCHEMA,
    NAMED_RUNGS,
    SourceClip,
    even,
    fit_inside,
)
from mediaq.actions.encoder_options import (
    ENCODING_PROPERTIES,
    PRESET_SCHEMA,
    PROFILES,
    SPEEDS,
    TUNES,
    encoding_prepare,
)
from mediaq.actions.pertitle import LADDER_SCHEMA
from mediaq.actions.tracks import TRACK_SCHEMA

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
        # A named encoding preset (presets/encoding.yaml), or an encoder speed as before.
        "preset": PRESET_SCHEMA,
        "speed": {"enum": SPEEDS, "default": "veryfast"},
        # Each rung's bit rate is the ceiling (capped_crf) or the target (cbr).
        "rate_control": {"enum": ["capped_crf", "cbr"], "default": "capped_crf"},
        "profile": {"enum": PROFILES["h264"]},
        "level": ENCODING_PROPERTIES["level"],
        "tune": {"enum": TUNES["h264"]},
        "audio": {"type": "boolean", "default": True},
        "audio_bitrate": {**BITRATE_SCHEMA, "default": "128k"},
        # One audio rendition per track of these languages, in this order (the first is
        # the default); absent: the source's first audio track only.
        "audio_languages": TRACK_SCHEMA["audio_languages"],
        # keep: each text subtitle track as a WebVTT rendition (HLS SUBTITLES group, DASH
        # text/vtt adaptation set); drop: none.
        "subtitles": {"enum": ["keep", "drop"], "default": "drop"},
        "subtitle_languages": TRACK_SCHEMA["subtitle_languages"],
        "hardware": HARDWARE_SCHEMA,
        **LADDER_SCHEMA,  # ladder: auto, target_ssim: each rung's CRF (actions/pertitle.py)
    },
}

# Named presets expand into these; the rate control's number is each rung's bit rate.
prepare_package = encoding_prepare(PACKAGE_SCHEMA["properties"], bitrate_from_rung=True)


@dataclass(frozen=True)
class Rung:
    """One rendition of a ladder."""

    label: str
    width: int
    height: int
    max_bitrate: int
    sar: Fraction  # makes width x height show at the source's display aspect
    crf: int | None = None  # ladder: auto: this rung's own CRF (else the step's)
    per_title: dict[str, Any] | None = None  # what the probe chose it from


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

