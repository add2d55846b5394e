"""Chunked encoding vs one pass, measured side by side in one run (report the ratios).

The source is made by Debian's ffmpeg: BENCH_CHUNKED_SECONDS (default 240, quick 40) of
moving, grainy 960x540 at 25 fps with AAC audio, 2 s GOPs. Both encodes use the same
settings (libx264 veryfast, CRF 23, 2 s closed GOPs, AAC 128k), in this process:

- one pass: ``transcode_video`` (resolution source), one decode, audio in the same pass;
- chunked: ``split_video`` (chunks of BENCH_CHUNK_SECONDS, default 20), ``encode_chunk``
  for every chunk one after the other, ``encode_audio_track``, ``stitch_video``.

Figures: total CPU time of the chunked encode against the one-pass encode (the overhead of
chunking: the preroll each chunk encodes and drops, the audio's second decode, the
stitch; target at most 1.1x); the stitched file's size against the one-pass file (target
within 5%); and the projected wall time with N hosts (1, 3, 10) from the measured task
times: split + the chunk and audio tasks spread over N hosts, each task to the host free
first (the slowest wave) + stitch, against the one-pass wall time. With BENCH_CHUNKED_JUDGE
(default on, off when quick) also each seam's PSNR pulse against a same-GOP one-pass
encode by Debian's ffmpeg (target within 0.5 dB). BENCH_CHUNKED_WORKERS=N (default a
quarter of the cores on 8 or more) also measures the chunks encoded by N processes at
once. Run: make bench, or
``python -m benchmarks.chunked`` alone.
"""

from __future__ import annotations

import concurrent.futures
import heapq
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import QUICK, table, verdict, write_results
from mediaq.actions import get_action
from tests.chunk_judge import (
    frame_psnr,
    run_chunked,
    same_gops_one_pass,
    seam_pulses,
    stitched_problems,
)
from tests.helpers import action_context
from tests.media_judge import ffmpeg

SECONDS = int(os.environ.get("BENCH_CHUNKED_SECONDS", 40 if QUICK else 240))
CHUNK_SECONDS = float(os.environ.get("BENCH_CHUNK_SECONDS", 10 if QUICK else 20))
SIZE = os.environ.get("BENCH_CHUNKED_SIZE", "960x540" if QUICK else "1920x1080")
JUDGE = os.environ.get("BENCH_CHUNKED_JUDGE", "0" if QUICK else "1") == "1"
SETTINGS = {"codec": "h264", "crf": 23, "speed": "veryfast", "gop_seconds": 2}
HOSTS = (1, 3, 10)


def make_source(folder: Path) -> Path:
    path = folder / "film.mp4"
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={SIZE}:rate=25,noise=alls=6:allf=t",
           "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(SECONDS),
           "-c:v", "libx264", "-preset", "veryfast", "-g", "50", "-pix_fmt", "yuv420p",
           "-c:a", "aac", "-shortest", path, timeout=3600)
    return path


def one_pass(source: Path, folder: Path) -> tuple[Path, float, float]:
    params = {"resolution": "source", **SETTINGS, "audio_codec": "aac", "name": "one_pass"}
    ctx = action_context("transcode_video", source, folder, params)
    cpu, wall = time.process_time(), time.perf_counter()
    result = get_action("transcode_video").fn(ctx)
    return (result.outputs[0].staging_path, time.process_time() - cpu,
            time.perf_counter() - wall)


def makespan(tasks: list[float], hosts: int) -> float:
    """Wall time of ``tasks`` (in order) on ``hosts``, each to the host free first."""
    free = [0.0] * hosts
    for seconds in tasks:
        heapq.heappush(free, heapq.heappop(free) + seconds)
    return max(free)


def _encode_one(source: Path, item: dict[str, Any], folder: Path) -> float:
    ctx = action_context("encode_chunk", source, folder, {**item, **SETTINGS})
    start = time.perf_counter()
    get_action("encode_chunk").fn(ctx)
    return time.perf_counter() - start


def measured_parallel(source: Path, chunks: list[dict[str, Any]],
                      folder: Path) -> dict[str, Any] | None:
    """The chunks encoded by BENCH_CHUNKED_WORKERS processes at once (default: a quarter
    of the cores when there are 8 or more, else none): the wall time a host with that
    many workers measures."""
    workers = int(os.environ.get("BENCH_CHUNKED_WORKERS",
                                 (os.cpu_count() or 1) // 4 if (os.cpu_count() or 1) >= 8
                                 else 0))
    if workers < 2:
        return None
    start = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(workers) as pool:
        times = list(pool.map(_encode_one, [source] * len(chunks), chunks,
                              [folder / str(c["chunk_index"]) for c in chunks]))
    return {"workers": workers, "wall_s": time.perf_counter() - start, "chunk_wall_s": times}


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="mediaq-bench-chunked-"))
    try:
        source = make_source(folder)
        single, single_cpu, single_wall = one_pass(source, folder / "one")
        run = run_chunked(source, folder / "chunked", chunk_seconds=CHUNK_SECONDS, **SETTINGS)
        chunked_cpu = sum(run.cpu.values())
        tasks = [*sorted(run.chunk_wall, reverse=True), run.wall.get("audio", 0.0)]
        projected = {n: run.wall["split"] + makespan(tasks, n) + run.wall["stitch"]
                     for n in HOSTS}
        # The same from CPU seconds: what each task cost whatever else ran on the machine
        # (on a shared machine, wall times move with the neighbours' load).
        cpu_tasks = [*sorted(run.chunk_cpu, reverse=True), run.cpu.get("audio", 0.0)]
        projected_cpu = {n: run.cpu["split"] + makespan(cpu_tasks, n) + run.cpu["stitch"]
                         for n in HOSTS}
        parallel = measured_parallel(source, run.plan["chunks"], folder / "parallel")
        pulses: list[float] = []
        problems = stitched_problems(source, run.output, audio=True) if JUDGE else None
        if JUDGE:
            reference = same_gops_one_pass(source, run.output, folder)
            pulses = seam_pulses(frame_psnr(run.output, source, folder),
                                 frame_psnr(reference, source, folder),
                                 [c["start_frame"] for c in run.plan["chunks"][1:]], fps=25)
        cpu_ratio = chunked_cpu / single_cpu
        size_ratio = run.output.stat().st_size / single.stat().st_size
        data: dict[str, Any] = {
            "source_seconds": SECONDS, "chunk_seconds": CHUNK_SECONDS,
            "chunks": run.plan["chunk_count"], "frames": run.plan["frame_count"],
            "one_pass": {"cpu_s": single_cpu, "wall_s": single_wall,
                         "bytes": single.stat().st_size},
            "chunked": {"cpu_s": run.cpu, "wall_s": run.wall, "chunk_wall_s": run.chunk_wall,
                        "bytes": run.output.stat().st_size},
            "cpu_ratio": cpu_ratio, "size_ratio": size_ratio,
            "projected_wall_s": projected,
            "projected_vs_one_pass": {n: projected[n] / single_wall for n in HOSTS},
            "projected_cpu_s": projected_cpu,
            "projected_cpu_vs_one_pass": {n: projected_cpu[n] / single_cpu for n in HOSTS},
            "measured_parallel": parallel,
            "seam_pulses_db": pulses,
            "stitched_problems": problems,
            "targets": {"stitched_exact": verdict(problems == [] if JUDGE else None),
                        "cpu_ratio<=1.1": verdict(cpu_ratio <= 1.1),
                        "size_within_5%": verdict(abs(size_ratio - 1) <= 0.05),
                        "seams_within_0.5dB": verdict(all(abs(p) <= 0.5 for p in pulses)
                                                      if pulses else None)},
        }
        rows = [
            ["CPU time, chunked / one pass", f"{chunked_cpu:.1f} / {single_cpu:.1f} s",
             cpu_ratio, "<= 1.10", data["targets"]["cpu_ratio<=1.1"]],
            ["size, stitched / one pass", f"{run.output.stat().st_size:,} / "
             f"{single.stat().st_size:,} B", size_ratio, "0.95-1.05",
             data["targets"]["size_within_5%"]],
            *[[f"wall with {n} host{'s' if n > 1 else ''} (projected) / one pass",
               f"{projected[n]:.1f} / {single_wall:.1f} s", projected[n] / single_wall, "-",
               "-"] for n in HOSTS],
            *[[f"same, from CPU seconds, {n} host{'s' if n > 1 else ''}",
               f"{projected_cpu[n]:.1f} / {single_cpu:.1f} s", projected_cpu[n] / single_cpu,
               "-", "-"] for n in HOSTS],
            *([[f"chunks on {parallel['workers']} processes (measured) / one pass",
                f"{parallel['wall_s']:.1f} / {single_wall:.1f} s",
                parallel["wall_s"] / single_wall, "-", "-"]] if parallel else []),
            ["stitched: frames, times, duration, A/V offset, decode",
             "; ".join(problems) if problems else "as the source" if JUDGE else "not judged",
             None, "exact", data["targets"]["stitched_exact"]],
            ["seam PSNR pulse, worst (dB)", f"{len(pulses)} seams",
             max((abs(p) for p in pulses), default=None), "<= 0.5",
             data["targets"]["seams_within_0.5dB"]],
        ]
        text = table(f"Chunked encoding: {SECONDS} s {SIZE} source with audio, "
                     f"{run.plan['chunk_count']} chunks of ~{CHUNK_SECONDS:.0f} s "
                     f"(split {run.wall['split']:.2f} s, slowest chunk "
                     f"{max(run.chunk_wall):.1f} s, audio {run.wall.get('audio', 0):.1f} s, "
                     f"stitch {run.wall['stitch']:.2f} s)",
                     ["figure", "measured", "ratio", "target", "verdict"], rows)
        write_results("chunked", data, text)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
