"""The audio actions, called as the engine calls them, on inputs made by Debian's ffmpeg
and judged by ffprobe and ffmpeg's ebur128 meter (never the engine's own path)."""

from __future__ import annotations

import json
import random
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mediaq.actions import ActionResult, get_action
from mediaq.actions.audio.waveform import PeakAccumulator
from mediaq.errors import Cancelled, InputRefused, InvalidParameters, PermanentError
from tests.helpers import action_context as context
from tests.helpers import run_action as run
from tests.media_judge import FFMPEG, audio_stream, duration_of, ffmpeg, ffprobe, needs_ffmpeg

pytestmark = needs_ffmpeg

TONE = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
PINK = ["-f", "lavfi", "-i", "anoisesrc=color=pink:sample_rate=44100:seed=7"]
X264_FAST = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p")
TAGS = ("-metadata", "title=Night Train", "-metadata", "artist=The Testers",
        "-metadata", "album=Fixtures")


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("audio_sources")
    ffmpeg(*TONE, "-t", "3", "-ac", "2", *TAGS, d / "tone.wav")
    ffmpeg(*TONE, "-t", "3", "-ac", "2", "-c:a", "libmp3lame", "-b:a", "128k", *TAGS,
           d / "tagged.mp3")
    ffmpeg(*TONE, "-t", "2", "-ac", "6", "-c:a", "flac", "-sample_fmt", "s32", d / "surround.flac")
    # Speech-like: pink noise whose level swells and fades, about -46 LUFS, peaks near -28 dBTP
    # (so reaching -16 LUFS needs the limiter).
    ffmpeg(*PINK, "-t", "5", "-af",
           "volume='0.05*(0.6+0.4*sin(2*PI*1.7*t))*(0.5+0.5*abs(sin(2*PI*0.31*t)))'"
           ":eval=frame", "-ac", "1", d / "quiet.wav")
    # Mastered hot: about -8 LUFS with peaks near -2 dBTP.
    ffmpeg(*PINK, "-t", "5", "-af", "volume=18dB,alimiter=limit=0.95:level=0", "-ac", "2",
           d / "loud.wav")
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=48000:cl=mono", "-t", "2", d / "silence.wav")
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=48000:cl=mono", *TONE, "-filter_complex",
           "[0]atrim=duration=1[a];[1]atrim=duration=1,volume=16dB[b];[a][b]concat=n=2:v=0:a=1",
           d / "silent_then_loud.wav")
    ffmpeg(*TONE, "-t", "30", "-ar", "8000", "-ac", "1", d / "long.wav")
    video = ["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10"]
    ffmpeg(*video, *TONE, "-t", "2", *X264_FAST, "-c:a", "aac", "-shortest", d / "clip.mp4")
    ffmpeg(*video, *TONE, "-t", "2", *X264_FAST, "-c:a", "aac", "-shortest", d / "clip.ts")
    ffmpeg(*video, "-t", "2", *X264_FAST, d / "video_only.mp4")
    make_broken_inputs(d)
    return {p.name: p for p in d.iterdir()}


def make_broken_inputs(d: Path) -> None:
    ffmpeg("-i", d / "tone.wav", "-c:a", "flac", d / "whole.flac")
    ffmpeg("-i", d / "tone.wav", "-c:a", "aac", "-movflags", "+faststart", d / "whole.m4a")
    for name in ("tone.wav", "whole.flac", "tagged.mp3"):
        data = (d / name).read_bytes()
        (d / f"truncated{Path(name).suffix}").write_bytes(data[: len(data) // 3])
    flac = bytearray((d / "whole.flac").read_bytes())
    for offset in range(9000, len(flac), 50):  # frames garbled after the first few
        flac[offset] ^= 0xFF
    (d / "corrupt.flac").write_bytes(bytes(flac))
    m4a = (d / "whole.m4a").read_bytes()
    (d / "truncated.m4a").write_bytes(m4a[: len(m4a) // 3])
    header_wrecked = bytearray(m4a)
    header_wrecked[8:400] = bytes(392)  # ftyp and the start of moov zeroed
    (d / "corrupt.m4a").write_bytes(bytes(header_wrecked))
    (d / "empty.wav").write_bytes(b"")
    (d / "notes.mp3").write_text("meeting notes, not a song\n")


def only_output(result: ActionResult, role: str) -> Path:
    [output] = result.outputs
    assert output.role == role
    return output.staging_path


def audio_duration(path: Path) -> float:
    stream = audio_stream(path)
    assert stream is not None
    return float(stream.get("duration") or duration_of(path))


def tags_of(path: Path) -> dict[str, str]:
    """Container and stream tags, lower-cased (Ogg keeps them on the stream)."""
    probe = ffprobe(path)
    tags: dict[str, str] = {}
    for holder in [*probe["streams"], probe["format"]]:
        tags.update({key.lower(): value for key, value in holder.get("tags", {}).items()})
    return tags


def ebur128(path: Path) -> tuple[float, float]:
    """Integrated loudness (LUFS) and true peak (dBTP), as Debian's ffmpeg measures them."""
    assert FFMPEG is not None
    log = subprocess.run([FFMPEG, "-nostdin", "-hide_banner", "-i", str(path), "-af",
                          "ebur128=peak=true", "-f", "null", "-"], capture_output=True,
                         text=True, timeout=60, check=True).stderr
    summary = log[log.rindex("Summary:"):]
    loudness = re.search(r"I:\s+(-?[\d.]+) LUFS", summary)
    peak = re.search(r"Peak:\s+(-?[\d.]+|-inf) dBFS", summary)
    assert loudness and peak, summary
    return float(loudness.group(1)), float(peak.group(1))


def assert_one_line_error(exc: pytest.ExceptionInfo[Exception], source: Path) -> str:
    message = str(exc.value)
    assert "\n" not in message and message.startswith(f"{source.name}: "), message
    return message


# --------------------------------------------------------------------------- validate


def test_validate_accepts_audio_and_reports_it(sources: dict[str, Path], tmp_path: Path) -> None:
    result = run("validate_audio", sources["tone.wav"], tmp_path)
    assert result.outputs == []
    assert result.data == {"valid": True, "duration": 3.0, "codec": "pcm_s16le",
                           "sample_rate": 48000, "channels": 2, "container": "wav"}


def test_validate_accepts_the_audio_of_a_video(sources: dict[str, Path], tmp_path: Path) -> None:
    result = run("validate_audio", sources["clip.mp4"], tmp_path)
    assert result.data["codec"] == "aac" and result.data["sample_rate"] == 48000
    assert result.data["duration"] == pytest.approx(2.0, abs=0.1)


@pytest.mark.parametrize(("name", "expected"), [
    ("empty.wav", "empty"),
    ("notes.mp3", "not a supported audio or video file"),
    ("truncated.wav", "truncated"),
    ("truncated.flac", "truncated"),
    ("truncated.mp3", "truncated"),
    ("truncated.m4a", "truncated"),
    ("corrupt.m4a", "not a supported audio or video file"),
    ("corrupt.flac", "corrupt"),
    ("video_only.mp4", "has no audio stream"),
])
def test_validate_refuses_bad_inputs_with_one_line(sources: dict[str, Path], tmp_path: Path,
                                                   name: str, expected: str) -> None:
    with pytest.raises(PermanentError) as exc:
        run("validate_audio", sources[name], tmp_path)
    assert expected in assert_one_line_error(exc, sources[name])


@pytest.mark.parametrize("action", ["transcode_audio", "normalize_loudness",
                                    "generate_waveform", "extract_audio"])
@pytest.mark.parametrize("name", ["truncated.mp3", "truncated.m4a", "corrupt.flac"])
def test_cut_or_garbled_inputs_fail_rather_than_give_a_short_output(
        sources: dict[str, Path], tmp_path: Path, action: str, name: str) -> None:
    params = {"codec": "mp3"} if action in ("transcode_audio", "extract_audio") else {}
    with pytest.raises(PermanentError, match=r"only [\d.]+ s of 3.0 s of audio") as exc:
        run(action, sources[name], tmp_path, **params)
    assert_one_line_error(exc, sources[name])
    assert not any(tmp_path.iterdir())


def test_validate_missing_file_is_refused_input(tmp_path: Path) -> None:
    with pytest.raises(InputRefused, match="does not exist"):
        run("validate_audio", tmp_path / "gone.wav", tmp_path)


# --------------------------------------------------------------------------- metadata


def test_metadata_describes_codec_rate_layout_and_tags(sources: dict[str, Path],
                                                       tmp_path: Path) -> None:
    data = run("extract_audio_metadata", sources["tagged.mp3"], tmp_path).data
    assert data["codec"] == "mp3"  # the codec, not FFmpeg's decoder name (mp3float)
    assert (data["container"], data["sample_rate"], data["channels"], data["layout"]) == (
        "mp3", 48000, 2, "stereo")
    assert data["bit_rate"] == 128_000 and data["sample_format"] == "fltp"
    assert data["duration"] == pytest.approx(3.0, abs=0.06)
    assert data["tags"]["title"] == "Night Train"
    assert data["tags"]["artist"] == "The Testers" and data["tags"]["album"] == "Fixtures"
    assert data["lossless"] is False and data["has_video"] is False
    json.dumps(data)  # stored as JSON


def test_metadata_of_a_lossless_surround_file(sources: dict[str, Path], tmp_path: Path) -> None:
    data = run("extract_audio_metadata", sources["surround.flac"], tmp_path).data
    assert (data["codec"], data["channels"], data["layout"]) == ("flac", 6, "5.1")
    assert data["lossless"] is True and data["sample_format"] == "s32"


# --------------------------------------------------------------------------- transcode


@pytest.mark.parametrize(("codec", "suffix", "format_name"), [
    ("mp3", ".mp3", "mp3"),
    ("aac", ".m4a", "mov,mp4,m4a,3gp,3g2,mj2"),
    ("opus", ".opus", "ogg"),
    ("flac", ".flac", "flac"),
])
def test_transcode_keeps_duration_rate_and_channels(sources: dict[str, Path], tmp_path: Path,
                                                    codec: str, suffix: str,
                                                    format_name: str) -> None:
    source = sources["tone.wav"]
    result = run("transcode_audio", source, tmp_path, codec=codec)
    path = only_output(result, "rendition")
    assert path.name == f"tone{suffix}" and path.parent == tmp_path
    probe = ffprobe(path)
    stream = audio_stream(path)
    assert stream is not None
    assert probe["format"]["format_name"] == format_name
    assert stream["codec_name"] == codec
    assert (int(stream["sample_rate"]), stream["channels"]) == (48000, 2)
    # ffprobe counts whole MP3 frames, encoder padding included: still within 0.05 s at 48 kHz.
    assert duration_of(path) == pytest.approx(duration_of(source), abs=0.05)
    assert tags_of(path)["title"] == "Night Train"  # the recording's tags travel along
    meta = result.outputs[0].meta
    assert meta["codec"] == codec and meta["sample_rate"] == 48000 and meta["channels"] == 2
    assert meta["duration"] == pytest.approx(3.0, abs=0.001)


def test_transcode_bit_rate_sample_rate_and_channels(sources: dict[str, Path],
                                                     tmp_path: Path) -> None:
    mp3 = only_output(run("transcode_audio", sources["tone.wav"], tmp_path, codec="mp3",
                          bitrate="96k", sample_rate=22050, channels=1), "rendition")
    stream = audio_stream(mp3)
    assert stream is not None
    assert (int(stream["sample_rate"]), stream["channels"]) == (22050, 1)
    assert int(stream["bit_rate"]) == 96_000


def test_transcode_snaps_to_a_rate_the_codec_supports(sources: dict[str, Path],
                                                      tmp_path: Path) -> None:
    opus = only_output(run("transcode_audio", sources["quiet.wav"], tmp_path, codec="opus",
                           sample_rate=44100), "rendition")
    stream = audio_stream(opus)
    assert stream is not None and int(stream["sample_rate"]) == 48000
    assert duration_of(opus) == pytest.approx(duration_of(sources["quiet.wav"]), abs=0.05)


def test_transcode_downmixes_surround_and_keeps_depth_in_flac(sources: dict[str, Path],
                                                              tmp_path: Path) -> None:
    flac = only_output(run("transcode_audio", sources["surround.flac"], tmp_path, codec="flac"),
                       "rendition")
    stream = audio_stream(flac)
    assert stream is not None
    assert stream["channels"] == 2 and stream["sample_fmt"] == "s32"


def test_transcode_takes_the_audio_of_a_video(sources: dict[str, Path], tmp_path: Path) -> None:
    clip = sources["clip.mp4"]
    mp3 = only_output(run("transcode_audio", clip, tmp_path, codec="mp3"), "rendition")
    assert [s["codec_type"] for s in ffprobe(mp3)["streams"]] == ["audio"]
    assert duration_of(mp3) == pytest.approx(audio_duration(clip), abs=0.05)


def test_transcode_refuses_a_video_without_audio(sources: dict[str, Path],
                                                 tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="has no audio stream") as exc:
        run("transcode_audio", sources["video_only.mp4"], tmp_path, codec="mp3")
    assert_one_line_error(exc, sources["video_only.mp4"])
    assert not any(tmp_path.iterdir())


def test_bad_transcode_parameters_are_refused(sources: dict[str, Path], tmp_path: Path) -> None:
    action = get_action("transcode_audio")
    for params in ({"codec": "wma"}, {"channels": 6}, {"bitrate": "loud"},
                   {"sample_rate": 1000}, {"quality": 5}):
        with pytest.raises(InvalidParameters):
            action.validate(params)
    assert action.validate({}) == {"codec": "aac"}
    with pytest.raises(PermanentError, match=r"tone.wav: bit rate 900k is outside 8k-320k"):
        run("transcode_audio", sources["tone.wav"], tmp_path, codec="mp3", bitrate="900k")
    assert not any(tmp_path.iterdir())


def test_fused_transcodes_decode_once_and_match_single_ones(sources: dict[str, Path],
                                                            tmp_path: Path) -> None:
    source = sources["tone.wav"]
    fuse = get_action("transcode_audio").fuse
    assert fuse is not None
    results = fuse([context("transcode_audio", source, tmp_path, {"codec": "mp3",
                                                                  "bitrate": "192k"}),
                    context("transcode_audio", source, tmp_path, {"codec": "aac",
                                                                  "bitrate": "160k"})])
    mp3, m4a = (only_output(r, "rendition") for r in results)
    assert (mp3.name, m4a.name) == ("tone.mp3", "tone.m4a")
    for path in (mp3, m4a):
        assert duration_of(path) == pytest.approx(3.0, abs=0.05)
    assert results[1].data["fused_with"] == 2


# --------------------------------------------------------------------------- loudness


@pytest.mark.parametrize("target", [-23, -16])
@pytest.mark.parametrize("name", ["quiet.wav", "loud.wav"])
def test_normalize_reaches_the_target_as_ffmpeg_measures_it(sources: dict[str, Path],
                                                            tmp_path: Path, name: str,
                                                            target: int) -> None:
    source = sources[name]
    result = run("normalize_loudness", source, tmp_path, target_lufs=target)
    path = only_output(result, "primary")
    assert path.name == f"{source.stem}_normalized.wav"  # PCM in, PCM out
    loudness, peak = ebur128(path)
    assert loudness == pytest.approx(target, abs=1.0)
    assert peak <= -1.0 + 0.2
    data = result.data
    input_loudness, input_peak = ebur128(source)
    assert data["input_lufs"] == pytest.approx(input_loudness, abs=0.2)
    assert data["input_true_peak_db"] == pytest.approx(input_peak, abs=0.3)
    assert data["output_lufs"] == pytest.approx(loudness, abs=0.2)
    assert data["output_true_peak_db"] == pytest.approx(peak, abs=0.3)
    assert data["gain_db"] == pytest.approx(target - data["input_lufs"], abs=3.0)
    assert duration_of(path) == pytest.approx(duration_of(source), abs=0.01)
    assert list(tmp_path.iterdir()) == [path]  # the passes tried on the way are gone


def test_normalize_needs_the_limiter_only_when_peaks_would_clip(sources: dict[str, Path],
                                                                tmp_path: Path) -> None:
    quiet_up = run("normalize_loudness", sources["quiet.wav"], tmp_path / "a", target_lufs=-16)
    loud_down = run("normalize_loudness", sources["loud.wav"], tmp_path / "b", target_lufs=-23)
    assert quiet_up.data["limited"] is True
    assert loud_down.data["limited"] is False and loud_down.data["passes"] == 1


def test_normalize_to_lossy_output(sources: dict[str, Path], tmp_path: Path) -> None:
    result = run("normalize_loudness", sources["loud.wav"], tmp_path, target_lufs=-16,
                 codec="aac")
    path = only_output(result, "primary")
    assert path.suffix == ".m4a"
    stream = audio_stream(path)
    assert stream is not None and stream["codec_name"] == "aac"
    assert ebur128(path)[0] == pytest.approx(-16, abs=1.0)


def test_normalize_refuses_silence(sources: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="silent") as exc:
        run("normalize_loudness", sources["silence.wav"], tmp_path)
    assert_one_line_error(exc, sources["silence.wav"])
    assert not any(tmp_path.iterdir())


# --------------------------------------------------------------------------- waveform


def test_waveform_shows_silence_then_sound(sources: dict[str, Path], tmp_path: Path) -> None:
    result = run("generate_waveform", sources["silent_then_loud.wav"], tmp_path,
                 width=1800, height=280, format="png")
    image_out, peaks_out = result.outputs
    assert (image_out.role, peaks_out.role) == ("thumbnail", "sidecar")
    assert peaks_out.staging_path.name == "silent_then_loud_waveform.json"
    peaks = json.loads(peaks_out.staging_path.read_text())
    assert {k: peaks[k] for k in ("version", "channels", "sample_rate", "bits")} == {
        "version": 2, "channels": 1, "sample_rate": 48000, "bits": 8}
    assert peaks["samples_per_pixel"] == 54  # ceil(2 s * 48000 / 1800)
    assert len(peaks["data"]) == 2 * peaks["length"] and 1700 <= peaks["length"] <= 1800
    pairs = np.array(peaks["data"]).reshape(-1, 2)
    half = peaks["length"] // 2
    assert np.abs(pairs[: half - 5]).max() <= 1  # the silent second
    # A bucket (54 samples) is shorter than the tone's period: look at 4 at a time.
    loud = pairs[half + 5: half + 5 + (peaks["length"] - half - 5) // 4 * 4].reshape(-1, 4, 2)
    assert loud[:, :, 1].max(axis=1).min() >= 100  # the tone peaks at 0.79 of full scale
    assert loud[:, :, 0].min(axis=1).max() <= -100
    assert all(lo <= hi for lo, hi in pairs)

    with Image.open(image_out.staging_path) as image:
        assert (image.format, image.size) == ("PNG", (1800, 280))
        pixels = np.asarray(image.convert("L"))
    drawn = pixels < 200  # waveform colour on white
    assert drawn[:, 100].sum() <= 2  # silence: the centre line only
    assert drawn[:, 1500:1505].any(axis=1).sum() >= 200  # sound: most of the height


def test_waveform_webp_colours_resolution_and_16_bits(sources: dict[str, Path],
                                                      tmp_path: Path) -> None:
    result = run("generate_waveform", sources["tone.wav"], tmp_path, width=400, height=100,
                 format="webp", pixels_per_second=100, bits=16,
                 colors={"waveform_color": "#ff0000", "background_color": "#00000000"})
    image_out, peaks_out = result.outputs
    with Image.open(image_out.staging_path) as image:
        assert (image.format, image.size, image.mode) == ("WEBP", (400, 100), "RGBA")
        pixels = np.asarray(image)
    assert pixels[0, 0, 3] == 0  # transparent background
    assert pixels[50, 200].tolist() == [255, 0, 0, 255]
    peaks = json.loads(peaks_out.staging_path.read_text())
    assert peaks["samples_per_pixel"] == 480 and peaks["length"] == 300  # 3 s at 100 px/s
    assert 2000 < max(peaks["data"]) <= 32767 and min(peaks["data"]) >= -32768


def test_bad_waveform_parameters_are_refused() -> None:
    action = get_action("generate_waveform")
    for params in ({"format": "gif"}, {"bits": 12}, {"width": 5},
                   {"colors": {"waveform_color": "red"}}, {"colors": {"text": "#000000"}}):
        with pytest.raises(InvalidParameters):
            action.validate(params)


def test_peaks_streamed_in_any_chunks_equal_peaks_of_the_whole() -> None:
    rng = np.random.default_rng(3)
    samples = rng.uniform(-1, 1, 10_007).astype(np.float32)
    for per_pixel in (1, 7, 256, 20_000):
        whole = PeakAccumulator(per_pixel)
        whole.add(samples)
        streamed = PeakAccumulator(per_pixel)
        cuts = sorted(random.Random(per_pixel).sample(range(1, samples.size), 40))
        for chunk in np.split(samples, cuts):
            streamed.add(chunk)
        expected = [(samples[i:i + per_pixel].min(), samples[i:i + per_pixel].max())
                    for i in range(0, samples.size, per_pixel)]
        assert np.array_equal(streamed.finish(), np.array(expected, np.float32))
        assert np.array_equal(whole.finish(), np.array(expected, np.float32))


# --------------------------------------------------------------------------- extract


@pytest.mark.parametrize("name", ["clip.mp4", "clip.ts"])
def test_extract_copies_the_audio_track(sources: dict[str, Path], tmp_path: Path,
                                        name: str) -> None:
    clip = sources[name]
    result = run("extract_audio", clip, tmp_path)
    path = only_output(result, "rendition")
    assert path.name == "clip.m4a" and result.data["copied"] is True
    assert [s["codec_name"] for s in ffprobe(path)["streams"]] == ["aac"]
    # Both clips hold 2 s of AAC (MPEG-TS keeps the encoder's priming frame, MP4 trims it).
    assert duration_of(path) == pytest.approx(2.0, abs=0.05)
    # It starts at zero, not where the TS started (1.4 s), give or take the priming frame.
    assert abs(float(ffprobe(path)["streams"][0]["start_time"])) < 0.05


@pytest.mark.parametrize(("codec", "suffix", "codec_name"), [
    ("wav", ".wav", "pcm_s16le"), ("mp3", ".mp3", "mp3"), ("flac", ".flac", "flac"),
])
def test_extract_reencodes_when_asked(sources: dict[str, Path], tmp_path: Path, codec: str,
                                      suffix: str, codec_name: str) -> None:
    path = only_output(run("extract_audio", sources["clip.mp4"], tmp_path, codec=codec),
                       "rendition")
    assert path.suffix == suffix
    stream = audio_stream(path)
    assert stream is not None and stream["codec_name"] == codec_name
    assert duration_of(path) == pytest.approx(audio_duration(sources["clip.mp4"]), abs=0.05)


def test_extract_refuses_a_video_without_audio(sources: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="has no audio stream") as exc:
        run("extract_audio", sources["video_only.mp4"], tmp_path)
    assert_one_line_error(exc, sources["video_only.mp4"])


# --------------------------------------------------------------------------- cancellation


@pytest.mark.parametrize(("name", "params", "stage"), [
    ("transcode_audio", {"codec": "mp3"}, "encoding"),
    ("normalize_loudness", {}, "normalising"),
    ("generate_waveform", {}, "waveform"),
    ("extract_audio", {}, "copying"),
    ("validate_audio", {}, "checking"),
])
def test_cancel_mid_way_stops_at_once_and_leaves_no_file(sources: dict[str, Path],
                                                         tmp_path: Path, name: str,
                                                         params: dict[str, Any],
                                                         stage: str) -> None:
    stop = threading.Event()
    cancelled_at: list[float] = []

    def cancel_in_stage(fraction: float, label: str | None) -> None:
        if (label or "").startswith(stage) and not stop.is_set():
            cancelled_at.append(time.monotonic())
            stop.set()

    staging = tmp_path / "stage"
    ctx = context(name, sources["long.wav"], staging, params, cancel_event=stop)
    ctx._on_progress = cancel_in_stage
    with pytest.raises(Cancelled):
        get_action(name).fn(ctx)
    assert cancelled_at and time.monotonic() - cancelled_at[0] < 2
    assert not staging.exists() or not any(staging.iterdir())
