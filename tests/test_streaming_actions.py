"""The streaming actions (HLS/DASH ladders, sprite sheets, previews, compilations), called as
the engine calls them, on inputs made by Debian's ffmpeg and judged by ffprobe, Pillow and,
for playback, headless Chromium with hls.js and dash.js."""

from __future__ import annotations

import functools
import http.server
import itertools
import json
import re
import shutil
import subprocess
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageSequence

from mediaq.actions import ActionResult, get_action
from mediaq.errors import Cancelled, InputRefused, InvalidParameters, PermanentError
from tests.helpers import action_context as make_context
from tests.helpers import requires_tool, run_action
from tests.media_judge import (
    audio_stream,
    duration_of,
    ffmpeg,
    ffprobe,
    needs_ffmpeg,
    video_stream,
)

pytestmark = needs_ffmpeg

PLAYERS = Path(__file__).parent / "data" / "players"
CHROMIUM = Path(shutil.which("chromium") or "/usr/bin/chromium")
MPD_NS = {"d": "urn:mpeg:dash:schema:mpd:2011"}
X264_FAST = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p")


def make_clip(path: Path, *, size: str = "640x360", rate: int = 30, seconds: float = 4,
              audio: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    inputs = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}"]
    if audio:
        inputs += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
    ffmpeg(*inputs, "-t", str(seconds), *X264_FAST, *(["-c:a", "aac"] if audio else []),
           "-shortest", path)
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("streaming_sources")
    clips = {
        "clip": make_clip(d / "clip.mp4"),  # 640x360, 30 fps, 4 s, with sound
        "silent": make_clip(d / "silent.mp4", size="320x240", rate=25, seconds=2, audio=False),
        "nested": make_clip(d / "sub" / "nested.mp4", size="320x180", seconds=3),
        "outside": make_clip(tmp_path_factory.mktemp("elsewhere") / "outside.mp4",
                             size="160x90", seconds=1, audio=False),
    }
    clips["rotated"] = d / "rotated.mp4"  # stored 320x240, shown 240x320
    ffmpeg("-i", clips["silent"], "-c", "copy", "-metadata:s:v:0", "rotate=90",
           clips["rotated"])
    clips["audio_only"] = d / "tone.m4a"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440", "-t", "1", "-c:a", "aac",
           clips["audio_only"])
    return clips


def assert_outputs_are_the_folder(result: ActionResult, staging: Path) -> None:
    """Every file written is listed (the engine moves only listed files), flat, once."""
    listed = [o.staging_path for o in result.outputs]
    assert all(p.parent == staging for p in listed)
    assert sorted(p.name for p in listed) == sorted(p.name for p in staging.iterdir())


def playlist_entries(playlist: Path) -> list[tuple[dict[str, str], str]]:
    """(attributes, URI) of each #EXT-X-STREAM-INF in a master playlist."""
    lines = playlist.read_text().splitlines()
    return [(attributes(line.split(":", 1)[1]), lines[i + 1])
            for i, line in enumerate(lines) if line.startswith("#EXT-X-STREAM-INF:")]


def attributes(text: str) -> dict[str, str]:
    return {k: v.strip('"') for k, v in re.findall(r'([A-Z-]+)=("[^"]*"|[^,]*)', text)}


def media_uris(playlist: Path) -> list[str]:
    text = playlist.read_text()
    return re.findall(r'URI="([^"]+)"', text) + [
        line for line in text.splitlines() if line and not line.startswith("#")]


def extinf(playlist: Path) -> list[float]:
    return [float(m) for m in re.findall(r"#EXTINF:([\d.]+),", playlist.read_text())]


# =========================================================================== HLS


def test_hls_ladder_plays_in_ffprobe(media: dict[str, Path], tmp_path: Path) -> None:
    staging = tmp_path / "hls"
    result = run_action("package_hls", media["clip"], staging,
                        renditions=["360p", "240p", {"width": 400, "height": 400,
                                                     "name": "box"}],
                        segment_seconds=1)
    assert_outputs_are_the_folder(result, staging)
    master = staging / "clip.m3u8"
    roles = {o.staging_path.name: o.role for o in result.outputs}
    assert roles.pop("clip.m3u8") == "rendition"
    assert set(roles.values()) == {"sidecar"}

    variants = playlist_entries(master)
    assert [(a["RESOLUTION"], uri) for a, uri in variants] == [
        ("640x360", "clip_hls_360p.m3u8"), ("426x240", "clip_hls_240p.m3u8"),
        ("400x224", "clip_hls_box.m3u8")]
    for attrs, uri in variants:
        assert re.fullmatch(r"avc1\.64[0-9a-f]{4},mp4a\.40\.2", attrs["CODECS"])
        assert attrs["AUDIO"] == "audio"
        # BANDWIDTH counts the video, not only the 128k audio
        assert int(attrs["BANDWIDTH"]) > 200_000
        assert int(attrs["BANDWIDTH"]) >= int(attrs["AVERAGE-BANDWIDTH"])
        width, height = map(int, attrs["RESOLUTION"].split("x"))
        stream = video_stream(staging / uri)
        assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", width,
                                                                              height)
        # the B-frame delay is hidden by an edit list, not shifted: video starts with audio
        assert float(stream["start_time"]) == 0.0
        assert abs(duration_of(staging / uri) - 4.0) < 0.1
        # keyframes forced on the 1 s grid: four segments of exactly one second
        assert extinf(staging / uri) == [1.0, 1.0, 1.0, 1.0]
        assert all(name.startswith("clip_hls_") and (staging / name).exists()
                   for name in media_uris(staging / uri))
    assert 'TYPE=AUDIO,GROUP-ID="audio"' in master.read_text()
    sound = audio_stream(staging / "clip_hls_audio.m3u8")
    assert sound is not None and sound["codec_name"] == "aac"

    probed = ffprobe(master)
    assert abs(float(probed["format"]["duration"]) - duration_of(media["clip"])) < 0.1
    assert sorted(s["codec_name"] for s in probed["streams"]) == ["aac", "h264", "h264", "h264"]
    assert [r["name"] for r in result.data["renditions"]] == ["360p", "240p", "box"]


def test_hls_default_ladder_never_upscales(media: dict[str, Path], tmp_path: Path) -> None:
    result = run_action("package_hls", media["clip"], tmp_path / "hls")
    # 720p and 480p would be larger than the 640x360 source
    assert [(r["name"], r["width"], r["height"]) for r in result.data["renditions"]] == [
        ("360p", 640, 360)]
    [(attrs, _)] = playlist_entries(tmp_path / "hls" / "clip.m3u8")
    assert attrs["FRAME-RATE"] == "30.000"


def test_hls_keeps_one_rung_for_a_small_source(media: dict[str, Path], tmp_path: Path) -> None:
    result = run_action("package_hls", media["rotated"], tmp_path / "hls",
                        renditions=["1080p", "720p"])
    # nothing fits a 240x320 (upright) source: one rung at its own size, turned upright
    [rung] = result.data["renditions"]
    assert (rung["width"], rung["height"]) == (240, 320)
    master = (tmp_path / "hls" / "rotated.m3u8").read_text()
    assert "EXT-X-MEDIA" not in master and 'CODECS="avc1.' in master and "mp4a" not in master
    stream = video_stream(tmp_path / "hls" / "rotated.m3u8")
    assert (stream["width"], stream["height"]) == (240, 320)
    assert abs(duration_of(tmp_path / "hls" / "rotated.m3u8") - 2.0) < 0.1


def test_cancelled_packaging_leaves_nothing(media: dict[str, Path], tmp_path: Path) -> None:
    context = make_context("package_hls", media["clip"], tmp_path / "hls", {})
    context.cancel_event.set()
    with pytest.raises(Cancelled):
        get_action("package_hls").fn(context)
    assert not list((tmp_path / "hls").iterdir())


def test_hls_refuses_bad_parameters_and_inputs(media: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(InvalidParameters, match="renditions"):
        make_context("package_hls", media["clip"], tmp_path, {"renditions": ["999p"]})
    with pytest.raises(InvalidParameters):
        make_context("package_hls", media["clip"], tmp_path, {"segment_seconds": 0})
    with pytest.raises(PermanentError, match=r"^tone\.m4a: has no video stream"):
        run_action("package_hls", media["audio_only"], tmp_path / "out")


# =========================================================================== DASH


def test_dash_ladder_opens_in_ffprobe(media: dict[str, Path], tmp_path: Path) -> None:
    staging = tmp_path / "dash"
    result = run_action("package_dash", media["clip"], staging, renditions=["360p", "240p"],
                        segment_seconds=2)
    assert_outputs_are_the_folder(result, staging)
    mpd_path = staging / "clip.mpd"
    assert {o.staging_path.name: o.role for o in result.outputs}["clip.mpd"] == "rendition"
    assert not list(staging.glob("*.m3u8"))  # the segmenter's bookkeeping is gone

    mpd = ET.parse(mpd_path).getroot()
    sets = mpd.findall("d:Period/d:AdaptationSet", MPD_NS)
    assert [s.get("contentType") for s in sets] == ["video", "audio"]
    reps = sets[0].findall("d:Representation", MPD_NS)
    assert [(r.get("width"), r.get("height")) for r in reps] == [("640", "360"), ("426", "240")]
    # 426x240 keeps the 16:9 picture through its sample aspect ratio
    assert reps[1].get("sar") == "640:639"
    [audio] = sets[1].findall("d:Representation", MPD_NS)
    assert audio.get("codecs") == "mp4a.40.2"
    for rep in [*reps, audio]:
        template = rep.find("d:SegmentTemplate", MPD_NS)
        assert template is not None
        assert (staging / template.get("initialization", "")).exists()
        scale = int(template.get("timescale", "1"))
        total, count = 0, 0
        for s in template.findall("d:SegmentTimeline/d:S", MPD_NS):
            repeat = int(s.get("r", "0")) + 1
            total, count = total + int(s.get("d", "0")) * repeat, count + repeat
        assert abs(total / scale - 4.0) < 0.1
        media_name = template.get("media", "")
        for number in range(1, count + 1):
            assert (staging / media_name.replace("$Number%05d$", f"{number:05d}")).exists()

    probed = ffprobe(mpd_path)
    assert abs(float(probed["format"]["duration"]) - 4.0) < 0.1
    sizes = sorted((s.get("width"), s.get("height")) for s in probed["streams"]
                   if s["codec_type"] == "video")
    assert sizes == [(426, 240), (640, 360)]
    assert [s["codec_name"] for s in probed["streams"] if s["codec_type"] == "audio"] == ["aac"]


# =========================================================================== sprite sheets


def parse_vtt(path: Path) -> list[tuple[float, float, str, tuple[int, int, int, int]]]:
    text = path.read_text()
    assert text.startswith("WEBVTT\n\n")
    cues = []
    for block in text.strip().split("\n\n")[1:]:
        timing, target = block.splitlines()
        start, end = (vtt_seconds(t) for t in timing.split(" --> "))
        sheet, box = target.split("#xywh=")
        x, y, w, h = (int(v) for v in box.split(","))
        cues.append((start, end, sheet, (x, y, w, h)))
    return cues


def vtt_seconds(text: str) -> float:
    hours, minutes, seconds = text.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def test_sprite_sheet_cues_cover_the_video(media: dict[str, Path], tmp_path: Path) -> None:
    staging = tmp_path / "sprites"
    result = run_action("generate_sprite_sheet", media["clip"], staging, interval=0.5,
                        columns=3, rows=2)
    assert_outputs_are_the_folder(result, staging)
    cues = parse_vtt(staging / "clip_sprites.vtt")
    assert len(cues) == 8 and result.data["sheets"] == ["clip_sprites_001.jpg",
                                                        "clip_sprites_002.jpg"]
    assert cues[0][0] == 0.0 and abs(cues[-1][1] - duration_of(media["clip"])) < 0.01
    for (_, end, _, _), (start, _, _, _) in itertools.pairwise(cues):
        assert end == start  # contiguous, no gap, no overlap
    for start, end, sheet, (x, y, w, h) in cues:
        assert end > start and (w, h) == (160, 90)
        with Image.open(staging / sheet) as image:
            assert image.format == "JPEG"
            assert x >= 0 and y >= 0 and x + w <= image.width and y + h <= image.height
    with Image.open(staging / "clip_sprites_002.jpg") as last:
        assert last.size == (3 * 160, 90)  # only the rows it needs
    # each tile shows a frame near its cue: not later than the cue's end
    for (start, end, _, _), shown in zip(cues, result.data["frame_times"], strict=True):
        assert start - 0.25 <= shown < end


def test_sprite_sheet_tiles_are_upright_and_counted(media: dict[str, Path],
                                                    tmp_path: Path) -> None:
    result = run_action("generate_sprite_sheet", media["rotated"], tmp_path, count=4,
                        width=120, format="webp")
    cues = parse_vtt(tmp_path / "rotated_sprites.vtt")
    assert [c[0] for c in cues] == [0.0, 0.5, 1.0, 1.5]
    assert {c[3][2:] for c in cues} == {(120, 160)}  # portrait, as shown
    [sheet] = result.data["sheets"]
    with Image.open(tmp_path / sheet) as image:
        assert image.format == "WEBP" and image.size == (480, 160)


# =========================================================================== previews


def test_mp4_preview_is_short_silent_and_faststart(media: dict[str, Path],
                                                   tmp_path: Path) -> None:
    result = run_action("make_preview", media["clip"], tmp_path, duration=3, segments=3)
    [output] = result.outputs
    path = output.staging_path
    assert path.name == "clip_preview.mp4" and output.role == "rendition"
    probed = ffprobe(path)
    [stream] = probed["streams"]  # no audio
    assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", 480, 270)
    assert int(stream["nb_frames"]) == 90
    assert abs(float(probed["format"]["duration"]) - 3.0) < 0.1
    head = path.read_bytes()
    assert head.find(b"moov") < head.find(b"mdat")  # faststart
    starts = [start for start, _ in result.data["excerpts"]]
    assert starts == sorted(starts) and starts[0] > 0 and starts[-1] < 4.0


def test_short_source_previews_whole_and_upright(media: dict[str, Path],
                                                tmp_path: Path) -> None:
    result = run_action("make_preview", media["rotated"], tmp_path)  # 6 s asked, 2 s there
    path = result.outputs[0].staging_path
    assert abs(duration_of(path) - 2.0) < 0.1
    stream = video_stream(path)
    assert (stream["width"], stream["height"]) == (240, 320)  # never wider than the source


@pytest.mark.parametrize("fmt", ["gif", "webp"])
def test_animated_preview(media: dict[str, Path], tmp_path: Path, fmt: str) -> None:
    result = run_action("make_preview", media["clip"], tmp_path, format=fmt, duration=2,
                        segments=2, width=200)
    [output] = result.outputs
    with Image.open(output.staging_path) as image:
        assert image.format == fmt.upper() and image.size == (200, 112)
        durations = []
        for frame in ImageSequence.Iterator(image):
            frame.load()
            durations.append(frame.info["duration"])
    # 12 fps for 2 s; identical frames may merge, the total time may not change
    assert len(durations) <= 24 and result.data["frames"] == 24
    assert abs(sum(durations) - 2000) <= 10


# =========================================================================== compile


def test_concat_sums_durations_with_audio(media: dict[str, Path], tmp_path: Path) -> None:
    inputs = ["silent.mp4", "sub/nested.mp4"]
    result = run_action("compile_videos", media["clip"], tmp_path, inputs=inputs)
    [output] = result.outputs
    assert output.role == "rendition"
    expected = sum(duration_of(p) for p in (media["clip"], media["silent"], media["nested"]))
    assert abs(duration_of(output.staging_path) - expected) < 0.1
    video = video_stream(output.staging_path)
    assert (video["codec_name"], video["width"], video["height"]) == ("h264", 640, 360)
    sound = audio_stream(output.staging_path)
    assert sound is not None and sound["codec_name"] == "aac"
    assert abs(float(sound["duration"]) - expected) < 0.1  # silence where a clip had none


@pytest.mark.parametrize(("until", "seconds"), [("shortest", 2.0), ("longest", 4.0)])
def test_grid_size_and_duration(media: dict[str, Path], tmp_path: Path, until: str,
                                seconds: float) -> None:
    result = run_action("compile_videos", media["clip"], tmp_path, layout="grid",
                        inputs=["sub/nested.mp4", "silent.mp4", "rotated.mp4"], until=until,
                        width=640, height=360)
    path = result.outputs[0].staging_path
    video = video_stream(path)
    assert (video["width"], video["height"]) == (640, 360)
    assert abs(duration_of(path) - seconds) < 0.1
    assert result.data["inputs"][0] == str(media["clip"].resolve())


def test_grid_default_size(media: dict[str, Path], tmp_path: Path) -> None:
    result = run_action("compile_videos", media["silent"], tmp_path, layout="grid")
    video = video_stream(result.outputs[0].staging_path)
    assert (video["width"], video["height"]) == (1280, 720)
    assert audio_stream(result.outputs[0].staging_path) is None


def test_compile_refuses_inputs_outside_the_folder(media: dict[str, Path],
                                                   tmp_path: Path) -> None:
    outside = media["outside"]
    escape = media["clip"].parent / "escape.mp4"
    escape.unlink(missing_ok=True)
    escape.symlink_to(outside)
    relative = Path("..") / outside.parent.name / outside.name
    for listed in (str(outside), str(relative), "escape.mp4"):
        with pytest.raises(PermanentError, match="outside the source's folder"):
            run_action("compile_videos", media["clip"], tmp_path, inputs=[listed])
    with pytest.raises(InputRefused, match="does not exist"):
        run_action("compile_videos", media["clip"], tmp_path, inputs=["missing.mp4"])
    with pytest.raises(PermanentError, match="at most 4"):
        run_action("compile_videos", media["clip"], tmp_path, layout="grid",
                   inputs=["silent.mp4"] * 4)
    assert not list(tmp_path.glob("*.mp4"))


# =========================================================================== players


class ResultCatcher(http.server.SimpleHTTPRequestHandler):
    """Serves the folder; the page POSTs its verdict to /result."""

    results: list[dict[str, Any]]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.results.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()


def play_in_chromium(folder: Path, query: str, timeout: float = 60) -> dict[str, Any]:
    """Serve ``folder`` with the player page on 127.0.0.1 and let headless Chromium play."""
    for name in ("player.html", "hls.min.js", "dash.all.min.js"):
        shutil.copy(PLAYERS / name, folder / name)
    return page_report(folder, "player.html", query, timeout=timeout)


def page_report(folder: Path, page: str, query: str, catcher: type[ResultCatcher] = ResultCatcher,
                timeout: float = 60) -> dict[str, Any]:
    """Serve ``folder`` on 127.0.0.1 (requests handled by ``catcher``), open ``page`` with
    ``query`` in headless Chromium and return what the page reported."""
    results: list[dict[str, Any]] = []
    handler = type("Handler", (catcher,), {"results": results})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    profile = tempfile.mkdtemp(prefix="mediaq-chromium-")
    url = f"http://127.0.0.1:{server.server_address[1]}/{page}?{query}"
    browser = subprocess.Popen(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}",
         "--autoplay-policy=no-user-gesture-required", "--remote-debugging-port=0", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while not results and time.monotonic() < deadline and browser.poll() is None:
            time.sleep(0.2)
    finally:
        browser.terminate()
        try:
            _, errors = browser.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            browser.kill()
            _, errors = browser.communicate()
        server.shutdown()
        server.server_close()
        shutil.rmtree(profile, ignore_errors=True)
    assert results, f"the page {page} reported nothing:\n{errors.decode()[-2000:]}"
    return results[0]


@pytest.mark.slow
@requires_tool("chromium")
@pytest.mark.parametrize("kind", ["hls", "dash"])
def test_players_load_every_variant_and_play(media: dict[str, Path], tmp_path: Path,
                                             kind: str) -> None:
    result = run_action(f"package_{kind}", media["clip"], tmp_path,
                        renditions=["360p", "240p"], segment_seconds=1)
    manifest = result.outputs[0].staging_path.name
    verdict = play_in_chromium(tmp_path, f"{kind}={manifest}&audio=1")
    assert verdict["errors"] == [] and verdict["done_by"] == "ok", verdict
    assert verdict["variants"] == 2 and sorted(verdict["buffered"]) == [0, 1]
    assert verdict["audio_buffered"] and verdict["played"] >= 1.5 and verdict["frames"] > 0
