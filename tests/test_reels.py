"""extract_scenes, generate_digest, generate_highlights and extract_clips on sources made
by Debian's ffmpeg, judged by ffprobe/ffmpeg (issue 24)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mediaq.actions import get_action
from tests.helpers import MediaqEnv, action_context, requires_tool, run_action
from tests.media_judge import decodes_fully, duration_of, ffmpeg, ffprobe, video_stream

pytestmark = requires_tool("ffmpeg", "ffprobe")
SIZE = (160, 90)
RATE = 10


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reels")


def three_shots(folder: Path, *, keyframes_at_cuts: bool) -> Path:
    """9 s in three 3-second shots (hard cuts at 3 s and 6 s) with a tone; the cuts are
    keyframes, or (x264's scene-cut detection off, one GOP) are not."""
    path = folder / f"shots_{'key' if keyframes_at_cuts else 'nokey'}.mp4"
    if path.exists():
        return path
    size = f"{SIZE[0]}x{SIZE[1]}"
    gop = ["-force_key_frames", "3,6"] if keyframes_at_cuts else \
        ["-x264-params", "scenecut=0:keyint=1000"]
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={size}:rate={RATE}:duration=3",
           "-f", "lavfi", "-i", f"smptebars=size={size}:rate={RATE}:duration=3",
           "-f", "lavfi", "-i", f"rgbtestsrc=size={size}:rate={RATE}:duration=3",
           "-f", "lavfi", "-i", "sine=frequency=440:duration=9",
           "-filter_complex", "[0][1][2]concat=n=3:v=1:a=0[v]", "-map", "[v]", "-map", "3",
           "-c:v", "libx264", "-preset", "ultrafast", *gop, "-pix_fmt", "yuv420p",
           "-c:a", "aac", path)
    return path


def grey_frames(path: Path) -> np.ndarray:
    """Every frame as 40x22 grey levels, decoded by ffmpeg."""
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-vf", "scale=40:22",
                          "-f", "rawvideo", "-pix_fmt", "gray", "-"],
                         capture_output=True, check=True, timeout=60).stdout
    return np.frombuffer(out, np.uint8).reshape(-1, 22, 40).astype(np.float32)


@pytest.mark.parametrize("keyframes_at_cuts", [True, False])
def test_extract_scenes_cuts_one_clip_per_scene(media: Path, tmp_path: Path,
                                                keyframes_at_cuts: bool) -> None:
    source = three_shots(media, keyframes_at_cuts=keyframes_at_cuts)
    result = run_action("extract_scenes", source, tmp_path)
    assert result.data["scene_count"] == 3
    expected_mode = "copy" if keyframes_at_cuts else "encode"
    assert [s["mode"] for s in result.data["scenes"]] == [expected_mode] * 3
    clips = [o.staging_path for o in result.outputs if o.role == "rendition"]
    thumbs = [o.staging_path for o in result.outputs if o.role == "thumbnail"]
    assert len(clips) == 3 and len(thumbs) == 3
    source_frames = grey_frames(source)
    for number, clip in enumerate(clips):
        assert decodes_fully(clip)
        frames = grey_frames(clip)
        # Starts and ends within one frame of the cuts: 30 frames, the first one the
        # source's first of the shot, the last its last.
        assert abs(len(frames) - 30) <= 1, (clip.name, len(frames))
        first, last = number * 30, number * 30 + 29
        assert np.mean(np.abs(frames[0] - source_frames[first])) < 6
        assert np.mean(np.abs(frames[-1] - source_frames[last])) < 6
        if number:  # and not the shot before the cut
            assert np.mean(np.abs(frames[0] - source_frames[first - 1])) > 20
        assert abs(duration_of(clip) - 3.0) < 0.1
    assert all(ffprobe(t)["streams"][0]["codec_name"] == "mjpeg" for t in thumbs)


def digest_source(folder: Path) -> Path:
    """40 s: still shots with quiet noise, a fast-moving section at 10-16 s and a loud
    tone burst at 30-33 s."""
    path = folder / "digest_src.mp4"
    if path.exists():
        return path
    size = f"{SIZE[0]}x{SIZE[1]}"
    ffmpeg("-f", "lavfi", "-i", f"color=c=blue:size={size}:rate={RATE}:duration=10",
           "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={RATE}:duration=6,scroll=h=0.2:v=0.1",
           "-f", "lavfi", "-i", f"color=c=green:size={size}:rate={RATE}:duration=14",
           "-f", "lavfi", "-i", f"color=c=red:size={size}:rate={RATE}:duration=3",
           "-f", "lavfi", "-i", f"color=c=yellow:size={size}:rate={RATE}:duration=7",
           "-f", "lavfi", "-i", "anoisesrc=a=0.01:r=48000:d=40",
           "-f", "lavfi", "-i", "sine=f=880:r=48000:d=40",
           "-filter_complex",
           "[0][1][2][3][4]concat=n=5:v=1:a=0[v];"
           "[6]volume=enable='not(between(t,30,33))':volume=0[s];"
           "[5][s]amix=inputs=2:normalize=0[a]",
           "-map", "[v]", "-map", "[a]", "-c:v", "libx264", "-preset", "ultrafast",
           "-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "2", path)
    return path


def loudest_momentary(path: Path) -> float:
    log = subprocess.run(["ffmpeg", "-nostats", "-i", str(path), "-af", "ebur128",
                          "-f", "null", "-"], capture_output=True, text=True, timeout=60).stderr
    values = [float(v) for v in re.findall(r" M:\s*(-?[\d.]+)", log)]
    return max(values)


def test_a_digest_lasts_its_target_and_keeps_the_loud_and_fast_parts(
        media: Path, tmp_path: Path) -> None:
    source = digest_source(media)
    result = run_action("generate_digest", source, tmp_path, target_length=20)
    digest = result.outputs[0].staging_path
    assert abs(duration_of(digest) - 20) <= 0.5  # one crossfade
    assert decodes_fully(digest)
    # What a browser plays: H.264 in yuv420p with AAC, in MP4.
    video = video_stream(digest)
    assert (video["codec_name"], video["pix_fmt"]) == ("h264", "yuv420p")
    assert [s["codec_name"] for s in ffprobe(digest)["streams"]] == ["h264", "aac"]
    kept = result.data["segments"]
    assert kept == sorted(kept, key=lambda s: s["start"])
    assert any(s["start"] < 32 and s["end"] > 31 for s in kept)  # the loud burst
    assert any(s["start"] < 15 and s["end"] > 11 for s in kept)  # the fast section
    # The burst is heard as loud as in the source (the rest is about 25 LU quieter).
    assert loudest_momentary(digest) > loudest_momentary(source) - 1.5
    scores = {(c["start"], c["end"]): c["score"] for c in result.data["candidates"]}
    assert max(scores.values()) == pytest.approx(
        max(s["score"] for s in kept), abs=1e-6)


def test_highlights_then_extract_clips(media: Path, tmp_path: Path) -> None:
    source = digest_source(media)
    result = run_action("generate_highlights", source, tmp_path / "h", count=2,
                        crossfade=0.3)
    kept = result.data["segments"]
    assert len(kept) == 2
    reel = result.outputs[0].staging_path
    expected = sum(s["duration"] for s in kept) - 0.3
    assert abs(duration_of(reel) - expected) <= 0.15
    # extract_clips reads the segments the reel recorded on its output.
    previous = [{"path": str(reel), "role": "rendition", **result.outputs[0].meta}]
    ctx = action_context("extract_clips", source, tmp_path / "c",
                         previous_outputs=previous)
    clips = get_action("extract_clips").fn(ctx)
    files = [o.staging_path for o in clips.outputs if o.role == "rendition"]
    assert len(files) == 2
    for segment, clip in zip(kept, files, strict=True):
        assert abs(duration_of(clip) - segment["duration"]) <= 0.15
        assert decodes_fully(clip)


def test_the_seeded_highlights_workflow(mq: MediaqEnv, media: Path) -> None:
    mq.seed()
    source = mq.inputs / "shots.mp4"
    source.write_bytes(three_shots(media, keyframes_at_cuts=True).read_bytes())
    code = mq.submit("WF-VIDEO-HIGHLIGHTS", source, "--param",
                     "generate_digest.target_length=5")
    mq.run_burst(timeout=300)
    job = mq.job(code)
    assert job["status"] == "completed", job["error_message"]
    assert job["output_metadata"]["failed_steps"] == []
    files = {Path(o["path"]).name for o in job["output_metadata"]["outputs"]}
    assert {f"shots_scene00{i}.mp4" for i in range(3)} <= files
    assert "shots_digest.mp4" in files and "shots_clip000.mp4" in files
    assert abs(duration_of(mq.outputs / code / "shots_digest.mp4") - 5) <= 0.5


@requires_tool("chromium")
def test_the_digest_plays_in_a_browser(media: Path, tmp_path: Path) -> None:
    """Headless Chromium loads the digest over HTTP and plays it through."""
    import functools
    import http.server
    import threading

    from tests.test_dashboard import Browser

    result = run_action("generate_digest", digest_source(media), tmp_path / "site",
                        target_length=6)
    name = result.outputs[0].staging_path.name
    handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                                directory=str(tmp_path / "site"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    browser = Browser(tmp_path / "chromium")
    try:
        played = browser.js(f"""new Promise(done => {{
            const v = document.createElement('video');
            v.muted = true; v.playbackRate = 4;
            v.onended = () => done({{ended: true, duration: v.duration,
                                     width: v.videoWidth, time: v.currentTime}});
            v.onerror = () => done({{error: v.error && v.error.code}});
            v.src = 'http://127.0.0.1:{server.server_port}/{name}';
            document.body.appendChild(v);
            v.play().catch(e => done({{error: String(e)}}));
            setTimeout(() => done({{timeout: true, time: v.currentTime}}), 60000);
        }})""")
    finally:
        browser.close()
        server.shutdown()
    assert played.get("ended"), played
    assert abs(played["duration"] - 6) <= 0.5 and played["width"] == SIZE[0]
