"""``package_hls``: an fMP4 rendition ladder and a master playlist."""

from __future__ import annotations

from fractions import Fraction

from mediaq.actions import action
from mediaq.actions.avio import writing
from mediaq.actions.base import ActionContext, ActionResult, OutputFile
from mediaq.actions.clip import safe_stem
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


@action("package_hls", PACKAGE_SCHEMA, prepare=prepare_package)
def package_hls(ctx: ActionContext) -> ActionResult:
    """Package the source as HLS: an fMP4 rendition ladder and a master playlist."""
    clip, tracks, decision = segment_ladder(ctx, "hls")
    stem = safe_stem(ctx.source_path)
    subtitles = package_subtitles(ctx, f"{stem}_hls_", package_start(clip, tracks),
                                  max(t.start + t.duration for t in tracks))
    master = ctx.output_path(f"{stem}.m3u8")
    with writing(master):
        master.write_text(hls_master(tracks, clip.rate, subtitles))
    outputs = [OutputFile(master, role="rendition", meta={
        "format": "hls", "renditions": sum(1 for t in tracks if t.rung is not None),
        "duration": round(tracks[0].duration, 3)})]
    for track in tracks:
        outputs.extend(track_outputs(track, keep_playlist=True))
    outputs.extend(subtitle_outputs(subtitles, keep_playlist=True))
    return ActionResult(outputs=outputs, data={
        "master": master.name, "segment_seconds": ctx.params["segment_seconds"],
        "duration": round(tracks[0].duration, 3), "fps": float(clip.rate),
        "renditions": [track_summary(t) for t in tracks if t.rung is not None],
        "audio": next((track_summary(t) for t in tracks if t.rung is None), None),
        "audio_tracks": [{**track_summary(t), "language": t.language}
                         for t in tracks if t.rung is None],
        "subtitles": [{"language": s.language, "file": s.vtt.name, "cues": s.cues}
                      for s in subtitles],
        "hardware_decision": decision,
    })


def hls_master(tracks: list[TrackFiles], rate: Fraction,
               subtitles: list[PackagedSubtitles] | None = None) -> str:
    """A master playlist: one variant per rung, every audio track a rendition of one
    group (``LANGUAGE`` and ``NAME`` from its language, the first the ``DEFAULT``), every
    subtitle track one of a SUBTITLES group (none shown unless chosen).
    BANDWIDTH is the peak segment bit rate (RFC 8216): video plus the largest audio."""
    audio = [t for t in tracks if t.rung is None]
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for n, track in enumerate(audio):
        language = track.language if track.language not in (None, UNDETERMINED) else None
        attributes = [f'TYPE=AUDIO,GROUP-ID="audio",NAME="{language_name(language)}"']
        if language:
            attributes.append(f'LANGUAGE="{language}"')
        attributes.append(f'DEFAULT={"YES" if n == 0 else "NO"},AUTOSELECT=YES,'
                          f'CHANNELS="{track.channels}",URI="{track.playlist.name}"')
        lines.append("#EXT-X-MEDIA:" + ",".join(attributes))
    for sub in subtitles or []:
        lines.append(f'#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID="subs",'
                     f'NAME="{language_name(sub.language, "subtitles")}",'
                     f'LANGUAGE="{sub.language}",DEFAULT=NO,AUTOSELECT=YES,'
                     f'URI="{sub.playlist.name}"')
    audio_peak = max((t.peak_bps for t in audio), default=0)
    audio_average = max((t.average_bps for t in audio), default=0)
    for track in tracks:
        if track.rung is None:
            continue
        codecs = track.codec + (f",{audio[0].codec}" if audio else "")
        attributes_text = (f"BANDWIDTH={track.peak_bps + audio_peak},"
                           f"AVERAGE-BANDWIDTH={track.average_bps + audio_average},"
                           f"RESOLUTION={track.rung.width}x{track.rung.height},"
                           f'FRAME-RATE={float(rate):.3f},CODECS="{codecs}"')
        if audio:
            attributes_text += ',AUDIO="audio"'
        if subtitles:
            attributes_text += ',SUBTITLES="subs"'
        lines += [f"#EXT-X-STREAM-INF:{attributes_text}", track.playlist.name]
    return "\n".join(lines) + "\n"
