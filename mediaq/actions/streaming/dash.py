"""``package_dash``: an fMP4 rendition ladder and an MPD.

The MPD is written here from the segments the hls muxer produced: the dash muxer
cannot see the sample aspect ratio PyAV gives each rung, so it refuses a ladder whose
even-rounded sizes differ in shape by a pixel (e.g. 426x240 beside 640x360).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from fractions import Fraction

from mediaq.actions import action
from mediaq.actions.avio import writing
from mediaq.actions.base import ActionContext, ActionResult, OutputFile
from mediaq.actions.clip import SourceClip, remove_quietly, safe_stem
from mediaq.actions.streaming.ladder import PACKAGE_SCHEMA, prepare_package
from mediaq.actions.streaming.segmenter import (
    TrackFiles,
    package_start,
    segment_ladder,
    track_outputs,
    track_summary,
)
from mediaq.actions.tracks.languages import UNDETERMINED, language_name
from mediaq.actions.tracks.packaged import (
    PackagedSubtitles,
    package_subtitles,
    subtitle_outputs,
)


@action("package_dash", PACKAGE_SCHEMA, prepare=prepare_package)
def package_dash(ctx: ActionContext) -> ActionResult:
    """Package the source as MPEG-DASH: an fMP4 rendition ladder and an MPD."""
    clip, tracks, decision = segment_ladder(ctx, "dash")
    stem = safe_stem(ctx.source_path)
    subtitles = package_subtitles(ctx, f"{stem}_dash_", package_start(clip, tracks),
                                  max(t.start + t.duration for t in tracks))
    mpd = ctx.output_path(f"{stem}.mpd")
    with writing(mpd):
        mpd.write_text(dash_manifest(tracks, clip, ctx.params["segment_seconds"], subtitles))
    remove_quietly([t.playlist for t in tracks])  # only the segmenter's bookkeeping
    outputs = [OutputFile(mpd, role="rendition", meta={
        "format": "dash", "renditions": sum(1 for t in tracks if t.rung is not None),
        "duration": round(tracks[0].duration, 3)})]
    for track in tracks:
        outputs.extend(track_outputs(track, keep_playlist=False))
    outputs.extend(subtitle_outputs(subtitles, keep_playlist=False))
    return ActionResult(outputs=outputs, data={
        "manifest": mpd.name, "segment_seconds": ctx.params["segment_seconds"],
        "duration": round(tracks[0].duration, 3), "fps": float(clip.rate),
        "renditions": [track_summary(t) for t in tracks if t.rung is not None],
        "audio": next((track_summary(t) for t in tracks if t.rung is None), None),
        "audio_tracks": [{**track_summary(t), "language": t.language}
                         for t in tracks if t.rung is None],
        "subtitles": [{"language": s.language, "file": s.vtt.name, "cues": s.cues}
                      for s in subtitles],
        "hardware_decision": decision,
    })


def dash_manifest(tracks: list[TrackFiles], clip: SourceClip, seconds: int,
                  subtitles: list[PackagedSubtitles] | None = None) -> str:
    """A static MPD: the video rungs in one adaptation set, each audio track in its own
    (``lang``), each representation a SegmentTemplate with an explicit SegmentTimeline;
    each subtitle track a ``text/vtt`` set of one file."""
    # Each track starts where its first tfdt says (an offset between the source's audio and
    # video is kept), so the presentation lasts until the last track's end.
    duration = max(t.start + t.duration for t in tracks)
    mpd = ET.Element("MPD", {
        "xmlns": "urn:mpeg:dash:schema:mpd:2011", "type": "static",
        "profiles": "urn:mpeg:dash:profile:isoff-live:2011",
        "mediaPresentationDuration": _iso_duration(duration),
        "minBufferTime": _iso_duration(seconds),
    })
    period = ET.SubElement(mpd, "Period", {"id": "0", "start": "PT0S"})
    videos = [t for t in tracks if t.rung is not None]
    video_set = ET.SubElement(period, "AdaptationSet", {
        "id": "0", "contentType": "video", "mimeType": "video/mp4",
        "segmentAlignment": "true", "startWithSAP": "1",
        "par": f"{clip.aspect.numerator}:{clip.aspect.denominator}",
        "maxWidth": str(max(t.rung.width for t in videos if t.rung)),
        "maxHeight": str(max(t.rung.height for t in videos if t.rung)),
        "frameRate": _rate_text(clip.rate),
    })
    for track in videos:
        assert track.rung is not None
        rep = ET.SubElement(video_set, "Representation", {
            "id": track.label, "codecs": track.codec, "bandwidth": str(track.peak_bps),
            "width": str(track.rung.width), "height": str(track.rung.height),
            "sar": f"{track.rung.sar.numerator}:{track.rung.sar.denominator}",
        })
        _segment_template(rep, track, timescale=90_000)
    # One adaptation set per audio track (a language each), the first the main one.
    for n, track in enumerate(t for t in tracks if t.rung is None):
        attributes = {"id": str(n + 1), "contentType": "audio", "mimeType": "audio/mp4",
                      "segmentAlignment": "true", "startWithSAP": "1"}
        if track.language and track.language != UNDETERMINED:
            attributes["lang"] = track.language
        audio_set = ET.SubElement(period, "AdaptationSet", attributes)
        if track.language and track.language != UNDETERMINED:
            ET.SubElement(audio_set, "Label").text = language_name(track.language)
        ET.SubElement(audio_set, "Role", {"schemeIdUri": "urn:mpeg:dash:role:2011",
                                          "value": "main" if n == 0 else "alternate"})
        rep = ET.SubElement(audio_set, "Representation", {
            "id": track.label, "codecs": track.codec, "bandwidth": str(track.peak_bps),
            "audioSamplingRate": str(track.sample_rate),
        })
        ET.SubElement(rep, "AudioChannelConfiguration", {
            "schemeIdUri": "urn:mpeg:dash:23003:3:audio_channel_configuration:2011",
            "value": str(track.channels)})
        _segment_template(rep, track, timescale=track.sample_rate)
    set_id = 1 + sum(1 for t in tracks if t.rung is None)
    for n, sub in enumerate(subtitles or []):
        text_set = ET.SubElement(period, "AdaptationSet", {
            "id": str(set_id + n), "contentType": "text", "mimeType": "text/vtt",
            "lang": sub.language})
        ET.SubElement(text_set, "Label").text = language_name(sub.language, "subtitles")
        ET.SubElement(text_set, "Role", {"schemeIdUri": "urn:mpeg:dash:role:2011",
                                         "value": "subtitle"})
        rep = ET.SubElement(text_set, "Representation", {
            "id": sub.vtt.stem.rsplit("_dash_", 1)[-1], "bandwidth": "256"})
        ET.SubElement(rep, "BaseURL").text = sub.vtt.name
    ET.indent(mpd)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(mpd, "unicode") + "\n"


def _segment_template(rep: ET.Element, track: TrackFiles, *, timescale: int) -> None:
    stem = track.init.name.removesuffix("_init.mp4")
    template = ET.SubElement(rep, "SegmentTemplate", {
        "timescale": str(timescale), "initialization": track.init.name,
        "media": f"{stem}_$Number%05d$.m4s", "startNumber": "1",
    })
    timeline = ET.SubElement(template, "SegmentTimeline")
    for start, length, repeat in _timeline_runs([s for _, s in track.segments], timescale,
                                                start=track.start):
        attributes = {"d": str(length)}
        if start is not None:
            attributes = {"t": str(start), **attributes}
        if repeat:
            attributes["r"] = str(repeat)
        ET.SubElement(timeline, "S", attributes)


def _timeline_runs(durations: list[float], timescale: int,
                   start: float = 0.0) -> list[tuple[int | None, int, int]]:
    """(start or None, duration, repeats) runs from ``start`` seconds (the first segment's
    tfdt); ends are rounded from the running total so the timeline never drifts from the
    media."""
    runs: list[tuple[int | None, int, int]] = []
    elapsed = start
    first = previous_end = round(start * timescale)
    for seconds in durations:
        elapsed += seconds
        end = round(elapsed * timescale)
        length = end - previous_end
        if runs and runs[-1][1] == length:
            at, _, repeat = runs[-1]
            runs[-1] = (at, length, repeat + 1)
        else:
            runs.append((first if not runs else None, length, 0))
        previous_end = end
    return runs


def _iso_duration(seconds: float) -> str:
    return f"PT{seconds:.3f}S"


def _rate_text(rate: Fraction) -> str:
    return str(rate.numerator) if rate.denominator == 1 else f"{rate.numerator}/{rate.denominator}"
