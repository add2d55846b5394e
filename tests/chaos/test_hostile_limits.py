"""Hostile input (issue 8, item 12): steps under memory and CPU-time limits.

With ``step_memory_limit_mb`` / ``step_cpu_seconds_limit`` set, each step runs in a
child process (forkserver) under RLIMIT_AS / RLIMIT_CPU. A decompression bomb the
image limits let through and a costly encode exceed them, fail with one clear line,
and the same worker goes on to run ordinary jobs; progress, log lines, submit_files
and cancellation still work through the child. The per-step cost of the child is
measured against the in-process path.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.chaos import hostile_media as hm
from tests.chaos.conftest import scaled
from tests.helpers import MediaqEnv, diagnostic_workflow, wait_for

pytestmark = pytest.mark.chaos

MEMORY_MB, CPU_S = 768, 2


def _terminal(mq: MediaqEnv, code: str) -> bool:
    return bool(mq.job(code)["status"] in ("completed", "failed", "cancelled"))


def test_limits_fail_steps_clearly_and_the_worker_lives_on(mq: MediaqEnv,
                                                           figure: Any) -> None:
    # 676 MB once decoded, <1 MB here: over the limit at allocation, before CPU is spent
    hm.huge_png(mq.inputs / "bomb.png", 13000, 13000)
    hm.noise_video(mq.inputs / "noise.mp4", seconds=scaled(8, 4))
    hm._video(mq.inputs / "small.mp4", "mp4", "libx264", "aac")
    (mq.inputs / "drop").mkdir()
    for n in range(3):
        hm._video(mq.inputs / "drop" / f"clip{n}.mp4", "mp4", "libx264", None)
    mq.apply_workflow(diagnostic_workflow(
        "LIM-BOMB", {"action": "convert_format",
                     "parameters": {"format": "webp", "max_pixels": 400_000_000}},
        retry_count=2))
    mq.apply_workflow(diagnostic_workflow(
        "LIM-CPU", {"action": "transcode_video",
                    "parameters": {"preset": "veryslow", "resolution": "320x240"}},
        retry_count=2))
    mq.apply_workflow(diagnostic_workflow(
        "LIM-OK", {"action": "validate_video"},
        {"action": "transcode_video", "parameters": {"resolution": "32x24",
                                                     "preset": "ultrafast"}},
        {"action": "transcode_video", "parameters": {"resolution": "16x12",
                                                     "preset": "ultrafast"}}))
    mq.apply_workflow(diagnostic_workflow("LIM-SLEEP", {"action": "sleep",
                                                        "parameters": {"seconds": 60}}))
    mq.apply_workflow(diagnostic_workflow(
        "LIM-SCAN", {"action": "scan", "parameters": {"workflow": "LIM-OK",
                                                      "patterns": ["*.mp4"]}},
        workflow_type="scan"))
    worker = mq.start_worker("--jobs", "1", step_memory_limit_mb=str(MEMORY_MB),
                             step_cpu_seconds_limit=str(CPU_S))
    bomb = mq.submit("LIM-BOMB", mq.inputs / "bomb.png")
    cpu = mq.submit("LIM-CPU", mq.inputs / "noise.mp4")
    wait_for(lambda: _terminal(mq, bomb) and _terminal(mq, cpu), timeout=180,
             message="the two over-limit jobs")
    ok = mq.submit("LIM-OK", mq.inputs / "small.mp4")
    wait_for(lambda: _terminal(mq, ok), timeout=120, message="an ordinary job after them")
    # Cancellation reaches a step in its child at once.
    sleeper = mq.submit("LIM-SLEEP", mq.inputs / "small.mp4")
    wait_for(lambda: float(mq.job(sleeper)["progress_percent"] or 0) > 0, timeout=60,
             message="the sleep step's progress through the child")
    asked = time.monotonic()
    mq.cli("cancel", sleeper)
    wait_for(lambda: _terminal(mq, sleeper), timeout=30, message="the cancelled job")
    cancel_s = time.monotonic() - asked
    # submit_files through the child: a scan submits one job per clip.
    scan = mq.submit("LIM-SCAN", mq.inputs / "drop")
    wait_for(lambda: _terminal(mq, scan), timeout=60, message="the scan")
    found = mq.query("SELECT job_code FROM workflow_jobs WHERE submitted_by = %s",
                     (f"scan:{scan}",))
    alive = worker.poll() is None
    jobs = {code: mq.job(code) for code in (bomb, cpu, ok, sleeper, scan)}
    executions = mq.query("SELECT s.status, s.error_message "
                          "FROM step_executions s JOIN workflow_jobs j ON j.id = s.job_id "
                          "WHERE j.job_code = ANY(%s) ORDER BY s.id", ([bomb, cpu],))
    log = mq.worker_log(worker)
    for code, job in jobs.items():
        print(f"  {code} {job['status']}: {job['error_message']}")
    figure(f"limits {MEMORY_MB} MB / {CPU_S} s CPU: bomb -> {jobs[bomb]['status']} "
           f"({jobs[bomb]['error_class']}: {jobs[bomb]['error_message']}); noise encode -> "
           f"{jobs[cpu]['status']} ({jobs[cpu]['error_class']}: {jobs[cpu]['error_message']});"
           f" {len(executions)} executions for both (no retries); next job "
           f"{jobs[ok]['status']}; cancel took {cancel_s:.2f} s; scan submitted "
           f"{len(found)} jobs through the child; worker alive {alive}")
    assert alive, log[-3000:]
    assert jobs[bomb]["status"] == "failed" and jobs[bomb]["error_class"] == "permanent"
    assert f"exceeded its memory limit of {MEMORY_MB} MB" in jobs[bomb]["error_message"]
    assert jobs[cpu]["status"] == "failed" and jobs[cpu]["error_class"] == "permanent"
    assert f"CPU-time limit of {CPU_S} s" in jobs[cpu]["error_message"]
    assert len(executions) == 2  # permanent: not retried
    assert jobs[ok]["status"] == "completed", jobs[ok]["error_message"]
    assert len(jobs[ok]["output_metadata"]["outputs"]) == 2
    assert jobs[sleeper]["status"] == "cancelled"
    assert jobs[scan]["status"] == "completed" and len(found) == 3
    assert "Traceback" not in log, log[-3000:]


OVERHEAD_SCRIPT = """
import json, sys, time
from pathlib import Path
from mediaq.actions import get_action
from mediaq.config import Settings
from mediaq.worker.isolation import run_isolated
from tests.helpers import action_context

runs, source, stage = int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
settings = Settings(step_memory_limit_mb=2048, step_cpu_seconds_limit=60)
out = {}
for name, params in (("noop", {}), ("validate_video", {})):
    ctx = action_context(name, source, stage / name, params)
    run_isolated(name, [ctx], fused=False, settings=settings)  # starts the forkserver
    fn = get_action(name).fn
    started = time.perf_counter()
    for _ in range(runs):
        fn(ctx)
    inline = (time.perf_counter() - started) / runs
    started = time.perf_counter()
    for _ in range(runs):
        run_isolated(name, [ctx], fused=False, settings=settings)
    out[name] = (inline, (time.perf_counter() - started) / runs)
print(json.dumps(out))
"""


def test_isolation_overhead_per_step(tmp_path: Path, figure: Any) -> None:
    source = tmp_path / "small.mp4"
    hm._video(source, "mp4", "libx264", "aac")
    runs = scaled(200, 20)
    # In a fresh interpreter started with -c (as `python -m mediaq.cli worker` is, the
    # children re-import no main module).
    result = subprocess.run([sys.executable, "-c", OVERHEAD_SCRIPT, str(runs), str(source),
                             str(tmp_path / "stage")], capture_output=True, text=True,
                            timeout=300, cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr
    import json
    timings = json.loads(result.stdout.strip().splitlines()[-1])
    figure("per-step cost over " + str(runs) + " runs: " + "; ".join(
        f"{name} in process {inline * 1000:.1f} ms, in a child {child * 1000:.1f} ms "
        f"(+{(child - inline) * 1000:.1f} ms)" for name, (inline, child) in timings.items()))
    assert all(child > 0 for _, child in timings.values())
