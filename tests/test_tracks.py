"""Tracks (issue 22): audio chosen by language, several kept in order; subtitles kept,
extracted, burnt in or dropped; several audio languages in HLS and DASH packages.

Sources are made by Debian's ffmpeg (three audio tracks tagged eng/fra/deu, each a sine of
its own pitch so a track can be told by ear; SRT and ASS text subtitles; DVD bitmap tracks
from a hand-written VobSub muxed by ffmpeg, a PGS track from a hand-written .sup, a DVB
track encoded by ffmpeg from the VobSub into MPEG-TS, whose streams start at 1.4 s).
Outputs are judged by ffprobe and ffmpeg (streams, languages, codecs, durations, which
pitch each audio track carries, the cues ffmpeg reads back; for pictures, the subtitle
frames ffprobe decodes and ffmpeg's overlay of them), by pixels of decoded frames for
burnt subtitles, by the master playlist's and the MPD's text (and the MPD schema), and by
hls.js in headless Chromium switching audio tracks."""

from __future__ import annotations

import json
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from lxml import etree

from mediaq.actions import get_action
from mediaq.errors import InvalidParameters, PermanentError
from tests.dvd_subtitles import write_vobsub
from tests.helpers import action_context, requires_tool, run_action
from tests.media_judge import FFMPEG, FFPROBE, ffmpeg, ffprobe, needs_ffmpeg
from tests.pgs_subtitles import write_sup
from tests.test_cmaf import mpd_schema
from tests.test_streaming_actions import play_in_chromium

pytestmark = needs_ffmpeg

PITCH = {"eng": 440, "fra": 660, "deu": 880}
SMALL = {"width": 160, "height": 120, "name": "small"}
MPD_NS = {"d": "urn:mpeg:dash:schema:mpd:2011"}
SRT = """1
00:00:00,200 --> 00:00:01,000
Hello <i>world</i>

2
00:00:01,300 --> 00:00:01,800
Second line
"""
ASS = "\n".join([
    "[Script Info]", "ScriptType: v4.00+", "PlayResX: 384", "PlayResY: 288", "",
    "[V4+ Styles]",
    "Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, "
    "BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, "
    "BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding",
    "Style: Default,Arial,16,&H00ffffff,&H00ffffff,&H00000000,&H00000000,0,0,0,0,100,100,"
    "0,0,1,1,0,2,10,10,10,0", "",
    "[Events]",
    "Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text",
    r"Dialogue: 0,0:00:00.30,0:00:01.10,Default,,0,0,0,,{\i1}Bonjour{\i0} le monde",
    r"Dialogue: 0,0:00:01.40,0:00:01.90,Default,,0,0,0,,Deux\Nlignes", ""])
ENG_CUES = [(0.2, 1.0, "Hello world"), (1.3, 1.8, "Second line")]
FRA_CUES = [(0.3, 1.1, "Bonjour le monde"), (1.4, 1.9, "Deux\nlignes")]


def _tones(*languages: str) -> list[str]:
    args: list[str] = []
    for language in languages:
        args += ["-f", "lavfi", "-i", f"sine=frequency={PITCH[language]}:sample_rate=48000"]
    return args


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tracks")
    (d / "eng.srt").write_text(SRT)
    (d / "fra.ass").write_text(ASS)
    video = ["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25"]
    x264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    made = {"multi": d / "multi.mkv", "dvd": d / "dvd.mkv", "talk": d / "talk.mkv",
            "late": d / "late.mkv", "pgs": d / "pgs.mkv", "dvb": d / "dvb.ts",
            "dvd2": d / "dvd2.mkv"}
    # video, three audio tracks (eng, fra, deu), SRT (eng) and ASS (fra) subtitles
    ffmpeg(*video, *_tones("eng", "fra", "deu"), "-i", d / "eng.srt", "-i", d / "fra.ass",
           "-t", "2", "-map", "0", "-map", "1", "-map", "2", "-map", "3", "-map", "4",
           "-map", "5", *x264, "-c:a", "aac", "-c:s:0", "srt", "-c:s:1", "ass",
           "-metadata:s:a:0", "language=eng", "-metadata:s:a:1", "language=fra",
           "-metadata:s:a:2", "language=deu", "-metadata:s:s:0", "language=eng",
           "-metadata:s:s:1", "language=fre", made["multi"])
    # a DVD subtitle track: a white 80x20 box at (40, 80) from 0.2 s to 1.0 s
    idx = write_vobsub(d / "box", [(0.2, 1.0, (40, 80, 80, 20))], (160, 120))
    ffmpeg(*video, *_tones("eng"), "-i", idx, "-t", "2", "-map", "0", "-map", "1",
           "-map", "2", *x264, "-c:a", "aac", "-c:s", "copy", made["dvd"])
    # two pictures each: DVD and PGS (Blu-ray) in Matroska, and DVB (encoded by ffmpeg
    # from a VobSub) in MPEG-TS, whose streams start at 1.4 s and the subtitles 0.2 s later
    boxes = [(0.2, 1.0, (40, 80, 80, 20)), (1.3, 1.8, (20, 10, 60, 16))]
    sup = write_sup(d / "boxes.sup", boxes, (160, 120))
    ffmpeg(*video, *_tones("eng"), "-i", sup, "-t", "2", "-map", "0", "-map", "1",
           "-map", "2", *x264, "-c:a", "aac", "-c:s", "copy", "-metadata:s:s:0",
           "language=eng", made["pgs"])
    boxes_idx = write_vobsub(d / "boxes", boxes, (160, 120))
    ffmpeg(*video, *_tones("eng"), "-i", boxes_idx, "-t", "2", "-map", "0", "-map", "1",
           "-map", "2", *x264, "-c:a", "aac", "-c:s", "copy", made["dvd2"])
    ffmpeg(*video, *_tones("eng"), "-i", boxes_idx, "-t", "2", "-map", "0", "-map", "1",
           "-map", "2", *x264, "-c:a", "aac", "-c:s", "dvbsub", "-metadata:s:s:0",
           "language=ger", made["dvb"])
    # 4 s with English and French audio and English subtitles, for the player
    ffmpeg(*video, *_tones("eng", "fra"), "-i", d / "eng.srt", "-t", "4", "-map", "0",
           "-map", "1", "-map", "2", "-map", "3", *x264, "-c:a", "aac", "-c:s", "srt",
           "-metadata:s:a:0", "language=eng", "-metadata:s:a:1", "language=fra",
           "-metadata:s:s:0", "language=eng", made["talk"])
    # both audio tracks start 0.5 s after the video
    ffmpeg(*video, "-itsoffset", "0.5", *_tones("eng"), "-itsoffset", "0.5", *_tones("fra"),
           "-t", "2", "-map", "0", "-map", "1", "-map", "2", *x264, "-c:a", "aac",
           "-metadata:s:a:0", "language=eng", "-metadata:s:a:1", "language=fra",
           made["late"])
    return made


def streams(path: Path, kind: str) -> list[dict[str, object]]:
    return [s for s in ffprobe(path)["streams"] if s["codec_type"] == kind]


def language(stream: dict[str, object]) -> str | None:
    tags = stream.get("tags") or {}
    assert isinstance(tags, dict)
    return tags.get("language")


def pitch(path: Path, audio_index: int) -> float:
    """The loudest frequency of the output's ``audio_index``-th audio track, per ffmpeg."""
    assert FFMPEG is not None
    raw = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-map", f"0:a:{audio_index}",
                          "-ac", "1", "-ar", "48000", "-f", "s16le", "-"],
                         capture_output=True, check=True, timeout=60).stdout
    samples = np.frombuffer(raw, np.int16).astype(np.float32)[:48000]
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * 48000 / len(samples))


def gray_frame(path: Path, seconds: float) -> np.ndarray:
    """The luma of the frame at ``seconds``, decoded by ffmpeg."""
    assert FFMPEG is not None
    video = streams(path, "video")[0]
    width, height = int(str(video["width"])), int(str(video["height"]))
    raw = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-vf",
                          f"select=gte(t\\,{seconds})", "-frames:v", "1", "-f", "rawvideo",
                          "-pix_fmt", "gray", "-"], capture_output=True, check=True,
                         timeout=60).stdout
    return np.frombuffer(raw, np.uint8)[:width * height].reshape(height, width).astype(float)


def cues_read_by_ffmpeg(path: Path, *args: str) -> list[tuple[float, float, str]]:
    """(start, end, text) of a subtitle file or track as ffmpeg converts it to SRT."""
    assert FFMPEG is not None
    srt = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), *args, "-f", "srt", "-"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return parse_srt(srt)


def parse_srt(text: str) -> list[tuple[float, float, str]]:
    def seconds(stamp: str) -> float:
        h, m, s = stamp.replace(",", ".").split(":")
        return int(h) * 3600 + int(m) * 60 + float(s)
    cues = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = block.splitlines()
        times = next(i for i, line in enumerate(lines) if "-->" in line)
        start, end = (part.strip() for part in lines[times].split("-->"))
        body = "\n".join(re.sub(r"<[^>]+>", "", line) for line in lines[times + 1:])
        cues.append((seconds(start), seconds(end.split()[0]), body))
    return cues


def parse_webvtt(text: str) -> list[tuple[float, float, str]]:
    assert text.startswith("WEBVTT")
    return parse_srt("\n".join(text.splitlines()[1:]).replace(".", ","))


def source_cues(source: Path, track: int, texts: list[tuple[float, float, str]]
                ) -> list[tuple[float, float, str]]:
    """The times of the source's subtitle track as ffmpeg reads them (on the file's
    timeline from its start, as outputs are: Matroska shifts every stream by the AAC
    priming), with the plain texts expected."""
    read = cues_read_by_ffmpeg(source, "-map", f"0:s:{track}")
    assert [t for c in read for t in c[:2]] == pytest.approx(
        [t for c in texts for t in c[:2]], abs=0.03)
    return [(start, end, text) for (start, end, _), (_, _, text) in zip(read, texts,
                                                                        strict=True)]


def shifted(cues: list[tuple[float, float, str]], seconds: float
            ) -> list[tuple[float, float, str]]:
    return [(start - seconds, end - seconds, text) for start, end, text in cues]


def video_start(path: Path) -> float:
    return float(str(streams(path, "video")[0]["start_time"]))


def same_cues(got: list[tuple[float, float, str]],
              expected: list[tuple[float, float, str]]) -> None:
    assert [c[2] for c in got] == [c[2] for c in expected]
    for (start, end, _), (want_start, want_end, _) in zip(got, expected, strict=True):
        assert start == pytest.approx(want_start, abs=0.011)
        assert end == pytest.approx(want_end, abs=0.011)


# --------------------------------------------------------------------------- audio


def test_audio_languages_are_kept_in_the_order_asked(sources: dict[str, Path],
                                                     tmp_path: Path) -> None:
    result = run_action("transcode_video", sources["multi"], tmp_path, resolution="120p",
                        preset="ultrafast", audio_languages=["fra", "en"])
    out = result.outputs[0].staging_path
    audio = streams(out, "audio")
    assert [language(s) for s in audio] == ["fra", "eng"]
    assert [s["codec_name"] for s in audio] == ["aac", "aac"]
    for stream in audio:
        assert float(str(stream["duration"])) == pytest.approx(2.0, abs=0.1)
    # each track is the source's track of that language, not just its tag
    assert pitch(out, 0) == pytest.approx(PITCH["fra"], abs=5)
    assert pitch(out, 1) == pytest.approx(PITCH["eng"], abs=5)
    assert result.data["audio_tracks"] == [{"source_index": 2, "language": "fra"},
                                           {"source_index": 1, "language": "eng"}]


def test_without_audio_languages_the_first_track_is_kept(sources: dict[str, Path],
                                                        tmp_path: Path) -> None:
    out = run_action("transcode_video", sources["multi"], tmp_path, resolution="120p",
                     preset="ultrafast").outputs[0].staging_path
    assert [language(s) for s in streams(out, "audio")] == ["eng"]
    assert streams(out, "subtitle") == []  # subtitles: drop is the default


def test_a_language_the_source_lacks(sources: dict[str, Path], tmp_path: Path) -> None:
    # some present: those are kept and the missing one is recorded
    result = run_action("transcode_video", sources["multi"], tmp_path / "some",
                        resolution="120p", preset="ultrafast", audio_languages=["ita", "deu"])
    assert [language(s) for s in streams(result.outputs[0].staging_path, "audio")] == ["deu"]
    assert result.data["missing_languages"] == ["ita"]
    # none present: one line naming the file, what was asked and what the source has
    with pytest.raises(PermanentError) as caught:
        run_action("transcode_video", sources["multi"], tmp_path / "none", resolution="120p",
                   preset="ultrafast", audio_languages=["ita", "spa"])
    message = str(caught.value)
    assert message == "multi.mkv: no audio track in ita, spa (the source has: eng, fra, deu)"
    assert not list((tmp_path / "none").glob("*.mp4"))
    with pytest.raises(InvalidParameters):
        get_action("transcode_video").validate({"audio_languages": ["english"]})


def test_fused_renditions_choose_their_own_tracks(sources: dict[str, Path],
                                                  tmp_path: Path) -> None:
    fuse = get_action("transcode_video").fuse
    assert fuse is not None
    results = fuse([
        action_context("transcode_video", sources["multi"], tmp_path / "a",
                       {"resolution": "120p", "preset": "ultrafast", "audio_languages": ["deu"]}),
        action_context("transcode_video", sources["multi"], tmp_path / "b",
                       {"resolution": "100p", "preset": "ultrafast",
                        "audio_languages": ["eng", "fra"], "subtitles": "keep"}),
    ])
    first, second = (r.outputs[0].staging_path for r in results)
    assert [language(s) for s in streams(first, "audio")] == ["deu"]
    assert streams(first, "subtitle") == []
    assert [language(s) for s in streams(second, "audio")] == ["eng", "fra"]
    assert [language(s) for s in streams(second, "subtitle")] == ["eng", "fra"]
    assert pitch(first, 0) == pytest.approx(PITCH["deu"], abs=5)


def test_late_audio_tracks_keep_their_offset(sources: dict[str, Path], tmp_path: Path) -> None:
    source = streams(sources["late"], "audio")
    out = run_action("transcode_video", sources["late"], tmp_path, resolution="120p",
                     preset="ultrafast", audio_languages=["fra", "eng"]).outputs[0].staging_path
    video = streams(out, "video")[0]
    audio = streams(out, "audio")
    src_video = streams(sources["late"], "video")[0]
    for track, src in zip(audio, reversed(source), strict=True):
        expected = float(str(src["start_time"])) - float(str(src_video["start_time"]))
        got = float(str(track["start_time"])) - float(str(video["start_time"]))
        assert got == pytest.approx(expected, abs=0.025)


# --------------------------------------------------------------------------- subtitles


def test_subtitles_keep_as_mov_text_in_mp4(sources: dict[str, Path], tmp_path: Path) -> None:
    out = run_action("transcode_video", sources["multi"], tmp_path, resolution="120p",
                     preset="ultrafast", subtitles="keep").outputs[0].staging_path
    subs = streams(out, "subtitle")
    assert [(s["codec_name"], language(s)) for s in subs] == [("mov_text", "eng"),
                                                              ("mov_text", "fra")]
    same_cues(cues_read_by_ffmpeg(out, "-map", "0:s:0"),
              source_cues(sources["multi"], 0, ENG_CUES))
    same_cues(cues_read_by_ffmpeg(out, "-map", "0:s:1"),
              source_cues(sources["multi"], 1, FRA_CUES))


def test_subtitles_keep_as_webvtt_in_webm(sources: dict[str, Path], tmp_path: Path) -> None:
    out = run_action("transcode_video", sources["multi"], tmp_path, resolution="120p",
                     codec="vp9", subtitles="keep", subtitle_languages=["fr"],
                     audio_languages=["fra"]).outputs[0].staging_path
    assert out.suffix == ".webm"
    assert [(s["codec_name"], language(s)) for s in streams(out, "subtitle")] == [
        ("webvtt", "fra")]
    same_cues(cues_read_by_ffmpeg(out, "-map", "0:s:0"),
              source_cues(sources["multi"], 1, FRA_CUES))


def test_subtitles_extract_webvtt_and_srt_named_by_language(sources: dict[str, Path],
                                                            tmp_path: Path) -> None:
    result = run_action("transcode_video", sources["multi"], tmp_path, resolution="120p",
                        preset="ultrafast", subtitles="extract")
    names = sorted(o.staging_path.name for o in result.outputs)
    assert names == ["multi_120p.eng.srt", "multi_120p.eng.vtt", "multi_120p.fra.srt",
                     "multi_120p.fra.vtt", "multi_120p.mp4"]
    assert streams(result.outputs[0].staging_path, "subtitle") == []  # extracted, not kept
    for lang, track, texts in (("eng", 0, ENG_CUES), ("fra", 1, FRA_CUES)):
        expected = source_cues(sources["multi"], track, texts)
        vtt, srt = tmp_path / f"multi_120p.{lang}.vtt", tmp_path / f"multi_120p.{lang}.srt"
        same_cues(parse_webvtt(vtt.read_text()), expected)
        same_cues(parse_srt(srt.read_text()), expected)
        # and Debian's ffmpeg reads both files to the same cues
        same_cues(cues_read_by_ffmpeg(vtt), expected)
        same_cues(cues_read_by_ffmpeg(srt), expected)


def test_subtitles_drop(sources: dict[str, Path], tmp_path: Path) -> None:
    result = run_action("transcode_video", sources["multi"], tmp_path, resolution="120p",
                        preset="ultrafast", subtitles="drop")
    assert [o.staging_path.suffix for o in result.outputs] == [".mp4"]
    assert streams(result.outputs[0].staging_path, "subtitle") == []


def test_text_subtitles_are_burnt_into_the_picture(sources: dict[str, Path],
                                                   tmp_path: Path) -> None:
    common = {"resolution": "source", "preset": "ultrafast", "crf": 18}
    plain = run_action("transcode_video", sources["multi"], tmp_path / "plain",
                       **common).outputs[0].staging_path
    burnt = run_action("transcode_video", sources["multi"], tmp_path / "burnt",
                       subtitles="burn", subtitle_languages=["eng"], **common)
    out = burnt.outputs[0].staging_path
    assert streams(out, "subtitle") == []
    during = np.abs(gray_frame(out, 0.6) - gray_frame(plain, 0.6))
    # the text sits in the bottom third; the top of the picture is untouched
    assert during[80:, :].mean() > 8 and during[80:, :].max() > 120
    assert during[:40, :].mean() < 2
    # between the cues (1.0 s to 1.3 s) nothing is drawn
    between = np.abs(gray_frame(out, 1.12) - gray_frame(plain, 1.12))
    assert between.mean() < 2


def test_bitmap_subtitles_are_overlaid(sources: dict[str, Path], tmp_path: Path) -> None:
    source_streams = streams(sources["dvd"], "subtitle")
    assert [s["codec_name"] for s in source_streams] == ["dvd_subtitle"]
    common = {"resolution": "source", "preset": "ultrafast", "crf": 18}
    plain = run_action("transcode_video", sources["dvd"], tmp_path / "plain",
                       **common).outputs[0].staging_path
    out = run_action("transcode_video", sources["dvd"], tmp_path / "burnt", subtitles="burn",
                     **common).outputs[0].staging_path
    frame = gray_frame(out, 0.6)
    # the white box of the subpicture: (40, 80), 80 x 20
    assert frame[82:98, 42:118].mean() > 220
    assert np.abs(frame[:60] - gray_frame(plain, 0.6)[:60]).mean() < 2
    # after its end (1.0 s) the box is gone
    assert np.abs(gray_frame(out, 1.4) - gray_frame(plain, 1.4)).mean() < 2


def subtitle_frames(path: Path, track: int = 0) -> list[tuple[float, float | None, bool]]:
    """(shown, hidden or None, has pictures) of each subtitle frame ffprobe decodes from
    the ``track``-th subtitle stream of ``path``, in seconds on the file's timeline."""
    assert FFPROBE is not None
    out = subprocess.run([FFPROBE, "-v", "error", "-select_streams", f"s:{track}",
                          "-show_frames", "-show_entries",
                          "subtitle=pts_time,start_display_time,end_display_time,num_rects",
                          "-of", "json", str(path)], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    frames = []
    for frame in json.loads(out)["frames"]:
        at = float(frame["pts_time"])
        end = int(frame["end_display_time"])
        frames.append((at + int(frame["start_display_time"]) / 1000,
                       None if end >= 2**32 - 1 else at + end / 1000,
                       int(frame["num_rects"]) > 0))
    return frames


def same_pictures(got: Path, source: Path, shift: float, track: int = 0) -> None:
    """``got``'s subtitle frames are the source's, ``shift`` seconds earlier, within one
    frame (25 fps); two pictures each, as the sources are made."""
    expected = subtitle_frames(source)
    frames = subtitle_frames(got, track)
    assert sum(1 for f in expected if f[2]) == 2
    assert [f[2] for f in frames] == [f[2] for f in expected]
    for (shown, hidden, _), (want_shown, want_hidden, _) in zip(frames, expected, strict=True):
        assert shown == pytest.approx(want_shown - shift, abs=0.04)
        if want_hidden is None:
            assert hidden is None
        else:
            assert hidden == pytest.approx(want_hidden - shift, abs=0.04)


def box_shown(path: Path, seconds: float) -> bool:
    """Whether Debian's ffmpeg, overlaying the file's first subtitle track on its video
    (colours from the track's own palette), shows the first white box at ``seconds``."""
    assert FFMPEG is not None
    raw = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-filter_complex",
                          "[0:v][0:s:0]overlay[v]", "-map", "[v]", "-ss", str(seconds),
                          "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "gray", "-"],
                         capture_output=True, check=True, timeout=60).stdout
    frame = np.frombuffer(raw, np.uint8)[:160 * 120].reshape(120, 160)
    return bool(frame[82:98, 42:118].mean() > 240)


# The source of each bitmap codec (two pictures each), its codec and language.
BITMAPS = {"dvd2": ("dvd_subtitle", "eng"), "pgs": ("hdmv_pgs_subtitle", "eng"),
           "dvb": ("dvb_subtitle", "deu")}


def test_dvd_pictures_are_kept_in_mp4(sources: dict[str, Path], tmp_path: Path) -> None:
    result = run_action("transcode_video", sources["dvd2"], tmp_path, resolution="120p",
                        preset="ultrafast", subtitles="keep")
    out = result.outputs[0].staging_path
    assert out.suffix == ".mp4"
    assert [(s["codec_name"], language(s)) for s in streams(out, "subtitle")] == [
        ("dvd_subtitle", "eng")]
    same_pictures(out, sources["dvd2"], video_start(sources["dvd2"]) - video_start(out))
    assert box_shown(out, 0.6)  # the palette travelled with the track
    assert "left_out" not in result.data["subtitle_tracks"][0]


@pytest.mark.parametrize("kind", ["dvd2", "pgs", "dvb"])
def test_bitmap_subtitles_are_kept_in_matroska(kind: str, sources: dict[str, Path],
                                               tmp_path: Path) -> None:
    """Copied as they are, on the output's clock: the DVB source's streams start at
    1.4 s, the output's at zero, and the pictures keep their distance from the video."""
    result = run_action("transcode_video", sources[kind], tmp_path, resolution="120p",
                        preset="ultrafast", subtitles="keep", container="mkv")
    out = result.outputs[0].staging_path
    assert out.suffix == ".mkv" and video_start(out) < 0.1
    assert [(s["codec_name"], language(s)) for s in streams(out, "subtitle")] == [
        BITMAPS[kind]]
    same_pictures(out, sources[kind], video_start(sources[kind]) - video_start(out))
    assert box_shown(out, 0.6)
    # the audio still plays (AAC in Matroska)
    assert [s["codec_name"] for s in streams(out, "audio")] == ["aac"]


def test_a_container_that_cannot_carry_the_pictures(sources: dict[str, Path],
                                                    tmp_path: Path) -> None:
    lines: list[str] = []
    ctx = action_context("transcode_video", sources["pgs"], tmp_path,
                         {"resolution": "120p", "preset": "ultrafast", "subtitles": "keep"},
                         on_log=lines.append)
    result = get_action("transcode_video").fn(ctx)
    assert streams(result.outputs[0].staging_path, "subtitle") == []
    reason = ("mp4 cannot carry hdmv_pgs_subtitle pictures (container: mkv can; "
              "subtitles: burn draws them)")
    assert result.data["subtitle_tracks"] == [{"source_index": 2, "language": "eng",
                                               "codec": "hdmv_pgs_subtitle",
                                               "left_out": reason}]
    assert f"120p: subtitle track 2 (hdmv_pgs_subtitle, eng) not kept: {reason}" in lines


@pytest.mark.parametrize("kind", ["dvd2", "pgs", "dvb"])
def test_bitmap_subtitles_are_extracted_as_sidecars(kind: str, sources: dict[str, Path],
                                                    tmp_path: Path) -> None:
    result = run_action("transcode_video", sources[kind], tmp_path, resolution="120p",
                        preset="ultrafast", subtitles="extract")
    video, sidecar = (o.staging_path for o in result.outputs)
    codec, lang = BITMAPS[kind]
    suffix = "sup" if kind == "pgs" else "mks"
    assert sidecar.name == f"{sources[kind].stem}_120p.{lang}.{suffix}"
    assert streams(video, "subtitle") == []  # extracted, not kept
    assert result.outputs[1].role == "sidecar"
    assert result.outputs[1].meta["language"] == lang
    assert result.outputs[1].meta["cues"] == 2
    assert [s["codec_name"] for s in streams(sidecar, "subtitle")] == [codec]
    # on the video's clock: the pictures keep their distance from its first frame
    same_pictures(sidecar, sources[kind], video_start(sources[kind]) - video_start(video))


# --------------------------------------------------------------------------- streaming


def test_hls_master_has_one_audio_rendition_per_language(sources: dict[str, Path],
                                                         tmp_path: Path) -> None:
    result = run_action("package_hls", sources["multi"], tmp_path, renditions=[SMALL],
                        segment_seconds=1, preset="ultrafast", audio_languages=["fra", "eng"])
    master = (tmp_path / result.data["master"]).read_text().splitlines()
    media = [dict(re.findall(r'([A-Z-]+)=("[^"]*"|[^,]*)', line[len("#EXT-X-MEDIA:"):]))
             for line in master if line.startswith("#EXT-X-MEDIA:")]
    assert [(m["TYPE"], m["GROUP-ID"], m["LANGUAGE"], m["NAME"], m["DEFAULT"]) for m in media] == [
        ("AUDIO", '"audio"', '"fra"', '"French"', "YES"),
        ("AUDIO", '"audio"', '"eng"', '"English"', "NO")]
    variants = [line for line in master if line.startswith("#EXT-X-STREAM-INF:")]
    assert len(variants) == 1 and 'AUDIO="audio"' in variants[0]
    for m, lang in zip(media, ("fra", "eng"), strict=True):
        playlist = tmp_path / m["URI"].strip('"')
        audio = streams(playlist, "audio")
        assert len(audio) == 1 and audio[0]["codec_name"] == "aac"
        assert float(ffprobe(playlist)["format"]["duration"]) == pytest.approx(2.0, abs=0.1)
        assert pitch(playlist, 0) == pytest.approx(PITCH[lang], abs=5)


def test_dash_has_one_audio_adaptation_set_per_language(sources: dict[str, Path],
                                                        tmp_path: Path) -> None:
    result = run_action("package_dash", sources["multi"], tmp_path, renditions=[SMALL],
                        segment_seconds=1, preset="ultrafast",
                        audio_languages=["eng", "fra", "deu"])
    mpd_path = tmp_path / result.data["manifest"]
    assert mpd_schema().validate(etree.parse(str(mpd_path)))
    mpd = ET.parse(mpd_path).getroot()
    audio_sets = [s for s in mpd.iterfind(".//d:AdaptationSet", MPD_NS)
                  if s.get("contentType") == "audio"]
    assert [s.get("lang") for s in audio_sets] == ["eng", "fra", "deu"]
    roles = [s.find("d:Role", MPD_NS) for s in audio_sets]
    assert [r.get("value") for r in roles if r is not None] == ["main", "alternate", "alternate"]
    assert len({s.get("id") for s in mpd.iterfind(".//d:AdaptationSet", MPD_NS)}) == 4
    assert [language(s) for s in streams(mpd_path, "audio")] == ["eng", "fra", "deu"]


def test_packages_carry_text_subtitles_as_webvtt(sources: dict[str, Path],
                                                 tmp_path: Path) -> None:
    hls = run_action("package_hls", sources["multi"], tmp_path / "hls", renditions=[SMALL],
                     segment_seconds=1, preset="ultrafast", subtitles="keep")
    master = (tmp_path / "hls" / hls.data["master"]).read_text().splitlines()
    subs = [line for line in master if line.startswith("#EXT-X-MEDIA:TYPE=SUBTITLES")]
    assert [re.search(r'LANGUAGE="(\w+)"', line).group(1) for line in subs  # type: ignore[union-attr]
            ] == ["eng", "fra"]
    assert all('GROUP-ID="subs"' in line for line in subs)
    assert 'SUBTITLES="subs"' in next(x for x in master if x.startswith("#EXT-X-STREAM-INF"))
    # cues keep their distance from the video's first frame
    shift = video_start(sources["multi"]) - video_start(tmp_path / "hls" /
                                                        "multi_hls_small.m3u8")
    for lang, track, texts in (("eng", 0, ENG_CUES), ("fra", 1, FRA_CUES)):
        vtt = tmp_path / "hls" / f"multi_hls_sub_{lang}.vtt"
        same_cues(parse_webvtt("\n".join(line for line in vtt.read_text().splitlines()
                                         if not line.startswith("X-TIMESTAMP-MAP"))),
                  shifted(source_cues(sources["multi"], track, texts), shift))
    dash = run_action("package_dash", sources["multi"], tmp_path / "dash", renditions=[SMALL],
                      segment_seconds=1, preset="ultrafast", subtitles="keep",
                      subtitle_languages=["fra"])
    mpd_path = tmp_path / "dash" / dash.data["manifest"]
    assert mpd_schema().validate(etree.parse(str(mpd_path)))
    text_sets = [s for s in ET.parse(mpd_path).getroot().iterfind(".//d:AdaptationSet", MPD_NS)
                 if s.get("contentType") == "text"]
    assert [(s.get("lang"), s.get("mimeType")) for s in text_sets] == [("fra", "text/vtt")]
    base = text_sets[0].find("d:Representation/d:BaseURL", MPD_NS)
    assert base is not None and (tmp_path / "dash" / str(base.text)).exists()


@pytest.mark.slow
@requires_tool("chromium")
def test_hls_js_switches_audio_tracks(sources: dict[str, Path], tmp_path: Path) -> None:
    """hls.js lists both languages and plays on after ``hls.audioTrack = 1``; it lists
    the subtitles too and loads their cues at the source's times."""
    result = run_action("package_hls", sources["talk"], tmp_path, renditions=[SMALL],
                        segment_seconds=1, preset="ultrafast", audio_languages=["eng", "fra"],
                        subtitles="keep")
    verdict = play_in_chromium(tmp_path,
                               f"hls={result.data['master']}&switch_audio=1&subtitles=1")
    assert verdict["errors"] == [] and verdict["done_by"] == "ok", verdict
    assert [(t["lang"], t["name"]) for t in verdict["audio_tracks"]] == [
        ("eng", "English"), ("fra", "French")]
    assert verdict["audio_track"] == 1 and verdict["switched_buffered"]
    assert verdict["played"] >= verdict["switched_at"] + 1.0
    assert [(t["lang"], t["name"]) for t in verdict["subtitle_tracks"]] == [("eng", "English")]
    loaded = [c for track in verdict["cues"] if track["language"] == "eng"
              for c in track["cues"]]
    shift = video_start(sources["talk"]) - video_start(tmp_path / "talk_hls_small.m3u8")
    expected = shifted(source_cues(sources["talk"], 0, ENG_CUES), shift)
    assert [c[2] for c in loaded] == [c[2] for c in expected], verdict["cues"]
    for (start, end, _), (want_start, want_end, _) in zip(loaded, expected, strict=True):
        assert start == pytest.approx(want_start, abs=0.05)
        assert end == pytest.approx(want_end, abs=0.05)
