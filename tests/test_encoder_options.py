"""Encoder options, named presets and the hardware-encoder decision of transcode_video,
judged by ffprobe (profile, level, keyframe interval, bit rate) on clips made by Debian's
ffmpeg."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mediaq.actions import get_action, hardware, presets
from mediaq.errors import InvalidParameters, TransientError
from tests.helpers import run_action
from tests.media_judge import ffmpeg, needs_ffmpeg

pytestmark = needs_ffmpeg


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("encoder_options") / "clip.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25", "-f", "lavfi", "-i",
           "sine=frequency=440:sample_rate=48000", "-t", "4", "-c:v", "libx264",
           "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", path)
    return path


def video_facts(path: Path) -> dict[str, Any]:
    """ffprobe's profile, level and bit rate of the video, and its keyframe times."""
    stream = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
         "stream=codec_name,profile,level,bit_rate", "-of", "json", str(path)],
        capture_output=True, text=True, check=True).stdout)["streams"][0]
    packets = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
         "packet=pts_time,flags", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True).stdout.split()
    stream["keyframes"] = sorted(round(float(line.split(",")[0]), 2) for line in packets
                                 if "K" in line.split(",")[1])
    return stream


def transcode(clip: Path, folder: Path, **params: Any) -> tuple[dict[str, Any], Path]:
    result = run_action("transcode_video", clip, folder, resolution="source", **params)
    return result.data, result.outputs[0].staging_path


def test_profile_level_and_fixed_closed_gop(clip: Path, tmp_path: Path) -> None:
    data, out = transcode(clip, tmp_path, profile="main", level="3.1", gop_seconds=1)
    facts = video_facts(out)
    assert (facts["profile"], facts["level"]) == ("Main", 31)
    assert facts["keyframes"] == [0.0, 1.0, 2.0, 3.0]
    assert data["encoding"]["closed_gop"] is True


def test_constant_bit_rate(clip: Path, tmp_path: Path) -> None:
    _, out = transcode(clip, tmp_path, rate_control="cbr", bitrate="500k", gop_seconds=2)
    facts = video_facts(out)
    assert 0.85 < int(facts["bit_rate"]) / 500_000 < 1.2, facts
    assert facts["keyframes"] == [0.0, 2.0]


def test_two_pass_hits_the_average_bit_rate(clip: Path, tmp_path: Path) -> None:
    data, out = transcode(clip, tmp_path, rate_control="two_pass", bitrate="300k")
    assert 0.9 < int(video_facts(out)["bit_rate"]) / 300_000 < 1.1
    # Only the output is left: the first pass's file and log are gone.
    assert [p.name for p in tmp_path.iterdir()] == [out.name]
    assert data["encoding"]["rate_control"] == "two_pass"


def test_hevc_two_pass_with_level(clip: Path, tmp_path: Path) -> None:
    _, out = transcode(clip, tmp_path, codec="hevc", profile="main", level=3.1,
                       gop_seconds=2, rate_control="two_pass", bitrate="200k")
    facts = video_facts(out)
    assert (facts["codec_name"], facts["profile"], facts["level"]) == ("hevc", "Main", 93)
    assert facts["keyframes"] == [0.0, 2.0]
    assert 0.85 < int(facts["bit_rate"]) / 200_000 < 1.15


def test_av1_capped_quality_and_gop(clip: Path, tmp_path: Path) -> None:
    _, out = transcode(clip, tmp_path, codec="av1", gop_seconds=2, rate_control="capped_crf",
                       maxrate="300k")
    facts = video_facts(out)
    assert facts["codec_name"] == "av1" and facts["keyframes"] == [0.0, 2.0]


def test_named_preset_with_a_step_override(clip: Path, tmp_path: Path) -> None:
    data, out = transcode(clip, tmp_path / "web", preset="web")
    facts = video_facts(out)
    assert (facts["profile"], facts["level"]) == ("High", 40)
    assert facts["keyframes"] == [0.0, 2.0]
    assert data["encoding"]["rate_control"] == "capped_crf"
    # Explicit parameters win over the preset's.
    data, out = transcode(clip, tmp_path / "main", preset="web", profile="main", gop_seconds=1)
    facts = video_facts(out)
    assert facts["profile"] == "Main" and facts["keyframes"] == [0.0, 1.0, 2.0, 3.0]
    # An encoder speed in ``preset`` still means the speed.
    data, _ = transcode(clip, tmp_path / "speed", preset="ultrafast")
    assert data["encoding"]["speed"] == "ultrafast"


def test_presets_from_the_users_file(clip: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    extra = tmp_path / "presets.yaml"
    extra.write_text("tiny_gop:\n  profile: baseline\n  gop_seconds: 0.8\n")
    monkeypatch.setenv(presets.PRESETS_ENV, str(extra))
    _, out = transcode(clip, tmp_path / "out", preset="tiny_gop")
    facts = video_facts(out)
    assert facts["profile"] in ("Baseline", "Constrained Baseline")
    assert facts["keyframes"] == [0.0, 0.8, 1.6, 2.4, 3.2]


@pytest.mark.parametrize(("params", "message"), [
    ({"rate_control": "cbr"}, "rate_control cbr needs bitrate"),
    ({"rate_control": "capped_crf"}, "rate_control capped_crf needs maxrate"),
    ({"codec": "av1", "profile": "high"}, "profile"),
    ({"codec": "av1", "rate_control": "two_pass", "bitrate": "1M"}, "rate_control"),
    ({"codec": "vp9", "level": "4.1"}, "level"),
    ({"codec": "hevc", "tune": "film"}, "tune"),
    ({"level": "9.9"}, "level"),
    ({"preset": "nosuch"}, "unknown encoding preset 'nosuch'"),
    ({"preset": "web", "gop_seconds": 0}, "gop_seconds"),
])
def test_bad_options_are_refused_in_words(params: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidParameters, match=message) as caught:
        get_action("transcode_video").validate(params)
    assert "\n" not in str(caught.value) and "transcode_video" in str(caught.value)


def test_hardware_decision_is_recorded_and_qsv_is_tried_after_nvenc(
        clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hardware.clear_cache()
    data, _ = transcode(clip, tmp_path / "auto", gop_seconds=2)
    decision = data["hardware_decision"]
    assert decision["encoder"] == "libx264" and decision["hardware"] is False
    assert list(decision["tried"]) == ["h264_nvenc", "h264_qsv"]
    # Devices that are there but cannot encode (an NVIDIA GPU without NVENC, a render
    # node without Quick Sync): both are opened, both refuse, software encodes.
    monkeypatch.setattr(hardware, "has_gpu", lambda: True)
    monkeypatch.setattr(hardware, "has_render_node", lambda: True)
    hardware.clear_cache()
    data, _ = transcode(clip, tmp_path / "opened", codec="hevc")
    tried = data["hardware_decision"]["tried"]
    assert data["encoder"] == "libx265"
    assert all(reason.startswith("does not open") for reason in tried.values()), tried
    with pytest.raises(TransientError, match="hevc_qsv is not available"):
        transcode(clip, tmp_path / "qsv", codec="hevc", hardware="qsv")
    hardware.clear_cache()


def test_workflow_step_refers_to_a_preset() -> None:
    from mediaq.workflows import normalise

    doc = {"workflow_code": "WF-PRESET", "steps": [
        {"action": "transcode_video", "parameters": {"preset": "broadcast_mezzanine",
                                                     "resolution": "720p"}}]}
    assert normalise(doc)["steps"][0]["parameters"]["preset"] == "broadcast_mezzanine"
    doc["steps"][0]["parameters"]["preset"] = "nosuch"
    with pytest.raises(Exception, match="unknown encoding preset"):
        normalise(doc)


def test_packaging_takes_the_encoder_options(clip: Path, tmp_path: Path) -> None:
    result = run_action("package_hls", clip, tmp_path, renditions=["144p"], segment_seconds=1,
                        preset="web_small", profile="baseline", rate_control="cbr")
    init = next(p for p in tmp_path.iterdir() if p.name.endswith("144p_init.mp4"))
    first = next(p for p in tmp_path.iterdir() if p.name.endswith("144p_00001.m4s"))
    joined = tmp_path / "joined.mp4"
    joined.write_bytes(init.read_bytes() + first.read_bytes())
    facts = video_facts(joined)
    # web_small's level with the step's own profile; keyframes still on the segment grid.
    assert facts["profile"] in ("Baseline", "Constrained Baseline") and facts["level"] == 31
    assert result.data["renditions"][0]["codecs"].startswith("avc1.42")
    assert result.data["hardware_decision"]["encoder"] == "libx264"
    with pytest.raises(InvalidParameters, match="profile"):
        get_action("package_dash").validate({"profile": "main10"})


def test_libx264_encodes_on_sliced_threads_and_1080p_decodes_on_one(clip: Path,
                                                                     tmp_path: Path) -> None:
    # The memory choices of issue 22 (benchmarks/transcode_memory.py): x264 writes the
    # options it ran with into the stream, so the output itself says so.
    from mediaq.actions.encoder_options import decoder_threads

    _, out = transcode(clip, tmp_path, hardware="never")
    data = out.read_bytes()
    settings = data[data.index(b"x264 - core"):][:2000]
    assert b"sliced_threads=1" in settings
    assert decoder_threads(1920, 1080) == 1
    assert decoder_threads(3840, 2160) == 0  # FFmpeg's own count above 1080p
