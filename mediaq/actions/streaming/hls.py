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
    segment_ladder,
    track_outputs,
    track_summary,
)


@action("package_hls", PACKAGE_SCHEMA, prepare=prepare_package)
def package_hls(ctx: ActionContext) -> ActionResult:
    """Package the source as HLS: an fMP4 rendition ladder and a master playlist."""
    clip, tracks, decision = segment_ladder(ctx, "hls")
    master = ctx.output_path(f"{safe_stem(ctx.source_path)}.m3u8")
    with writing(master):
        master.write_text(hls_master(tracks, clip.rate))
    outputs = [OutputFile(master, role="rendition", meta={
        "format": "hls", "renditions": sum(1 for t in tracks if t.rung is not None),
        "duration": round(tracks[0].duration, 3)})]
    for track in tracks:
        outputs.extend(track_outputs(track, keep_playlist=True))
    return ActionResult(outputs=outputs, data={
        "master": master.name, "segment_seconds": ctx.params["segment_seconds"],
        "duration": round(tracks[0].duration, 3), "fps": float(clip.rate),
        "renditions": [track_summary(t) for t in tracks if t.rung is not None],
        "audio": next((track_summary(t) for t in tracks if t.rung is None), None),
        "hardware_decision": decision,
    })


def hls_master(tracks: list[TrackFiles], rate: Fraction) -> str:
    """A master playlist: one variant per rung, the audio as one rendition group.
    BANDWIDTH is the peak segment bit rate (RFC 8216), video plus audio."""
    audio = next((t for t in tracks if t.rung is None), None)
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS"]
    if audio is not None:
        lines.append(f'#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",NAME="audio",DEFAULT=YES,'
                     f'AUTOSELECT=YES,CHANNELS="{audio.channels}",URI="{audio.playlist.name}"')
    for track in tracks:
        if track.rung is None:
            continue
        codecs = track.codec + (f",{audio.codec}" if audio else "")
        peak = track.peak_bps + (audio.peak_bps if audio else 0)
        average = track.average_bps + (audio.average_bps if audio else 0)
        attributes = (f"BANDWIDTH={peak},AVERAGE-BANDWIDTH={average},"
                      f"RESOLUTION={track.rung.width}x{track.rung.height},"
                      f'FRAME-RATE={float(rate):.3f},CODECS="{codecs}"')
        if audio is not None:
            attributes += ',AUDIO="audio"'
        lines += [f"#EXT-X-STREAM-INF:{attributes}", track.playlist.name]
    return "\n".join(lines) + "\n"


