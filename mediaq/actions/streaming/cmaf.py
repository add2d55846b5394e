"""``package_cmaf``: one encode, packaged as HLS and MPEG-DASH over shared fMP4 segments.

The source is decoded once (:mod:`.cmaf_encode`); every rung in every codec asked for
(H.264, HEVC, AV1) and every audio rung (each bit rate, each language) becomes one CMAF
track. A master playlist and an MPD are written over the same init and media segments.
Optional protection (:mod:`.protect`): HLS AES-128 with rotating keys at ``key_uri``,
DASH Common Encryption with a ClearKey licence; each format then gets its own copies.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from fractions import Fraction
from typing import Any

from mediaq.actions import action
from mediaq.actions.avio import BITRATE_SCHEMA, parse_bitrate, writing
from mediaq.actions.base import ActionContext, ActionResult, OutputFile
from mediaq.actions.clip import HARDWARE_SCHEMA, inspect_clip, remove_quietly, safe_stem
from mediaq.actions.encoder_options import PRESET_SCHEMA, SPEEDS, TUNES, encoding_prepare
from mediaq.actions.streaming.cmaf_encode import (
    CmafEncoder,
    CmafTrack,
    audio_ladder,
    source_audio_languages,
)
from mediaq.actions.streaming.dash import _iso_duration, _rate_text, _segment_template
from mediaq.actions.streaming.ladder import RENDITION_SCHEMA, plan_ladder
from mediaq.actions.streaming.protect import (
    CLEARKEY_SYSTEM,
    ClearKey,
    aes128_encrypt_segments,
    cenc_copy,
    hls_media_playlist,
    make_hls_keys,
    new_clear_key,
)
from mediaq.actions.streaming.segmenter import TrackFiles, track_summary

CMAF_SCHEMA: dict[str, Any] = {
    "properties": {
        "renditions": {"type": "array", "items": RENDITION_SCHEMA, "minItems": 1,
                       "maxItems": 8, "default": ["720p", "480p", "360p"]},
        "codecs": {"type": "array", "items": {"enum": ["h264", "hevc", "av1"]},
                   "minItems": 1, "uniqueItems": True, "default": ["h264"]},
        "segment_seconds": {"type": "integer", "minimum": 1, "maximum": 30, "default": 4},
        "preset": PRESET_SCHEMA,
        "speed": {"enum": SPEEDS, "default": "veryfast"},
        "crf": {"type": "integer", "minimum": 0, "maximum": 51, "default": 23},
        # Each rung's bit rate is the target (cbr) or the ceiling (capped_crf).
        "rate_control": {"enum": ["capped_crf", "cbr"], "default": "capped_crf"},
        "tune": {"enum": sorted(set(TUNES["h264"]) & set(TUNES["hevc"]))},
        "audio": {"type": "boolean", "default": True},
        "audio_bitrates": {"type": "array", "items": BITRATE_SCHEMA, "minItems": 1,
                           "maxItems": 4, "default": ["128k", "64k"]},
        "audio_languages": {"type": "array", "minItems": 1, "uniqueItems": True,
                            "items": {"type": "string", "pattern": r"^[a-z]{2,3}$"}},
        "hls_encryption": {"enum": ["none", "aes-128"], "default": "none"},
        "key_rotation_segments": {"type": "integer", "minimum": 0, "maximum": 10_000,
                                  "default": 0},
        "key_uri": {"type": "string", "maxLength": 1000, "default": ""},
        "dash_encryption": {"enum": ["none", "clearkey"], "default": "none"},
        "hardware": {**HARDWARE_SCHEMA, "enum": ["auto", "never", "require", "nvenc", "qsv"]},
    },
}


@action("package_cmaf", CMAF_SCHEMA,
        prepare=encoding_prepare(CMAF_SCHEMA["properties"], bitrate_from_rung=True))
def package_cmaf(ctx: ActionContext) -> ActionResult:
    """Package the source once as CMAF: HLS and DASH over the same fMP4 segments."""
    params = ctx.params
    clip = inspect_clip(ctx.source_path)
    rungs = plan_ladder(params["renditions"], clip)
    stem = safe_stem(ctx.source_path)
    prefix = f"{stem}_cmaf_"
    audio = []
    if params["audio"]:
        bitrates = [parse_bitrate(b) or 128_000 for b in params["audio_bitrates"]]
        audio = audio_ladder(ctx, source_audio_languages(clip), params.get("audio_languages"),
                             bitrates)
    encoder = CmafEncoder(ctx, clip, rungs, params["codecs"], audio, prefix)
    tracks = encoder.run()
    seconds = params["segment_seconds"]
    outputs: list[OutputFile] = []
    try:
        hls_files, master = _write_hls(ctx, tracks, clip.rate, prefix, stem)
        dash_files, mpd, clear_key = _write_dash(ctx, tracks, clip, prefix, stem)
    except BaseException:
        remove_quietly(sorted(ctx.staging_dir.glob(f"{stem}*")))
        raise
    shared = hls_files & dash_files
    outputs.append(OutputFile(master, role="rendition", meta={"format": "hls"}))
    outputs.append(OutputFile(mpd, role="rendition", meta={"format": "dash"}))
    for path in sorted((hls_files | dash_files) - {master, mpd}):
        kind = ("key" if path.suffix == ".key" else "licence" if path.suffix == ".json"
                else "playlist" if path.suffix == ".m3u8" else "init"
                if path.name.endswith("_init.mp4") else "segment")
        outputs.append(OutputFile(path, role="sidecar", meta={"kind": kind,
                                                              "shared": path in shared}))
    videos = [t for t in tracks if t.kind == "video"]
    data = {
        "master": master.name, "manifest": mpd.name, "segment_seconds": seconds,
        "duration": round(videos[0].files.duration, 3), "fps": float(clip.rate),
        "renditions": [{**track_summary(t.files), "codec": t.codec, "encoder": t.encoder}
                       for t in videos],
        "audio": [{**track_summary(t.files), "language": t.language, "bitrate": t.bitrate}
                  for t in tracks if t.kind == "audio"],
        "shared_segments": sum(1 for p in shared if p.suffix == ".m4s"),
        "hls_encryption": params["hls_encryption"],
        "dash_encryption": params["dash_encryption"],
        "clearkey_kid": clear_key.kid.hex() if clear_key else None,
        "hardware_decision": {codec: choice.as_data()
                              for codec, choice in encoder.choices.items()},
    }
    for path in sorted({t.files.init for t in tracks} | {p for t in tracks
                                                         for p, _ in t.files.segments}):
        if path not in hls_files and path not in dash_files:
            path.unlink(missing_ok=True)  # clear copies that both formats encrypted
    return ActionResult(outputs=outputs, data=data)


# --------------------------------------------------------------------------- HLS


def peak_bps(files: TrackFiles) -> int:
    """The peak segment bit rate, leaving out a last segment much shorter than the others
    (the audio's tail of a few milliseconds would otherwise double an audio rung's)."""
    full = files.segments[:-1] if len(files.segments) > 1 else files.segments
    longest = max(seconds for _, seconds in files.segments)
    last_seconds = files.segments[-1][1]
    if last_seconds >= longest / 2:
        full = files.segments
    return max(round(p.stat().st_size * 8 / max(s, 1e-3)) for p, s in full)


def _write_hls(ctx: ActionContext, tracks: list[CmafTrack], rate: Fraction, prefix: str,
               stem: str) -> tuple[set[Any], Any]:
    """Media playlists (clear, or over AES-128 copies) and the master; the files HLS uses."""
    params = ctx.params
    rotation = params["key_rotation_segments"]
    used: set[Any] = set()
    keys = None
    if params["hls_encryption"] == "aes-128":
        most = max(len(t.files.segments) for t in tracks)
        keys = make_hls_keys(ctx, prefix, most, rotation, params["key_uri"])
        used |= {k.path for k in keys}
    for track in tracks:
        segments = track.files.segments
        if keys:
            segments = aes128_encrypt_segments(track.files, keys, rotation)
        with writing(track.files.playlist):
            track.files.playlist.write_text(hls_media_playlist(track.files, segments, keys,
                                                               rotation))
        used |= {track.files.playlist, track.files.init} | {p for p, _ in segments}
    master = ctx.output_path(f"{stem}.m3u8")
    with writing(master):
        master.write_text(hls_master(tracks, rate))
    used.add(master)
    return used, master


def hls_master(tracks: list[CmafTrack], rate: Fraction) -> str:
    """One variant per video track and audio bit rate (an audio group each, holding
    every language); BANDWIDTH is the peak segment bit rate, video plus audio."""
    audio = [t for t in tracks if t.kind == "audio"]
    groups: dict[int, list[CmafTrack]] = {}
    for track in audio:
        groups.setdefault(track.bitrate or 0, []).append(track)
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for bitrate, members in groups.items():
        for n, track in enumerate(members):
            default = "YES" if n == 0 else "NO"
            lines.append(
                f'#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio_{bitrate // 1000}k",'
                f'NAME="{track.language} {bitrate // 1000}k",LANGUAGE="{track.language}",'
                f'DEFAULT={default},AUTOSELECT=YES,CHANNELS="{track.files.channels}",'
                f'URI="{track.files.playlist.name}"')
    for track in (t for t in tracks if t.kind == "video"):
        files = track.files
        assert files.rung is not None
        for bitrate, members in (groups.items() or [(0, [])]):
            peak = peak_bps(files) + max((peak_bps(m.files) for m in members), default=0)
            average = files.average_bps + max((m.files.average_bps for m in members),
                                              default=0)
            codecs = files.codec + (f",{members[0].files.codec}" if members else "")
            attributes = (f"BANDWIDTH={peak},AVERAGE-BANDWIDTH={average},"
                          f"RESOLUTION={files.rung.width}x{files.rung.height},"
                          f'FRAME-RATE={float(rate):.3f},CODECS="{codecs}"')
            if members:
                attributes += f',AUDIO="audio_{bitrate // 1000}k"'
            lines += [f"#EXT-X-STREAM-INF:{attributes}", files.playlist.name]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- DASH


def _write_dash(ctx: ActionContext, tracks: list[CmafTrack], clip: Any, prefix: str,
                stem: str) -> tuple[set[Any], Any, ClearKey | None]:
    seconds = ctx.params["segment_seconds"]
    key: ClearKey | None = None
    files = [t.files for t in tracks]
    used: set[Any] = set()
    if ctx.params["dash_encryption"] == "clearkey":
        key = new_clear_key()
        files = [cenc_copy(ctx, f, key, seconds, prefix) for f in files]
        licence = ctx.output_path(f"{stem}_clearkey.json")
        with writing(licence):
            licence.write_text(key.licence())
        used.add(licence)
    mpd = ctx.output_path(f"{stem}.mpd")
    with writing(mpd):
        mpd.write_text(cmaf_mpd(tracks, files, clip, seconds, key))
    used.add(mpd)
    for f in files:
        used |= {f.init} | {p for p, _ in f.segments}
    return used, mpd, key


def cmaf_mpd(tracks: list[CmafTrack], files: list[TrackFiles], clip: Any, seconds: int,
             key: ClearKey | None) -> str:
    """A static MPD: one video adaptation set per codec, one audio set per language,
    each representation a SegmentTemplate with an explicit SegmentTimeline."""
    duration = max(f.start + f.duration for f in files)
    root = ET.Element("MPD", {
        "xmlns": "urn:mpeg:dash:schema:mpd:2011", "type": "static",
        "profiles": "urn:mpeg:dash:profile:isoff-live:2011,urn:mpeg:dash:profile:cmaf:2019",
        "mediaPresentationDuration": _iso_duration(duration),
        "minBufferTime": _iso_duration(seconds),
    })
    if key is not None:
        root.set("xmlns:cenc", "urn:mpeg:cenc:2013")
    period = ET.SubElement(root, "Period", {"id": "0", "start": "PT0S"})
    pairs = list(zip(tracks, files, strict=True))
    set_id = 0
    for codec in dict.fromkeys(t.codec for t in tracks if t.kind == "video"):
        members = [(t, f) for t, f in pairs if t.kind == "video" and t.codec == codec]
        rungs = [f.rung for _, f in members if f.rung is not None]
        adaptation = ET.SubElement(period, "AdaptationSet", {
            "id": str(set_id), "contentType": "video", "mimeType": "video/mp4",
            "segmentAlignment": "true", "startWithSAP": "1",
            "par": f"{clip.aspect.numerator}:{clip.aspect.denominator}",
            "maxWidth": str(max(r.width for r in rungs)),
            "maxHeight": str(max(r.height for r in rungs)),
            "frameRate": _rate_text(clip.rate),
        })
        set_id += 1
        _protection(adaptation, key)
        for _, f in members:
            assert f.rung is not None
            rep = ET.SubElement(adaptation, "Representation", {
                "id": f.label, "codecs": f.codec, "bandwidth": str(peak_bps(f)),
                "width": str(f.rung.width), "height": str(f.rung.height),
                "sar": f"{f.rung.sar.numerator}:{f.rung.sar.denominator}",
            })
            _segment_template(rep, f, timescale=90_000)
    for language in dict.fromkeys(t.language for t in tracks if t.kind == "audio"):
        members = [(t, f) for t, f in pairs if t.kind == "audio" and t.language == language]
        adaptation = ET.SubElement(period, "AdaptationSet", {
            "id": str(set_id), "contentType": "audio", "mimeType": "audio/mp4",
            "lang": language or "und", "segmentAlignment": "true", "startWithSAP": "1",
        })
        set_id += 1
        _protection(adaptation, key)
        ET.SubElement(adaptation, "Role", {"schemeIdUri": "urn:mpeg:dash:role:2011",
                                           "value": "main"})
        for _, f in members:
            rep = ET.SubElement(adaptation, "Representation", {
                "id": f.label, "codecs": f.codec, "bandwidth": str(peak_bps(f)),
                "audioSamplingRate": str(f.sample_rate),
            })
            ET.SubElement(rep, "AudioChannelConfiguration", {
                "schemeIdUri": "urn:mpeg:dash:23003:3:audio_channel_configuration:2011",
                "value": str(f.channels)})
            _segment_template(rep, f, timescale=f.sample_rate)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, "unicode") + "\n"


def _protection(adaptation: ET.Element, key: ClearKey | None) -> None:
    if key is None:
        return
    ET.SubElement(adaptation, "ContentProtection", {
        "schemeIdUri": "urn:mpeg:dash:mp4protection:2011", "value": "cenc",
        "cenc:default_KID": key.kid_uuid})
    ET.SubElement(adaptation, "ContentProtection", {
        "schemeIdUri": f"urn:uuid:{CLEARKEY_SYSTEM}", "value": "ClearKey1.0"})
