"""HLS/DASH ladders from chunks (encode_chunk_ladder, package_chunked) on sources made by
Debian's ffmpeg, judged by ffprobe (every rung: the source's frames at the source's
times, keyframes and segments at the same times across rungs) and by ffmpeg decoding the
master playlist and the MPD end to end; playback and seeking of the stitched MP4 and the
chunked HLS with the dashboard's hls.js in headless Chromium; the documented workflow
run by a worker."""

from __future__ import annotations

import io
import itertools
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from mediaq.actions import get_action
from mediaq.actions.chunked.ladder import keyframe_grid
from mediaq.errors import PermanentError
from tests.chunk_judge import (
    AV_TOLERANCE,
    LadderRun,
    decode_all_errors,
    frame_times,
    keyframe_times,
    run_chunked,
    run_chunked_ladder,
    start_times,
)
from tests.helpers import MediaqEnv, action_context, requires_tool
from tests.media_judge import ffmpeg, needs_ffmpeg
from tests.test_streaming_actions import ResultCatcher, page_report

pytestmark = needs_ffmpeg

ROOT = Path(__file__).parent.parent
SEEK_PAGE = Path(__file__).parent / "data" / "players" / "seek.html"
HLS_JS = ROOT / "mediaq" / "web" / "static" / "vendor" / "hls.min.js"
WORKFLOW = ROOT / "docs" / "workflows" / "wf-video-chunked-ladder.yaml"
MPD_NS = {"d": "urn:mpeg:dash:schema:mpd:2011"}
RUNGS = ["240p", "144p"]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 s, 25 fps, keyframes every 1.6 s (chunk seams fall off a 1 s grid), the audio
    0.5 s after the video."""
    path = tmp_path_factory.mktemp("ladder_source") / "film.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-itsoffset", "0.5",
           "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-map", "0:v",
           "-map", "1:a", "-t", "12", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt",
           "yuv420p", "-g", "40", "-c:a", "aac", path)
    return path


@pytest.fixture(scope="module")
def ladder(source: Path, tmp_path_factory: pytest.TempPathFactory) -> LadderRun:
    return run_chunked_ladder(source, tmp_path_factory.mktemp("ladder"), chunk_seconds=4,
                              renditions=RUNGS, gop_seconds=1, speed="ultrafast")


def extinf(playlist: Path) -> list[float]:
    return [float(line[len("#EXTINF:"):].split(",")[0])
            for line in playlist.read_text().splitlines() if line.startswith("#EXTINF:")]


def test_the_keyframe_grid_restarts_at_each_chunk_and_leaves_no_sliver() -> None:
    assert keyframe_grid(100, 25, 1) == {0, 25, 50, 75}
    # 1.5 s of 25 fps at 1 s GOPs: 0.5 s left is kept; 1.4 s: the 0.4 s tail joins.
    assert keyframe_grid(38, 25, 1) == {0, 25}
    assert keyframe_grid(35, 25, 1) == {0}


def test_every_rung_has_the_source_frames_and_aligned_segments(source: Path,
                                                               ladder: LadderRun) -> None:
    data, folder = ladder.packaged, ladder.folder
    assert data["chunks"] == ladder.plan["chunk_count"] >= 3
    assert [r["name"] for r in data["renditions"]] == RUNGS
    assert [(r["width"], r["height"]) for r in data["renditions"]] == [(320, 240), (192, 144)]
    want = frame_times(source)
    origin = min(start_times(source).values())
    chunk_starts = {round(c["start"], 3) for c in ladder.plan["chunks"]}
    keys: list[list[float]] = []
    segments: list[list[float]] = []
    for rung in RUNGS:
        playlist = folder / f"film_chunked_{rung}.m3u8"
        got = frame_times(playlist)
        # Exactly the source's frames, at the source's times: nothing dropped or repeated.
        assert got == pytest.approx([t - origin for t in want], abs=1e-3), rung
        assert all(b > a for a, b in itertools.pairwise(got))
        keys.append(keyframe_times(playlist))
        segments.append(extinf(playlist))
        # Each segment is one GOP: it starts at a keyframe, the next ends it.
        bounds = list(itertools.accumulate(segments[-1], initial=keys[-1][0]))[:-1]
        assert bounds == pytest.approx(keys[-1], abs=2e-3), rung
        assert max(segments[-1]) < 1.6  # one GOP, a short tail joined (1 s GOPs)
    assert keys[0] == keys[1] and segments[0] == segments[1]  # aligned across rungs
    assert chunk_starts <= {round(k, 3) for k in keys[0]}  # every seam opens a segment
    assert data["segments"] == len(segments[0]) > data["chunks"]
    # The audio keeps its offset from the video (about 0.5 s) within one AAC frame.
    starts = start_times(source)
    audio = start_times(folder / "film_chunked_audio.m3u8")["audio"]
    video = start_times(folder / "film_chunked_240p.m3u8")["video"]
    assert abs((audio - video) - (starts["audio"] - starts["video"])) <= AV_TOLERANCE
    # DASH: one timeline for every rung.
    mpd = ET.parse(folder / data["manifest"]).getroot()
    timelines = [[dict(s.attrib) for s in rep.iterfind(".//d:S", MPD_NS)]
                 for rep in mpd.iterfind(".//d:AdaptationSet[@contentType='video']"
                                         "/d:Representation", MPD_NS)]
    assert len(timelines) == 2 and timelines[0] == timelines[1]
    # Debian's ffmpeg decodes every variant of both manifests end to end.
    assert decode_all_errors(folder / data["master"]) == ""
    assert decode_all_errors(folder / data["manifest"]) == ""


def test_the_package_refuses_chunks_of_other_ladders(source: Path, tmp_path: Path) -> None:
    def package(chunks: list[dict[str, Any]]) -> None:
        ctx = action_context("package_chunked", source, tmp_path, {},
                             needs_outputs={"encode_chunks": chunks})
        get_action("package_chunked").fn(ctx)

    ladder_ = [{"name": "240p"}, {"name": "144p"}]
    with pytest.raises(PermanentError, match="chunk 0 has no renditions"):
        package([{"chunk_index": 0, "outputs": []}])
    with pytest.raises(PermanentError, match=r"chunk 1 was encoded at \['240p'\], chunk 0 at"):
        package([{"chunk_index": 0, "renditions": ladder_},
                  {"chunk_index": 1, "renditions": ladder_[:1]}])
    assert not list(tmp_path.iterdir())


# -- playback in headless Chromium ------------------------------------------------------


class RangeCatcher(ResultCatcher):
    """Also answers byte ranges, which a browser needs to seek in a progressive MP4."""

    def send_head(self) -> Any:
        asked = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        path = Path(self.translate_path(self.path))
        if asked is None or not path.is_file():
            return super().send_head()
        data = path.read_bytes()
        start = int(asked[1])
        end = min(int(asked[2]) if asked[2] else len(data) - 1, len(data) - 1)
        self.send_response(206)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        return io.BytesIO(data[start:end + 1])


def play_and_seek(folder: Path, query: str, timeout: float = 60) -> dict[str, Any]:
    """Serve ``folder`` with the seek page and the dashboard's hls.js on 127.0.0.1 and let
    headless Chromium play, seek and play on; what the page reported."""
    shutil.copy(SEEK_PAGE, folder / "seek.html")
    shutil.copy(HLS_JS, folder / "hls.min.js")
    return page_report(folder, "seek.html", query, RangeCatcher, timeout)


@pytest.mark.slow
@requires_tool("chromium")
def test_the_stitched_mp4_and_the_chunked_hls_play_and_seek_in_chromium(
        source: Path, ladder: LadderRun, tmp_path: Path) -> None:
    # Past the second seam, half a second into the third chunk.
    seek = round(ladder.plan["chunks"][2]["start"] + 0.5, 2)
    stitched = run_chunked(source, tmp_path, chunk_seconds=4, speed="ultrafast")
    mp4 = play_and_seek(tmp_path, f"mp4={stitched.output.name}&seek={seek}")
    assert mp4["errors"] == [] and mp4["done_by"] == "ok", mp4
    # It jumped there (not back to the start) and played on past the seek point.
    assert mp4["seeked_to"] == pytest.approx(seek, abs=0.1), mp4
    assert mp4["after_seek"] >= seek + 0.5 and mp4["frames"] > 0
    hls = play_and_seek(ladder.folder, f"hls={ladder.packaged['master']}&seek={seek}")
    assert hls["errors"] == [] and hls["done_by"] == "ok", hls
    assert hls["player"].startswith("hls.js") and hls["levels"] == 2
    assert hls["seeked_to"] == pytest.approx(seek, abs=0.1), hls
    assert hls["after_seek"] >= seek + 0.5 and hls["frames"] > 0
    assert hls["levels_played"]  # and switched rung after the seek (aligned segments)


# -- the documented workflow, run by a worker -------------------------------------------


def test_the_documented_ladder_workflow_runs_on_a_worker(mq: MediaqEnv, source: Path) -> None:
    doc = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    steps = {s["step_name"]: s for s in doc["steps"]}
    steps["Split"]["parameters"]["chunk_seconds"] = 4
    steps["Encode Chunks"]["parameters"].update(renditions=RUNGS, gop_seconds=2,
                                                speed="ultrafast", fail_first_attempt=[1])
    path = mq.write_yaml("ladder.yaml", doc)
    mq.cli("workflows", "apply", str(path))
    film = mq.inputs / "film.mp4"
    shutil.copy(source, film)
    code = mq.submit("WF-VIDEO-CHUNKED-LADDER", film)
    mq.run_burst(timeout=300)
    job = mq.job(code)
    assert job["status"] == "completed", job["error_message"]
    assert float(job["progress_percent"]) == 100.0
    rows = mq.query(
        "SELECT ws.step_name, se.item_index, se.status, se.output_data"
        "  FROM step_executions se JOIN workflow_steps ws ON ws.id = se.step_id"
        "  JOIN workflow_jobs j ON j.id = se.job_id WHERE j.job_code = %s ORDER BY se.id",
        (code,))
    chunk_runs = sorted((r["item_index"], r["status"]) for r in rows
                        if r["step_name"] == "Encode Chunks")
    assert chunk_runs == [(0, "completed"), (1, "completed"), (1, "failed"),
                          (2, "completed")]
    (package,) = [r for r in rows if r["step_name"] == "Package"]
    renditions = [o for o in package["output_data"]["outputs"] if o["role"] == "rendition"]
    assert sorted(o["format"] for o in renditions) == ["dash", "hls"]
    assert str(job["output_file_path"]).endswith("film.m3u8")
    for output in renditions:
        assert decode_all_errors(Path(output["path"])) == ""
