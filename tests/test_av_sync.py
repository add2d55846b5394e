"""Lip sync (issue 22): outputs keep the source's offset between its audio and video.

Sources whose streams start at different times (audio after video, video after audio,
MPEG-TS with a large PTS offset, audio longer or shorter than video) are made by Debian's
ffmpeg; each output must start at zero and keep the source's audio-minus-video start
within one AAC frame, as ffprobe reads it. For the fMP4 tracks of HLS and DASH packages
the segments' tfdt (baseMediaDecodeTime) must carry each track's start, as MSE players
read only that, and the MPD's SegmentTimeline must start where the tfdt says."""

from __future__ import annotations

import struct
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from mediaq.actions import get_action
from tests.helpers import action_context, requires_tool, run_action
from tests.media_judge import FFPROBE, ffmpeg, needs_ffmpeg
from tests.test_streaming_actions import play_in_chromium

pytestmark = needs_ffmpeg

# One AAC frame at 48 kHz (1024 / 48000 s) plus the millisecond rounding of MP4 edit lists.
TOLERANCE = 0.025
MPD_NS = {"d": "urn:mpeg:dash:schema:mpd:2011"}
VIDEO = ("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25")
SINE = ("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000")
SMALL = {"width": 160, "height": 120, "name": "small"}  # the sources' own size, one rung
X264 = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p")


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("av_sync_sources")
    made = {name: d / name for name in ("audio_late.mp4", "video_late.mp4", "ts_offset.ts",
                                         "audio_longer.mp4", "audio_shorter.mp4")}
    # audio 1 s after the video (ffprobe: video 0.000, audio ~0.978 with the AAC priming)
    ffmpeg(*VIDEO, "-itsoffset", "1.0", *SINE, "-map", "0:v", "-map", "1:a", "-t", "3",
           *X264, "-c:a", "aac", made["audio_late.mp4"])
    # video 1 s after the audio: the streams made apart, the video delayed when muxed
    ffmpeg(*VIDEO, "-t", "2", *X264, d / "v.mp4")
    ffmpeg(*SINE, "-t", "3", "-c:a", "aac", d / "a.m4a")
    ffmpeg("-itsoffset", "1.0", "-i", d / "v.mp4", "-i", d / "a.m4a", "-c", "copy",
           made["video_late.mp4"])
    # MPEG-TS: both streams near 11.4 s, the audio 0.5 s after the video
    ffmpeg(*VIDEO, "-itsoffset", "0.5", *SINE, "-map", "0:v", "-map", "1:a", "-t", "3",
           *X264, "-c:a", "aac", "-output_ts_offset", "10", made["ts_offset.ts"])
    # both from zero: 2 s of video with 3 s of audio, 3 s of video with 1.5 s of audio
    ffmpeg("-i", d / "v.mp4", "-i", d / "a.m4a", "-c", "copy", made["audio_longer.mp4"])
    ffmpeg(*VIDEO, "-t", "3", *X264, d / "v3.mp4")
    ffmpeg(*SINE, "-t", "1.5", "-c:a", "aac", d / "a15.m4a")
    ffmpeg("-i", d / "v3.mp4", "-i", d / "a15.m4a", "-c", "copy", made["audio_shorter.mp4"])
    return made


def probe_streams(path: Path) -> dict[str, tuple[float, float | None]]:
    """(start_time, duration) of the first video and first audio stream, per ffprobe."""
    assert FFPROBE is not None
    out = subprocess.run([FFPROBE, "-v", "error", "-show_entries",
                          "stream=codec_type,start_time,duration", "-of", "csv=p=0",
                          str(path)], capture_output=True, text=True, check=True,
                         timeout=60).stdout
    found: dict[str, tuple[float, float | None]] = {}
    for line in out.splitlines():
        fields = line.split(",")
        if len(fields) >= 3 and fields[0] in ("video", "audio") and fields[0] not in found:
            duration = None if fields[2] in ("N/A", "") else float(fields[2])
            found[fields[0]] = (float(fields[1]), duration)
    return found


def first_audio_frames(path: Path, count: int = 3) -> list[float]:
    """Presentation times of the first decoded audio frames, per ffprobe."""
    assert FFPROBE is not None
    out = subprocess.run([FFPROBE, "-v", "error", "-select_streams", "a", "-read_intervals",
                          "%+#50", "-show_entries", "frame=pts_time", "-of", "csv=p=0",
                          str(path)], capture_output=True, text=True, check=True,
                         timeout=60).stdout
    return [float(line.strip(",")) for line in out.split() if line.strip(",")][:count]


def offset(path: Path) -> float:
    """Audio start minus video start, per ffprobe."""
    streams = probe_streams(path)
    return streams["audio"][0] - streams["video"][0]


def box(data: bytes, *path: bytes) -> bytes:
    """The body of the first box at ``path`` (an independent reader, not the engine's)."""
    at, end = 0, len(data)
    for depth, kind in enumerate(path):
        while True:
            assert at + 8 <= end, f"no {kind!r} box"
            size, name = struct.unpack(">I4s", data[at:at + 8])
            if name == kind:
                if depth == len(path) - 1:
                    return data[at + 8:at + size]
                at, end = at + 8, at + size
                break
            at += size
    raise AssertionError("unreachable")


def tfdt_seconds(init: Path, segment: Path) -> float:
    mdhd = box(init.read_bytes(), b"moov", b"trak", b"mdia", b"mdhd")
    scale = struct.unpack(">I", mdhd[20:24] if mdhd[0] == 1 else mdhd[12:16])[0]
    tfdt = box(segment.read_bytes(), b"moof", b"traf", b"tfdt")
    base = struct.unpack(">Q" if tfdt[0] == 1 else ">I", tfdt[4:12] if tfdt[0] == 1
                         else tfdt[4:8])[0]
    return float(base / scale)


CASES = ["audio_late.mp4", "video_late.mp4", "ts_offset.ts", "audio_longer.mp4",
         "audio_shorter.mp4"]


def test_sources_have_the_offsets_they_should(sources: dict[str, Path]) -> None:
    assert offset(sources["audio_late.mp4"]) == pytest.approx(1.0, abs=TOLERANCE)
    assert offset(sources["video_late.mp4"]) == pytest.approx(-1.0, abs=TOLERANCE)
    ts = probe_streams(sources["ts_offset.ts"])
    assert ts["video"][0] > 10 and offset(sources["ts_offset.ts"]) == pytest.approx(
        0.5, abs=TOLERANCE)


@pytest.mark.parametrize("name", CASES)
def test_transcode_keeps_the_offset_in_every_rung(sources: dict[str, Path], tmp_path: Path,
                                                  name: str) -> None:
    source = sources[name]
    fuse = get_action("transcode_video").fuse
    assert fuse is not None
    results = fuse([action_context("transcode_video", source, tmp_path / r,
                                   {"resolution": r, "preset": "ultrafast"})
                    for r in ("120p", "100p")])
    src = probe_streams(source)
    origin = min(src["video"][0], src["audio"][0])
    first_sample = first_audio_frames(source, 1)[0] - origin
    for result in results:
        out = probe_streams(result.outputs[0].staging_path)
        # the source's first decoded audio lands at its own time from the common start; a
        # late track's own AAC priming (one frame before it) is what ffprobe starts it at
        frames = first_audio_frames(result.outputs[0].staging_path)
        assert any(abs(t - first_sample) < 0.002 for t in frames), (first_sample, frames)
        # the common start is zero; the offset between the streams is the source's
        assert min(out["video"][0], out["audio"][0]) == pytest.approx(0.0, abs=TOLERANCE)
        assert out["audio"][0] - out["video"][0] == pytest.approx(
            src["audio"][0] - src["video"][0], abs=TOLERANCE)
        # each stream lasts as long as it did (audio longer or shorter than the video);
        # MPEG-TS has no stream durations, only ffprobe's estimates
        for kind in ("video", "audio"):
            if source.suffix == ".mp4":
                assert out[kind][1] == pytest.approx(src[kind][1], abs=0.1), kind


def test_ordinary_source_still_starts_both_streams_at_zero(sources: dict[str, Path],
                                                           tmp_path: Path) -> None:
    result = run_action("transcode_video", sources["audio_longer.mp4"], tmp_path,
                        resolution="100p", preset="ultrafast")
    out = probe_streams(result.outputs[0].staging_path)
    assert out["video"][0] == 0.0 and out["audio"][0] == 0.0


def check_fmp4_tracks(folder: Path, stem: str, kind: str, source: Path) -> dict[str, float]:
    """Each track's start per its first tfdt, checked against ffprobe's view of it."""
    src = probe_streams(source)
    starts = {}
    for track, label in (("video", "small"), ("audio", "audio")):
        init = folder / f"{stem}_{kind}_{label}_init.mp4"
        first = folder / f"{stem}_{kind}_{label}_00001.m4s"
        starts[track] = tfdt_seconds(init, first)
    # the common start is zero, the tracks keep the source's offset...
    assert min(starts.values()) == pytest.approx(0.0, abs=TOLERANCE)
    expected = src["audio"][0] - src["video"][0]
    # ...in the tfdt (MSE players read nothing else): the audio's first packet is the AAC
    # encoder's priming, a frame before its first sample
    assert starts["audio"] - starts["video"] == pytest.approx(expected, abs=TOLERANCE)
    return starts


@pytest.mark.parametrize("name", CASES)
def test_hls_tracks_keep_the_offset(sources: dict[str, Path], tmp_path: Path,
                                    name: str) -> None:
    source = sources[name]
    run_action("package_hls", source, tmp_path, renditions=[SMALL], segment_seconds=1,
               preset="ultrafast")
    stem = source.stem
    check_fmp4_tracks(tmp_path, stem, "hls", source)
    src = probe_streams(source)
    video = probe_streams(tmp_path / f"{stem}_hls_small.m3u8")["video"][0]
    audio = probe_streams(tmp_path / f"{stem}_hls_audio.m3u8")["audio"][0]
    assert audio - video == pytest.approx(src["audio"][0] - src["video"][0], abs=TOLERANCE)


@pytest.mark.parametrize("name", CASES)
def test_dash_timeline_starts_where_the_tracks_do(sources: dict[str, Path], tmp_path: Path,
                                                  name: str) -> None:
    source = sources[name]
    run_action("package_dash", source, tmp_path, renditions=[SMALL], segment_seconds=1,
               preset="ultrafast")
    starts = check_fmp4_tracks(tmp_path, source.stem, "dash", source)
    mpd = ET.parse(tmp_path / f"{source.stem}.mpd").getroot()
    for rep in mpd.iterfind(".//d:Representation", MPD_NS):
        template = rep.find("d:SegmentTemplate", MPD_NS)
        assert template is not None
        first = template.find("d:SegmentTimeline/d:S", MPD_NS)
        assert first is not None
        t = int(first.get("t", "0")) / int(template.get("timescale", "1"))
        track = "audio" if rep.get("id") == "audio" else "video"
        assert t == pytest.approx(starts[track], abs=1e-3), rep.get("id")
    src = probe_streams(source)
    probed = probe_streams(tmp_path / f"{source.stem}.mpd")
    assert probed["audio"][0] - probed["video"][0] == pytest.approx(
        src["audio"][0] - src["video"][0], abs=TOLERANCE)


@pytest.mark.slow
@requires_tool("chromium")
@pytest.mark.parametrize("kind", ["hls", "dash"])
def test_players_play_a_package_whose_audio_starts_late(sources: dict[str, Path],
                                                        tmp_path: Path, kind: str) -> None:
    """hls.js and dash.js buffer and play tracks whose first tfdt is not zero."""
    result = run_action(f"package_{kind}", sources["audio_late.mp4"], tmp_path,
                        renditions=[SMALL, {"width": 128, "height": 96, "name": "tiny"}],
                        segment_seconds=1, preset="ultrafast")
    manifest = result.outputs[0].staging_path.name
    verdict = play_in_chromium(tmp_path, f"{kind}={manifest}&audio=1")
    assert verdict["errors"] == [] and verdict["done_by"] == "ok", verdict
    assert verdict["variants"] == 2 and sorted(verdict["buffered"]) == [0, 1]
    assert verdict["audio_buffered"] and verdict["played"] >= 1.5 and verdict["frames"] > 0
