"""generate_thumbnails at chosen times: seconds and percentages, exact frames or the
keyframe before; the thumbnail at 25 % is the frame Debian's ffmpeg shows at 25 %
(judged by PSNR, ImageMagick's compare)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from PIL import Image

from mediaq.errors import InvalidParameters
from tests.helpers import requires_tool, run_action
from tests.media_judge import ffmpeg, needs_ffmpeg

pytestmark = [needs_ffmpeg, requires_tool("convert")]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 s of testsrc2 at 25 fps with keyframes every 2 s only, so 1.0 s (25 %) and
    3.0 s are frames between keyframes, and every frame looks different."""
    path = tmp_path_factory.mktemp("thumbs") / "clip.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=4",
           "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p",
           "-g", "50", "-keyint_min", "50", "-sc_threshold", "0", "-bf", "0", path)
    return path


def ffmpeg_frame(source: Path, seconds: float, target: Path) -> Path:
    """The frame ffmpeg decodes at ``seconds`` (accurate input seeking)."""
    ffmpeg("-ss", f"{seconds}", "-i", source, "-frames:v", "1", target)
    return target


def psnr(first: Path, second: Path) -> float:
    done = subprocess.run(["compare", "-metric", "PSNR", str(first), str(second), "null:"],
                          capture_output=True, text=True, timeout=60)
    value = done.stderr.strip().split()[0]
    return float("inf") if value == "inf" else float(value)


def test_the_thumbnail_at_25_percent_is_the_frame_at_25_percent(clip: Path,
                                                                tmp_path: Path) -> None:
    result = run_action("generate_thumbnails", clip, tmp_path / "out", timestamps=["25%"],
                        exact=True, format="png")
    [output] = result.outputs
    assert output.meta["time"] == pytest.approx(1.0)
    assert output.meta["requested"] == "25%" and output.meta["exact"] is True
    at_quarter = ffmpeg_frame(clip, 1.0, tmp_path / "quarter.png")
    keyframe = ffmpeg_frame(clip, 0.0, tmp_path / "keyframe.png")
    neighbour = ffmpeg_frame(clip, 1.04, tmp_path / "next.png")

    print(f"PSNR against ffmpeg's frame at 25 %: {psnr(output.staging_path, at_quarter)} dB; "
          f"against the keyframe before: {psnr(output.staging_path, keyframe)} dB")
    assert psnr(output.staging_path, at_quarter) > 40
    # Not the keyframe before it, nor the frame after it.
    assert psnr(output.staging_path, keyframe) < 30
    assert psnr(output.staging_path, neighbour) < psnr(output.staging_path, at_quarter) - 10


def test_seconds_and_percentages_mix_in_the_order_asked(clip: Path, tmp_path: Path) -> None:
    result = run_action("generate_thumbnails", clip, tmp_path / "out", timestamps=[3, "25%"],
                        exact=True, format="png", width=160)
    assert result.data["times"] == [pytest.approx(3.0), pytest.approx(1.0)]
    assert [o.meta["requested"] for o in result.outputs] == [3, "25%"]
    reference = ffmpeg_frame(clip, 3.0, tmp_path / "three.png")
    small = tmp_path / "three_small.png"
    with Image.open(reference) as image:
        image.resize((160, 120), Image.Resampling.LANCZOS).save(small)
    assert psnr(result.outputs[0].staging_path, small) > 30


def test_without_exact_the_keyframe_before_is_taken(clip: Path, tmp_path: Path) -> None:
    result = run_action("generate_thumbnails", clip, tmp_path / "out", timestamps=["25%", 3.5],
                        format="png")
    assert result.data["times"] == [pytest.approx(0.0), pytest.approx(2.0)]
    assert psnr(result.outputs[1].staging_path,
                ffmpeg_frame(clip, 2.0, tmp_path / "two.png")) > 40


def test_a_single_thumbnail_defaults_to_25_percent(clip: Path, tmp_path: Path) -> None:
    snapped = run_action("generate_thumbnails", clip, tmp_path / "a", count=1)
    exact = run_action("generate_thumbnails", clip, tmp_path / "b", count=1, exact=True)
    assert snapped.outputs[0].meta["requested"] == "25%"
    assert snapped.data["times"] == [pytest.approx(0.0)]  # the keyframe before 1.0 s
    assert exact.data["times"] == [pytest.approx(1.0)]


def test_exact_count_takes_the_frames_at_evenly_spaced_times(clip: Path,
                                                             tmp_path: Path) -> None:
    result = run_action("generate_thumbnails", clip, tmp_path / "out", count=4, exact=True)
    # 0.5 s falls between frames 12 (0.48 s) and 13 (0.52 s): the one shown is 12.
    assert result.data["times"] == [pytest.approx(t) for t in (0.48, 1.48, 2.48, 3.48)]


def test_a_time_past_the_end_gives_the_last_frame(clip: Path, tmp_path: Path) -> None:
    result = run_action("generate_thumbnails", clip, tmp_path / "out", timestamps=[60],
                        exact=True)
    [output] = result.outputs
    assert output.meta["clamped"] is True
    assert output.meta["time"] == pytest.approx(3.96)


@pytest.mark.parametrize("bad", [["25"], ["101%"], [-1], []])
def test_malformed_timestamps_are_refused(clip: Path, tmp_path: Path, bad: list[object]) -> None:
    with pytest.raises(InvalidParameters, match="timestamps"):
        run_action("generate_thumbnails", clip, tmp_path, timestamps=bad)
