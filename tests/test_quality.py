"""measure_quality / min_ssim / min_psnr on transcode_video, recomputed independently by
Debian's ffmpeg's ssim and psnr filters (the source scaled to the rendition's size)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from mediaq.errors import PermanentError
from tests.helpers import MediaqEnv, diagnostic_workflow
from tests.helpers import run_action as run
from tests.media_judge import ffmpeg, needs_ffmpeg, video_stream

pytestmark = needs_ffmpeg

SSIM_AGREEMENT = 0.005
PSNR_AGREEMENT_DB = 0.3


def debian_score(metric: str, rendition: Path, source: Path) -> float:
    """What Debian's ffmpeg says of ``rendition`` against ``source`` scaled to its size."""
    stream = video_stream(rendition)
    graph = (f"[1:v]scale={stream['width']}:{stream['height']}:flags=bicubic[ref];"
             f"[0:v][ref]{metric}")
    err = subprocess.run(["ffmpeg", "-hide_banner", "-nostats", "-i", str(rendition),
                          "-i", str(source), "-lavfi", graph, "-f", "null", "-"],
                         capture_output=True, text=True, check=True).stderr
    pattern = r"All:([\d.]+)" if metric == "ssim" else r"average:([\d.]+|inf)"
    match = re.search(pattern, err)
    assert match, err
    return float(match.group(1))


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("quality") / "moving.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25:duration=2", "-c:v",
           "libx264", "-preset", "ultrafast", "-crf", "12", "-pix_fmt", "yuv420p", path)
    return path


@pytest.mark.parametrize("metric", ["ssim", "psnr"])
def test_scores_agree_with_debian_ffmpeg(source: Path, tmp_path: Path, metric: str) -> None:
    result = run("transcode_video", source, tmp_path, resolution="240p", crf=30,
                 preset="ultrafast", measure_quality=metric, audio_codec="none")
    out = result.outputs[0].staging_path
    quality = result.data["quality"]
    assert quality["frames_compared"] == 50
    theirs = debian_score(metric, out, source)
    tolerance = SSIM_AGREEMENT if metric == "ssim" else PSNR_AGREEMENT_DB
    assert quality[metric] == pytest.approx(theirs, abs=tolerance)


def test_fused_renditions_are_each_scored_at_their_own_size(source: Path,
                                                            tmp_path: Path) -> None:
    from mediaq.actions.video import transcode_many
    from tests.helpers import action_context

    contexts = [action_context("transcode_video", source, tmp_path / label,
                               {"resolution": label, "crf": crf, "preset": "ultrafast",
                                "measure_quality": "ssim", "audio_codec": "none"})
                for label, crf in (("360p", 18), ("180p", 38))]
    results = transcode_many(contexts)
    scores = [r.data["quality"]["ssim"] for r in results]
    assert scores[0] > scores[1]  # CRF 18 at full size beats CRF 38 at half size
    for result, score in zip(results, scores, strict=True):
        out = result.outputs[0].staging_path
        assert score == pytest.approx(debian_score("ssim", out, source), abs=SSIM_AGREEMENT)


def test_min_ssim_fails_the_step_with_one_line(source: Path, tmp_path: Path) -> None:
    with pytest.raises(PermanentError) as caught:
        run("transcode_video", source, tmp_path, resolution="240p", crf=45,
            preset="ultrafast", min_ssim=0.99, audio_codec="none")
    message = str(caught.value)
    assert "\n" not in message
    assert re.fullmatch(r"moving\.mp4: rendition 240p has SSIM 0\.\d+, below min_ssim 0\.99",
                        message), message


def test_min_psnr_passes_when_met(source: Path, tmp_path: Path) -> None:
    result = run("transcode_video", source, tmp_path, resolution="240p", crf=20,
                 preset="ultrafast", min_psnr=25, audio_codec="none")
    assert result.data["quality"]["psnr"] >= 25
    assert "ssim" not in result.data["quality"]


def test_no_scores_unless_asked(source: Path, tmp_path: Path) -> None:
    result = run("transcode_video", source, tmp_path, resolution="240p", preset="ultrafast")
    assert "quality" not in result.data


@pytest.mark.slow
def test_scores_reach_step_output_data_and_floors_fail_the_job(mq: MediaqEnv) -> None:
    mq.apply_workflow(diagnostic_workflow(
        "T-QUALITY",
        {"action": "transcode_video", "parameters": {
            "resolution": "180p", "preset": "ultrafast", "measure_quality": "ssim"}},
        {"action": "transcode_video", "parameters": {
            "resolution": "144p", "preset": "ultrafast", "crf": 50, "min_psnr": 45}},
    ))
    source = mq.inputs / "clip.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25:duration=1", "-c:v",
           "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", source)
    code = mq.submit("T-QUALITY", source)
    mq.run_burst(timeout=120)
    job = mq.job(code)
    assert job["status"] == "failed"
    assert re.fullmatch(r"step \d 'transcode_video \d' failed: clip\.mp4: rendition 144p "
                        r"has PSNR [\d.]+ dB, below min_psnr 45 dB", job["error_message"]), \
        job["error_message"]
    rows = mq.query(
        """SELECT ws.step_number, se.status, se.output_data FROM step_executions se
             JOIN workflow_steps ws ON ws.id = se.step_id
            WHERE se.job_id = %s AND se.status = 'completed'""", (job["id"],))
    # The fused pass failed as a whole; the first step, run again alone, kept its score.
    first = [r for r in rows if r["step_number"] == 1]
    assert first and 0.8 < first[0]["output_data"]["quality"]["ssim"] <= 1
