"""The video actions, called as the engine calls them, on inputs made by Debian's ffmpeg
and judged by ffprobe."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mediaq.actions import get_action
from mediaq.actions.avio import probe
from mediaq.errors import (
    Cancelled,
    InputRefused,
    InvalidParameters,
    PermanentError,
    TransientError,
)
from tests.helpers import action_context as context
from tests.helpers import run_action as run
from tests.media_judge import (
    audio_stream,
    decodes_fully,
    duration_of,
    ffmpeg,
    ffprobe,
    needs_ffmpeg,
    video_stream,
)

pytestmark = needs_ffmpeg

LAVFI_VIDEO = ["-f", "lavfi", "-i", "testsrc2=size={size}:rate={rate}"]
LAVFI_AUDIO = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]


X264_FAST = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p")


def make_clip(path: Path, *, size: str = "640x360", rate: int = 30, seconds: float = 2,
              audio: bool = True, audio_codec: str = "aac",
              extra: tuple[str, ...] = X264_FAST) -> Path:
    inputs = [arg.format(size=size, rate=rate) for arg in LAVFI_VIDEO]
    if audio:
        inputs += LAVFI_AUDIO
    ffmpeg(*inputs, "-t", str(seconds), *extra, *(["-c:a", audio_codec] if audio else []),
           "-shortest", path)
    return path


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("video_sources")
    clip = make_clip(d / "clip.mp4")
    ffmpeg("-i", clip, "-c", "copy", "-metadata:s:v:0", "rotate=90", d / "rotated.mp4")
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-t", "3", "-vf",
           "select='not(mod(n\\,3))+between(n\\,30\\,45)'", "-fps_mode", "vfr", "-c:v", "libx264",
           "-preset", "ultrafast", "-pix_fmt", "yuv420p", d / "vfr.mp4")
    make_clip(d / "hevc10.mp4", size="320x240", audio=False,
              extra=("-c:v", "libx265", "-pix_fmt", "yuv420p10le", "-x265-params",
                     "log-level=error", "-color_primaries", "bt2020", "-color_trc",
                     "smpte2084", "-colorspace", "bt2020nc"))
    make_clip(d / "odd.mp4", size="321x241", audio=False,
              extra=("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv444p"))
    make_clip(d / "silent.mp4", size="320x240", audio=False)
    ffmpeg(*LAVFI_AUDIO, "-t", "2", "-c:a", "aac", d / "audio_only.m4a")
    make_clip(d / "interlaced.ts", size="720x576", rate=25, audio_codec="mp2",
              extra=("-vf", "interlace", "-c:v", "mpeg2video", "-flags", "+ilme+ildct",
                     "-b:v", "4M"))
    make_clip(d / "vp9.webm", size="320x240", audio_codec="libopus",
              extra=("-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"))
    # Broken inputs
    data = clip.read_bytes()
    faststart = d / "faststart.mp4"
    ffmpeg("-i", clip, "-c", "copy", "-movflags", "+faststart", faststart)
    fs = faststart.read_bytes()
    (d / "truncated.mp4").write_bytes(fs[: len(fs) // 2])
    (d / "empty.mp4").write_bytes(b"")
    (d / "notes.mp4").write_text("meeting notes, not a video\n")
    (d / "playlist.mp4").write_text("#EXTM3U\n#EXTINF:2,\nhttp://127.0.0.1:9/a.ts\n")
    (d / "concat.mp4").write_text(f"ffconcat version 1.0\nfile '{clip}'\n")
    corrupt = bytearray(data)
    for offset in range(len(corrupt) // 3, len(corrupt), 97):
        corrupt[offset] ^= 0xFF
    (d / "corrupt.mp4").write_bytes(bytes(corrupt))
    return {p.stem: p for p in d.iterdir()}


def transcode(source: Path, staging: Path, **params: Any) -> Path:
    [output] = run("transcode_video", source, staging, **params).outputs
    assert output.role == "rendition"
    return output.staging_path


# --------------------------------------------------------------------------- validate


def test_validate_accepts_a_good_clip_and_reports_it(sources: dict[str, Path],
                                                     tmp_path: Path) -> None:
    data = run("validate_video", sources["clip"], tmp_path).data
    assert data["valid"] is True
    assert (data["width"], data["height"], data["video_codec"]) == (640, 360, "h264")
    assert data["duration"] == pytest.approx(2.0, abs=0.1)


@pytest.mark.parametrize(("name", "reason"), [
    ("truncated", "truncated"),
    ("empty", "file is empty"),
    ("notes", "not a supported audio or video file"),
    ("playlist", "not a supported audio or video file"),
    ("concat", "not a supported audio or video file"),
    ("audio_only", "has no video stream (audio only)"),
])
def test_validate_refuses_bad_inputs_with_one_line(sources: dict[str, Path], tmp_path: Path,
                                                   name: str, reason: str) -> None:
    with pytest.raises(PermanentError) as caught:
        run("validate_video", sources[name], tmp_path)
    message = caught.value.message
    assert reason in message and "\n" not in message
    assert message.startswith(sources[name].name)


def test_validate_missing_file_is_refused_input(tmp_path: Path) -> None:
    with pytest.raises(InputRefused):
        run("validate_video", tmp_path / "nope.mp4", tmp_path)


def test_validate_allowed_codecs(sources: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="vp9 is not allowed"):
        run("validate_video", sources["vp9"], tmp_path, allowed_codecs=["h264", "hevc"])


def test_corrupt_input_is_processed_or_failed_with_one_line(sources: dict[str, Path],
                                                            tmp_path: Path) -> None:
    try:
        out = transcode(sources["corrupt"], tmp_path, resolution="240p")
    except PermanentError as exc:
        assert "\n" not in exc.message
    else:
        assert video_stream(out)["height"] == 240


# --------------------------------------------------------------------------- metadata


def test_metadata_of_rotated_hdr_and_interlaced_inputs(sources: dict[str, Path],
                                                       tmp_path: Path) -> None:
    rotated = run("extract_video_metadata", sources["rotated"], tmp_path).data
    assert rotated["metadata"]["video"]["rotation"] in (90, 270)
    assert (rotated["width"], rotated["height"]) == (360, 640)
    hdr = run("extract_video_metadata", sources["hevc10"], tmp_path).data["metadata"]["video"]
    assert (hdr["codec"], hdr["bit_depth"], hdr["hdr"]) == ("hevc", 10, True)
    assert hdr["color_transfer"] == "smpte2084"
    meta = run("extract_video_metadata", sources["interlaced"], tmp_path).data["metadata"]
    assert meta["video"]["interlaced"] is True
    assert meta["container"] == "mpegts"
    clip = run("extract_video_metadata", sources["clip"], tmp_path).data["metadata"]
    assert clip["video"]["fps"] == 30
    assert clip["audio"]["sample_rate"] == 48000
    assert [s["type"] for s in clip["streams"]] == ["video", "audio"]


# --------------------------------------------------------------------------- transcode


def test_transcode_keeps_duration_aspect_and_codecs(sources: dict[str, Path],
                                                    tmp_path: Path) -> None:
    out = transcode(sources["clip"], tmp_path, resolution="240p")
    video = video_stream(out)
    assert (video["codec_name"], video["width"], video["height"]) == ("h264", 426, 240)
    audio = audio_stream(out)
    assert audio is not None and audio["codec_name"] == "aac"
    assert duration_of(out) == pytest.approx(duration_of(sources["clip"]), abs=0.1)
    assert decodes_fully(out)
    # +faststart: the index comes before the media data
    head = out.read_bytes()[:4096]
    assert head.find(b"moov") != -1 and (head.find(b"mdat") == -1
                                         or head.find(b"moov") < head.find(b"mdat"))


def test_transcode_never_upscales_unless_asked(sources: dict[str, Path], tmp_path: Path) -> None:
    out = transcode(sources["clip"], tmp_path / "a", resolution="1080p")
    assert (video_stream(out)["width"], video_stream(out)["height"]) == (640, 360)
    out = transcode(sources["clip"], tmp_path / "b", resolution="1080p", upscale=True)
    assert (video_stream(out)["width"], video_stream(out)["height"]) == (1920, 1080)
    out = transcode(sources["clip"], tmp_path / "c", resolution="200x200")
    assert (video_stream(out)["width"], video_stream(out)["height"]) == (200, 112)


def test_transcode_turns_rotated_video_upright(sources: dict[str, Path], tmp_path: Path) -> None:
    out = transcode(sources["rotated"], tmp_path, resolution="240p")
    video = video_stream(out)
    assert (video["width"], video["height"]) == (240, 426)
    assert not any("rotation" in sd for sd in video.get("side_data_list", []))


@pytest.mark.parametrize(("name", "size"), [
    ("vfr", (320, 240)), ("hevc10", (320, 240)), ("odd", (320, 240)), ("silent", (320, 240)),
    ("interlaced", (720, 576)), ("vp9", (320, 240)),
])
def test_transcode_odd_inputs(sources: dict[str, Path], tmp_path: Path, name: str,
                              size: tuple[int, int]) -> None:
    out = transcode(sources[name], tmp_path, resolution="source")
    video = video_stream(out)
    assert (video["width"], video["height"]) == size
    assert video["pix_fmt"] == "yuv420p"
    assert duration_of(out) == pytest.approx(duration_of(sources[name]), abs=0.1)
    assert (audio_stream(out) is None) == (audio_stream(sources[name]) is None)
    assert decodes_fully(out)


def test_transcode_to_vp9_webm_and_hevc(sources: dict[str, Path], tmp_path: Path) -> None:
    webm = transcode(sources["clip"], tmp_path / "vp9", resolution="240p", codec="vp9", crf=40)
    assert webm.suffix == ".webm"
    assert video_stream(webm)["codec_name"] == "vp9"
    assert audio_stream(webm)["codec_name"] == "opus"  # type: ignore[index]
    hevc = transcode(sources["silent"], tmp_path / "hevc", resolution="240p", codec="hevc")
    assert video_stream(hevc)["codec_name"] == "hevc"
    assert video_stream(hevc)["codec_tag_string"] == "hvc1"


def test_transcode_max_bitrate_caps_the_rate(sources: dict[str, Path], tmp_path: Path) -> None:
    capped = transcode(sources["clip"], tmp_path / "capped", resolution="source", crf=10,
                       max_bitrate="300k", audio_codec="none")
    free = transcode(sources["clip"], tmp_path / "free", resolution="source", crf=10,
                     audio_codec="none")
    assert capped.stat().st_size < free.stat().st_size / 2
    assert int(ffprobe(capped)["format"]["bit_rate"]) < 300_000 * 1.5


def test_fused_ladder_matches_single_renditions(sources: dict[str, Path],
                                                tmp_path: Path) -> None:
    registered = get_action("transcode_video")
    assert registered.fuse is not None
    contexts = [context("transcode_video", sources["clip"], tmp_path / r, {"resolution": r})
                for r in ("360p", "240p", "144p")]
    results = registered.fuse(contexts)
    heights = [video_stream(r.outputs[0].staging_path)["height"] for r in results]
    assert heights == [360, 240, 144]
    for result in results:
        out = result.outputs[0].staging_path
        assert result.data["fused_with"] == 3
        assert duration_of(out) == pytest.approx(2.0, abs=0.1)
        assert decodes_fully(out)


def test_bad_parameters_are_refused(sources: dict[str, Path]) -> None:
    with pytest.raises(InvalidParameters):
        get_action("transcode_video").validate({"resolution": "huge"})
    with pytest.raises(InvalidParameters):
        get_action("transcode_video").validate({"codec": "mpeg1"})


def test_cancel_mid_encode_stops_within_2_s_and_leaves_no_file(tmp_path: Path) -> None:
    long_clip = make_clip(tmp_path / "long.mp4", size="1280x720", seconds=30, audio=False)
    stop = threading.Event()
    ctx = context("transcode_video", long_clip, tmp_path / "stage",
                  {"resolution": "720p", "preset": "medium"}, cancel_event=stop)
    seen_progress: list[float] = []
    ctx._on_progress = lambda fraction, stage: seen_progress.append(fraction)
    timer = threading.Timer(1.5, stop.set)
    timer.start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        get_action("transcode_video").fn(ctx)
    stopped_after = time.monotonic() - started - 1.5
    print(f"cancel took effect {stopped_after:.2f} s after the request")
    assert stopped_after < 2
    assert seen_progress and 0 < seen_progress[-1] < 1
    assert not any((tmp_path / "stage").glob("*.mp4"))


# --------------------------------------------------------------------------- thumbnails


def test_thumbnails_are_evenly_spaced_distinct_and_sized(sources: dict[str, Path],
                                                         tmp_path: Path) -> None:
    result = run("generate_thumbnails", sources["clip"], tmp_path, count=5, width=160)
    assert len(result.outputs) == 5
    times = result.data["times"]
    assert times == sorted(times) and len(set(times)) == 5
    assert times[-1] < 2.0
    for out in result.outputs:
        with Image.open(out.staging_path) as image:
            assert image.format == "JPEG"
            assert image.size == (160, 90)


def test_thumbnails_of_rotated_video_are_upright(sources: dict[str, Path],
                                                 tmp_path: Path) -> None:
    result = run("generate_thumbnails", sources["rotated"], tmp_path, count=2, width=180,
                 format="png")
    for out in result.outputs:
        with Image.open(out.staging_path) as image:
            assert image.size == (180, 320)


def test_thumbnails_refuse_audio_only(sources: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="has no video stream"):
        run("generate_thumbnails", sources["audio_only"], tmp_path)


def test_probe_describes_audio_layout(sources: dict[str, Path]) -> None:
    info = probe(sources["audio_only"])
    assert info.video is None
    assert info.audio is not None and info.audio.layout == "mono"


def test_hardware_encoders_fall_back_to_software_with_a_log_line(
        sources: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mediaq.actions import hardware

    # A GPU without NVENC (an H100, say): opening h264_nvenc fails there as it does here.
    monkeypatch.setattr(hardware, "has_gpu", lambda: True)
    hardware.clear_cache()
    lines: list[str] = []
    ctx = context("transcode_video", sources["silent"], tmp_path,
                  {"resolution": "144p"}, on_log=lines.append)
    [result] = get_action("transcode_video").fuse([ctx])  # type: ignore[misc]
    assert result.data["encoder"] == "libx264"
    assert any("h264_nvenc is not available" in line for line in lines)
    with pytest.raises(TransientError, match="h264_nvenc is not available"):
        run("transcode_video", sources["silent"], tmp_path / "hw", resolution="144p",
            hardware="require")
    hardware.clear_cache()


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.floats(0.05, 1.0), flips=st.lists(st.floats(0.0, 0.999), max_size=40))
def test_mutated_inputs_fail_with_one_line_or_give_decodable_output(
        sources: dict[str, Path], tmp_path: Path, cut: float, flips: list[float]) -> None:
    data = bytearray(sources["faststart"].read_bytes())
    data = data[: max(1, int(len(data) * cut))]
    for where in flips:
        data[int(where * len(data))] ^= 0x5A
    case = tmp_path / f"mutant_{abs(hash((cut, tuple(flips))))}"
    source = case / "mutant.mp4"
    case.mkdir()
    source.write_bytes(bytes(data))
    for action, params in (("validate_video", {}), ("transcode_video", {"resolution": "144p"})):
        try:
            result = run(action, source, case / action, **params)
        except PermanentError as exc:
            assert exc.message and "\n" not in exc.message
            continue
        for output in result.outputs:
            assert video_stream(output.staging_path)["height"] == 144
