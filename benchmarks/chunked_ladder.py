"""An HLS/DASH ladder from chunks vs ``package_hls`` in one pass, in one run (the ratios).

The source is made by Debian's ffmpeg: BENCH_LADDER_SECONDS (default 120, quick 30) of
moving, grainy 960x540 at 25 fps with AAC audio, 2 s GOPs. Both use the same rungs
(540p, 360p, 240p), libx264 veryfast, CRF 23 capped at each rung's bit rate, 2 s
segments, AAC 128k, in this process:

- one pass: ``package_hls`` (one decode, every rung encoded from it, segmented);
- chunked: ``split_video`` (chunks of BENCH_LADDER_CHUNK_SECONDS, default 20),
  ``encode_chunk_ladder`` for every chunk one after the other, ``encode_audio_track``,
  ``package_chunked``.

Figures: total CPU time, chunked / one pass; the bytes of each rung's segments, chunked /
one pass; the projected wall time with N hosts (split + the chunk and audio tasks spread
over N hosts + package) from CPU seconds, against the one pass; and whether every rung's
segments start at the same times (package_chunked refuses otherwise). Run:
``python -m benchmarks.chunked_ladder``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.chunked import HOSTS, makespan
from benchmarks.common import QUICK, table, verdict, write_results
from mediaq.actions import get_action
from tests.chunk_judge import recorded
from tests.helpers import action_context
from tests.media_judge import ffmpeg

SECONDS = int(os.environ.get("BENCH_LADDER_SECONDS", 30 if QUICK else 120))
CHUNK_SECONDS = float(os.environ.get("BENCH_LADDER_CHUNK_SECONDS", 10 if QUICK else 20))
RUNGS = ["540p", "360p", "240p"]
ENCODE = {"crf": 23, "speed": "veryfast"}


def make_source(folder: Path) -> Path:
    path = folder / "film.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=960x540:rate=25,noise=alls=6:allf=t",
           "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(SECONDS),
           "-c:v", "libx264", "-preset", "veryfast", "-g", "50", "-pix_fmt", "yuv420p",
           "-c:a", "aac", "-shortest", path, timeout=3600)
    return path


def timed(fn: Any) -> tuple[Any, float]:
    cpu = time.process_time()
    return fn(), time.process_time() - cpu


def rung_bytes(folder: Path, marker: str) -> dict[str, int]:
    """Bytes of each rung's media segments (``{stem}_{marker}_{rung}_00001.m4s``…)."""
    return {rung: sum(p.stat().st_size for p in folder.glob(f"*_{marker}_{rung}_*.m4s"))
            for rung in RUNGS}


def one_pass(source: Path, folder: Path) -> tuple[dict[str, int], float]:
    folder.mkdir(parents=True)
    ctx = action_context("package_hls", source, folder, {
        "renditions": RUNGS, "segment_seconds": 2, **ENCODE, "hardware": "never"})
    _, cpu = timed(lambda: get_action("package_hls").fn(ctx))
    return rung_bytes(folder, "hls"), cpu


def chunked(source: Path, folder: Path) -> dict[str, Any]:
    folder.mkdir(parents=True)
    split_ctx = action_context("split_video", source, folder, {"chunk_seconds": CHUNK_SECONDS})
    plan, split_cpu = timed(lambda: get_action("split_video").fn(split_ctx).data)
    items, chunk_cpu = [], []
    for item in plan["chunks"]:
        ctx = action_context("encode_chunk_ladder", source, folder,
                             {**item, **ENCODE, "renditions": RUNGS, "gop_seconds": 2})
        result, cpu = timed(lambda c=ctx: get_action("encode_chunk_ladder").fn(c))
        items.append(recorded(result))
        chunk_cpu.append(cpu)
    audio_ctx = action_context("encode_audio_track", source, folder, {})
    audio, audio_cpu = timed(lambda: recorded(get_action("encode_audio_track").fn(audio_ctx)))
    package_ctx = action_context("package_chunked", source, folder, {}, needs_outputs={
        "encode_chunks": items, "encode_audio": audio})
    packaged, package_cpu = timed(lambda: get_action("package_chunked").fn(package_ctx).data)
    return {"plan": plan, "packaged": packaged, "split_cpu": split_cpu,
            "chunk_cpu": chunk_cpu, "audio_cpu": audio_cpu, "package_cpu": package_cpu,
            "bytes": rung_bytes(folder, "chunked")}


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="mediaq-bench-ladder-"))
    try:
        source = make_source(folder)
        single_bytes, single_cpu = one_pass(source, folder / "one")
        run = chunked(source, folder / "chunked")
        total_cpu = (run["split_cpu"] + sum(run["chunk_cpu"]) + run["audio_cpu"]
                     + run["package_cpu"])
        tasks = [*sorted(run["chunk_cpu"], reverse=True), run["audio_cpu"]]
        projected = {n: run["split_cpu"] + makespan(tasks, n) + run["package_cpu"]
                     for n in HOSTS}
        size = {r: run["bytes"][r] / single_bytes[r] for r in RUNGS}
        cpu_ratio = total_cpu / single_cpu
        data = {
            "source_seconds": SECONDS, "chunk_seconds": CHUNK_SECONDS, "rungs": RUNGS,
            "chunks": run["plan"]["chunk_count"], "segments": run["packaged"]["segments"],
            "one_pass": {"cpu_s": single_cpu, "bytes": single_bytes},
            "chunked": {k: v for k, v in run.items() if k not in ("plan", "packaged")},
            "cpu_ratio": cpu_ratio, "size_ratio": size,
            "projected_cpu_s": projected,
            "projected_vs_one_pass": {n: projected[n] / single_cpu for n in HOSTS},
            "targets": {"cpu_ratio<=1.1": verdict(cpu_ratio <= 1.1),
                        "sizes_within_5%": verdict(all(abs(s - 1) <= 0.05
                                                       for s in size.values()))},
        }
        rows = [
            ["CPU time, chunked ladder / package_hls", f"{total_cpu:.1f} / {single_cpu:.1f} s",
             cpu_ratio, "<= 1.10", data["targets"]["cpu_ratio<=1.1"]],
            *[[f"bytes of rung {r}, chunked / one pass",
               f"{run['bytes'][r]:,} / {single_bytes[r]:,} B", size[r], "0.95-1.05", "-"]
              for r in RUNGS],
            *[[f"wall with {n} host{'s' if n > 1 else ''} (from CPU s) / one pass",
               f"{projected[n]:.1f} / {single_cpu:.1f} s", projected[n] / single_cpu, "-",
               "-"] for n in HOSTS],
            ["segments aligned across rungs", f"{run['packaged']['segments']} each", None,
             "all", "met"],
        ]
        text = table(f"Chunked ladder: {SECONDS} s 960x540 source, rungs {', '.join(RUNGS)}, "
                     f"{run['plan']['chunk_count']} chunks of ~{CHUNK_SECONDS:.0f} s",
                     ["figure", "measured", "ratio", "target", "verdict"], rows)
        write_results("chunked_ladder", data, text)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
