"""Media figures, measured side by side in one run (report them as ratios).

- mediaq's transcode_video (PyAV, in process) vs the ffmpeg CLI, same settings
  (libx264 veryfast crf 23, AAC 128k), one 1080p rendition
- the 1080p/720p/480p ladder: one by one vs fused (decode once, encode three),
  and fused vs the CLI doing the same fan-out in one command (split filter)
- the same ladder packaged as HLS (package_hls: fMP4 segments + playlists, one pass)
  vs the fused MP4 ladder
- 5 keyframe thumbnails: mediaq vs 5 CLI seeks
- detect_scenes on a 1080p30 clip of five shots (cuts every SECONDS/5 s, 8 Mbit/s,
  1 s GOPs, cuts off keyframes): frames per second and x real time, from the process's
  CPU time (what one core sustains; the scan's decoder threads are counted too), against
  decoding every frame and nothing else, the floor of any frame-exact scan; the
  median of BENCH_SCENE_ROUNDS (default 3). Alone: python -m benchmarks.media scenes
- a ``mediaq worker`` process's RSS (psutil, every 50 ms, children included) while it
  transcodes the 1080p rendition as a queued job, on a throw-away PostgreSQL

The source is made by Debian's ffmpeg; each figure keeps its best of BENCH_VIDEO_ROUNDS
rounds (default 2). Run: make bench (BENCH_VIDEO_SECONDS, default 10; BENCH_QUICK: 4 s, 1 round).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import psutil

from benchmarks.common import (
    QUICK,
    drain,
    fresh_env,
    insert_jobs,
    server,
    start_fleet,
    table,
)
from benchmarks.common import verdict as _verdict
from mediaq.actions import ActionContext, get_action
from tests.helpers import diagnostic_workflow

SECONDS = float(os.environ.get("BENCH_VIDEO_SECONDS", "4" if QUICK else "10"))
ROUNDS = int(os.environ.get("BENCH_VIDEO_ROUNDS", "1" if QUICK else "2"))
RESULTS = Path(os.environ.get("BENCH_RESULTS", "benchmarks/results"))
SCENE_ROUNDS = int(os.environ.get("BENCH_SCENE_ROUNDS", "1" if QUICK else "3"))
SCENE_SHOTS = ("testsrc2", "smptebars", "mandelbrot", "color=gray", "rgbtestsrc")
LADDER = (("1080p", 1080), ("720p", 720), ("480p", 480))
X264 = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p"]
AAC = ["-c:a", "aac", "-b:a", "128k"]


def ffmpeg(*args: str | Path) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *map(str, args)],
                   check=True)


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def context(action: str, source: Path, staging: Path, **params: Any) -> ActionContext:
    return ActionContext(job_code="BENCH", step_number=1, step_name=action, input_path=source,
                         source_path=source, params=get_action(action).validate(params),
                         staging_dir=staging)


def make_source(work: Path) -> Path:
    source = work / "source_1080p.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30", "-f", "lavfi", "-i",
           "sine=frequency=440:sample_rate=48000", "-t", str(SECONDS), "-c:v", "libx264",
           "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p", "-c:a", "aac",
           "-shortest", source)
    return source


def make_scene_source(work: Path) -> tuple[Path, list[float]]:
    """Five 1080p30 shots of SECONDS/5 each (one of moving noise); the cut times."""
    shot = SECONDS / len(SCENE_SHOTS)
    inputs: list[str] = []
    for name in SCENE_SHOTS:
        source = f"{name}=size=1920x1080:rate=30"
        if name == "color=gray":
            source = f"color=gray:size=1920x1080:rate=30:d={shot},noise=alls=40:allf=t"
        elif name != "mandelbrot":
            source += f":d={shot}"
        inputs += ["-f", "lavfi", "-i", source]
    trims = "".join(f"[{i}:v]trim=duration={shot},setpts=PTS-STARTPTS,format=yuv420p[s{i}];"
                    for i in range(len(SCENE_SHOTS)))
    joined = "".join(f"[s{i}]" for i in range(len(SCENE_SHOTS)))
    path = work / "scenes_1080p.mp4"
    ffmpeg(*inputs, "-filter_complex",
           f"{trims}{joined}concat=n={len(SCENE_SHOTS)}:v=1:a=0[v]", "-map", "[v]",
           "-c:v", "libx264", "-preset", "veryfast", "-b:v", "8M", "-maxrate", "8M",
           "-bufsize", "16M", "-g", "30", "-x264-params", "scenecut=0", "-pix_fmt",
           "yuv420p", path)
    return path, [shot * i for i in range(1, len(SCENE_SHOTS))]


def cpu_timed(fn: Callable[[], object]) -> float:
    """CPU seconds of this process (all its threads) spent in ``fn``."""
    started = time.process_time()
    fn()
    return time.process_time() - started


def decode_only(source: Path) -> int:
    """Every frame decoded as detect_scenes decodes it, and nothing else."""
    from mediaq.actions.analysis.scenes import DECODER_OPTIONS

    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_type = "AUTO"
        stream.codec_context.options = dict(DECODER_OPTIONS)
        return sum(1 for _ in container.decode(stream))


def measure_scenes(work: Path) -> dict[str, Any]:
    """detect_scenes on the five-shot clip: fps and x real time (medians), the cuts."""
    source, cut_times = make_scene_source(work)
    load_before = os.getloadavg()[0]
    scenes = get_action("detect_scenes").fn
    scans: list[float] = []
    floors: list[float] = []
    data: dict[str, Any] = {}
    for index in range(SCENE_ROUNDS):
        def scan(index: int = index) -> None:
            data.update(scenes(context("detect_scenes", source, work / f"scenes_{index}",
                                       min_scene_seconds=0)).data)
        scans.append(cpu_timed(scan))
        floors.append(cpu_timed(lambda: decode_only(source)))
    frames = data["frames_analysed"]
    scan_s, floor_s = statistics.median(scans), statistics.median(floors)
    found = data["cuts"]
    exact = len(found) == len(cut_times) and all(
        abs(a - b) <= 1 / 30 + 1e-6 for a, b in zip(found, cut_times, strict=True))
    return {"frames": frames, "source_seconds": SECONDS, "scan_cpu_s": scan_s,
            "decode_only_cpu_s": floor_s, "scan_fps": frames / scan_s,
            "scan_realtime": SECONDS / scan_s, "decode_only_fps": frames / floor_s,
            "decode_only_realtime": SECONDS / floor_s, "scan_per_decoding": scan_s / floor_s,
            "load": (load_before, os.getloadavg()[0]),
            "cuts": found, "expected_cuts": cut_times, "cuts_within_one_frame": exact}


def report_scenes(figures: dict[str, Any]) -> list[list[Any]]:
    print(f"\nScene detection ({SECONDS:.0f} s 1080p30, five shots, 8 Mbit/s; median of "
          f"{SCENE_ROUNDS}; CPU time, i.e. one core)")
    print(f"  detect_scenes         {figures['scan_fps']:7.1f} fps  "
          f"{figures['scan_realtime']:5.2f}x real time")
    print(f"  decoding alone        {figures['decode_only_fps']:7.1f} fps  "
          f"{figures['decode_only_realtime']:5.2f}x real time  "
          f"(scan / decoding alone: {figures['scan_per_decoding']:.2f})")
    print(f"  cuts {figures['cuts']} (expected {figures['expected_cuts']}); load average "
          f"{figures['load'][0]:.1f} before, {figures['load'][1]:.1f} after")
    # Every frame is decoded (a one-frame flash on a B-frame is a scene), so decoding
    # alone is the ceiling: what the x real time can reach depends on the machine's load.
    return [["detect_scenes, 1080p30, one core (x real time)", figures["scan_realtime"],
             ">= 8", _verdict(figures["scan_realtime"] >= 8)],
            ["decoding alone, the same frames (x real time)", figures["decode_only_realtime"],
             "-", "-"],
            ["detect_scenes cuts within one frame of the known ones",
             figures["cuts_within_one_frame"], "yes", _verdict(figures["cuts_within_one_frame"])]]


def scenes_only() -> None:
    work = Path(tempfile.mkdtemp(prefix="mediaq-bench-scenes-"))
    try:
        figures = measure_scenes(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(table("Scene detection: targets", ["figure", "value", "target", ""],
                report_scenes(figures)))


def cli_single(source: Path, out: Path) -> None:
    ffmpeg("-i", source, *X264, *AAC, "-movflags", "+faststart", out / "cli_1080p.mp4")


def cli_ladder(source: Path, out: Path) -> None:
    split = "[0:v]split=3[a][b][c];[b]scale=-2:720[b2];[c]scale=-2:480[c2]"
    maps: list[str | Path] = []
    for label, name in (("[a]", "1080p"), ("[b2]", "720p"), ("[c2]", "480p")):
        maps += ["-map", label, "-map", "0:a", *X264, *AAC, out / f"cli_ladder_{name}.mp4"]
    ffmpeg("-i", source, "-filter_complex", split, *maps)


def cli_thumbnails(source: Path, out: Path, count: int = 5) -> None:
    for index in range(count):
        at = SECONDS * (index + 0.5) / count
        ffmpeg("-ss", f"{at:.3f}", "-i", source, "-frames:v", "1", "-vf", "scale=320:-2",
               out / f"cli_thumb_{index}.jpg")


def mediaq_ladder_one_by_one(source: Path, out: Path) -> None:
    action = get_action("transcode_video")
    for name, _ in LADDER:
        action.fn(context("transcode_video", source, out / f"single_{name}", resolution=name,
                          hardware="never"))


def mediaq_ladder_fused(source: Path, out: Path) -> None:
    fuse = get_action("transcode_video").fuse
    assert fuse is not None
    fuse([context("transcode_video", source, out / f"fused_{name}", resolution=name,
                  hardware="never") for name, _ in LADDER])


def mediaq_hls_ladder(source: Path, out: Path) -> None:
    get_action("package_hls").fn(context("package_hls", source, out / "hls",
                                          renditions=[name for name, _ in LADDER],
                                          hardware="never"))


def tree_rss_mb(pid: int) -> float:
    """RSS of a process and its children (PyAV works in process; this also counts any
    helper process an action might start)."""
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0
    for each in procs:
        with contextlib.suppress(psutil.Error):
            total += each.memory_info().rss
    return total / 2**20


def worker_rss_transcoding(source: Path) -> dict[str, Any]:
    """One worker (--jobs 1) transcodes the source to 1080p as a queued job."""
    with server("media") as (admin, root):
        env = fresh_env(admin, root, diagnostic_workflow("B-1080P", {
            "action": "transcode_video",
            "parameters": {"resolution": "1080p", "hardware": "never"}}))
        queued = env.inputs / source.name
        shutil.copy(source, queued)
        (proc,) = start_fleet(env, 1, "--jobs", "1")
        idle = tree_rss_mb(proc.pid)
        samples = [idle]
        insert_jobs(env, 1, "B-1080P", [queued])
        seconds = drain(env, 1, sample=lambda: samples.append(tree_rss_mb(proc.pid)))
        status = env.one("SELECT status FROM workflow_jobs")["status"]
        env.stop_workers()
    return {"idle_mb": idle, "peak_mb": max(samples), "job_seconds": seconds,
            "job_status": status}


def cli_rss_mb(source: Path, out: Path) -> float:
    """Peak RSS of the ffmpeg CLI doing the same 1080p transcode (same 50 ms sampling):
    what libx264 and the decoder need on their own, whoever drives them."""
    proc = subprocess.Popen(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i",
                             str(source), *X264, *AAC, str(out / "cli_rss_1080p.mp4")])
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, tree_rss_mb(proc.pid))
        time.sleep(0.05)
    return peak


def measure(source: Path, out: Path) -> dict[str, float]:
    """One round of every timing, outputs under ``out``."""
    transcode = get_action("transcode_video").fn
    thumbs = get_action("generate_thumbnails").fn
    return {
        "cli_1080p_s": timed(lambda: cli_single(source, out)),
        "mediaq_1080p_s": timed(lambda: transcode(context(
            "transcode_video", source, out / "m1080", resolution="1080p",
            hardware="never"))),
        "mediaq_ladder_one_by_one_s": timed(lambda: mediaq_ladder_one_by_one(source, out)),
        "mediaq_ladder_fused_s": timed(lambda: mediaq_ladder_fused(source, out)),
        "cli_ladder_fused_s": timed(lambda: cli_ladder(source, out)),
        "mediaq_hls_ladder_s": timed(lambda: mediaq_hls_ladder(source, out)),
        "cli_thumbnails_s": timed(lambda: cli_thumbnails(source, out)),
        "mediaq_thumbnails_s": timed(lambda: thumbs(context(
            "generate_thumbnails", source, out / "thumbs", count=5, width=320))),
    }


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="mediaq-bench-media-"))
    try:
        source = make_source(work)
        rss = worker_rss_transcoding(source)
        rss["cli_peak_mb"] = cli_rss_mb(source, work)
        rounds = []
        for index in range(ROUNDS):  # each figure keeps its best round
            out = work / f"round_{index}"
            out.mkdir()
            rounds.append(measure(source, out))
        figures = {name: min(r[name] for r in rounds) for name in rounds[0]}
        scene_figures = measure_scenes(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratios = {
        "mediaq / CLI, one 1080p rendition":
            figures["mediaq_1080p_s"] / figures["cli_1080p_s"],
        "fused ladder / one by one (mediaq)":
            figures["mediaq_ladder_fused_s"] / figures["mediaq_ladder_one_by_one_s"],
        "mediaq fused ladder / CLI fused ladder":
            figures["mediaq_ladder_fused_s"] / figures["cli_ladder_fused_s"],
        "mediaq HLS ladder / mediaq fused MP4 ladder":
            figures["mediaq_hls_ladder_s"] / figures["mediaq_ladder_fused_s"],
        "mediaq thumbnails / CLI thumbnails":
            figures["mediaq_thumbnails_s"] / figures["cli_thumbnails_s"],
    }
    limits = {"mediaq / CLI, one 1080p rendition": 1.05,
              "fused ladder / one by one (mediaq)": 0.70,
              "mediaq fused ladder / CLI fused ladder": 1.05,
              "mediaq HLS ladder / mediaq fused MP4 ladder": 1.05}
    targets = [[name, ratios[name], f"<= {limit:.2f}", _verdict(ratios[name] <= limit)]
               for name, limit in limits.items()]
    targets.append(["worker RSS while transcoding 1080p (MB)", rss["peak_mb"], "< 300",
                    _verdict(rss["peak_mb"] < 300)])
    realtime = SECONDS / figures["mediaq_1080p_s"]
    print(f"\nMedia ({SECONDS:.0f} s 1080p30 source, libx264 veryfast crf 23, best of "
          f"{ROUNDS} rounds)")
    for name, seconds in figures.items():
        print(f"  {name:32} {seconds:8.2f} s")
    print(f"  mediaq 1080p speed                {realtime:8.2f}x real time")
    for name, ratio in ratios.items():
        print(f"  {name:44} {ratio:6.2f}")
    print(f"  worker RSS idle / peak while transcoding 1080p as a job: {rss['idle_mb']:.0f} / "
          f"{rss['peak_mb']:.0f} MB ({rss['job_status']} in {rss['job_seconds']:.1f} s); "
          f"ffmpeg CLI, same transcode: {rss['cli_peak_mb']:.0f} MB")
    targets += report_scenes(scene_figures)
    print()
    print(table("Media: targets", ["figure", "value", "target", ""], targets))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "media.json").write_text(json.dumps(
        {"source_seconds": SECONDS, "seconds": figures, "ratios": ratios,
         "realtime_1080p": realtime, "worker_rss": rss, "scenes": scene_figures,
         "targets": {row[0]: row[3] for row in targets}}, indent=2) + "\n")


if __name__ == "__main__":
    scenes_only() if sys.argv[1:] == ["scenes"] else main()
