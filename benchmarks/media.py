"""Media figures, measured side by side in one run (report them as ratios).

- mediaq's transcode_video (PyAV, in process) vs the ffmpeg CLI, same settings
  (libx264 veryfast crf 23, AAC 128k), one 1080p rendition
- the 1080p/720p/480p ladder: one by one vs fused (decode once, encode three),
  and fused vs the CLI doing the same fan-out in one command (split filter)
- 5 keyframe thumbnails: mediaq vs 5 CLI seeks

The source is made by Debian's ffmpeg. Run: make bench (BENCH_VIDEO_SECONDS, default 10).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mediaq.actions import ActionContext, get_action

SECONDS = float(os.environ.get("BENCH_VIDEO_SECONDS", "10"))
RESULTS = Path(os.environ.get("BENCH_RESULTS", "benchmarks/results"))
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


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="mediaq-bench-media-"))
    try:
        source = make_source(work)
        transcode = get_action("transcode_video").fn
        thumbs = get_action("generate_thumbnails").fn
        figures = {
            "cli_1080p_s": timed(lambda: cli_single(source, work)),
            "mediaq_1080p_s": timed(lambda: transcode(context(
                "transcode_video", source, work / "m1080", resolution="1080p",
                hardware="never"))),
            "mediaq_ladder_one_by_one_s": timed(lambda: mediaq_ladder_one_by_one(source, work)),
            "mediaq_ladder_fused_s": timed(lambda: mediaq_ladder_fused(source, work)),
            "cli_ladder_fused_s": timed(lambda: cli_ladder(source, work)),
            "cli_thumbnails_s": timed(lambda: cli_thumbnails(source, work)),
            "mediaq_thumbnails_s": timed(lambda: thumbs(context(
                "generate_thumbnails", source, work / "thumbs", count=5, width=320))),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratios = {
        "mediaq / CLI, one 1080p rendition":
            figures["mediaq_1080p_s"] / figures["cli_1080p_s"],
        "fused ladder / one by one (mediaq)":
            figures["mediaq_ladder_fused_s"] / figures["mediaq_ladder_one_by_one_s"],
        "mediaq fused ladder / CLI fused ladder":
            figures["mediaq_ladder_fused_s"] / figures["cli_ladder_fused_s"],
        "mediaq thumbnails / CLI thumbnails":
            figures["mediaq_thumbnails_s"] / figures["cli_thumbnails_s"],
    }
    realtime = SECONDS / figures["mediaq_1080p_s"]
    print(f"\nMedia ({SECONDS:.0f} s 1080p30 source, libx264 veryfast crf 23, one run)")
    for name, seconds in figures.items():
        print(f"  {name:32} {seconds:8.2f} s")
    print(f"  mediaq 1080p speed                {realtime:8.2f}x real time")
    for name, ratio in ratios.items():
        print(f"  {name:40} {ratio:6.2f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "media.json").write_text(json.dumps(
        {"source_seconds": SECONDS, "seconds": figures, "ratios": ratios,
         "realtime_1080p": realtime}, indent=2) + "\n")


if __name__ == "__main__":
    main()
