"""Rendition planning for ``transcode_video``: the step's parameters (size, codec,
encoder options, colour, audio) turned into a :class:`Rendition`, before anything is
decoded; also its two-pass first pass and the settings per-title trials encode with.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from mediaq.actions.avio import BITRATE_SCHEMA, MediaInfo, VideoInfo, parse_bitrate
from mediaq.actions.base import ActionContext
from mediaq.actions.color import COLOR_SCHEMA, SDR, ColorPlan, plan_color, with_hdr10
from mediaq.actions.encoder_options import (
    ENCODING_PROPERTIES,
    PRESET_SCHEMA,
    Encoding,
    VideoSettings,
    codec_rules,
    encoding_from,
    video_settings,
)
from mediaq.actions.hardware import EncoderChoice, decide_video_encoder
from mediaq.actions.pertitle import LADDER_SCHEMA, SettingsFor
from mediaq.actions.quality import QUALITY_SCHEMA
from mediaq.actions.tracks import TRACK_SCHEMA
from mediaq.actions.tracks.languages import ChosenTrack, choose_tracks, tracks_in

NAMED_RESOLUTIONS = {"2160p": 2160, "1440p": 1440, "1080p": 1080, "720p": 720, "540p": 540,
                     "480p": 480, "360p": 360, "240p": 240, "144p": 144}
CONTAINER_OF = {"h264": "mp4", "hevc": "mp4", "av1": "mp4", "vp9": "webm"}
AUDIO_CODEC_OF = {"mp4": "aac", "webm": "libopus", "mkv": "aac"}
# The FFmpeg muxer writing each container (the file suffix is the container's name).
MUXER_OF = {"mp4": "mp4", "webm": "webm", "mkv": "matroska"}

TRANSCODE_SCHEMA: dict[str, Any] = {
    "properties": {
        "resolution": {"type": "string", "pattern": r"^(\d{3,4}p|\d{2,5}x\d{2,5}|source)$",
                       "default": "720p"},
        "codec": {"enum": ["h264", "hevc", "vp9", "av1"], "default": "h264"},
        "crf": {"type": "integer", "minimum": 0, "maximum": 63, "default": 23},
        # A named encoding preset (presets/encoding.yaml), or an encoder speed as before.
        "preset": PRESET_SCHEMA,
        **ENCODING_PROPERTIES,
        "max_bitrate": BITRATE_SCHEMA,
        "fps": {"type": "number", "exclusiveMinimum": 0, "maximum": 240},
        "upscale": {"type": "boolean", "default": False},
        "audio_codec": {"enum": ["aac", "opus", "none", "auto"], "default": "auto"},
        # auto: MP4 (WebM for vp9); mkv: Matroska, which also carries PGS and DVB
        # subtitles (subtitles: keep).
        "container": {"enum": ["auto", "mkv"], "default": "auto"},
        "audio_bitrate": {**BITRATE_SCHEMA, "default": "128k"},
        "hardware": {"enum": ["auto", "never", "require", "nvenc", "qsv"], "default": "auto"},
        "name": {"type": "string", "pattern": r"^[A-Za-z0-9_.-]{1,64}$"},
        **COLOR_SCHEMA,  # tone_map, hdr: see actions/color.py
        **QUALITY_SCHEMA,  # measure_quality, min_ssim, min_psnr: actions/quality.py
        **LADDER_SCHEMA,  # ladder: auto, target_ssim: actions/pertitle.py
        **TRACK_SCHEMA,  # audio_languages, subtitles, subtitle_languages: actions/tracks
    },
    "allOf": codec_rules(["h264", "hevc", "vp9", "av1"]),
}


@dataclass(frozen=True)
class Rendition:
    """One output of a transcode: what to encode and where."""

    width: int
    height: int
    codec: str
    encoder: str
    settings: VideoSettings
    first_pass: VideoSettings | None  # two-pass: what the first pass encodes with
    audio_codec: str | None
    audio_bitrate: int | None
    container: str
    filename: str
    label: str
    choice: EncoderChoice
    encoding: Encoding
    color: ColorPlan = SDR
    # The source's audio tracks encoded, in output order (audio_languages).
    audio_tracks: tuple[ChosenTrack, ...] = ()
    subtitles: str = "drop"  # keep | extract | burn | drop
    subtitle_tracks: tuple[ChosenTrack, ...] = ()
    missing_languages: tuple[str, ...] = ()  # asked for, not in the source


def parse_resolution(text: str, source: VideoInfo, *, upscale: bool) -> tuple[int, int]:
    """Output size keeping the aspect ratio; ``720p`` sets the short side."""
    src_w, src_h = source.display_width, source.display_height
    if text == "source":
        return _even(src_w), _even(src_h)
    if text.endswith("p"):
        short = int(text[:-1])
        if not upscale:
            short = min(short, min(src_w, src_h))
        scale = short / min(src_w, src_h)
    else:
        box_w, box_h = (int(v) for v in text.split("x"))
        scale = min(box_w / src_w, box_h / src_h)
        if not upscale:
            scale = min(scale, 1.0)
    return _even(round(src_w * scale)), _even(round(src_h * scale))


def _even(value: float) -> int:
    return max(2, int(value) // 2 * 2)


def plan_rendition(ctx: ActionContext, params: dict[str, Any], info: MediaInfo,
                   stats: Path | None = None) -> Rendition:
    """What to encode for one step; ``stats``: where a two-pass encode keeps its log."""
    assert info.video is not None
    width, height = parse_resolution(params["resolution"], info.video, upscale=params["upscale"])
    codec = params["codec"]
    color = plan_color(params, info, codec, ctx.source_path)
    # HDR10 metadata is written by libx265 / libsvtav1: keeping HDR encodes in software.
    choice = decide_video_encoder(codec, "never" if color.mode == "keep" else params["hardware"],
                                  ctx)
    encoder = choice.encoder
    encoding = encoding_from(params)
    rate = _output_rate(info.video, params.get("fps"))
    two_pass = encoding.rate_control == "two_pass" and not choice.hardware
    container = CONTAINER_OF[codec] if params.get("container", "auto") == "auto" else "mkv"
    audio_codec = _audio_codec_for(params["audio_codec"], container, info)
    audio_tracks, subtitle_tracks, missing = plan_tracks(ctx, params, info)
    # Named after the rung asked for, so a small source still gets one file per step.
    label = params.get("name") or params["resolution"]
    return Rendition(
        width=width, height=height, codec=codec, encoder=encoder,
        settings=_with_color(encoder, color, video_settings(
            encoder, encoding, rate, pass_number=2 if two_pass else 0, stats=stats)),
        first_pass=(video_settings(encoder, encoding, rate, pass_number=1, stats=stats)
                    if two_pass else None),
        audio_codec=audio_codec,
        audio_bitrate=parse_bitrate(params["audio_bitrate"]) if audio_codec else None,
        container=container, filename=f"{ctx.source_path.stem}_{label}.{container}", label=label,
        choice=choice, encoding=encoding, color=color,
        audio_tracks=tuple(audio_tracks) if audio_codec else (),
        subtitles=params["subtitles"] if subtitle_tracks else "drop",
        subtitle_tracks=tuple(subtitle_tracks), missing_languages=tuple(missing),
    )


def plan_tracks(ctx: ActionContext, params: dict[str, Any], info: MediaInfo
                ) -> tuple[list[ChosenTrack], list[ChosenTrack], list[str]]:
    """The audio tracks (``audio_languages``, else the first), the subtitle tracks
    (``subtitle_languages``, else all; burn draws the first) and the languages asked for
    that the source lacks."""
    source = ctx.source_path
    audio = tracks_in(info.streams, "audio")
    asked = params.get("audio_languages")
    chosen, missing = choose_tracks(source, "audio", audio, asked)
    if not asked:
        chosen = audio[:1]
    subtitles: list[ChosenTrack] = []
    if params.get("subtitles", "drop") != "drop":
        subtitles, lacking = choose_tracks(source, "subtitle", tracks_in(info.streams,
                                                                         "subtitle"),
                                           params.get("subtitle_languages"))
        missing += lacking
        if params["subtitles"] == "burn":
            subtitles = subtitles[:1]
    return chosen, subtitles, missing


def _with_color(encoder: str, color: ColorPlan, settings: VideoSettings) -> VideoSettings:
    """``hdr: keep``: 10-bit, with the encoder's HDR10 parameters (actions/color.py)."""
    if color.mode != "keep":
        return settings
    return dataclasses.replace(settings, options=with_hdr10(encoder, settings.options, color),
                               pix_fmt=color.pix_fmt)


def _audio_codec_for(asked: str, container: str, info: MediaInfo) -> str | None:
    if asked == "none" or info.audio is None:
        return None
    if asked == "auto":
        return AUDIO_CODEC_OF[container]
    return {"aac": "aac", "opus": "libopus"}[asked]


def _settings_at(r: Rendition, info: MediaInfo) -> SettingsFor:
    """The rendition's encoder options and bit rate at another CRF (per-title trials)."""
    assert info.video is not None
    rate = _output_rate(info.video, None)

    def at(crf: int) -> tuple[dict[str, str], int | None]:
        encoding = dataclasses.replace(r.encoding, crf=crf)
        settings = _with_color(r.encoder, r.color, video_settings(r.encoder, encoding, rate))
        return settings.options, settings.bit_rate
    return at


def first_pass(rendition: Rendition, path: Path) -> tuple[Rendition, Path]:
    """The first pass of a two-pass rendition: video only, to a throwaway file."""
    assert rendition.first_pass is not None
    return (dataclasses.replace(rendition, settings=rendition.first_pass, audio_codec=None),
            path.with_suffix(".pass1" + path.suffix))


def _output_rate(video: VideoInfo, asked: float | None) -> Fraction:
    rate = Fraction(asked).limit_denominator(1001) if asked else Fraction(video.fps or 25)
    return rate.limit_denominator(1001)


def _describe_rendition(rendition: Rendition, path: Path) -> dict[str, Any]:
    return {"format": rendition.container, "width": rendition.width, "height": rendition.height,
            "codec": rendition.codec, "rendition": rendition.label}
