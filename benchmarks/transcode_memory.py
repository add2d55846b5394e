"""Peak memory of a 1080p transcode: a ``mediaq worker`` running it as a queued job
against the ffmpeg CLI doing the same encode, side by side in one run (issue 22).

Both encode the same 1080p30 source (Debian's ffmpeg makes it: testsrc2 with a tone)
with libx264 veryfast CRF 23 and AAC 128k into MP4 (+faststart): the CLI with its own
defaults for everything else (what a user types), the worker with the options mediaq
chooses (mediaq/actions/encoder_options.py, ``X264_THREADING``). Peak RSS is read
from the kernel, not sampled: the worker's ``VmHWM`` (its high-water mark, read after
the job and before it stops; idle RSS read before the job) and the CLI's
``ru_maxrss`` from ``wait4``. The worker's figure includes its Python interpreter,
database driver and every import (``idle``), which the CLI does not have.

Run: python -m benchmarks.transcode_memory (BENCH_MEMORY_SECONDS, default 10; 6 with
BENCH_QUICK).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    QUICK,
    drain,
    fresh_env,
    insert_jobs,
    server,
    start_fleet,
    table,
    write_results,
)
from benchmarks.common import verdict as _verdict
from tests.helpers import diagnostic_workflow

SECONDS = float(os.environ.get("BENCH_MEMORY_SECONDS", "6" if QUICK else "10"))
ENCODE = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p",
          "-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart"]


def make_source(work: Path) -> Path:
    source = work / "memory_1080p.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=1920x1080:rate=30", "-f", "lavfi", "-i",
                    "sine=frequency=440:sample_rate=48000", "-t", str(SECONDS), "-c:v",
                    "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p",
                    "-c:a", "aac", "-shortest", str(source)], check=True)
    return source


def status_mb(pid: int, field: str) -> float:
    """A ``/proc/PID/status`` memory field (VmRSS, VmHWM) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise LookupError(field)


def cli_peak_mb(source: Path, out: Path) -> tuple[float, float]:
    """The ffmpeg CLI's peak RSS (the kernel's maximum, from wait4) and wall seconds."""
    started = time.monotonic()
    proc = subprocess.Popen(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i",
                             str(source), *ENCODE, str(out)])
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"ffmpeg exited {proc.returncode}")
    return usage.ru_maxrss / 1024, time.monotonic() - started


def worker_peak_mb(source: Path) -> dict[str, Any]:
    """A worker (--jobs 1) transcodes ``source`` to 1080p as a queued job."""
    with server("memory") as (admin, root):
        env = fresh_env(admin, root, diagnostic_workflow("B-1080P", {
            "action": "transcode_video",
            "parameters": {"resolution": "1080p", "hardware": "never", "crf": 23,
                           "speed": "veryfast", "audio_bitrate": "128k"}}))
        queued = env.inputs / source.name
        shutil.copy(source, queued)
        (proc,) = start_fleet(env, 1, "--jobs", "1")
        idle = status_mb(proc.pid, "VmRSS")
        before = status_mb(proc.pid, "VmHWM")
        insert_jobs(env, 1, "B-1080P", [queued])
        seconds = drain(env, 1)
        peak = status_mb(proc.pid, "VmHWM")
        job = env.one("SELECT status, error_message FROM workflow_jobs")
        env.stop_workers()
    return {"idle_mb": idle, "peak_before_job_mb": before, "peak_mb": peak,
            "job_seconds": seconds, "job_status": job["status"], "error": job["error_message"]}


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="mediaq-bench-memory-"))
    try:
        source = make_source(work)
        # Side by side: CLI, worker, CLI again; the CLI's smaller figure is the bar.
        cli = [cli_peak_mb(source, work / "cli_a.mp4")]
        worker = worker_peak_mb(source)
        cli.append(cli_peak_mb(source, work / "cli_b.mp4"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cli_mb = min(mb for mb, _ in cli)
    cli_s = min(seconds for _, seconds in cli)
    ratio = worker["peak_mb"] / cli_mb
    rows = [["ffmpeg CLI peak RSS (MiB, min of 2)", f"{cli_mb:.0f}", "", "", ""],
            ["mediaq worker peak RSS (MiB)", f"{worker['peak_mb']:.0f}", "", "", ""],
            ["  of which the idle worker (MiB)", f"{worker['idle_mb']:.0f}", "", "", ""],
            ["worker / CLI peak RSS", f"{ratio:.2f}", "<= 1.00", _verdict(ratio <= 1.0),
             worker["job_status"]],
            ["job wall time / CLI wall time (queue included; best CLI of 2)",
             f"{worker['job_seconds'] / cli_s:.2f}", "", "", ""]]
    text = table(f"Transcode peak memory ({SECONDS:.0f} s 1080p30, libx264 veryfast CRF 23, "
                 "AAC 128k; side by side)", ["figure", "value", "target", "", "job"], rows)
    write_results("transcode_memory", {"seconds": SECONDS, "cli_peak_mb_and_s": cli,
                                       "worker": worker, "ratio": ratio}, text)


if __name__ == "__main__":
    main()
