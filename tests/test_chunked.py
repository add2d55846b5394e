"""Chunked encoding (split at keyframes, one task per chunk, stitch without re-encoding)
on sources made by Debian's ffmpeg and judged by it: exact frames and frame times, the
duration within a frame, audio offsets within an audio frame, no decode error, no
quality pulse at seams; and the seeded workflow run by a real worker, where a chunk that
fails is redone alone."""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest
import yaml

from mediaq.actions import get_action
from mediaq.actions.chunked.plan import SourceFrames, chunk_items, plan_cuts
from mediaq.errors import PermanentError
from mediaq.workflows import SEED_DIR
from tests.chunk_judge import (
    AV_TOLERANCE,
    frame_psnr,
    frame_times,
    recorded,
    run_chunked,
    same_gops_one_pass,
    seam_pulses,
    start_times,
    stitched_problems,
)
from tests.helpers import MediaqEnv, action_context
from tests.media_judge import ffmpeg, needs_ffmpeg, video_stream

pytestmark = needs_ffmpeg

# Moving pictures with grain (so the encoder has real work and PSNR means something).
GRAINY = "testsrc2=size=320x240:rate={rate},noise=alls=6:allf=t"
SINE = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
X264 = ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"]


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("chunked_sources")
    made = {
        # 24 s, 25 fps, 2 s GOPs, AAC: the plain case (a zoom: detail changing steadily).
        "cfr": (["-f", "lavfi", "-i", "mandelbrot=size=320x240:rate=25", *SINE, "-t", "24",
                 *X264,
                 "-g", "50", "-c:a", "aac", "-shortest"], "cfr.mp4"),
        # Variable frame rate: a 30 fps clip with two frames in every 35 dropped.
        "vfr": (["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30,select="
                 "'not(eq(mod(n\\,5)\\,3))*not(eq(mod(n\\,7)\\,2))'", "-t", "20",
                 "-fps_mode", "vfr", *X264, "-g", "45"], "vfr.mp4"),
        # Open GOPs and three B-frames in Matroska, audio starting 1 s after the video.
        "open_gop": (["-f", "lavfi", "-i", GRAINY.format(rate=25), "-itsoffset", "1",
                      *SINE, "-t", "20", *X264, "-bf", "3", "-x264-params",
                      "open-gop=1:keyint=40", "-c:a", "aac", "-shortest"], "open_gop.mkv"),
        # MPEG-TS: both streams near 11.4 s, the audio 0.5 s after the video.
        "ts": (["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-itsoffset", "0.5",
                *SINE, "-map", "0:v", "-map", "1:a", "-t", "12", *X264, "-g", "25",
                "-c:a", "aac", "-output_ts_offset", "10"], "offset.ts"),
        # Short, for the other codecs.
        "short": (["-f", "lavfi", "-i", GRAINY.format(rate=25), "-t", "6", *X264, "-g",
                   "25"], "short.mp4"),
    }
    paths = {}
    for name, (args, filename) in made.items():
        ffmpeg(*args, d / filename)
        paths[name] = d / filename
    return paths


def packets(path: Path) -> tuple[list[int], list[bool], Fraction]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        got = sorted((p.pts, p.is_keyframe) for p in container.demux(stream)
                     if p.pts is not None)
        return [g[0] for g in got], [g[1] for g in got], Fraction(stream.time_base)


# -- the plan ------------------------------------------------------------------------------


def test_the_plan_cuts_at_keyframes_about_chunk_seconds_apart(sources: dict[str, Path],
                                                             tmp_path: Path) -> None:
    source = sources["cfr"]
    ctx = action_context("split_video", source, tmp_path, {"chunk_seconds": 8})
    plan = get_action("split_video").fn(ctx).data
    pts, keys, _ = packets(source)
    assert plan["frame_count"] == len(frame_times(source)) == 600
    assert plan["has_audio"] and plan["chunk_count"] == len(plan["chunks"]) == 3
    frame = 0
    for chunk in plan["chunks"]:
        assert chunk["start_frame"] == frame and keys[frame], chunk
        assert chunk["start_pts"] == pts[frame]
        assert 4 <= chunk["end"] - chunk["start"] <= 12, chunk
        frame += chunk["frame_count"]
    assert frame == 600 and plan["chunks"][-1]["end"] == pytest.approx(24.0)
    assert not list(tmp_path.iterdir())  # nothing written: no copy of the source


def test_a_seam_moves_to_a_scene_cut_keyframe_near_the_target() -> None:
    # 25 fps, keyframes every 2 s; the source's encoder put one at a cut at 8.8 s and
    # counted its GOPs from there (10.8 s is the keyframe nearest the 10 s target).
    count, every = 25 * 40, 50
    key_at = set(range(0, 201, every)) | set(range(220, count, every))
    frames = SourceFrames(pts=list(range(count)), keyframe=[i in key_at for i in range(count)],
                          time_base=Fraction(1, 25), end_pts=count)
    cuts = plan_cuts(frames, 10)
    assert cuts[:2] == [0, 220]  # 8.8 s (a cut) rather than 10.8 s
    assert all(c in key_at for c in cuts)
    items = chunk_items(frames, cuts)
    assert sum(i["frame_count"] for i in items) == count and items[-1]["end_pts"] is None
    # No cut near the target: the nearest keyframe; no tail shorter than half a chunk.
    plain = plan_cuts(SourceFrames(list(range(count)), [i % every == 0 for i in range(count)],
                                   Fraction(1, 25), count), 10)
    assert plain == [0, 250, 500, 750]


# -- encode and stitch ---------------------------------------------------------------------


def check_stitched(source: Path, output: Path, *, audio: bool) -> None:
    """Exact frames at the source's times, duration within a frame, no decode error, and
    (with audio) the audio's offset from the video as the source has it."""
    assert stitched_problems(source, output, audio=audio) == []
    with av.open(str(output)) as out:  # the container says so too
        assert out.streams.video[0].frames == len(frame_times(source))


def test_h264_chunks_stitch_to_the_source_frames_without_a_seam(
        sources: dict[str, Path], tmp_path: Path) -> None:
    source = sources["cfr"]
    run = run_chunked(source, tmp_path / "out", chunk_seconds=8, codec="h264")
    assert run.stitched["frame_count"] == 600 and run.stitched["with_audio"]
    check_stitched(source, run.output, audio=True)
    # Each chunk file starts with an IDR frame and holds only its own frames.
    for path, chunk in zip(run.chunk_files, run.plan["chunks"], strict=True):
        with av.open(str(path)) as container:
            first = next(container.demux(container.streams.video[0]))
            assert first.is_keyframe
            assert container.streams.video[0].frames == chunk["frame_count"]
    # No quality pulse: at each seam the PSNR against the source departs from a one-pass
    # encode with the same GOPs by no more than it does in the middle of chunks, ±0.5 dB.
    assert all(abs(pulse) <= 0.5 for pulse in pulses(run, source, tmp_path)), run.plan


def pulses(run: Any, source: Path, tmp: Path) -> list[float]:
    seams = [c["start_frame"] for c in run.plan["chunks"][1:]]
    one_pass = same_gops_one_pass(source, run.output, tmp)
    return seam_pulses(frame_psnr(run.output, source, tmp), frame_psnr(one_pass, source, tmp),
                       seams, fps=25)


def test_without_a_preroll_the_seams_would_dip(sources: dict[str, Path],
                                               tmp_path: Path) -> None:
    """The judge sees a pulse where there is one: an encoder starting cold at each chunk
    codes the seam's first frames worse than a one-pass encode does."""
    run = run_chunked(sources["cfr"], tmp_path / "out", chunk_seconds=8, audio=False,
                      preroll_seconds=0)
    assert min(pulses(run, sources["cfr"], tmp_path)) < -0.5


def test_a_vfr_source_keeps_every_frame_time(sources: dict[str, Path], tmp_path: Path) -> None:
    run = run_chunked(sources["vfr"], tmp_path / "out", chunk_seconds=6)
    assert run.plan["chunk_count"] >= 3
    check_stitched(sources["vfr"], run.output, audio=False)


def test_open_gops_with_b_frames_and_late_audio(sources: dict[str, Path],
                                                tmp_path: Path) -> None:
    source = sources["open_gop"]
    run = run_chunked(source, tmp_path / "out", chunk_seconds=6)
    assert run.plan["chunk_count"] >= 3 and run.plan["origin"] == pytest.approx(0.0, abs=0.1)
    check_stitched(source, run.output, audio=True)
    starts = start_times(run.output)
    assert starts["audio"] - starts["video"] == pytest.approx(1.0, abs=2 * AV_TOLERANCE)


def test_an_mpeg_ts_source_starts_at_zero_with_its_audio_offset(
        sources: dict[str, Path], tmp_path: Path) -> None:
    run = run_chunked(sources["ts"], tmp_path / "out", chunk_seconds=4, speed="ultrafast")
    assert run.plan["origin"] == pytest.approx(11.4, abs=0.01)
    check_stitched(sources["ts"], run.output, audio=True)
    assert start_times(run.output)["video"] == 0.0


def test_without_audio_the_stitch_is_video_only(sources: dict[str, Path],
                                                tmp_path: Path) -> None:
    run = run_chunked(sources["cfr"], tmp_path / "out", chunk_seconds=10, audio=False,
                      speed="ultrafast")
    assert not run.stitched["with_audio"]
    check_stitched(sources["cfr"], run.output, audio=False)


@pytest.mark.parametrize("codec", ["hevc", "av1"])
def test_other_codecs_stitch_too(codec: str, sources: dict[str, Path], tmp_path: Path) -> None:
    run = run_chunked(sources["short"], tmp_path / "out", chunk_seconds=2, codec=codec,
                      speed="ultrafast")
    assert run.plan["chunk_count"] == 3
    check_stitched(sources["short"], run.output, audio=False)
    with av.open(str(run.output)) as container:
        assert container.streams.video[0].codec_context.name in {
            "hevc": {"hevc"}, "av1": {"libdav1d", "av1", "libaom-av1"}}[codec]
    if codec == "hevc":  # parameter sets out of band, as Apple players want
        assert video_stream(run.output)["codec_tag_string"] == "hvc1"


def test_the_stitch_refuses_missing_or_mismatched_chunks(sources: dict[str, Path],
                                                         tmp_path: Path) -> None:
    source = sources["short"]
    plan = get_action("split_video").fn(
        action_context("split_video", source, tmp_path, {"chunk_seconds": 2})).data
    items = []
    for item in plan["chunks"]:
        size = {"width": 160, "height": 120} if item["chunk_index"] == 1 else {}
        ctx = action_context("encode_chunk", source, tmp_path / f"c{item['chunk_index']}",
                             {**item, "speed": "ultrafast", **size})
        items.append(recorded(get_action("encode_chunk").fn(ctx)))

    def stitch(chunks: list[Any]) -> None:
        ctx = action_context("stitch_video", source, tmp_path / "s", {},
                             needs_outputs={"encode_chunks": chunks})
        get_action("stitch_video").fn(ctx)

    with pytest.raises(PermanentError, match=r"chunk 1 was encoded with other settings"):
        stitch(items)
    with pytest.raises(PermanentError, match=r"chunks \[1\] of step 'encode_chunks' did not"):
        stitch([items[0], None, items[2]])
    assert not (tmp_path / "s").exists() or not list((tmp_path / "s").iterdir())


# -- the seeded workflow, run by a worker ---------------------------------------------------


def test_the_seeded_workflow_redoes_a_failed_chunk_alone(mq: MediaqEnv,
                                                         sources: dict[str, Path]) -> None:
    mq.seed()
    shown = mq.cli("workflows", "show", "WF-VIDEO-CHUNKED").stdout
    graph = shown[shown.index("Graph"):].splitlines()[1:]
    # The chunks and the audio side by side, after the split, before the stitch.
    (stage,) = [line for line in graph if "Encode Chunks" in line]
    assert stage.startswith("stage 3") and "Encode Audio" in "\n".join(graph[2:4])
    doc = yaml.safe_load((SEED_DIR / "wf-video-chunked.yaml").read_text(encoding="utf-8"))
    steps = {s["step_name"]: s for s in doc["steps"]}
    steps["Split"]["parameters"]["chunk_seconds"] = 8
    # Chunk 1 fails on its first attempt (an injected transient failure).
    steps["Encode Chunks"]["parameters"]["fail_first_attempt"] = [1]
    doc["workflow_code"] = "T-CHUNKED"
    mq.apply_workflow(doc)
    source = mq.inputs / "film.mp4"
    shutil.copy(sources["cfr"], source)
    code = mq.submit("T-CHUNKED", source)
    mq.run_burst(timeout=300)
    job = mq.job(code)
    assert job["status"] == "completed", job["error_message"]
    rows = mq.query(
        "SELECT ws.step_name, se.item_index, se.status, se.output_data"
        "  FROM step_executions se JOIN workflow_steps ws ON ws.id = se.step_id"
        "  JOIN workflow_jobs j ON j.id = se.job_id WHERE j.job_code = %s ORDER BY se.id",
        (code,))
    chunk_runs = [(r["item_index"], r["status"]) for r in rows
                  if r["step_name"] == "Encode Chunks"]
    # Only chunk 1 ran twice; chunks 0 and 2 ran once and were kept.
    assert sorted(chunk_runs) == [(0, "completed"), (1, "completed"), (1, "failed"),
                                  (2, "completed")]
    (stitch,) = [r for r in rows if r["step_name"] == "Stitch"]
    (output,) = [o for o in stitch["output_data"]["outputs"] if o["role"] == "rendition"]
    check_stitched(source, Path(output["path"]), audio=True)
