"""Chunked encoding run in process as the engine runs it (split, one task per chunk, the
audio task, stitch), and Debian's ffmpeg/ffprobe judging the result: frame times, seam
PSNR, decode errors. Shared by tests/test_chunked.py and benchmarks/chunked.py."""

from __future__ import annotations

import itertools
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av

from mediaq.actions import get_action
from tests.helpers import action_context
from tests.media_judge import FFMPEG, FFPROBE, ffmpeg

AV_TOLERANCE = 0.025  # one AAC frame at 48 kHz (21.3 ms) and rounding


@dataclass
class ChunkedRun:
    """What a chunked encode made and what each task cost (process CPU and wall)."""

    plan: dict[str, Any]
    output: Path
    stitched: dict[str, Any]
    chunk_files: list[Path]
    cpu: dict[str, float] = field(default_factory=dict)
    wall: dict[str, float] = field(default_factory=dict)
    chunk_wall: list[float] = field(default_factory=list)
    chunk_cpu: list[float] = field(default_factory=list)


def _timed(run: ChunkedRun, key: str, fn: Any) -> Any:
    cpu, wall = time.process_time(), time.perf_counter()
    result = fn()
    run.cpu[key] = run.cpu.get(key, 0.0) + time.process_time() - cpu
    run.wall[key] = run.wall.get(key, 0.0) + time.perf_counter() - wall
    return result


def recorded(result: Any) -> dict[str, Any]:
    """A result's output_data as the engine records it (outputs with their paths)."""
    return {**result.data, "outputs": [{"path": str(o.staging_path), "role": o.role,
                                        **o.meta} for o in result.outputs]}


def run_chunked(source: Path, out: Path, *, chunk_seconds: float, audio: bool = True,
                **encode: Any) -> ChunkedRun:
    """split_video, encode_chunk per item, encode_audio_track, stitch_video, in process."""
    out.mkdir(parents=True, exist_ok=True)
    run = ChunkedRun(plan={}, output=out, stitched={}, chunk_files=[])
    split = get_action("split_video")
    ctx = action_context("split_video", source, out, {"chunk_seconds": chunk_seconds})
    run.plan = _timed(run, "split", lambda: split.fn(ctx)).data
    items = []
    for item in run.plan["chunks"]:
        chunk_ctx = action_context("encode_chunk", source, out, {**item, **encode})
        before, before_cpu = time.perf_counter(), time.process_time()
        result = _timed(run, "chunks", lambda c=chunk_ctx: get_action("encode_chunk").fn(c))
        run.chunk_wall.append(time.perf_counter() - before)
        run.chunk_cpu.append(time.process_time() - before_cpu)
        items.append(recorded(result))
        run.chunk_files.append(result.outputs[0].staging_path)
    needs: dict[str, Any] = {"encode_chunks": items}
    if audio and run.plan["has_audio"]:
        audio_ctx = action_context("encode_audio_track", source, out, {})
        needs["encode_audio"] = recorded(_timed(
            run, "audio", lambda: get_action("encode_audio_track").fn(audio_ctx)))
    stitch_ctx = action_context("stitch_video", source, out, {}, needs_outputs=needs)
    stitched = _timed(run, "stitch", lambda: get_action("stitch_video").fn(stitch_ctx))
    run.stitched = stitched.data
    run.output = stitched.outputs[0].staging_path
    return run


# -- judges (Debian's ffmpeg) --------------------------------------------------------------


def frame_times(path: Path, stream: str = "v:0") -> list[float]:
    """Presentation times of every decoded frame of ``stream``, in order (ffprobe)."""
    assert FFPROBE is not None
    out = subprocess.run([FFPROBE, "-v", "error", "-select_streams", stream, "-show_entries",
                          "frame=pts_time", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, check=True, timeout=300).stdout
    return [float(line.split(",")[0]) for line in out.split() if line.strip()]


def start_times(path: Path) -> dict[str, float]:
    """Each stream's start time by codec type (ffprobe)."""
    assert FFPROBE is not None
    out = subprocess.run([FFPROBE, "-v", "error", "-show_entries",
                          "stream=codec_type,start_time", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    starts = {}
    for line in out.split():
        kind, start = line.split(",")[:2]
        starts[kind] = float(start)
    return starts


def frame_psnr(encoded: Path, source: Path, tmp: Path) -> list[float]:
    """Luma PSNR of each frame of ``encoded`` against ``source`` (ffmpeg's psnr filter)."""
    stats = tmp / f"{encoded.stem}.psnr.txt"
    ffmpeg("-i", encoded, "-i", source, "-lavfi",
           f"[0:v]setpts=N[a];[1:v]setpts=N[b];[a][b]psnr=stats_file={stats}", "-f", "null",
           "-", timeout=600)
    values = []
    for line in stats.read_text().splitlines():
        fields = dict(part.split(":", 1) for part in line.split() if ":" in part)
        values.append(min(float(fields["psnr_y"]), 99.0))
    return values


def keyframe_indexes(path: Path) -> list[int]:
    """Which frames (in presentation order) of ``path``'s video are keyframes (ffprobe)."""
    assert FFPROBE is not None
    out = subprocess.run([FFPROBE, "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "packet=pts,flags", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, check=True, timeout=300).stdout
    rows = sorted((int(line.split(",")[0]), "K" in line.split(",")[1])
                  for line in out.split() if line.strip())
    return [i for i, (_pts, key) in enumerate(rows) if key]


def same_gops_one_pass(source: Path, chunked: Path, tmp: Path, crf: int = 23) -> Path:
    """The source encoded in one pass by Debian's ffmpeg (libx264 veryfast, CRF) with its
    keyframes on exactly the frames the chunked output has them: the same GOPs, no seams."""
    keys = keyframe_indexes(chunked)
    times = frame_times(source)
    path = tmp / f"{chunked.stem}.one_pass.mp4"
    ffmpeg("-i", source, "-an", "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf),
           "-pix_fmt", "yuv420p", "-forced-idr", "1", "-sc_threshold", "0", "-g", "100000",
           "-force_key_frames", ",".join(f"{times[k] - times[0]:.6f}" for k in keys),
           path, timeout=600)
    return path


def seam_pulses(chunked: list[float], one_pass: list[float], seams: list[int],
                fps: float) -> list[float]:
    """Per seam, in dB: how much the chunked encode's PSNR over the second around the seam
    departs from the same-GOP one-pass encode's, beyond how much it departs in the middle
    of chunks (a second or more from any seam). Content and GOP structure cancel out:
    what is left is what cutting there did to quality."""
    half = max(1, round(fps / 2))
    diff = [c - o for c, o in zip(chunked, one_pass, strict=True)]
    near: set[int] = set()
    for seam in seams:
        near.update(range(seam - 2 * half, seam + 2 * half))
    middle = statistics.fmean(d for i, d in enumerate(diff) if i not in near)
    return [statistics.fmean(diff[max(0, s - half):s + half]) - middle for s in seams]


def decode_errors(path: Path) -> str:
    """What ffmpeg says while decoding every stream (empty: none)."""
    assert FFMPEG is not None
    result = subprocess.run([FFMPEG, "-nostdin", "-v", "error", "-i", str(path), "-f", "null",
                             "-"], capture_output=True, text=True, timeout=600)
    return result.stderr.strip() + ("" if result.returncode == 0 else " (failed)")


@dataclass
class LadderRun:
    """What a chunked ladder made: the plan, each chunk task's data and the package."""

    plan: dict[str, Any]
    chunks: list[dict[str, Any]]
    packaged: dict[str, Any]
    folder: Path


def run_chunked_ladder(source: Path, out: Path, *, chunk_seconds: float, audio: bool = True,
                       **encode: Any) -> LadderRun:
    """split_video, encode_chunk_ladder per item, encode_audio_track, package_chunked."""
    out.mkdir(parents=True, exist_ok=True)
    ctx = action_context("split_video", source, out, {"chunk_seconds": chunk_seconds})
    plan = get_action("split_video").fn(ctx).data
    items = [recorded(get_action("encode_chunk_ladder").fn(
        action_context("encode_chunk_ladder", source, out, {**item, **encode})))
        for item in plan["chunks"]]
    needs: dict[str, Any] = {"encode_chunks": items}
    if audio and plan["has_audio"]:
        needs["encode_audio"] = recorded(get_action("encode_audio_track").fn(
            action_context("encode_audio_track", source, out, {})))
    packaged = get_action("package_chunked").fn(
        action_context("package_chunked", source, out, {}, needs_outputs=needs))
    return LadderRun(plan, items, packaged.data, out)


def keyframe_times(path: Path) -> list[float]:
    """Presentation times of the keyframes of ``path``'s video (a file or a playlist)."""
    assert FFPROBE is not None
    out = subprocess.run([FFPROBE, "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "packet=pts_time,flags", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, check=True, timeout=300).stdout
    rows = [line.split(",") for line in out.split() if line.strip()]
    return sorted(float(pts) for pts, flags, *_ in rows if "K" in flags)


def decode_all_errors(path: Path) -> str:
    """What ffmpeg says while decoding every stream of ``path`` (every variant of a
    master playlist or an MPD; empty: none)."""
    assert FFMPEG is not None
    result = subprocess.run([FFMPEG, "-nostdin", "-v", "error", "-i", str(path), "-map", "0",
                             "-f", "null", "-"], capture_output=True, text=True, timeout=600)
    return result.stderr.strip() + ("" if result.returncode == 0 else " (failed)")


def stitched_problems(source: Path, output: Path, *, audio: bool) -> list[str]:
    """What is wrong with a stitched output against its source, if anything: a decode
    error, a frame count or frame times other than the source's, a repeated or dropped
    frame, a duration off by a frame or more, an audio offset off by more than an audio
    frame."""
    problems = []
    if errors := decode_errors(output):
        problems.append(f"decode errors: {errors[:200]}")
    want, got = frame_times(source), frame_times(output)
    if len(got) != len(want):
        problems.append(f"{len(got)} frames, the source has {len(want)}")
    origin = min(start_times(source).values()) if audio else want[0]
    moved = [i for i, (a, b) in enumerate(zip(got, want, strict=False))
             if abs(a - (b - origin)) > 1e-3]
    if moved:
        problems.append(f"{len(moved)} frames not at the source's times (first: {moved[0]})")
    if not all(b > a for a, b in itertools.pairwise(got)):
        problems.append("frame times not strictly increasing (a repeated frame)")
    frame = min(b - a for a, b in itertools.pairwise(want))
    with av.open(str(output)) as out:
        video = out.streams.video[0]
        if bool(out.streams.audio) != audio:
            problems.append("audio " + ("missing" if audio else "unexpected"))
        duration = float(video.duration * video.time_base) if (
            video.duration is not None and video.time_base is not None) else 0.0
    with av.open(str(source)) as src:
        stream = src.streams.video[0]
        want_duration = (float(stream.duration * stream.time_base)
                         if stream.duration and stream.time_base
                         else (src.duration or 0) / av.time_base)  # Matroska: the file's
    if abs(duration - want_duration) >= frame:
        problems.append(f"duration {duration:.4f} s, the source's {want_duration:.4f} s")
    if audio:
        starts_in, starts_out = start_times(source), start_times(output)
        shift = ((starts_out["audio"] - starts_out["video"])
                 - (starts_in["audio"] - starts_in["video"]))
        if abs(shift) > AV_TOLERANCE:
            problems.append(f"audio moved {shift * 1000:.1f} ms against the video")
    return problems
